"""Reader for the BaS-Net / ASL / CASE feature layout (THUMOS14 and the like).

Layout under a dataset root::

  ROOT/
    gt.json                                   # ActivityNet-style annotations
    split_train.txt, split_test.txt           # one video id per line
    features/{train,test}/{rgb,flow}/<video_id>.npy   # (n_snippets, D) float

``gt.json`` is ``{"database": {video_id: {"subset": ..., "duration": s,
"annotations": [{"segment": [start_s, end_s], "label": name}, ...]}}}``.  The
ACM-Net copy of THUMOS14 names the training subset ``validation`` (200 videos)
and lists 212 ``test`` videos; the BaS-Net copy names it ``train``, lists 210
test videos and has no ``duration``.  Segment bounds may be numbers or numeric
strings.  Snippets are 16 frames at 25 fps (0.64 s).

One ``VideoRecord`` per video; a ``WTALDataset`` is one split, checked on
construction (files present, rgb/flow snippet counts equal, feature dims
consistent, class labels known, split file vs gt.json).  Feature values are
checked for NaN/inf whenever they are read (at construction when eager).
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple, Optional, Sequence

import numpy as np

THUMOS14_CLASSES = (
    "BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk",
    "CliffDiving", "CricketBowling", "CricketShot", "Diving", "FrisbeeCatch",
    "GolfSwing", "HammerThrow", "HighJump", "JavelinThrow", "LongJump",
    "PoleVault", "Shotput", "SoccerPenalty", "TennisSwing", "ThrowDiscus",
    "VolleyballSpiking")
FEATURE_FPS = 25.0
SNIPPET_FRAMES = 16
STREAMS = ("rgb", "flow")
SPLITS = ("train", "test")
# gt.json subset names accepted for each split (THUMOS14 convention: the
# official "validation" videos are the WTAL training set).
DEFAULT_GT_SUBSETS = {"train": ("train", "training", "validation"),
                      "test": ("test", "testing")}
_MAX_NAMED = 10   # ids named in one message before "and N more"


class LayoutError(ValueError):
  """A dataset root does not follow the expected layout or holds bad data."""


class LayoutWarning(UserWarning):
  """A dataset root is usable but inconsistent (e.g. split vs gt.json)."""


class Segment(NamedTuple):
  """One annotated action instance, in seconds."""
  start_s: float
  end_s: float
  class_index: int


class GtVideo(NamedTuple):
  """One gt.json entry. ``annotations``: ((start_s, end_s, label), ...)."""
  subset: str
  duration: Optional[float]
  annotations: tuple[tuple[float, float, str], ...]


@dataclass(frozen=True, eq=False)
class VideoRecord:
  """One video of a split, features and annotations.

  Attributes:
    video_id: file stem / gt.json key.
    rgb: (n, D_rgb) float32, read-only.
    flow: (n, D_flow) float32, read-only.
    labels: (C,) float32 multi-hot over the dataset's class list.
    segments: annotated instances, (start_s, end_s, class_index) each.
    duration: seconds (gt.json ``duration``, else n * seconds_per_snippet).
    fps, snippet_frames: the feature time base (0.64 s per snippet).
  """
  video_id: str
  rgb: np.ndarray
  flow: np.ndarray
  labels: np.ndarray
  segments: tuple[Segment, ...]
  duration: float
  fps: float = FEATURE_FPS
  snippet_frames: int = SNIPPET_FRAMES

  @property
  def num_snippets(self) -> int:
    return int(self.rgb.shape[0])

  @property
  def seconds_per_snippet(self) -> float:
    return self.snippet_frames / self.fps


# ---------------------------------------------------------------------------
# Small helpers.
# ---------------------------------------------------------------------------
def _name_some(items: Sequence[str]) -> str:
  items = list(items)
  shown = ", ".join(items[:_MAX_NAMED])
  rest = len(items) - _MAX_NAMED
  return shown + (f" and {rest} more" if rest > 0 else "")


def _layout_hint(split: str) -> str:
  return (f"expected ROOT/gt.json, ROOT/split_{split}.txt and "
          f"ROOT/features/{split}/{{rgb,flow}}/<video_id>.npy, each an "
          "(n_snippets, D) float array")


def feature_path(root: str | os.PathLike, split: str, stream: str,
                 video_id: str) -> str:
  """ROOT/features/<split>/<stream>/<video_id>.npy."""
  return os.path.join(os.fspath(root), "features", split, stream,
                      video_id + ".npy")


def split_path(root: str | os.PathLike, split: str) -> str:
  return os.path.join(os.fspath(root), f"split_{split}.txt")


def gt_path(root: str | os.PathLike) -> str:
  return os.path.join(os.fspath(root), "gt.json")


# ---------------------------------------------------------------------------
# Annotation and split files.
# ---------------------------------------------------------------------------
def _parse_bound(value, path: str, video_id: str) -> float:
  try:
    bound = float(value)
  except (TypeError, ValueError):
    raise LayoutError(f"{path}: video '{video_id}' has a segment bound "
                      f"{value!r} that is not a number; segments must be "
                      "[start_s, end_s] in seconds") from None
  if not np.isfinite(bound):
    raise LayoutError(f"{path}: video '{video_id}' has a non-finite segment "
                      f"bound {value!r}")
  return bound


def _parse_annotation(ann, path: str,
                      video_id: str) -> tuple[float, float, str]:
  if not isinstance(ann, Mapping) or "segment" not in ann or "label" not in ann:
    raise LayoutError(f"{path}: video '{video_id}' has an annotation {ann!r}; "
                      "each must be {\"segment\": [start_s, end_s], "
                      "\"label\": name}")
  seg = ann["segment"]
  if not isinstance(seg, (list, tuple)) or len(seg) != 2:
    raise LayoutError(f"{path}: video '{video_id}' has segment {seg!r}; "
                      "expected [start_s, end_s]")
  start, end = (_parse_bound(v, path, video_id) for v in seg)
  if end < start:
    raise LayoutError(f"{path}: video '{video_id}' has segment "
                      f"[{start}, {end}] that ends before it starts")
  return start, end, str(ann["label"])


def _parse_gt_entry(entry, path: str, video_id: str) -> GtVideo:
  if not isinstance(entry, Mapping) or "subset" not in entry:
    raise LayoutError(f"{path}: database entry '{video_id}' must be an object "
                      "with at least \"subset\" and \"annotations\"")
  anns = entry.get("annotations", [])
  if not isinstance(anns, list):
    raise LayoutError(f"{path}: \"annotations\" of '{video_id}' must be a list")
  duration = entry.get("duration")
  if duration is not None:
    duration = float(duration)
  return GtVideo(subset=str(entry["subset"]), duration=duration,
                 annotations=tuple(_parse_annotation(a, path, video_id)
                                   for a in anns))


def read_gt(path: str | os.PathLike) -> dict[str, GtVideo]:
  """Parses an ActivityNet-style gt.json. Returns {video_id: GtVideo}."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise LayoutError(f"{path}: annotation file not found; expected an "
                      "ActivityNet-style gt.json with {\"database\": "
                      "{video_id: {\"subset\", \"annotations\"}}}")
  try:
    with open(path) as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise LayoutError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(data, Mapping) or not isinstance(data.get("database"),
                                                      Mapping):
    raise LayoutError(f"{path}: missing the top-level \"database\" object "
                      "(ActivityNet-style gt.json expected)")
  return {str(vid): _parse_gt_entry(entry, path, str(vid))
          for vid, entry in data["database"].items()}


