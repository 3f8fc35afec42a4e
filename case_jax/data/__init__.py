"""Data for training and evaluation: the BaS-Net/CASE feature layout.

Reading (``thumos_layout``)::

  ds = WTALDataset(root, "train", classes=None, feature_dim=None, eager=False)
  len(ds) -> N;  ds[i] -> VideoRecord;  ds.video_ids (N,);  ds.lengths (N,)
  ds.classes (C,) names;  ds.labels() -> (N, C) float32
  VideoRecord: video_id, rgb (n, D) f32, flow (n, D) f32, labels (C,) f32,
               segments ((start_s, end_s, class_index), ...), duration (s),
               fps 25, snippet_frames 16 (seconds_per_snippet 0.64)
  read_gt(path) -> {video_id: GtVideo};  read_split(path) -> (ids,)
  THUMOS14_CLASSES: the released 20-class order (= sorted gt.json labels).

Sampling to T positions (``sampling``), as released::

  sample_train_indices(length, t, rng) -> (t,) int64   # random_perturb
  sample_test_indices(length, t) -> (t,) int64         # uniform_sampling

Batches (``batching``), numpy dicts rgb (B,T,D), flow (B,T,D), labels (B,C),
video_ids (B,), lengths (B,) int32 [, valid (B,) bool for eval]::

  train_batch(dataset, step, *, seed, batch_size=16, num_segments=750)
  TrainBatcher(dataset, batch_size=16, num_segments=750, seed=0)
      next(b); b.batch_at(step); b.state() -> dict; b.restore(state)
  eval_batches(dataset, *, num_segments=750, batch_size=1, pad_last=False)

Synthetic test/demo data in the same layout (``synthetic``)::

  write_synthetic_thumos(root, *, num_train=120, num_test=60, num_classes=10,
                         feature_dim=64, seed=0, time_scale=0.5,
                         max_snippets=400, stats=None, overwrite=False)
  python -m case_jax.data.synthetic --root DIR [--seed N ...]
"""
from case_jax.data.batching import (TrainBatcher, epoch_order, eval_batches,
                                    steps_per_epoch, train_batch)
from case_jax.data.sampling import sample_test_indices, sample_train_indices
from case_jax.data.thumos_layout import (FEATURE_FPS, SNIPPET_FRAMES,
                                         THUMOS14_CLASSES, GtVideo,
                                         LayoutError, LayoutWarning, Segment,
                                         VideoRecord, WTALDataset, read_gt,
                                         read_split)



def __getattr__(name):
  # Imported on first use so that `python -m case_jax.data.synthetic` does not
  # find the module already imported by its package.
  if name == "write_synthetic_thumos":
    from case_jax.data.synthetic import write_synthetic_thumos
    return write_synthetic_thumos
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FEATURE_FPS", "SNIPPET_FRAMES", "THUMOS14_CLASSES", "GtVideo",
    "LayoutError", "LayoutWarning", "Segment", "TrainBatcher", "VideoRecord",
    "WTALDataset", "epoch_order", "eval_batches", "read_gt", "read_split",
    "sample_test_indices", "sample_train_indices", "steps_per_epoch",
    "train_batch", "write_synthetic_thumos",
]
