"""TFDS builders preparing a raw release as array_record, read without TF.

Optional: needs the ``data`` extra (tensorflow-datasets, importlib_resources)
but never TensorFlow.  Import this module only when you need it; nothing in
``case_jax.data`` imports it.

Prepare (the ``tfds`` command line needs TensorFlow, so use ours)::

  python -m case_jax.data.prepare --dataset=thumos14 --layout=basnet \
      --manual_dir=/path/to/THUMOS14 --data_dir=~/tensorflow_datasets

``manual_dir`` holds the release as downloaded, in the layout named by the
builder config (thumos14: basnet | wtalc | acmnet; activitynet12: wtalc;
activitynet13: acmnet).  Read back::

  ds = TFDSDataset("thumos14/basnet", "train", data_dir=...)

a sequence of ``VideoRecord`` like the raw readers, same order, so
``train_batch`` / ``eval_batches`` give identical batches.

Stored example: video_id (text), index (position in the split), rgb / flow
flattened float32 with num_snippets and dim (any D without a config per
width), labels (C,) float32, segments (k, 2) and duration as float64 seconds
(kept as int64 bit patterns, exact), segment_labels (k,) class indices.

Next to the prepared files (``prepared_file``) the builder stores
``classes.txt``, the class list (given to ``prepare``, else the sorted labels
of the release's training split: for THUMOS14 the released order), and
``gt.json``, the release's ground truth in the ActivityNet form (W-TALC
annotation arrays converted; ids as the examples spell them), which
evaluation reads for ``data.layout="tfds"``.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

from case_jax import fileio
from case_jax.data.acmnet_layout import ANET_PREFIX
from case_jax.data.gt_json import gt_to_json, read_gt
from case_jax.data.layouts import open_dataset
from case_jax.data.records import (FEATURE_FPS, SNIPPET_FRAMES, LayoutError,
                                   Segment, VideoRecord)
from case_jax.data.wtalc_files import read_annotations
from case_jax.data.wtalc_layout import find_name

CLASSES_FILE = "classes.txt"
GT_FILE = "gt.json"


class _Config(tfds.core.BuilderConfig):
  def __init__(self, *, layout: str, **kwargs):
    super().__init__(**kwargs)
    self.layout = layout


def _features() -> tfds.features.FeaturesDict:
  f = tfds.features
  return f.FeaturesDict({
      "video_id": f.Text(),
      "index": np.int64,
      "num_snippets": np.int64,
      "dim": np.int64,
      "rgb": f.Tensor(shape=(None,), dtype=np.float32),
      "flow": f.Tensor(shape=(None,), dtype=np.float32),
      "labels": f.Tensor(shape=(None,), dtype=np.float32),
      # float64 seconds stored as their int64 bit patterns: the example
      # proto keeps floats as float32, which would move 75.9 to 75.90000153.
      "segments_f64": f.Tensor(shape=(None, 2), dtype=np.int64),
      "segment_labels": f.Tensor(shape=(None,), dtype=np.int64),
      "duration_f64": np.int64,
  })


class _WTALBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared body: one example per video of the raw release's splits."""
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Class list from the release (or given), and "
                            "the ground truth stored as gt.json."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the feature release in manual_dir, in the layout of the config: "
      "basnet = gt.json, split_{train,test}.txt, features/{train,test}/"
      "{rgb,flow}/<vid>.npy; wtalc = <NAME>-I3D-JOINTFeatures.npy and "
      "<NAME>-Annotations/; acmnet = gt.json, split files, per-video (n, 2D) "
      ".npy under features/<split> or <split>/ (validation/ for the test "
      "split).")
  def __init__(self, *, classes: Optional[Sequence[str]] = None, **kwargs):
    # classes: the list to prepare with (prepare --classes); None = derived.
    super().__init__(**kwargs)
    self.given_classes = tuple(classes) if classes else None

  def _info(self) -> tfds.core.DatasetInfo:
    # No shuffling: examples keep the release's video order.
    return self.dataset_info_from_configs(features=_features(),
                                          disable_shuffling=True)

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    layout = self.builder_config.layout
    # Both splits in one class list: the given one, else the training
    # split's labels (the rule of case_jax.data.classes).
    classes = self.given_classes or open_dataset(root, "train", layout).classes
    splits = {split: open_dataset(root, split, layout, classes=classes)
              for split in ("train", "test")}
    self._ground_truth = _release_gt(root, layout, [
        v for ds in splits.values() for v in ds.video_ids])
    return {split: self._generate_examples(ds)
            for split, ds in splits.items()}

  def _generate_examples(self, ds):
    # Written here, not in _split_generators: data_dir is the folder being
    # prepared only while examples are generated.
    self._save_prepared(ds.classes)
    for i in range(len(ds)):
      r = ds[i]
      # With shuffling disabled TFDS orders examples by key: a zero-padded
      # position keeps the release order (what train_batch indexes).
      yield f"{i:09d}", {
          "video_id": r.video_id, "index": i,
          "num_snippets": r.num_snippets, "dim": r.rgb.shape[1],
          "rgb": r.rgb.reshape(-1), "flow": r.flow.reshape(-1),
          "labels": r.labels,
          "segments_f64": np.array([[s.start_s, s.end_s] for s in
                                    r.segments], np.float64).reshape(
                                        -1, 2).view(np.int64),
          "segment_labels": np.array([s.class_index for s in r.segments],
                                     np.int64),
          "duration_f64": np.float64(r.duration).view(np.int64)}

  def _save_prepared(self, classes: Sequence[str]) -> None:
    os.makedirs(self.data_dir, exist_ok=True)
    with open(os.path.join(self.data_dir, CLASSES_FILE), "w") as f:
      f.write("".join(c + "\n" for c in classes))
    fileio.write_json(os.path.join(self.data_dir, GT_FILE),
                      gt_to_json(self._ground_truth))


