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
and truncated files whenever they are read (at construction when eager or
check_values).

``on_error="raise"`` refuses the root naming every bad video of each kind of
problem (missing files, rgb/flow lengths, dims, labels); ``on_error="skip"``
leaves bad videos out and reports them (``generic.SourceDataset``).
"""
from __future__ import annotations

import collections
import os
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from case_jax.data.generic import (ON_ERROR, Shapes, SourceDataset,
                                   VideoSource, unknown_label_message)
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
  except (ValueError, EOFError, OSError) as e:
    # A truncated file fails here already (its header promises more bytes).
    raise LayoutError(f"{path}: cannot read it as a .npy array ({e}); the "
                      "file is truncated or damaged: copy or re-extract it "
                      f"again ({_layout_hint(split)})") from None
  if arr.ndim != 2 or arr.shape[0] < 1:
    raise LayoutError(f"{path}: shape {arr.shape}; {_layout_hint(split)} "
                      "with n_snippets >= 1")
  if not (np.issubdtype(arr.dtype, np.floating)
          or np.issubdtype(arr.dtype, np.integer)):
    raise LayoutError(f"{path}: dtype {arr.dtype}; features must be numeric")
  return int(arr.shape[0]), int(arr.shape[1])


def load_features(path: str) -> np.ndarray:
  """(n, D) as stored; ``generic.SourceDataset`` converts it to float32 and
  checks the values (NaN/inf) once, naming the video, stream and file."""
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, EOFError, OSError) as e:
    raise LayoutError(f"{path}: cannot read it as a .npy array ({e}); the "
                      "file is truncated or damaged: copy or re-extract it "
                      "again") from None


# ---------------------------------------------------------------------------
# Whole-split refusals of on_error="raise": one message per kind of problem.
# ---------------------------------------------------------------------------
def _check_labels(gt: Mapping[str, GtVideo], ids: Iterable[str],
                  classes: Sequence[str], gt_file: str) -> None:
  known = set(classes)
  bad = {v: sorted({a[2] for a in gt[v].annotations} - known) for v in ids}
  bad = {v: labels for v, labels in bad.items() if labels}
  if bad:
    labels = sorted({x for v in bad.values() for x in v})
    raise LayoutError(unknown_label_message(labels, list(bad), gt_file,
                                            classes))


def _check_dims(dims: Mapping[str, Mapping[str, int]], expected: Optional[int],
                root: str, split: str) -> None:
  """dims: {stream: {video_id: D}}; raises unless each stream has one D."""
  for stream, per_video in dims.items():
    counts = collections.Counter(per_video.values())
    # Without an expected D, the width most videos have is the right one and
    # the others are named (the odd video is the one to fix).
    want = expected if expected is not None else counts.most_common(1)[0][0]
    bad = [v for v, d in per_video.items() if d != want]
    if bad:
      example = feature_path(root, split, stream, bad[0])
      why, fix = (("the given feature_dim", "pass the right feature_dim or "
                   "regenerate these files") if expected is not None else
                  (f"the width of {counts[want]} of {len(per_video)} videos",
                   "regenerate these files with the others' extractor"))
      raise LayoutError(f"{example}: feature dim {per_video[bad[0]]}, "
                        f"expected {want} ({stream} stream: {why}); odd "
                        f"videos: {name_some(bad)}; {fix}")


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
      load=lambda: tuple(load_features(p) for p in paths),
      paths=tuple(paths))


# ---------------------------------------------------------------------------
# The dataset.
# ---------------------------------------------------------------------------
class BasnetDataset(SourceDataset):
  """One split of a dataset root in the BaS-Net/CASE layout.

  Args:
    root: dataset root.
    split: "train" or "test" (selects split_<split>.txt and features/<split>).
    classes: class names in label order; None = sorted labels of this
      split's videos (the rule for the training split; the test split is
      opened with the training split's list, see ``classes``).
    feature_dim: expected D of both streams (1024 for real I3D); None = infer,
      requiring every video of a stream to agree.
    eager: load and check all features now (else on each ``__getitem__``).
    on_error: "raise" (refuse the root, see Raises) or "skip" (leave bad
      videos out, listed in ``.skipped`` and a ``LayoutWarning``).
    gt_subsets: gt.json subset names that belong to this split; None =
      ``gt_json.DEFAULT_GT_SUBSETS[split]``.
    fps, snippet_frames: the features' time base (config data.fps /
      data.snippet_frames), carried by every record.
    check_values, verified: read every video now, remembering verified
      files (``generic.SourceDataset``).

  Attributes: root, split and those of ``SourceDataset`` (video_ids (N,)
  in split-file order, lengths (N,) int64, classes (C,), rgb_dim, flow_dim,
  skipped, gt).
  Raises:
    NoSplit when split_<split>.txt does not exist (no such split);
    LayoutError on a missing or truncated file, rgb/flow length mismatch,
    wrong dim, unknown label, split ids absent from gt.json, NaN/inf
    (on_error="raise"; with "skip" those videos are left out and listed).
  Warns:
    LayoutWarning when the split file and gt.json subsets disagree.
  """

  def __init__(self, root: str | os.PathLike, split: str, *,
               classes: Optional[Sequence[str]] = None,
               feature_dim: Optional[int] = None, eager: bool = False,
               on_error: str = "raise",
               gt_subsets: Optional[Sequence[str]] = None,
               fps: float = FEATURE_FPS, snippet_frames: int = SNIPPET_FRAMES,
               check_values: bool = False, verified=None):
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if on_error not in ON_ERROR:
      raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    self.root, self.split = os.fspath(root), split
    gt_file, split_file = gt_path(root), split_path(root, split)
    gt, ids = read_gt(gt_file), read_split(split_file)
    if not ids:
      raise LayoutError(f"{split_file}: no video ids; list one id per line")
    rejected, found = check_split_vs_gt(
        ids, gt, tuple(gt_subsets or DEFAULT_GT_SUBSETS[split]), split_file,
        gt_file, skip=on_error == "skip")
    ids = [v for v in ids if v in gt]
    classes = classes_from_gt(gt, ids) if classes is None else tuple(classes)
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
        snippet_frames=snippet_frames, check_values=check_values,
        verified=verified, gt_file=gt_file, rejected=rejected)
    self.gt_subset = found   # the gt.json subset of this split, as found
