"""Numpy batches for training and evaluation.

Training follows the released loader (shuffle=True, drop_last=True, batch 16,
``random_perturb`` to T = 750) but is a pure function of (seed, step): the
epoch's order comes from a generator seeded by (seed, epoch) and each video's
jitter from one seeded by (seed, epoch, position in the epoch).  A run can
therefore resume exactly from its step alone; ``TrainBatcher`` is a cursor
over that function whose ``state()`` is a small JSON-serialisable dict.

Evaluation uses ``uniform_sampling`` (or the full length) and returns each
video's original snippet count, which inference needs to map sampled indices
back to seconds (released: t_factor = 16 * v_len / (scale * T * 25)).

A batch is a dict:
  rgb: (B, T, D_rgb) float32       flow: (B, T, D_flow) float32
  labels: (B, C) float32           video_ids: (B,) str
  lengths: (B,) int32 original snippet counts
  valid: (B,) bool (test batches only; False on padding rows)
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np

from case_jax.data.sampling import sample_test_indices, sample_train_indices
from case_jax.data.records import VideoRecord

# Distinct first words keep the two random streams independent.
_ORDER_STREAM = 0
_JITTER_STREAM = 1


def _check_nonneg(name: str, value: int) -> int:
  if int(value) != value or value < 0:
    raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
  return int(value)


def epoch_order(num_videos: int, seed: int, epoch: int) -> np.ndarray:
  """The shuffled video order of one epoch. Returns (num_videos,) int64."""
  seq = np.random.SeedSequence([_check_nonneg("seed", seed), _ORDER_STREAM,
                                _check_nonneg("epoch", epoch)])
  return np.random.default_rng(seq).permutation(num_videos)


def _jitter_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
  return np.random.default_rng(
      np.random.SeedSequence([seed, _JITTER_STREAM, epoch, position]))


def snippet_fg_mask(record: VideoRecord, indices: np.ndarray) -> np.ndarray:
  """Ground-truth foreground (1.0) / background (0.0) of sampled snippets.

  A snippet counts as foreground when its centre lies inside an annotated
  segment (for the F&B accuracy "ACC" of the paper's Table 2).
  indices: (T,) snippet indices -> (T,) float32.
  """
  centre = (np.asarray(indices, np.float64) + 0.5) * record.seconds_per_snippet
  fg = np.zeros(centre.shape, bool)
  for seg in record.segments:
    fg |= (centre >= seg.start_s) & (centre <= seg.end_s)
  return fg.astype(np.float32)


def _collate(records: Sequence[VideoRecord],
             indices: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
  """Gathers each record's rows at its indices (each (T,)) into a batch."""
  return {
      "fg_mask": np.stack([snippet_fg_mask(r, i) for r, i in zip(records, indices)]),
      "rgb": np.stack([r.rgb[i] for r, i in zip(records, indices)]),
      "flow": np.stack([r.flow[i] for r, i in zip(records, indices)]),
      "labels": np.stack([r.labels for r in records]).astype(np.float32),
      "video_ids": np.array([r.video_id for r in records], dtype=str),
      "lengths": np.array([r.num_snippets for r in records], np.int32),
  }


def steps_per_epoch(num_videos: int, batch_size: int) -> int:
  """Full batches per epoch (drop_last)."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  steps = num_videos // batch_size
  if steps == 0:
    raise ValueError(f"{num_videos} videos make no full batch of {batch_size} "
                     "(drop_last); lower batch_size")
  return steps


def train_batch(dataset: Sequence[VideoRecord], step: int, *, seed: int,
                batch_size: int = 16, num_segments: int = 750,
                rows: Optional[slice] = None) -> dict[str, np.ndarray]:
  """The training batch of a global step (pure in (seed, step)).

  Args:
    dataset: a sequence of VideoRecord (e.g. a BasnetDataset).
    step: global step, 0-based; epoch = step // steps_per_epoch.
    seed: run seed (>= 0).
    batch_size: B (released 16); the last partial batch of an epoch is dropped.
    num_segments: T (released 750).
    rows: only these rows of the global batch (a multi-host process's share);
      only their videos are read.  Each row depends on its global position
      alone, so the pieces of all processes concatenate to the full batch.
  Returns:
    rgb (B, T, D_rgb), flow (B, T, D_flow), labels (B, C), video_ids (B,),
    lengths (B,); B = the number of selected rows.
  """
  per_epoch = steps_per_epoch(len(dataset), batch_size)
  epoch, index = divmod(_check_nonneg("step", step), per_epoch)
  order = epoch_order(len(dataset), seed, epoch)
  positions = range(index * batch_size, (index + 1) * batch_size)
  if rows is not None:
    start = 0 if rows.start is None else rows.start
    stop = batch_size if rows.stop is None else rows.stop
    if rows.step not in (None, 1) or not 0 <= start < stop <= batch_size:
      raise ValueError(f"rows={rows} must be a contiguous, non-empty slice "
                       f"within the batch of {batch_size}.")
    positions = positions[rows]
  records = [dataset[int(order[p])] for p in positions]
  indices = [sample_train_indices(r.num_snippets, num_segments,
                                  _jitter_rng(seed, epoch, p))
             for r, p in zip(records, positions)]
  return _collate(records, indices)


class TrainBatcher:
  """Endless iterator over ``train_batch`` with a resumable position.

  ``state()`` -> {"seed", "epoch", "index", "num_videos", "batch_size",
  "num_segments"} (plain ints, JSON-safe); ``restore(state)`` continues from
  it and refuses a state saved for another dataset size or batch shape.
  """

  def __init__(self, dataset: Sequence[VideoRecord], *, batch_size: int = 16,
               num_segments: int = 750, seed: int = 0):
    self.dataset = dataset
    self.batch_size = int(batch_size)
    self.num_segments = int(num_segments)
    self.seed = _check_nonneg("seed", seed)
    self.steps_per_epoch = steps_per_epoch(len(dataset), self.batch_size)
    self.step = 0

  @property
  def epoch(self) -> int:
    return self.step // self.steps_per_epoch

  @property
  def index(self) -> int:
    """Batch index within the current epoch."""
    return self.step % self.steps_per_epoch

  def __iter__(self) -> "TrainBatcher":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = self.batch_at(self.step)
    self.step += 1
    return batch

  def batch_at(self, step: int) -> dict[str, np.ndarray]:
    """The batch of any global step, without moving the cursor."""
    return train_batch(self.dataset, step, seed=self.seed,
                       batch_size=self.batch_size,
                       num_segments=self.num_segments)

  def state(self) -> dict[str, int]:
    return {"seed": self.seed, "epoch": self.epoch, "index": self.index,
            "num_videos": len(self.dataset), "batch_size": self.batch_size,
            "num_segments": self.num_segments}

  def restore(self, state: Mapping[str, Any]) -> None:
    for key in ("num_videos", "batch_size", "num_segments"):
      mine = len(self.dataset) if key == "num_videos" else getattr(self, key)
      if key in state and int(state[key]) != mine:
        raise ValueError(f"batcher state was saved with {key}={state[key]}, "
                         f"this batcher has {mine}; resume with the same "
                         "dataset and batch settings")
    index = _check_nonneg("index", state["index"])
    if index >= self.steps_per_epoch:
      raise ValueError(f"batcher state index {index} is past the "
                       f"{self.steps_per_epoch} steps of an epoch")
    self.seed = _check_nonneg("seed", state["seed"])
    self.step = _check_nonneg("epoch", state["epoch"]) * self.steps_per_epoch \
        + index


def _pad_rows(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """Pads every array of a batch with zero rows (empty ids) up to ``size``."""
  def pad(a):
    extra = np.zeros((size - a.shape[0],) + a.shape[1:], a.dtype)
    return np.concatenate([a, extra])
  return {k: pad(v) for k, v in batch.items()}


TEST_SAMPLING = ("resample", "no_upsample")


def eval_batches(dataset: Sequence[VideoRecord], *,
                 num_segments: Optional[int] = 750, batch_size: int = 1,
                 pad_last: bool = False, test_sampling: str = "resample"
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Every video once, uniformly sampled to T.

  Args:
    dataset: a sequence of VideoRecord.
    num_segments: T; None keeps each video at full length (batch_size 1 only).
    batch_size: B; the last batch is smaller unless ``pad_last``.
    pad_last: pad the last batch to B with zero rows whose ``valid`` is False
      (one compiled shape for jit).
    test_sampling: videos shorter than T are "resample"d to T (released
      CASE), or with "no_upsample" kept at their own length, each in a batch
      of its own (T' = its length; SAL_ActivityNet / ACM-Net), yielded
      where it comes; longer videos are batched in dataset order either way.
  Yields:
    rgb (B, T, D_rgb), flow (B, T, D_flow), labels (B, C), video_ids (B,),
    lengths (B,) original snippet counts, valid (B,) bool.
  """
  if num_segments is None and batch_size != 1:
    raise ValueError("full-length test batches (num_segments=None) need "
                     "batch_size=1: videos differ in length")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if test_sampling not in TEST_SAMPLING:
    raise ValueError(f"data.test_sampling must be one of {TEST_SAMPLING}, "
                     f"got {test_sampling!r}")
  pending = []
  for i in range(len(dataset)):
    record = dataset[i]
    if num_segments is not None and _at_own_length(record.num_snippets,
                                                   num_segments, test_sampling):
      yield _eval_batch([record], None, batch_size, pad_last)
      continue
    pending.append(record)
    if len(pending) == batch_size:
      yield _eval_batch(pending, num_segments, batch_size, pad_last)
      pending = []
  if pending:
    yield _eval_batch(pending, num_segments, batch_size, pad_last)


def test_indices(length: int, num_segments: Optional[int],
                 test_sampling: str = "resample") -> np.ndarray:
  """The snippets a test batch reads of a video of ``length`` snippets:
  all of them (num_segments None, or a shorter video with "no_upsample"),
  else ``sample_test_indices``.  (T',) int64."""
  if num_segments is None or _at_own_length(length, num_segments, test_sampling):
    return np.arange(length)
  return sample_test_indices(length, num_segments)


def _at_own_length(length: int, num_segments: int, test_sampling: str) -> bool:
  """A test video kept at its own length: shorter than T, "no_upsample"."""
  return test_sampling == "no_upsample" and length < num_segments


def _eval_batch(records, num_segments, batch_size, pad_last):
  """One test batch; num_segments None = each video at full length."""
  indices = [test_indices(r.num_snippets, num_segments) for r in records]
  batch = _collate(records, indices)
  batch["valid"] = np.ones(len(records), bool)
  if pad_last and len(records) < batch_size:
    batch = _pad_rows(batch, batch_size)
  return batch