def _release_gt(root: str, layout: str, video_ids: Sequence[str]) -> dict:
  """The release's annotations {video_id: GtVideo}, keyed like the
  examples (ACM-Net features may add 'v_' to gt.json's ids)."""
  if layout == "wtalc":
    gt = read_annotations(os.path.join(root, find_name(root) + "-Annotations"),
                          need_duration=False)["gt"]
  else:
    gt = read_gt(os.path.join(root, GT_FILE))
  ids = set(video_ids)
  return {(ANET_PREFIX + k if k not in ids and ANET_PREFIX + k in ids else k): v
          for k, v in gt.items()}


class Thumos14(_WTALBuilder):
  """THUMOS14 I3D features (20 classes), from any of the three layouts."""
  BUILDER_CONFIGS = [_Config(name=l, layout=l, description=f"{l} layout")
                     for l in ("basnet", "wtalc", "acmnet")]


class Activitynet12(_WTALBuilder):
  """ActivityNet 1.2 in the W-TALC release (100 classes)."""
  BUILDER_CONFIGS = [_Config(name="wtalc", layout="wtalc")]


class Activitynet13(_WTALBuilder):
  """ActivityNet 1.3 in the ACM-Net release (200 classes, v_ ids)."""
  BUILDER_CONFIGS = [_Config(name="acmnet", layout="acmnet")]


class Synthetic(_WTALBuilder):
  """The project's synthetic data (case_jax.data.synthetic; test/demo)."""
  BUILDER_CONFIGS = [_Config(name="basnet", layout="basnet")]


BUILDERS = {"thumos14": Thumos14, "activitynet12": Activitynet12,
            "activitynet13": Activitynet13, "synthetic": Synthetic}


def prepare(dataset: str, manual_dir: str, data_dir: str,
            layout: Optional[str] = None,
            classes: Optional[Sequence[str]] = None
            ) -> tfds.core.DatasetBuilder:
  """Prepares a release as array_record under data_dir; returns the builder.
  ``classes``: the class list; None = the training split's labels."""
  cls = BUILDERS[dataset]
  config = layout or cls.BUILDER_CONFIGS[0].name
  builder = cls(config=config, data_dir=data_dir, classes=classes)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
      file_format="array_record")
  return builder


