"""Temporal sampling of a video's snippets to a fixed length T, as released.

The released CASE code (``dataset/thumos_features.py``, inherited from
BaS-Net/ASL) brings every video of L snippets to T = 750 positions:

* training, ``random_perturb`` (stratified jitter): with base positions
  ``s_i = i * L / T``, position ``i < T - 1`` is drawn uniformly from the
  integers ``floor(s_i) .. floor(s_{i+1})`` *both included* when those floors
  differ, else it is ``floor(s_i)``; the last position is drawn uniformly from
  ``floor(s_{T-1}) .. L - 1`` when ``floor(s_{T-1}) < L - 1``, else it is
  ``floor(s_{T-1})``.  Short videos are stretched by repetition, long ones
  subsampled.
* test, ``uniform_sampling``: ``floor(i * L / T)``; always T positions, so long
  test videos lose resolution and inference maps times back through L.

Both return the identity when L == T.  Floors are computed in exact integer
arithmetic, ``(i * L) // T``; the released float expression gives the same
integers because ``i * L / T`` is never within one ulp of the next integer for
video-sized L and T.

The draws use an explicit ``np.random.Generator``: the positions follow the
released distribution, not its random stream (which came from numpy's global
state inside PyTorch DataLoader workers and cannot be reproduced anyway).
"""
from __future__ import annotations

import numpy as np


def _check(length: int, t: int) -> tuple[int, int]:
  length, t = int(length), int(t)
  if length < 1:
    raise ValueError(f"cannot sample a video of {length} snippets: every video "
                     "needs at least one snippet (check its feature file)")
  if t < 1:
    raise ValueError(f"number of sampled positions must be >= 1, got {t}")
  return length, t


def _stratum_floors(length: int, t: int) -> np.ndarray:
  """floor(i * length / t) for i = 0..t, exactly. Returns (t + 1,) int64."""
  return (np.arange(t + 1, dtype=np.int64) * length) // t


def sample_train_indices(length: int, t: int,
                         rng: np.random.Generator) -> np.ndarray:
  """Released ``random_perturb``: stratified jitter of ``length`` snippets to t.

  Args:
    length: L, the video's number of snippets (>= 1).
    t: T, the number of positions to return.
    rng: source of the jitter.
  Returns:
    (t,) int64 snippet indices in [0, L - 1], non-decreasing.
  """
  length, t = _check(length, t)
  if length == t:
    return np.arange(t, dtype=np.int64)
  floors = _stratum_floors(length, t)
  low = floors[:t]
  # Inclusive upper bound of each stratum: the next floor (the released
  # quirk that lets neighbouring strata share an index); the last position
  # may go up to the last snippet.
  high = np.concatenate([floors[1:t], [length - 1]])
  # Where the range is a single index the released code takes it without a
  # draw; drawing from [low, low] gives the same value.
  high = np.maximum(high, low)
  return rng.integers(low, high, endpoint=True).astype(np.int64)


def sample_test_indices(length: int, t: int) -> np.ndarray:
  """Released ``uniform_sampling``: floor(i * length / t), i = 0..t-1.

  Args:
    length: L, the video's number of snippets (>= 1).
    t: T, the number of positions to return.
  Returns:
    (t,) int64 snippet indices in [0, L - 1], non-decreasing; the identity
    when L == T.
  """
  length, t = _check(length, t)
  return _stratum_floors(length, t)[:t]
