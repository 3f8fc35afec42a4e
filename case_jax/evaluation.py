"""Evaluation on the host (numpy): detection mAP of the official ActivityNet
protocol (as CASE runs it on THUMOS14), and its CLI.  Inputs: detection_set
(detections); outputs: outputs.format_map_table and result_to_json.

Detection mAP follows the official ``ANETdetection`` algorithm step by step
(official_code_notes.md §5; CASE's call in §3.10): ground truth of one subset,
classes in first-appearance order, per-class greedy matching at each tIoU
threshold, VOC all-point interpolated AP, mean over the classes of the GT
subset.  The code is written from that description; the only intended
differences are documented where they occur (NaN inputs are rejected, an
unknown label raises ``ValueError`` instead of ``KeyError``, and the optional
``tie_order='stable'``).

Units: segments in seconds, ``[start, end]``.  Shapes: M ground-truth
instances, N detections, T tIoU thresholds, C classes, V videos.

CLI::

  python -m case_jax.evaluation GT.json DETECTIONS.json [--subset test]
      [--tiou 0.1:0.7:7] [--json OUT] [--tie-order numpy|stable]
      [--split split_test.txt] [--per-class] [--strict] [--verbose]

GT may also be a W-TALC annotation directory (videoname.npy, subset.npy, ...).
Detections of videos outside the GT subset are warned about (refused with
--strict); other bad input is refused in a few lines, exit status 2.
The matching and AP core is case_jax/ap_matching.py.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from case_jax import detection_set, errors, outputs
# TIE_ORDERS, segment_tiou and interpolated_average_precision are also this
# module's public API (their home is ap_matching).
from case_jax.ap_matching import (  # noqa: F401
    TIE_ORDERS, average_precisions, check_thresholds,
    interpolated_average_precision, segment_tiou)
from case_jax.data.ground_truth import (GroundTruth, check_split,
                                        load_ground_truth)
from case_jax.data.gt_json import read_split

THUMOS_TIOUS = np.linspace(0.1, 0.7, 7)          # CASE / most THUMOS14 papers
ACTIVITYNET_TIOUS = np.linspace(0.5, 0.95, 10)   # official ActivityNet default

# name, first, last, step: reported when every grid threshold was evaluated.
_SUMMARIES = (
    ("AVG(0.1:0.5)", 0.1, 0.5, 0.1),
    ("AVG(0.3:0.7)", 0.3, 0.7, 0.1),
    ("AVG(0.1:0.7)", 0.1, 0.7, 0.1),
    ("AVG(0.5:0.95)", 0.5, 0.95, 0.05),
)


# ---------------------------------------------------------------------------
# One class.
# ---------------------------------------------------------------------------
def average_precision_detection(gt_videos, gt_segments, det_videos, det_scores,
                                det_segments, tiou_thresholds=THUMOS_TIOUS, *,
                                tie_order: str = "numpy") -> np.ndarray:
  """AP of one class at each tIoU threshold, as the official per-class routine.

  gt_videos: (M,) video ids (any hashable) of the class's GT instances;
  gt_segments: (M, 2) seconds; det_videos: (N,) ids; det_scores: (N,);
  det_segments: (N, 2) seconds; tiou_thresholds: (T,).  Returns (T,) float64.

  Algorithm: rank detections by score; for each threshold t and detection in
  rank order, walk the GTs of its video in descending tIoU: tIoU < t -> FP
  and stop; GT already matched at t -> next GT; else TP, the GT is matched,
  stop; walk exhausted (or no GT in the video) -> FP.  AP is the VOC
  all-point interpolated area under the precision/recall curve, recall over
  npos = M.  No detections -> AP 0.

  tie_order='numpy' (default) ranks scores and GT walks with
  ``np.argsort(x)[::-1]`` and numpy's default unstable sort, exactly as the
  official code does with the installed numpy; equal scores (and equal tIoU)
  are then ordered by the sort implementation, which changed between numpy
  1.23 and 2.x and with SIMD support of the CPU, so tied inputs can score
  differently across installs.  tie_order='stable' is version-independent:
  descending, ties in input order (detections in input order; GTs in input
  order, i.e. the earlier instance is tried first).
  """
  gt_seg = np.asarray(gt_segments, np.float64).reshape(-1, 2)
  det_seg = np.asarray(det_segments, np.float64).reshape(-1, 2)
  det_score = np.asarray(det_scores, np.float64).reshape(-1)
  if np.isnan(det_score).any() or np.isnan(det_seg).any() or np.isnan(gt_seg).any():
    raise ValueError("evaluation.average_precision_detection: NaN in scores or "
                     "segments; drop or fix those entries")
  names = {v: i for i, v in enumerate(dict.fromkeys(list(gt_videos)))}
  gt_video = np.array([names[v] for v in gt_videos], np.int64).reshape(-1)
  det_video = np.array([names.get(v, -1) for v in det_videos], np.int64).reshape(-1)
  if not (len(gt_video) == len(gt_seg) and len(det_video) == len(det_score)
          == len(det_seg)):
    raise ValueError("evaluation.average_precision_detection: gt_videos and "
                     "gt_segments, and det_videos, det_scores and det_segments "
                     "must have matching lengths")
  if len(gt_video) == 0:
    raise ValueError("evaluation.average_precision_detection: no GT instances "
                     "(npos = 0); AP is undefined")
  ap = average_precisions(gt_video, np.zeros_like(gt_video), gt_seg,
                           max(len(names), 1), det_video,
                           np.zeros_like(det_video), det_score, det_seg, 1,
                           tiou_thresholds, tie_order)
  return ap[:, 0]


# ---------------------------------------------------------------------------
# Whole-dataset evaluation.
# ---------------------------------------------------------------------------
def _codes(values: np.ndarray, index: Mapping[str, int]) -> np.ndarray:
  """(N,) ``index[str(v)]`` of each value, -1 when absent.  One dict lookup
  per value (in C, through map): at ActivityNet size far faster than
  np.unique on strings."""
  items = values.tolist()
  codes = np.fromiter(map(index.get, items, itertools.repeat(-1)), np.int64,
                      count=len(items))
  for i in np.flatnonzero(codes < 0):      # a non-str value: its str()
    if not isinstance(items[i], str):
      codes[i] = index.get(str(items[i]), -1)
  return codes


def _label_indices(gt: GroundTruth, dets: detection_set.Detections) -> np.ndarray:
  """(N,) class index of each detection; unknown names raise BadDetections
  (a ValueError) naming them."""
  codes = _codes(dets.labels, {name: i for i, name in enumerate(gt.class_names)})
  if (codes < 0).any():
    unknown = sorted({str(n) for n in dets.labels[codes < 0].tolist()})
    raise detection_set.BadDetections(
        f"{dets.source}: prediction label {unknown[0]!r} is not a class of the "
        f"{gt.subset!r} subset of {gt.source} (unknown labels: {unknown}; GT "
        f"classes: {list(gt.class_names)}). Fix the labels or evaluate against "
        "the matching ground truth and subset.")
  return codes


def videos_not_in_gt(gt: GroundTruth, dets: detection_set.Detections) -> list:
  """Sorted ids of the videos with detections that are not in the GT subset
  (all their detections count as false positives)."""
  return sorted({str(v) for v in dets.video_ids.tolist()} - set(gt.video_ids))


def _video_indices(gt: GroundTruth, dets: detection_set.Detections) -> np.ndarray:
  """(N,) GT video index of each detection, -1 when not in the GT subset."""
  return _codes(dets.video_ids, {vid: i for i, vid in enumerate(gt.video_ids)})


def _summaries(thresholds: np.ndarray, mean_ap: np.ndarray) -> dict:
  """THUMOS / ActivityNet averages whose grid was evaluated in full."""
  out = {}
  for name, lo, hi, step in _SUMMARIES:
    grid = np.linspace(lo, hi, int(round((hi - lo) / step)) + 1)
    hit = np.isclose(thresholds[:, None], grid[None], atol=1e-9)
    if hit.any(0).all():
      out[name] = float(mean_ap[hit.any(1)].mean())
  return out


def evaluate_detections(gt: Union[GroundTruth, str],
                        detections: Union[detection_set.Detections, Mapping, str],
                        tiou_thresholds=THUMOS_TIOUS, *,
                        tie_order: str = "numpy") -> dict:
  """Detection mAP of the official ActivityNet protocol.

  gt: GroundTruth or a path (gt.json, subset 'test'; or W-TALC directory);
  detections: Detections, a parsed result json, or its path;
  tiou_thresholds: (T,), default THUMOS 0.1:0.1:0.7; tie_order: see
  average_precision_detection.

  A label that is not a class of the GT subset raises BadDetections, a
  ValueError (official: KeyError).  Detections of videos outside the GT
  subset are FPs of their class (the official code finds no GT for them);
  their count is returned so callers can warn.  GT of videos without
  detections are misses.

  Returns a dict: ``tiou_thresholds`` (T,), ``class_names`` (C,), ``ap``
  (T, C), ``map`` (T,) mean over the C classes of the GT subset,
  ``average_map`` (mean of ``map``), ``summary`` {name: mAP} for the THUMOS
  averages AVG(0.1:0.5), AVG(0.3:0.7), AVG(0.1:0.7) and ActivityNet
  AVG(0.5:0.95) whose thresholds were all evaluated, ``num_gt`` (C,),
  ``num_detections`` (C,), ``tie_order``, ``subset``, ``videos_not_in_gt``
  (how many videos with detections are not in the GT subset) and
  ``detections_not_in_gt`` (their detections).  Values are fractions.
  """
  if isinstance(gt, (str, os.PathLike)):
    gt = load_ground_truth(os.fspath(gt))
  if isinstance(detections, (str, os.PathLike)):
    detections = detection_set.load_detections(os.fspath(detections))
  elif isinstance(detections, Mapping):
    detections = detection_set.detections_from_results(detections)
  thresholds = check_thresholds(tiou_thresholds)
  det_label = _label_indices(gt, detections)
  det_video = _video_indices(gt, detections)
  ap = average_precisions(
      gt.video, gt.label, gt.segments, max(len(gt.video_ids), 1),
      det_video, det_label, detections.scores,
      detections.segments, gt.num_classes, thresholds, tie_order)
  mean_ap = ap.mean(1) if gt.num_classes else np.zeros(len(thresholds))
  return {
      "tiou_thresholds": thresholds,
      "class_names": list(gt.class_names),
      "ap": ap,
      "map": mean_ap,
      "average_map": float(mean_ap.mean()),
      "summary": _summaries(thresholds, mean_ap),
      "num_gt": gt.num_instances(),
      "num_detections": np.bincount(det_label, minlength=gt.num_classes),
      "tie_order": tie_order,
      "subset": gt.subset,
      "videos_not_in_gt": len(videos_not_in_gt(gt, detections)),
      "detections_not_in_gt": int(np.sum(det_video < 0)),
  }


# ---------------------------------------------------------------------------
# CLI.
# ---------------------------------------------------------------------------
def evaluate_indexed(gt: GroundTruth, detections_by_video: Mapping[str, Sequence[dict]],
                     class_names: Sequence[str], tiou_thresholds, *,
                     tie_order: str = "numpy") -> dict:
  """``evaluate_detections`` of detections whose labels are indices into
  ``class_names`` ({video id: [{"label", "score", "segment"}]}, as
  detection.detect_video gives them).  Labels absent from the GT subset
  are left out: the official evaluator rejects them, and they cannot change
  the mAP (it averages over the GT's classes); a small test split can lack
  a class that is still predicted."""
  scored = set(gt.class_names)
  results = outputs.to_result_json(
      {vid: [d for d in ds if class_names[d["label"]] in scored]
       for vid, ds in detections_by_video.items()}, class_names)
  found = detection_set.detections_from_results(results, source="<detections>")
  return evaluate_detections(gt, found, np.asarray(tiou_thresholds, np.float64),
                             tie_order=tie_order)


def parse_tiou(text: str) -> np.ndarray:
  """'a:b:n' -> np.linspace(a, b, n); a single number -> [a]."""
  parts = text.split(":")
  try:
    if len(parts) == 1:
      return np.array([float(parts[0])])
    if len(parts) == 3:
      return np.linspace(float(parts[0]), float(parts[1]), int(parts[2]))
  except ValueError:
    pass
  raise argparse.ArgumentTypeError(
      f"--tiou {text!r}: expected FIRST:LAST:COUNT (np.linspace), e.g. "
      "0.1:0.7:7 for THUMOS or 0.5:0.95:10 for ActivityNet")


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m case_jax.evaluation",
      description="Detection mAP (official ActivityNet protocol) of a result "
                  "json against a gt.json or W-TALC annotation directory. A bad "
                  "input is reported in a few lines with exit status 2.")
  parser.add_argument("gt", help="gt.json (ActivityNet format) or a W-TALC "
                                 "annotation directory")
  parser.add_argument("detections", help="result json {'results': {vid: [...]}}")
  parser.add_argument("--subset", default="test",
                      help="GT subset to evaluate on (default: test)")
  parser.add_argument("--tiou", type=parse_tiou, default=THUMOS_TIOUS,
                      help="thresholds FIRST:LAST:COUNT (default 0.1:0.7:7)")
  parser.add_argument("--tie-order", choices=TIE_ORDERS, default="numpy",
                      help="numpy: as the official code with this numpy; "
                           "stable: version-independent (ties in input order)")
  parser.add_argument("--split", help="split file (one video id per line) to "
                                      "check against the GT subset")
  parser.add_argument("--json", help="also write the result to this json file")
  parser.add_argument("--per-class", action="store_true",
                      help="also print the AP of each class")
  parser.add_argument("--strict", action="store_true",
                      help="refuse detections of videos that are not in the GT "
                           "subset (default: warn; they count as false "
                           "positives, as in the official protocol)")
  parser.add_argument("--verbose", action="store_true",
                      help="show the traceback of a user error")
  return parser


def _cli_ground_truth(path: str, subset: str) -> GroundTruth:
  """load_ground_truth with its refusals as user errors."""
  if not os.path.exists(path):
    raise errors.MissingFile(f"{path}: no such ground truth; pass an "
                             "ActivityNet-format gt.json or a W-TALC annotation "
                             "directory")
  try:
    return load_ground_truth(path, subset)
  except errors.UserError:
    raise
  # The GT readers refuse a bad file or subset with these built-ins; the
  # message names the file and the fix.
  except FileNotFoundError as e:
    raise errors.MissingFile(str(e)) from e
  except ValueError as e:
    raise errors.ConfigError(str(e)) from e


def _outside_message(args, gt: GroundTruth, outside: list) -> str:
  few = ", ".join(outside[:5]) + (", ..." if len(outside) > 5 else "")
  return (f"{args.detections}: {len(outside)} video(s) with detections are not in "
          f"the {gt.subset!r} subset of {args.gt} ({few}); their detections count "
          "as false positives. Check --subset and that both files are of the same "
          "dataset (--strict refuses this).")


def run_cli(args, stream=None, err=None) -> dict:
  """The evaluation of parsed CLI ``args``; user errors raise UserError."""
  stream, err = stream or sys.stdout, err or sys.stderr
  if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
    raise errors.MissingFile(f"--json {args.json}: its folder does not exist; "
                             "create it or pick another path")
  gt = _cli_ground_truth(args.gt, args.subset)
  if args.split:
    check_split(gt, read_split(args.split), name=args.split)
  dets = detection_set.load_detections(args.detections)
  outside = videos_not_in_gt(gt, dets)
  if outside and args.strict:
    raise errors.ConfigError(_outside_message(args, gt, outside))
  if outside:
    err.write(f"case_jax.evaluation: warning: {_outside_message(args, gt, outside)}\n")
  result = evaluate_detections(gt, dets, args.tiou, tie_order=args.tie_order)
  stream.write(f"{len(gt.video_ids)} {gt.subset!r} videos, {len(gt.video)} "
               f"instances, {gt.num_classes} classes; "
               f"{int(result['num_detections'].sum())} detections; tie order "
               f"{args.tie_order}\n")
  stream.write(outputs.format_map_table(result, per_class=args.per_class) + "\n")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"gt": args.gt, "detections": args.detections,
                 **outputs.result_to_json(result)}, f, indent=1)
  return result


def main(argv: Optional[Sequence[str]] = None) -> dict:
  """The CLI; a user error exits with status 2 and a short message."""
  args = _parser().parse_args(argv)
  return errors.run_reporting(run_cli, args, prog="case_jax.evaluation",
                              verbose=args.verbose)


if __name__ == "__main__":
  main()
