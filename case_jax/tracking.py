"""Progress of a run: TensorBoard scalars without TensorFlow (the event-file
format written directly) and a progress line (``Progress``).

    writer = ScalarWriter(os.path.join(workdir, "tb"))
    writer.write(step, {"loss": 0.3, "mAP": 0.41})
    writer.close()

An event file is a sequence of TFRecords (uint64 length, masked CRC32C of
the length, the payload, masked CRC32C of the payload; little-endian), each
payload an ``Event`` protobuf, hand-encoded here:

    Event   {1: wall_time double, 2: step int64, 3: file_version string,
             5: summary Summary}
    Summary {1: repeated Value}
    Value   {1: tag string, 2: simple_value float}

The first record is ``file_version = "brain.Event:2"``.  The file is named
``events.out.tfevents.<time>.<host>.<pid>.<n>`` so TensorBoard finds it.
"""
from __future__ import annotations

import os
import socket
import struct
import sys
import time
from typing import Mapping, Optional

import numpy as np


def _crc32c_table():
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), as TFRecord uses."""
  c = 0xFFFFFFFF
  for b in data:
    c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
  return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  c = crc32c(data)
  return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(payload: bytes) -> bytes:
  """One TFRecord frame around ``payload``."""
  header = struct.pack("<Q", len(payload))
  return (header + struct.pack("<I", masked_crc32c(header)) + payload
          + struct.pack("<I", masked_crc32c(payload)))


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1   # int64 two's complement, as protobuf encodes negatives
  out = bytearray()
  while True:
    bits = n & 0x7F
    n >>= 7
    if n:
      out.append(bits | 0x80)
    else:
      out.append(bits)
      return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: Optional[int] = None,
                 scalars: Optional[Mapping[str, float]] = None,
                 file_version: Optional[str] = None) -> bytes:
  """An Event protobuf with a Summary of simple_value scalars."""
  msg = b"\x09" + struct.pack("<d", wall_time)                 # 1: double
  if step is not None:
    msg += b"\x10" + _varint(int(step))                        # 2: int64
  if file_version is not None:
    msg += _field_bytes(3, file_version.encode())
  if scalars:
    summary = b""
    for tag, value in scalars.items():
      v = _field_bytes(1, str(tag).encode()) + b"\x15" + struct.pack("<f", float(value))
      summary += _field_bytes(1, v)
    msg += _field_bytes(5, summary)
  return msg


class ScalarWriter:
  """Appends scalar summaries to a new event file under ``logdir``."""

  _count = 0

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    ScalarWriter._count += 1
    name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
            f".{os.getpid()}.{ScalarWriter._count}")
    self.path = os.path.join(logdir, name)
    self._f = open(self.path, "wb")
    self._f.write(tfrecord(encode_event(time.time(), step=0,
                                        file_version="brain.Event:2")))
    self._f.flush()

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """Logs every numeric scalar in ``scalars`` (NaN/inf included) at
    ``step``; non-numeric and non-scalar values are skipped."""
    values = {}
    for k, v in scalars.items():
      try:
        arr = np.asarray(v)
      except Exception:  # noqa: BLE001 - anything unconvertible is skipped
        continue
      if arr.size == 1 and (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        values[str(k)] = float(arr.reshape(()))
    if values:
      self._f.write(tfrecord(encode_event(time.time(), step=int(step), scalars=values)))

  def flush(self) -> None:
    if not self._f.closed:
      self._f.flush()

  def close(self) -> None:
    if not self._f.closed:
      self._f.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class Progress:
  """A one-line progress bar on a terminal, plain lines elsewhere (CI logs)."""

  def __init__(self, total: int, start: int = 0, stream=None, every: int = 10):
    self.total, self.start = total, start
    self.stream = stream or sys.stdout
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.every = max(1, every)
    self.t0 = time.perf_counter()

  def update(self, step: int, metrics: dict) -> None:
    done = step - self.start
    elapsed = time.perf_counter() - self.t0
    eta = elapsed / max(done, 1) * (self.total - step)
    frac = step / max(self.total, 1)
    bar = "#" * int(24 * frac) + "." * (24 - int(24 * frac))
    shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                      if k in ("loss", "L_V", "L_A", "L_C", "L_R", "fb_acc", "H_qc"))
    line = f"[{bar}] {step}/{self.total}  {shown}  eta {eta:4.0f}s"
    if self.tty:
      self.stream.write("\r" + line[:160])
      if step >= self.total:
        self.stream.write("\n")
    elif step % self.every == 0 or step >= self.total:
      self.stream.write(line + "\n")
    self.stream.flush()
