"""TV-L1 optical flow for the flow stream (wtal_field_notes.md §5).

OpenCV's contrib build (``opencv-contrib-python-headless``,
``cv2.optflow.DualTVL1OpticalFlow_create`` with its default parameters)
between consecutive 25 fps frames, in grey levels; each (dx, dy) clipped to
[-20, 20] pixels and scaled to [-1, 1] (divided by 20), the recipe of the
THUMOS14 flow features.  Flow frame j is the motion from frame j to j + 1;
the video's last frame has no successor and repeats the previous flow (a
one-frame video: zero flow).

A deviation, for speed: the flow is computed on the pre-processed 224 x 224
frames (decode.py), not on the full frames before the crop; the crop of a
full-frame flow differs only near the crop's border.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from case_jax import errors

BOUND = 20.0   # pixels; the recipe's clip


def _cv2():
  try:
    import cv2  # pylint: disable=import-outside-toplevel
  except ImportError:
    cv2 = None
  if cv2 is None or not hasattr(cv2, "optflow"):
    raise errors.UserError("TV-L1 flow needs OpenCV's contrib build: "
                           "pip install -e '.[video]' (opencv-contrib-python-headless)")
  return cv2


def tvl1():
  """A TV-L1 solver with OpenCV's default parameters."""
  return _cv2().optflow.DualTVL1OpticalFlow_create()


def grey(frame: np.ndarray) -> np.ndarray:
  """(H, W, 3) uint8 RGB -> (H, W) uint8 grey."""
  cv2 = _cv2()
  return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def scale(flow: np.ndarray) -> np.ndarray:
  """Pixels -> [-1, 1]: clipped to +-20 and divided by 20 (float32)."""
  return (np.clip(flow, -BOUND, BOUND) / BOUND).astype(np.float32)


def flow_frames(frames: Iterator[np.ndarray], solver=None) -> Iterator[np.ndarray]:
  """One (H, W, 2) float32 flow in [-1, 1] per frame of ``frames``."""
  solver = solver or tvl1()
  prev, last = None, None
  for f in frames:
    g = grey(f)
    if prev is not None:
      last = scale(solver.calc(prev, g, None))
      yield last
    prev = g
  if prev is not None:
    yield last if last is not None else np.zeros(prev.shape + (2,), np.float32)
