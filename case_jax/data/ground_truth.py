"""Ground truth for evaluation (``GroundTruth``), one subset flat in arrays.

Built from the same parsers the dataset layouts use: ``gt_json.parse_gt``
for ActivityNet-style gt.json files and ``wtalc_files.read_annotations`` for
the W-TALC annotation arrays, so a file is checked the same way whether it is
trained on or evaluated against.  Shapes: M ground-truth instances, C
classes, V videos; segments in seconds, ``[start, end]``.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Mapping, Optional, Sequence

import numpy as np

from case_jax.data.gt_json import parse_gt, read_gt
from case_jax.data.records import GtVideo
from case_jax.data.wtalc_files import read_annotations

# The W-TALC annotation arrays evaluation needs, aligned by video index.
_WTALC_FILES = ("videoname.npy", "subset.npy", "segments.npy", "labels.npy",
                "classlist.npy")


@dataclasses.dataclass(frozen=True)
class GroundTruth:
  """Ground-truth instances of one subset, flat and in file order.

  class_names: (C,) class names in first-appearance order within the subset
    (the official ``activity_index``); mAP averages over exactly these.
  video_ids: (V,) ids of every video of the subset (with or without
    annotations), in file order.
  video: (M,) int64 index into ``video_ids``.
  label: (M,) int64 index into ``class_names``.
  segments: (M, 2) float64 ``[start, end]`` in seconds.
  subset, source: the subset name and where the GT came from (for messages).
  """
  class_names: tuple
  video_ids: tuple
  video: np.ndarray
  label: np.ndarray
  segments: np.ndarray
  subset: str
  source: str

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def num_instances(self) -> np.ndarray:
    """(C,) int64: instances per class (``npos`` of the AP)."""
    return np.bincount(self.label, minlength=self.num_classes)

  def for_class(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instances of class index ``c``: (video index, start, end), each (M_c,)."""
    keep = self.label == c
    return self.video[keep], self.segments[keep, 0], self.segments[keep, 1]


def _no_such_subset(source: str, subset: str, present) -> ValueError:
  return ValueError(
      f"{source}: no video has subset {subset!r}; subsets present: "
      f"{sorted(present)}. Pass one of them (--subset / subset=): THUMOS14 test "
      "is 'test'; its train split is 'validation' in ACM-Net/W-TALC files and "
      "'train' in BaS-Net's.")


def subset_ground_truth(gt: Mapping[str, GtVideo], subset: str, source: str,
                        classlist: Optional[Sequence[str]] = None
                        ) -> GroundTruth:
  """The videos of ``gt`` ({video_id: GtVideo}, file order) in ``subset``.

  classlist: when given, every label of the subset must be in it.
  Raises ValueError when no video has that subset.
  """
  known = None if classlist is None else set(classlist)
  video_ids, records, class_index = [], [], {}
  for vid, entry in gt.items():
    if entry.subset != subset:
      continue
    v = len(video_ids)
    video_ids.append(vid)
    for i, (start, end, label) in enumerate(entry.annotations):
      if known is not None and label not in known:
        raise ValueError(f"{source}: video {vid!r} segment {i}: label "
                         f"{label!r} is not in classlist.npy")
      class_index.setdefault(label, len(class_index))
      records.append((v, class_index[label], start, end))
  if not video_ids:
    raise _no_such_subset(source, subset, {e.subset for e in gt.values()})
  n = len(records)
  return GroundTruth(
      class_names=tuple(class_index),
      video_ids=tuple(video_ids),
      video=np.array([r[0] for r in records], np.int64).reshape(n),
      label=np.array([r[1] for r in records], np.int64).reshape(n),
      segments=np.array([r[2:] for r in records], np.float64).reshape(n, 2),
      subset=subset, source=source)


def ground_truth_from_dict(data: Mapping, subset: str = "test",
                           source: str = "<dict>") -> GroundTruth:
  """GT from a parsed ActivityNet-format json (``{"database": {vid: {...}}}``).

  Each video needs ``subset`` and ``annotations: [{"segment": [s, e],
  "label": name}]``; other fields (frames, url) are ignored.  Only videos
  with ``subset == subset`` are used (the official default is 'validation';
  CASE evaluates THUMOS14 on 'test').
  """
  return subset_ground_truth(parse_gt(data, source), subset, source)


def load_gt_json(path: str | os.PathLike, subset: str = "test") -> GroundTruth:
  """GT from an ActivityNet-format ``gt.json`` file; see ground_truth_from_dict."""
  return subset_ground_truth(read_gt(path), subset, str(path))


def load_wtalc_annotations(directory: str | os.PathLike,
                           subset: str = "test") -> GroundTruth:
  """GT from W-TALC "Thumos14reduced-Annotations" arrays in ``directory``.

  Uses videoname.npy (V,) bytes, subset.npy (V,) bytes, segments.npy (V,)
  object (per video a list of [start, end] seconds), labels.npy (V,) object
  (per video the class name of each segment) and classlist.npy (C,) bytes.
  In these files subset 'validation' is the train split and 'test' the test
  split.  Ambiguous_test.txt is not applied (the ActivityNet protocol that
  CASE uses does not drop predictions in ambiguous intervals).
  """
  directory = os.fspath(directory)
  missing = [f for f in _WTALC_FILES
             if not os.path.isfile(os.path.join(directory, f))]
  if missing:
    raise FileNotFoundError(f"{directory}: missing W-TALC annotation file(s) "
                            f"{missing}; expected {list(_WTALC_FILES)}")
  ann = read_annotations(directory, need_duration=False)
  return subset_ground_truth(ann["gt"], subset, directory,
                             classlist=ann["classlist"])


def load_ground_truth(path: str | os.PathLike,
                      subset: str = "test") -> GroundTruth:
  """GT from a ``gt.json`` file or a W-TALC annotation directory."""
  if os.path.isdir(path):
    return load_wtalc_annotations(path, subset)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such ground truth; pass an "
                            "ActivityNet-format gt.json or a W-TALC annotation "
                            "directory")
  return load_gt_json(path, subset)


def _some(ids: list, limit: int = 20) -> str:
  """A list of ids for a message, cut after ``limit``."""
  more = f" ... ({len(ids) - limit} more)" if len(ids) > limit else ""
  return str(ids[:limit])[:-1] + more + "]" if ids else "[]"


def check_split(gt: GroundTruth, video_ids: Sequence[str],
                name: str = "split") -> tuple[list, list]:
  """Warn when a split (the videos that get predictions) and the GT subset differ.

  Every GT instance of a subset video without predictions counts as a miss
  (e.g. BaS-Net lists 210 test videos while ACM-Net's gt.json has 212).
  Returns ``(only_in_split, only_in_gt)``, sorted video ids.
  """
  split, subset = set(video_ids), set(gt.video_ids)
  only_split, only_gt = sorted(split - subset), sorted(subset - split)
  if only_split or only_gt:
    warnings.warn(
        f"{name} and the {gt.subset!r} subset of {gt.source} disagree: "
        f"{len(only_split)} video(s) only in {name}: {_some(only_split)}; "
        f"{len(only_gt)} video(s) only in the GT: {_some(only_gt)}. GT of videos "
        "without predictions counts as missed; use a split file and GT that "
        "list the same videos to compare with published numbers.",
        stacklevel=2)
  return only_split, only_gt
