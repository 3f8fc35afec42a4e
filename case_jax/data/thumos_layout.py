"""Reader for the BaS-Net / ASL / CASE feature layout (THUMOS14 and the like).

Layout under a dataset root::

  ROOT/
    gt.json                                   # ActivityNet-style annotations
    split_train.txt, split_test.txt           # one video id per line
    features/{train,test}/{rgb,flow}/<video_id>.npy   # (n_snippets, D) float

``gt.json`` and the split files are read by ``gt_json`` (the format and the
THUMOS14 copies' differences are described there).  One ``VideoRecord`` per
video; a ``BasnetDataset`` is one split, checked on construction (files
present, rgb/flow snippet counts equal, feature dims consistent, class labels
known, split file vs gt.json).  Feature values are checked for NaN/inf
whenever they are read (at construction when eager).

``on_error="raise"`` refuses the root naming every bad video of each kind of
problem (missing files, rgb/flow lengths, dims, labels); ``on_error="skip"``
leaves bad videos out and reports them (``generic.SourceDataset``).
"""
from __future__ import annotations

import os
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from case_jax.data.generic import ON_ERROR, Shapes, SourceDataset, VideoSource
from case_jax.data.gt_json import (DEFAULT_GT_SUBSETS, check_split_vs_gt,
                                   classes_from_gt, read_gt, read_split)
from case_jax.data.records import (FEATURE_FPS, SNIPPET_FRAMES, GtVideo,
                                   LayoutError, name_some)

THUMOS14_CLASSES = (
    "BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk",
    "CliffDiving", "CricketBowling", "CricketShot", "Diving", "FrisbeeCatch",
    "GolfSwing", "HammerThrow", "HighJump", "JavelinThrow", "LongJump",
    "PoleVault", "Shotput", "SoccerPenalty", "TennisSwing", "ThrowDiscus",
    "VolleyballSpiking")
STREAMS = ("rgb", "flow")
SPLITS = ("train", "test")


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
# Feature files.
# ---------------------------------------------------------------------------
def feature_shape(path: str, split: str) -> tuple[int, int]:
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


def load_features(path: str) -> np.ndarray:
  """(n, D) float32, read-only; raises on NaN/inf."""
  arr = np.load(path, allow_pickle=False).astype(np.float32, copy=False)
  if not np.all(np.isfinite(arr)):
    rows = np.unique(np.nonzero(~np.isfinite(arr))[0])
    raise LayoutError(f"{path}: NaN or inf in snippets "
                      f"{name_some([str(r) for r in rows])}; regenerate the "
                      "features of this video")
  arr.setflags(write=False)
  return arr


# ---------------------------------------------------------------------------
# Whole-split refusals of on_error="raise": one message per kind of problem.
# ---------------------------------------------------------------------------
def _check_labels(gt: Mapping[str, GtVideo], ids: Iterable[str],
                  classes: Sequence[str], gt_file: str) -> None:
  known = set(classes)
  unknown = sorted({a[2] for v in ids for a in gt[v].annotations} - known)
  if unknown:
    raise LayoutError(f"{gt_file}: labels {name_some(unknown)} are not in the "
                      f"class list ({len(classes)} classes: "
                      f"{name_some(list(classes))}); pass classes=None to "
                      "take them from gt.json or fix the labels")


def _check_dims(dims: Mapping[str, Mapping[str, int]], expected: Optional[int],
                root: str, split: str) -> None:
  """dims: {stream: {video_id: D}}; raises unless each stream has one D."""
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
                        f"{want} (videos {name_some(bad)}); pass the right "
                        "feature_dim or regenerate these files")