class TFDSDataset:
  """A prepared split as a sequence of ``VideoRecord`` (a ``VideoDataset``).

  Args:
    name: "thumos14/basnet" etc. (dataset/config[:version]).
    split: "train" or "test".
    data_dir: where ``prepare`` wrote it.
    fps, snippet_frames: the features' time base (config data.fps /
      data.snippet_frames), carried by every record.
  Attributes: video_ids (N,), lengths (N,) int64, classes (C,), rgb_dim,
  flow_dim, fps, snippet_frames, skipped (always empty: ``prepare``
  refuses a release with bad videos).  Reads through ``tfds.data_source``
  (no TensorFlow).
  """
  skipped = ()

  def __init__(self, name: str, split: str, *, data_dir: str,
               fps: float = FEATURE_FPS, snippet_frames: int = SNIPPET_FRAMES):
    self.fps, self.snippet_frames = fps, snippet_frames
    prepared_builder(name, data_dir)  # else data_source would try to build it
    self.source = tfds.data_source(name, split=split, data_dir=data_dir)
    path = prepared_file(name, data_dir, CLASSES_FILE)
    if not os.path.isfile(path):
      raise LayoutError(f"{path}: class list not found; re-run "
                        "python -m case_jax.data.prepare for this dataset")
    with open(path) as f:
      self.classes = tuple(line.strip() for line in f if line.strip())
    meta = [self.source[i] for i in range(len(self.source))]
    if [int(m["index"]) for m in meta] != list(range(len(meta))):
      raise LayoutError(f"{name} ({split}): examples are out of release order"
                        "; prepare again with this version of the builder")
    self.video_ids = tuple(_text(m["video_id"]) for m in meta)
    self.lengths = np.array([int(m["num_snippets"]) for m in meta], np.int64)
    self.rgb_dim = self.flow_dim = int(meta[0]["dim"]) if meta else 0
    self._labels = np.stack([m["labels"] for m in meta]).astype(np.float32)

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  def __len__(self) -> int:
    return len(self.video_ids)

  def labels(self) -> np.ndarray:
    """(N, C) float32."""
    return self._labels.copy()

  def __getitem__(self, i: int) -> VideoRecord:
    ex = self.source[int(i)]
    n, d = int(ex["num_snippets"]), int(ex["dim"])
    arrays = []
    for key in ("rgb", "flow", "labels"):
      a = np.asarray(ex[key], np.float32)
      a = a.reshape(n, d) if key != "labels" else a
      a.setflags(write=False)
      arrays.append(a)
    bounds = np.asarray(ex["segments_f64"], np.int64).view(np.float64)
    segments = tuple(Segment(float(s), float(e), int(c)) for (s, e), c in
                     zip(bounds.reshape(-1, 2), ex["segment_labels"]))
    return VideoRecord(video_id=_text(ex["video_id"]), rgb=arrays[0],
                       flow=arrays[1], labels=arrays[2], segments=segments,
                       duration=float(np.int64(ex["duration_f64"]).view(
                           np.float64)), fps=self.fps,
                       snippet_frames=self.snippet_frames)

  def __iter__(self):
    return (self[i] for i in range(len(self)))


def prepared_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """The builder of ``name`` ("thumos14/basnet"), refused (``LayoutError``)
  unless it is prepared in ``data_dir`` at this code's version."""
  known = [f"{k}/{c.name}" for k, cls in BUILDERS.items()
           for c in cls.BUILDER_CONFIGS]
  if name.split(":")[0] not in known:
    raise LayoutError(f"data.tfds_name={name!r} is not a prepared-dataset "
                      f"name; use one of {known}")
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    raise LayoutError(
        f"{builder.data_dir}: {name} version {builder.version} is not prepared"
        f" in data.root={data_dir}; run python -m case_jax.data.prepare "
        f"--dataset={name.split('/')[0]} --layout={builder.builder_config.name}"
        f" --manual_dir=<release> --data_dir={data_dir} (data prepared by an "
        "older version must be prepared again)")
  return builder


def prepared_file(name: str, data_dir: str, filename: str) -> str:
  """Path of a file stored with the prepared dataset ``name`` (classes.txt,
  gt.json): the folder of its array_record files."""
  return os.path.join(os.fspath(prepared_builder(name, data_dir).data_dir),
                      filename)


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)
