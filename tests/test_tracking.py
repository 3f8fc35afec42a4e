"""case_jax.tracking: TensorBoard event files written without TensorFlow."""
import glob
import math
import struct

import numpy as np
import pytest

from case_jax import tracking


def _varint(buf, i):
  n, shift = 0, 0
  while True:
    b = buf[i]
    i += 1
    n |= (b & 0x7F) << shift
    shift += 7
    if not b & 0x80:
      return n, i


def _fields(buf):
  """(field number, wire type, value) of a protobuf message."""
  i, out = 0, []
  while i < len(buf):
    key, i = _varint(buf, i)
    num, wire = key >> 3, key & 7
    if wire == 0:
      v, i = _varint(buf, i)
      if v >= 1 << 63:
        v -= 1 << 64
    elif wire == 1:
      v, i = buf[i:i + 8], i + 8
    elif wire == 5:
      v, i = buf[i:i + 4], i + 4
    elif wire == 2:
      n, i = _varint(buf, i)
      v, i = buf[i:i + n], i + n
    else:
      raise AssertionError(f"wire type {wire}")
    out.append((num, wire, v))
  return out


def read_events(path):
  """Every event as a dict, checking the TFRecord framing and CRCs."""
  data = open(path, "rb").read()
  i, events = 0, []
  while i < len(data):
    header = data[i:i + 8]
    (n,) = struct.unpack("<Q", header)
    assert struct.unpack("<I", data[i + 8:i + 12])[0] == tracking.masked_crc32c(header)
    payload = data[i + 12:i + 12 + n]
    assert struct.unpack("<I", data[i + 12 + n:i + 16 + n])[0] == tracking.masked_crc32c(payload)
    i += 16 + n
    ev = {"scalars": {}}
    for num, wire, v in _fields(payload):
      if num == 1:
        ev["wall_time"] = struct.unpack("<d", v)[0]
      elif num == 2:
        ev["step"] = v
      elif num == 3:
        ev["file_version"] = v.decode()
      elif num == 5:
        for _, _, value in _fields(v):
          f = {n: x for n, _, x in _fields(value)}
          ev["scalars"][f[1].decode()] = struct.unpack("<f", f[2])[0]
    events.append(ev)
  assert i == len(data)
  return events


def test_crc32c_known_values():
  assert tracking.crc32c(b"123456789") == 0xE3069283
  assert tracking.crc32c(b"") == 0
  assert tracking.crc32c(bytes(32)) == 0x8A9136AA


def test_scalar_writer_round_trip(tmp_path):
  with tracking.ScalarWriter(str(tmp_path / "tb")) as w:
    w.write(1, {"loss": 0.5, "L_V": np.float32(1.25), "mAP": np.array(0.4),
                "skipped_text": "x", "skipped_vector": np.ones(3)})
    w.write(2, {"loss": float("nan"), "big/step": 3})
    w.write(2**40, {"loss": -1e30})
    w.flush()
  files = glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
  assert files == [w.path]
  ev = read_events(w.path)
  assert ev[0]["file_version"] == "brain.Event:2"
  assert [e["step"] for e in ev[1:]] == [1, 2, 2**40]
  assert ev[1]["scalars"] == pytest.approx({"loss": 0.5, "L_V": 1.25, "mAP": 0.4})
  assert math.isnan(ev[2]["scalars"]["loss"]) and ev[2]["scalars"]["big/step"] == 3.0
  assert ev[3]["scalars"]["loss"] == pytest.approx(-1e30, rel=1e-6)
  assert all(e["wall_time"] > 1e9 for e in ev)
  w.close()  # closing twice is harmless


def test_negative_step_encodes_as_int64():
  msg = tracking.encode_event(0.0, step=-3)
  assert dict((n, v) for n, _, v in _fields(msg))[2] == -3


def test_two_writers_use_different_files(tmp_path):
  a, b = tracking.ScalarWriter(str(tmp_path)), tracking.ScalarWriter(str(tmp_path))
  assert a.path != b.path
  a.close(), b.close()


def test_tensorboard_reads_it(tmp_path):
  try:
    from tensorboard.backend.event_processing import event_accumulator
  except ImportError:
    pytest.skip("tensorboard is not installed")
  with tracking.ScalarWriter(str(tmp_path)) as w:
    for step in range(1, 4):
      w.write(step, {"loss": 1.0 / step})
  acc = event_accumulator.EventAccumulator(str(tmp_path))
  acc.Reload()
  got = [(e.step, e.value) for e in acc.Scalars("loss")]
  assert [s for s, _ in got] == [1, 2, 3]
  np.testing.assert_allclose([v for _, v in got], [1.0, 0.5, 1 / 3], rtol=1e-6)


def test_tensorboardx_reads_it(tmp_path):
  try:
    from tensorboardX.event_file_reader import EventFileReader  # noqa: F401
  except ImportError:
    pytest.skip("tensorboardX (with its event reader) is not installed")
  with tracking.ScalarWriter(str(tmp_path)) as w:
    w.write(5, {"x": 2.0})
  events = list(EventFileReader(w.path).get_events()) if hasattr(
      EventFileReader(w.path), "get_events") else []
  if not events:
    pytest.skip("this tensorboardX has no usable event reader")
  vals = [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value]
  assert vals == [(5, "x", 2.0)]
