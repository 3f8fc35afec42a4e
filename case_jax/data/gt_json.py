"""The one parser of ActivityNet-style ``gt.json`` files and split files.

Used by the BaS-Net and ACM-Net layouts and by evaluation
(``ground_truth.load_gt_json``).  ``gt.json`` is ``{"database": {video_id:
{"subset": ..., "duration": s, "annotations": [{"segment": [start_s, end_s],
"label": name}, ...]}}}``.  The ACM-Net copy of THUMOS14 names the training
subset ``validation`` (200 videos) and lists 212 ``test`` videos; the BaS-Net
copy names it ``train``, lists 210 test videos and has no ``duration``.
Segment bounds may be numbers or numeric strings.  A split file lists one
video id per line.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Mapping, Optional, Sequence

import numpy as np

from case_jax.data.records import (GtVideo, LayoutError, LayoutWarning,
                                   NoSplit, name_some, repeated)

# gt.json subset names accepted for each split.  "validation" is on both
# sides: THUMOS14's official validation videos are the WTAL training set,
# ActivityNet's are its test set; the names a split's videos actually carry
# decide (``split_subset``), so training/validation, train/val,
# validation/test and train/test all work.
DEFAULT_GT_SUBSETS = {"train": ("train", "training", "validation"),
                      "test": ("test", "testing", "validation", "val")}


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


def _parse_entry(entry, path: str, video_id: str) -> GtVideo:
  if not isinstance(entry, Mapping) or "subset" not in entry:
    raise LayoutError(f"{path}: database entry '{video_id}' must be an object "
                      "with at least \"subset\" and \"annotations\"")
  anns = entry.get("annotations", [])
  if not isinstance(anns, list):
    raise LayoutError(f"{path}: \"annotations\" of '{video_id}' must be a list")
  duration = entry.get("duration")
  if duration is not None:
    try:
      duration = float(duration)
    except (TypeError, ValueError):
      raise LayoutError(f"{path}: \"duration\" of '{video_id}' is "
                        f"{duration!r}; give seconds as a number or leave "
                        "it out") from None
  return GtVideo(subset=str(entry["subset"]), duration=duration,
                 annotations=tuple(_parse_annotation(a, path, video_id)
                                   for a in anns))


def parse_gt(data, source: str) -> dict[str, GtVideo]:
  """A loaded gt.json object -> {video_id: GtVideo}, in file order.

  source: the file (or a description) named in errors.
  """
  if not isinstance(data, Mapping) or not isinstance(data.get("database"),
                                                      Mapping):
    raise LayoutError(f"{source}: missing the top-level \"database\" object "
                      "(ActivityNet-style gt.json expected)")
  return {str(vid): _parse_entry(entry, source, str(vid))
          for vid, entry in data["database"].items()}


def read_gt(path: str | os.PathLike) -> dict[str, GtVideo]:
  """Parses an ActivityNet-style gt.json. Returns {video_id: GtVideo}."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise LayoutError(f"{path}: annotation file not found; expected an "
                      "ActivityNet-style gt.json with {\"database\": "
                      "{video_id: {\"subset\", \"annotations\"}}}")
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise LayoutError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg} "
                      f"at line {e.lineno}, column {e.colno}; fix the file "
                      "there (or restore it from the release)") from None
  except UnicodeDecodeError as e:
    raise LayoutError(f"{path}: not UTF-8 text (byte {e.start}); restore the "
                      "annotation file from the release") from None
  return parse_gt(data, path)