def _scan_features(root: str, split: str, ids: Sequence[str],
                   feature_dim: Optional[int]) -> dict[str, Shapes]:
  """Every video's ((n, D_rgb), (n, D_flow)) from the file headers; raises
  on missing files, rgb/flow length mismatch or inconsistent dims."""
  missing, mismatched, shapes = [], [], {}
  for vid in ids:
    paths = [feature_path(root, split, s, vid) for s in STREAMS]
    absent = [p for p in paths if not os.path.isfile(p)]
    if absent:
      missing.extend(absent)
      continue
    rgb, flow = (feature_shape(p, split) for p in paths)
    if rgb[0] != flow[0]:
      mismatched.append(f"{vid} (rgb {rgb[0]}, flow {flow[0]})")
    shapes[vid] = (rgb, flow)
  if missing:
    raise LayoutError(f"missing feature files: {name_some(missing)}; "
                      f"{_layout_hint(split)}. Add the files or remove "
                      f"the ids from {split_path(root, split)}")
  if mismatched:
    raise LayoutError(
        f"{os.path.join(root, 'features', split)}: rgb and flow "
        f"snippet counts differ for {name_some(mismatched)}; both streams "
        "of a video must have one row per snippet (re-extract or trim to "
        "the shorter)")
  _check_dims({s: {v: sh[k][1] for v, sh in shapes.items()}
               for k, s in enumerate(STREAMS)}, feature_dim, root, split)
  return shapes


def _basnet_source(root: str, split: str, vid: str, gt: GtVideo,
                   shapes: Optional[Shapes]) -> VideoSource:
  """shapes: the probe's answer when already read (on_error="raise")."""
  paths = [feature_path(root, split, s, vid) for s in STREAMS]
  return VideoSource(
      video_id=vid, gt=gt, file=" and ".join(paths),
      probe=((lambda: shapes) if shapes is not None else
             (lambda: tuple(feature_shape(p, split) for p in paths))),
      load=lambda: tuple(load_features(p) for p in paths))


# ---------------------------------------------------------------------------
# The dataset.
# ---------------------------------------------------------------------------
class BasnetDataset(SourceDataset):
  """One split of a dataset root in the BaS-Net/CASE layout.

  Args:
    root: dataset root.
    split: "train" or "test" (selects split_<split>.txt and features/<split>).
    classes: class names in label order; None = sorted labels of gt.json
      (for THUMOS14: ``THUMOS14_CLASSES``).
    feature_dim: expected D of both streams (1024 for real I3D); None = infer,
      requiring every video of a stream to agree.
    eager: load and check all features now (else on each ``__getitem__``).
    on_error: "raise" (refuse the root, see Raises) or "skip" (leave bad
      videos out, listed in ``.skipped`` and a ``LayoutWarning``).
    gt_subsets: gt.json subset names that belong to this split; None =
      ``gt_json.DEFAULT_GT_SUBSETS[split]``.
    fps, snippet_frames: the features' time base (config data.fps /
      data.snippet_frames), carried by every record.

  Attributes: root, split and those of ``SourceDataset`` (video_ids (N,)
  in split-file order, lengths (N,) int64, classes (C,), rgb_dim, flow_dim,
  skipped, gt).
  Raises:
    LayoutError on a missing file, rgb/flow length mismatch, wrong dim,
    unknown label (on_error="raise"); split ids absent from gt.json;
    NaN/inf (when loaded).
  Warns:
    LayoutWarning when the split file and gt.json subsets disagree.
  """

  def __init__(self, root: str | os.PathLike, split: str, *,
               classes: Optional[Sequence[str]] = None,
               feature_dim: Optional[int] = None, eager: bool = False,
               on_error: str = "raise",
               gt_subsets: Optional[Sequence[str]] = None,
               fps: float = FEATURE_FPS, snippet_frames: int = SNIPPET_FRAMES):
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if on_error not in ON_ERROR:
      raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    self.root, self.split = os.fspath(root), split
    gt_file, split_file = gt_path(root), split_path(root, split)
    gt, ids = read_gt(gt_file), read_split(split_file)
    if not ids:
      raise LayoutError(f"{split_file}: no video ids; list one id per line")
    check_split_vs_gt(ids, gt, tuple(gt_subsets or DEFAULT_GT_SUBSETS[split]),
                      split_file, gt_file)
    classes = classes_from_gt(gt) if classes is None else tuple(classes)
    shapes = {}
    if on_error == "raise":
      # The layout's own whole-split messages, before the per-video checks
      # of SourceDataset (which then find nothing left to refuse).
      _check_labels(gt, ids, classes, gt_file)
      shapes = _scan_features(self.root, split, ids, feature_dim)
    super().__init__(
        [_basnet_source(self.root, split, v, gt[v], shapes.get(v))
         for v in ids],
        classes, feature_dim=feature_dim, eager=eager, on_error=on_error,
        origin=f"{self.root} (basnet, {split})", fps=fps,
        snippet_frames=snippet_frames)
