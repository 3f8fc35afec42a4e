"""Progress of a run: TensorBoard scalars (``ScalarWriter``, through
tensorboardX: no TensorFlow) and a progress line (``Progress``).

    writer = ScalarWriter(os.path.join(workdir, "tensorboard"), purge_step=41)
    writer.write(step, {"loss": 0.3, "mAP": 0.41})
    writer.close()

``purge_step``: a resumed run restarts at a restored step; the writer records
TensorBoard's purge marker, so the events the earlier run logged at
``purge_step`` and later are hidden and each step shows once.
"""
from __future__ import annotations

import itertools
import os
import sys
import time
from typing import Mapping, Optional

import numpy as np

_FILE_COUNT = itertools.count(1)


def numeric_scalars(scalars: Mapping) -> dict:
  """The numeric scalars of ``scalars`` (NaN/inf included) as floats;
  non-numeric and non-scalar values are left out."""
  values = {}
  for k, v in scalars.items():
    try:
      arr = np.asarray(v)
    except Exception:  # noqa: BLE001 - anything unconvertible is skipped
      continue
    if arr.size == 1 and (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
      values[str(k)] = float(arr.reshape(()))
  return values


class ScalarWriter:
  """Scalar summaries into a new event file under ``logdir``."""

  def __init__(self, logdir: str, purge_step: Optional[int] = None):
    from tensorboardX import SummaryWriter  # only the run layer needs it
    os.makedirs(logdir, exist_ok=True)
    # tensorboardX names files by the second and host: the pid and a
    # zero-padded count keep two writers of one second apart, in order.
    suffix = f".{os.getpid()}.{next(_FILE_COUNT):04d}"
    self._writer = SummaryWriter(logdir, purge_step=purge_step, flush_secs=10,
                                 filename_suffix=suffix)
    self._closed = False

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """Logs every numeric scalar of ``scalars`` at ``step``."""
    for tag, value in numeric_scalars(scalars).items():
      self._writer.add_scalar(tag, value, global_step=int(step),
                              walltime=time.time())

  def flush(self) -> None:
    if not self._closed:
      self._writer.flush()

  def close(self) -> None:
    if not self._closed:
      self._closed = True
      self._writer.close()

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