def read_split(path: str | os.PathLike) -> tuple[str, ...]:
  """Video ids of a split file, one per line (blank lines ignored)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    # NoSplit: a dataset without this split (e.g. no test split) is usable
    # for training; any other problem of a split is a LayoutError.
    raise NoSplit(f"{path}: split file not found; expected one video id "
                  "per line")
  with open(path) as f:
    ids = tuple(line.strip() for line in f if line.strip())
  dups = repeated(ids)
  if dups:
    raise LayoutError(f"{path}: duplicate video ids {name_some(dups)}; list "
                      "each video once")
  return ids


def classes_from_gt(gt: Mapping[str, GtVideo],
                    ids: Optional[Sequence[str]] = None) -> tuple[str, ...]:
  """Sorted labels of the videos ``ids`` (None: all of gt.json).

  The rule for a dataset without a fixed class list is the labels of its
  training split (``ids`` = the training videos).  For THUMOS14 either
  gives exactly ``thumos_layout.THUMOS14_CLASSES``, the released order.
  """
  videos = gt.values() if ids is None else (gt[v] for v in ids if v in gt)
  return tuple(sorted({a[2] for v in videos for a in v.annotations}))


def split_subset(ids: Sequence[str], gt: Mapping[str, GtVideo],
                 subsets: Sequence[str]) -> Optional[str]:
  """The gt.json subset of a split as found: the most common of ``subsets``
  among its listed videos (ties: the earlier name in ``subsets``); None
  when none of its videos has one of them."""
  counts = {}
  for v in ids:
    if v in gt and gt[v].subset in subsets:
      counts[gt[v].subset] = counts.get(gt[v].subset, 0) + 1
  if not counts:
    return None
  return max(subsets, key=lambda s: (counts.get(s, 0), -subsets.index(s)))


def check_split_vs_gt(ids: Sequence[str], gt: Mapping[str, GtVideo],
                      subsets: Sequence[str], split_file: str,
                      gt_file: str, *, skip: bool = False
                      ) -> tuple[tuple[tuple[str, str], ...], Optional[str]]:
  """Errors on ids missing from gt.json (with ``skip``: returns them as
  ((video_id, reason), ...)); warns on subset disagreements, judged against
  the split's subset as found (``split_subset``).  Returns (rejected,
  subset as found)."""
  missing = [v for v in ids if v not in gt]
  fix = (f"add their annotations to {gt_file} or remove the lines from "
         f"{split_file}")
  if missing and not skip:
    raise LayoutError(f"{split_file}: videos {name_some(missing)} are not in "
                      f"{gt_file}; {fix}")
  rejected = tuple((v, f"{split_file}: video '{v}' is not in {gt_file}; "
                    f"{fix}") for v in missing)
  ids = [v for v in ids if v in gt]
  found = split_subset(ids, gt, tuple(subsets))
  if found is not None:
    subsets = (found,)
  wrong = [v for v in ids if gt[v].subset not in subsets]
  if wrong:
    warnings.warn(f"{split_file}: videos {name_some(wrong)} have a gt.json "
                  f"subset other than {list(subsets)} in {gt_file}",
                  LayoutWarning, stacklevel=3)
  listed = set(ids)
  unlisted = sorted(v for v, e in gt.items()
                    if e.subset in subsets and v not in listed)
  if unlisted:
    # An ActivityNet-style evaluator reads every gt.json video of the test
    # subset, so unlisted test videos would count as missed detections.
    warnings.warn(f"{gt_file}: videos {name_some(unlisted)} have subset "
                  f"{list(subsets)} but are not in {split_file}; for the test "
                  "split an evaluator reading gt.json counts their instances "
                  "as misses", LayoutWarning, stacklevel=3)
  return rejected, found


def gt_to_json(gt: Mapping[str, GtVideo]) -> dict:
  """{video_id: GtVideo} -> the ActivityNet-style object ``parse_gt``
  reads back (a missing duration is left out, as parse_gt allows)."""
  database = {}
  for vid, v in gt.items():
    entry = {"subset": v.subset,
             "annotations": [{"segment": [float(s), float(e)], "label": lab}
                             for s, e, lab in v.annotations]}
    if v.duration is not None:
      entry["duration"] = float(v.duration)
    database[vid] = entry
  return {"database": database}
