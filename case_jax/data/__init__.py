"""Data for training and evaluation: the BaS-Net/CASE feature layout.

Reading (``thumos_layout``; every layout is a ``records.VideoDataset``)::

  ds = BasnetDataset(root, "train", classes=None, feature_dim=None,
                     eager=False, on_error="raise"|"skip")
  len(ds) -> N;  ds[i] -> VideoRecord;  ds.video_ids (N,);  ds.lengths (N,)
  ds.classes (C,) names;  ds.labels() -> (N, C) float32;  ds.skipped
  VideoRecord: video_id, rgb (n, D) f32, flow (n, D) f32, labels (C,) f32,
               segments ((start_s, end_s, class_index), ...), duration (s),
               fps, snippet_frames (FEATURE_FPS, SNIPPET_FRAMES by default;
               seconds_per_snippet = snippet_frames / fps)
  read_gt(path) -> {video_id: GtVideo};  read_split(path) -> (ids,)
  THUMOS14_CLASSES: the released 20-class order (= sorted gt.json labels).

Ground truth for evaluation (``ground_truth``), from the same parsers::

  load_ground_truth(gt.json or W-TALC annotation dir, subset) -> GroundTruth

Sampling to T positions (``sampling``), as released::

  sample_train_indices(length, t, rng) -> (t,) int64   # random_perturb
  sample_test_indices(length, t) -> (t,) int64         # uniform_sampling

Batches (``batching``), numpy dicts rgb (B,T,D), flow (B,T,D), labels (B,C),
video_ids (B,), lengths (B,) int32 [, valid (B,) bool for eval]::

  train_batch(dataset, step, *, seed, batch_size=16, num_segments=750)
  TrainBatcher(dataset, batch_size=16, num_segments=750, seed=0)
      next(b); b.batch_at(step); b.state() -> dict; b.restore(state)
  eval_batches(dataset, *, num_segments=750, batch_size=1, pad_last=False)

Other feature layouts (``layouts``, ``wtalc_layout``, ``acmnet_layout``),
each returning the same VideoRecords, checked on load (``generic``)::

  open_dataset(root, split, layout="basnet"|"wtalc"|"acmnet", classes=None,
               *, on_error="raise"|"skip", feature_dim=None, eager=...,
               fps=..., snippet_frames=..., ...)
  WtalcDataset(root, split, ...)   # NAME-I3D-JOINTFeatures.npy + annotations
  AcmnetDataset(root, split, ...)  # gt.json, split files, (n, 2D) per video
  ds.skipped -> ((video_id, reason), ...)   (on_error="skip")

Writing any layout from one description (``writers``)::

  write_layout(layout, root, [VideoSpec, ...]);  videos_from_dataset(ds, split)

Class lists (``classes``; config data.classes: names, a file, or empty =
the dataset's rule) and the record of verified feature files
(``verified``)::

  config_classes(spec, dataset, root) -> (C,) names or None (derive)
  read_class_file(path) -> (C,) names        # one class per line
  VerifiedFiles(root)  # .case_jax_verified.json in root, else ~/.cache
  NoSplit: the dataset has no such split (a MissingFile and a LayoutError)

Background prefetch of batches (``prefetch``)::

  Prefetcher(fn, steps, depth=2)  # iterates fn(step) computed ahead

Statistics: ``python -m case_jax.data.inspect --root DIR --layout L``.

TFDS array_record copies (optional ``data`` extra, no TensorFlow; import
``case_jax.data.tfds_builders`` explicitly)::

  python -m case_jax.data.prepare --dataset=thumos14 --layout=basnet \
      --manual_dir=RELEASE --data_dir=DIR
  tfds_builders.TFDSDataset("thumos14/basnet", "train", data_dir=DIR)

Synthetic test/demo data in the same layout (``synthetic``)::

  write_synthetic_thumos(root, *, num_train=120, num_test=60, num_classes=10,
                         feature_dim=64, seed=0, time_scale=0.5,
                         max_snippets=400, signal="default",
                         instance_lengths="scaled", stats=None,
                         overwrite=False)
  python -m case_jax.data.synthetic --root DIR [--seed N ...]
  # ActivityNet-shaped (100 / 200 classes, training / validation subsets),
  # in any layout: write_synthetic(root, shape="anet13", layout="acmnet")
  python -m case_jax.data.synthetic --root DIR --shape anet13 --layout acmnet
"""
from case_jax.data.acmnet_layout import AcmnetDataset
from case_jax.data.classes import config_classes, read_class_file
from case_jax.data.batching import (TrainBatcher, epoch_order, eval_batches,
                                    steps_per_epoch, train_batch)
from case_jax.data.generic import SourceDataset, VideoSource
from case_jax.data.ground_truth import GroundTruth, load_ground_truth
from case_jax.data.gt_json import read_gt, read_split
from case_jax.data.detect import detect_layout
from case_jax.data.layouts import LAYOUTS, open_dataset
from case_jax.data.prefetch import Prefetcher
from case_jax.data.records import (FEATURE_FPS, SNIPPET_FRAMES, GtVideo,
                                   LayoutError, LayoutWarning, NoSplit,
                                   Segment, VideoDataset, VideoRecord)
from case_jax.data.sampling import sample_test_indices, sample_train_indices
from case_jax.data.thumos_layout import THUMOS14_CLASSES, BasnetDataset
from case_jax.data.verified import VerifiedFiles
from case_jax.data.writers import (VideoSpec, videos_from_dataset,
                                   write_layout)
from case_jax.data.wtalc_layout import WtalcDataset


def __getattr__(name):
  # Imported on first use so that `python -m case_jax.data.synthetic` does not
  # find the module already imported by its package.
  if name == "write_synthetic_thumos":
    from case_jax.data.synthetic import write_synthetic_thumos
    return write_synthetic_thumos
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AcmnetDataset", "BasnetDataset", "FEATURE_FPS", "GroundTruth", "GtVideo",
    "LAYOUTS", "LayoutError", "LayoutWarning", "NoSplit", "Prefetcher",
    "SNIPPET_FRAMES", "VerifiedFiles", "config_classes", "read_class_file",
    "Segment", "SourceDataset", "THUMOS14_CLASSES", "TrainBatcher",
    "VideoDataset", "VideoRecord", "VideoSource", "VideoSpec", "WtalcDataset",
    "detect_layout", "epoch_order", "eval_batches", "load_ground_truth",
    "open_dataset",
    "read_gt", "read_split", "sample_test_indices", "sample_train_indices",
    "steps_per_epoch", "train_batch", "videos_from_dataset", "write_layout",
    "write_synthetic_thumos",
]