def read_split(path: str | os.PathLike) -> tuple[str, ...]:
  """Video ids of a split file, one per line (blank lines ignored)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise LayoutError(f"{path}: split file not found; expected one video id "
                      "per line")
  with open(path) as f:
    ids = tuple(line.strip() for line in f if line.strip())
  seen, dups = set(), []
  for vid in ids:
    if vid in seen:
      dups.append(vid)
    seen.add(vid)
  if dups:
    raise LayoutError(f"{path}: duplicate video ids {_name_some(dups)}; list "
                      "each video once")
  return ids


def classes_from_gt(gt: Mapping[str, GtVideo]) -> tuple[str, ...]:
  """Sorted labels used anywhere in gt.json (all subsets).

  For THUMOS14 this is exactly ``THUMOS14_CLASSES``, the released order.
  """
  return tuple(sorted({a[2] for v in gt.values() for a in v.annotations}))


# ---------------------------------------------------------------------------
# Consistency checks between files.
# ---------------------------------------------------------------------------
def _check_split_vs_gt(ids: Sequence[str], gt: Mapping[str, GtVideo],
                       subsets: Sequence[str], split_file: str,
                       gt_file: str) -> None:
  """Errors on ids missing from gt.json; warns on subset disagreements."""
  missing = [v for v in ids if v not in gt]
  if missing:
    raise LayoutError(f"{split_file}: videos {_name_some(missing)} are not in "
                      f"{gt_file}; add their annotations or remove them from "
                      "the split file")
  wrong = [v for v in ids if gt[v].subset not in subsets]
  if wrong:
    warnings.warn(f"{split_file}: videos {_name_some(wrong)} have a gt.json "
                  f"subset other than {list(subsets)} in {gt_file}",
                  LayoutWarning, stacklevel=3)
  listed = set(ids)
  unlisted = sorted(v for v, e in gt.items()
                    if e.subset in subsets and v not in listed)
  if unlisted:
    # An ActivityNet-style evaluator reads every gt.json video of the test
    # subset, so unlisted test videos would count as missed detections.
    warnings.warn(f"{gt_file}: videos {_name_some(unlisted)} have subset "
                  f"{list(subsets)} but are not in {split_file}; for the test "
                  "split an evaluator reading gt.json counts their instances "
                  "as misses", LayoutWarning, stacklevel=3)


def _check_labels(gt: Mapping[str, GtVideo], ids: Iterable[str],
                  classes: Sequence[str], gt_file: str) -> None:
  known = set(classes)
  unknown = sorted({a[2] for v in ids for a in gt[v].annotations} - known)
  if unknown:
    raise LayoutError(f"{gt_file}: labels {_name_some(unknown)} are not in the "
                      f"class list ({len(classes)} classes: "
                      f"{_name_some(list(classes))}); pass classes=None to "
                      "take them from gt.json or fix the labels")


def _check_segments_in_video(records_end: Mapping[str, float],
                             gt: Mapping[str, GtVideo], gt_file: str) -> None:
  late = [v for v, end in records_end.items()
          if any(a[1] > end + 1e-6 for a in gt[v].annotations)]
  if late:
    # Real THUMOS14 has such entries (e.g. video_test_0000950): kept as is.
    warnings.warn(f"{gt_file}: videos {_name_some(late)} have annotations "
                  "ending after the video (gt.json duration or features); "
                  "they are kept unchanged", LayoutWarning, stacklevel=3)


# ---------------------------------------------------------------------------
# Feature files.
# ---------------------------------------------------------------------------
def _feature_shape(path: str, split: str) -> tuple[int, int]:
  """(n, D) of a feature file, reading only its header."""
  if not os.path.isfile(path):
    raise LayoutError(f"{path}: feature file not found; {_layout_hint(split)}")
  try:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
  except ValueError as e:
    raise LayoutError(f"{path}: not a plain .npy array ({e}); "
                      f"{_layout_hint(split)}") from None
  if arr.ndim != 2 or arr.shape[0] < 1:
    raise LayoutError(f"{path}: shape {arr.shape}; {_layout_hint(split)} "
                      "with n_snippets >= 1")
  if not (np.issubdtype(arr.dtype, np.floating)
          or np.issubdtype(arr.dtype, np.integer)):
    raise LayoutError(f"{path}: dtype {arr.dtype}; features must be numeric")
  return int(arr.shape[0]), int(arr.shape[1])


def _load_features(path: str) -> np.ndarray:
  """(n, D) float32, read-only; raises on NaN/inf."""
  arr = np.load(path, allow_pickle=False).astype(np.float32, copy=False)
  if not np.all(np.isfinite(arr)):
    rows = np.unique(np.nonzero(~np.isfinite(arr))[0])
    raise LayoutError(f"{path}: NaN or inf in snippets "
                      f"{_name_some([str(r) for r in rows])}; regenerate the "
                      "features of this video")
  arr.setflags(write=False)
  return arr


def _check_dims(dims: Mapping[str, Mapping[str, int]], expected: Optional[int],
                root: str, split: str) -> dict[str, int]:
  """dims: {stream: {video_id: D}}. Returns {stream: D}."""
  out = {}
  for stream, per_video in dims.items():
    values = sorted(set(per_video.values()))
    want = expected if expected is not None else (
        values[0] if len(values) == 1 else None)
    if want is None:
      counts = {d: sum(1 for x in per_video.values() if x == d) for d in values}
      raise LayoutError(f"{os.path.join(root, 'features', split, stream)}: "
                        f"feature dims differ between videos ({counts} "
                        "videos per dim); all videos of a stream must share D")
    bad = [v for v, d in per_video.items() if d != want]
    if bad:
      example = feature_path(root, split, stream, bad[0])
      raise LayoutError(f"{example}: feature dim {per_video[bad[0]]}, expected "
                        f"{want} (videos {_name_some(bad)}); pass the right "
                        "feature_dim or regenerate these files")
    out[stream] = want
  return out


# ---------------------------------------------------------------------------
# The dataset.
# ---------------------------------------------------------------------------
class WTALDataset:
  """One split of a dataset root in the BaS-Net/CASE layout.

  Args:
    root: dataset root.
    split: "train" or "test" (selects split_<split>.txt and features/<split>).
    classes: class names in label order; None = sorted labels of gt.json
      (for THUMOS14: ``THUMOS14_CLASSES``).
    feature_dim: expected D of both streams (1024 for real I3D); None = infer,
      requiring every video of a stream to agree.
    eager: load and check all features now (else on each ``__getitem__``).
    gt_subsets: gt.json subset names that belong to this split; None =
      ``DEFAULT_GT_SUBSETS[split]``.

  Attributes:
    video_ids: (N,) tuple of ids, split-file order.
    lengths: (N,) int64 snippet counts.
    classes: (C,) tuple of names.
    rgb_dim, flow_dim: feature dims.
  Raises:
    LayoutError on a missing file, rgb/flow length mismatch, wrong dim,
    unknown label, split ids absent from gt.json, NaN/inf (when loaded).
  Warns:
    LayoutWarning when the split file and gt.json subsets disagree.
  """

  def __init__(self, root: str | os.PathLike, split: str, *,
               classes: Optional[Sequence[str]] = None,
               feature_dim: Optional[int] = None, eager: bool = False,
               gt_subsets: Optional[Sequence[str]] = None):
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    self.root = os.fspath(root)
    self.split = split
    gt_file, split_file = gt_path(root), split_path(root, split)
    self._gt = read_gt(gt_file)
    self.video_ids = read_split(split_file)
    if not self.video_ids:
      raise LayoutError(f"{split_file}: no video ids; list one id per line")
    subsets = tuple(gt_subsets or DEFAULT_GT_SUBSETS[split])
    _check_split_vs_gt(self.video_ids, self._gt, subsets, split_file, gt_file)
    self.classes = (classes_from_gt(self._gt) if classes is None
                    else tuple(classes))
    _check_labels(self._gt, self.video_ids, self.classes, gt_file)
    self._class_index = {c: i for i, c in enumerate(self.classes)}
    self.lengths, dims = self._scan_features(feature_dim)
    self.rgb_dim, self.flow_dim = dims["rgb"], dims["flow"]
    _check_segments_in_video(
        {v: self._duration(v, int(n)) for v, n in zip(self.video_ids,
                                                      self.lengths)},
        self._gt, gt_file)
    self._records = ([self._load(i) for i in range(len(self))] if eager
                     else None)

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  def __len__(self) -> int:
    return len(self.video_ids)

  def __getitem__(self, i: int) -> VideoRecord:
    if self._records is not None:
      return self._records[i]
    return self._load(i)

  def __iter__(self):
    return (self[i] for i in range(len(self)))

  def labels(self) -> np.ndarray:
    """(N, C) float32 multi-hot labels of every video, without features."""
    return np.stack([self._labels(v) for v in self.video_ids])

  # -- internals -------------------------------------------------------------
  def _scan_features(self, feature_dim):
    missing, mismatched = [], []
    lengths = np.zeros(len(self), np.int64)
    dims = {s: {} for s in STREAMS}
    for i, vid in enumerate(self.video_ids):
      paths = {s: feature_path(self.root, self.split, s, vid) for s in STREAMS}
      absent = [p for p in paths.values() if not os.path.isfile(p)]
      if absent:
        missing.extend(absent)
        continue
      shapes = {s: _feature_shape(p, self.split) for s, p in paths.items()}
      if shapes["rgb"][0] != shapes["flow"][0]:
        mismatched.append(f"{vid} (rgb {shapes['rgb'][0]}, flow "
                          f"{shapes['flow'][0]})")
      lengths[i] = shapes["rgb"][0]
      for s in STREAMS:
        dims[s][vid] = shapes[s][1]
    if missing:
      raise LayoutError(f"missing feature files: {_name_some(missing)}; "
                        f"{_layout_hint(self.split)}. Add the files or remove "
                        f"the ids from {split_path(self.root, self.split)}")
    if mismatched:
      raise LayoutError(
          f"{os.path.join(self.root, 'features', self.split)}: rgb and flow "
          f"snippet counts differ for {_name_some(mismatched)}; both streams "
          "of a video must have one row per snippet (re-extract or trim to "
          "the shorter)")
    return lengths, _check_dims(dims, feature_dim, self.root, self.split)

  def _duration(self, vid: str, n: int) -> float:
    d = self._gt[vid].duration
    return float(d) if d is not None else n * SNIPPET_FRAMES / FEATURE_FPS

  def _labels(self, vid: str) -> np.ndarray:
    labels = np.zeros(self.num_classes, np.float32)
    for _, _, name in self._gt[vid].annotations:
      labels[self._class_index[name]] = 1.0
    return labels

  def _load(self, i: int) -> VideoRecord:
    vid = self.video_ids[i]
    rgb = _load_features(feature_path(self.root, self.split, "rgb", vid))
    flow = _load_features(feature_path(self.root, self.split, "flow", vid))
    if rgb.shape[0] != self.lengths[i] or flow.shape[0] != self.lengths[i]:
      raise LayoutError(f"{feature_path(self.root, self.split, 'rgb', vid)}: "
                        "feature files changed since the dataset was opened")
    labels = self._labels(vid)
    labels.setflags(write=False)
    segments = tuple(Segment(s, e, self._class_index[name])
                     for s, e, name in self._gt[vid].annotations)
    return VideoRecord(video_id=vid, rgb=rgb, flow=flow, labels=labels,
                       segments=segments,
                       duration=self._duration(vid, rgb.shape[0]))
