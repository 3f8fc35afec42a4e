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
      [--split split_test.txt] [--per-class]

GT may also be a W-TALC annotation directory (videoname.npy, subset.npy, ...).
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from case_jax import detection_set, outputs
from case_jax.data.ground_truth import (GroundTruth, check_split,
                                        load_ground_truth)
from case_jax.data.gt_json import read_split

THUMOS_TIOUS = np.linspace(0.1, 0.7, 7)          # CASE / most THUMOS14 papers
ACTIVITYNET_TIOUS = np.linspace(0.5, 0.95, 10)   # official ActivityNet default
TIE_ORDERS = ("numpy", "stable")

# name, first, last, step: reported when every grid threshold was evaluated.
_SUMMARIES = (
    ("AVG(0.1:0.5)", 0.1, 0.5, 0.1),
    ("AVG(0.3:0.7)", 0.3, 0.7, 0.1),
    ("AVG(0.1:0.7)", 0.1, 0.7, 0.1),
    ("AVG(0.5:0.95)", 0.5, 0.95, 0.05),
)



# ---------------------------------------------------------------------------
# Matching and AP.
# ---------------------------------------------------------------------------
def segment_tiou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """Temporal IoU without the "+1" convention.

  pred: (..., 2); gt: (..., G, 2), broadcast against pred -> (..., G).
  inter = max(0, min(ends) - max(starts)); union = len_gt + len_pred - inter.
  Two zero-length segments give NaN (0/0), which the official walk treats as
  a match because ``NaN < t`` is False; kept for fidelity.
  """
  pred = np.asarray(pred, np.float64)[..., None, :]
  gt = np.asarray(gt, np.float64)
  inter = np.clip(np.minimum(pred[..., 1], gt[..., 1])
                  - np.maximum(pred[..., 0], gt[..., 0]), 0, None)
  union = (gt[..., 1] - gt[..., 0]) + (pred[..., 1] - pred[..., 0]) - inter
  with np.errstate(divide="ignore", invalid="ignore"):
    return inter / union


def _check_tie_order(tie_order: str) -> None:
  if tie_order not in TIE_ORDERS:
    raise ValueError(f"evaluation: tie_order must be one of {TIE_ORDERS}, got "
                     f"{tie_order!r}")


def _descending(values: np.ndarray, tie_order: str) -> np.ndarray:
  """Indices sorting ``values`` best first, along the last axis.

  'numpy': ``argsort()[::-1]`` with numpy's default (unstable) sort, as the
  official code does; the order of ties depends on the numpy version and CPU
  (SIMD sorts).  'stable': descending, ties in input order; NaN (only a 0/0
  tIoU can be NaN here) first, where the reversed numpy sort puts it too.
  """
  if tie_order == "numpy":
    return np.argsort(values, axis=-1)[..., ::-1]
  key = np.where(np.isnan(values), -np.inf, -values)
  return np.argsort(key, axis=-1, kind="stable")


def interpolated_average_precision(precision: np.ndarray,
                                   recall: np.ndarray) -> float:
  """VOC all-point interpolated AP of one precision/recall curve.

  precision, recall: (n,) in ranking order.  The curve is padded with
  (recall 0, precision 0) and (recall 1, precision 0), precision is made
  non-increasing from the right, and AP = sum over recall changes of
  delta-recall times precision.
  """
  prec = np.concatenate([[0.0], precision, [0.0]])
  rec = np.concatenate([[0.0], recall, [1.0]])
  prec = np.maximum.accumulate(prec[::-1])[::-1]
  steps = np.flatnonzero(rec[1:] != rec[:-1]) + 1
  return float(np.sum((rec[steps] - rec[steps - 1]) * prec[steps]))


def _ap_from_hits(hits: np.ndarray, npos: int) -> np.ndarray:
  """hits: (T, n) bool TP flags in ranking order -> (T,) AP."""
  tp = np.cumsum(hits, axis=1).astype(np.float64)
  fp = np.cumsum(~hits, axis=1).astype(np.float64)
  recall, precision = tp / npos, tp / (tp + fp)
  return np.array([interpolated_average_precision(precision[t], recall[t])
                   for t in range(hits.shape[0])])


def _class_rankings(det_label: np.ndarray, det_score: np.ndarray,
                    num_classes: int, tie_order: str) -> list:
  """Per class: (n_c,) detection indices, best first.

  Scores are ranked in input order within the class (a stable sort on the
  label keeps it), so ties resolve as the official code's would.
  """
  by_class = np.argsort(det_label, kind="stable")
  ends = np.cumsum(np.bincount(det_label, minlength=num_classes))
  starts = ends - np.bincount(det_label, minlength=num_classes)
  rankings = []
  for start, end in zip(starts, ends):
    idx = by_class[start:end]
    rankings.append(idx[_descending(det_score[idx], tie_order)])
  return rankings


def _candidate_windows(gt_key: np.ndarray, gt_seg: np.ndarray,
                       det_key: np.ndarray, det_seg: np.ndarray,
                       min_tiou: float, tie_order: str):
  """Each detection's GT walk, cut to the part that can decide anything.

  gt_key: (M,) int64 (class, video) key per GT; det_key: (N,) key per
  detection, -1 when its video is not in the GT.  A detection walks the GTs of
  its (class, video) in descending tIoU order; positions after its last GT
  with tIoU >= ``min_tiou`` (the loosest threshold) can only stop the walk as
  a FP, so they are replaced by a -inf stop.

  Returns (det, group, gidx, tiou): (A,) detections with a non-empty window,
  (A,) their group id, (A, K) GT indices in walk order (padding: M) and
  (A, K) tIoU in walk order (padding: -inf).
  """
  m = len(gt_key)
  gt_perm = np.argsort(gt_key, kind="stable")   # file order inside a group
  sorted_key = gt_key[gt_perm]
  lo = np.searchsorted(sorted_key, det_key, "left")
  count = np.searchsorted(sorted_key, det_key, "right") - lo
  count[det_key < 0] = 0
  parts = []
  for g in np.unique(count[count > 0]):
    # Rows of one length: numpy sorts each row of a 2-D argsort exactly as
    # it would sort that row alone, so tie order matches per-detection calls.
    det = np.flatnonzero(count == g)
    gidx = gt_perm[lo[det, None] + np.arange(g)]
    tiou = segment_tiou(det_seg[det], gt_seg[gidx])
    walk = _descending(tiou, tie_order)
    tiou = np.take_along_axis(tiou, walk, 1)
    gidx = np.take_along_axis(gidx, walk, 1)
    live = ~(tiou < min_tiou)        # NaN counts as live, as in the walk
    width = np.where(live.any(1), g - np.argmax(live[:, ::-1], 1), 0)
    keep = width > 0
    k = int(width.max(initial=0))
    cut = np.arange(k) >= width[keep, None]
    parts.append((det[keep], lo[det[keep]], np.where(cut, m, gidx[keep, :k]),
                  np.where(cut, -np.inf, tiou[keep, :k])))
  k = max([p[2].shape[1] for p in parts], default=0)
  pad = lambda a, v: np.pad(a, ((0, 0), (0, k - a.shape[1])), constant_values=v)
  return (np.concatenate([p[0] for p in parts] + [np.zeros(0, np.int64)]),
          np.concatenate([p[1] for p in parts] + [np.zeros(0, np.int64)]),
          np.concatenate([pad(p[2], m) for p in parts] + [np.zeros((0, k), np.int64)]),
          np.concatenate([pad(p[3], -np.inf) for p in parts] + [np.zeros((0, k))]))


def _greedy_match(group: np.ndarray, rank: np.ndarray, gidx: np.ndarray,
                  tiou: np.ndarray, thresholds: np.ndarray,
                  num_gt: int) -> np.ndarray:
  """TP flags of the official greedy matching, vectorized across groups.

  group, rank: (A,) (class, video) group and rank within the class; gidx,
  tiou: (A, K) walk windows.  Groups share no GT, so the j-th best detection
  of every group is matched in one vectorized turn; turns run in rank order.
  Per threshold t a walk stops as FP at tIoU < t, skips GTs already taken at
  t, and takes (TP) the first free GT; an exhausted walk is FP.
  Returns (T, A) bool.
  """
  n, t_count = len(group), len(thresholds)
  order = np.lexsort((rank, group))
  first = np.searchsorted(group[order], group[order], "left")
  turn = np.arange(n) - first
  by_turn = order[np.argsort(turn, kind="stable")]
  bounds = np.searchsorted(np.sort(turn), np.arange(turn.max(initial=-1) + 2))
  taken = np.zeros((t_count, num_gt + 1), bool)   # column num_gt: padding
  hits = np.zeros((t_count, n), bool)
  thr = thresholds[:, None, None]
  for j in range(len(bounds) - 1):
    det = by_turn[bounds[j]:bounds[j + 1]]
    walk = gidx[det]                                      # (D, K)
    stop = tiou[det][None] < thr                          # (T, D, K)
    take = ~stop & ~taken[:, walk]
    decided = np.argmax(stop | take, axis=-1)             # (T, D)
    hit = np.take_along_axis(take, decided[..., None], -1)[..., 0]
    ti, di = np.nonzero(hit)
    taken[ti, walk[di, decided[ti, di]]] = True
    hits[:, det] = hit
  return hits


def _check_thresholds(tiou_thresholds) -> np.ndarray:
  thr = np.atleast_1d(np.asarray(tiou_thresholds, np.float64))
  if thr.ndim != 1 or thr.size == 0 or not np.all(np.isfinite(thr)):
    raise ValueError(f"evaluation: tiou_thresholds must be a non-empty 1-D list "
                     f"of finite numbers, got {tiou_thresholds!r}")
  return thr


def _average_precisions(gt_video, gt_label, gt_seg, num_videos, det_video,
                        det_label, det_score, det_seg, num_classes,
                        thresholds, tie_order) -> np.ndarray:
  """(T, C) AP from index arrays.

  gt_video, gt_label: (M,) int64; gt_seg: (M, 2); det_video: (N,) int64,
  -1 for videos outside the GT subset (every such detection is a FP);
  det_label: (N,) int64 in [0, C); det_score: (N,); det_seg: (N, 2).
  """
  thresholds = _check_thresholds(thresholds)
  _check_tie_order(tie_order)
  rankings = _class_rankings(det_label, det_score, num_classes, tie_order)
  rank = np.empty(len(det_score), np.int64)
  for idx in rankings:
    rank[idx] = np.arange(len(idx))
  gt_key = gt_label * num_videos + gt_video
  det_key = np.where(det_video >= 0, det_label * num_videos + det_video, -1)
  det, group, gidx, tiou = _candidate_windows(gt_key, gt_seg, det_key, det_seg,
                                              thresholds.min(), tie_order)
  hits = np.zeros((len(thresholds), len(det_score)), bool)
  hits[:, det] = _greedy_match(group, rank[det], gidx, tiou, thresholds,
                               len(gt_key))
  npos = np.bincount(gt_label, minlength=num_classes)
  ap = np.zeros((len(thresholds), num_classes))
  for c, idx in enumerate(rankings):
    if len(idx) and npos[c]:       # no predictions: AP 0 (official since 2018)
      ap[:, c] = _ap_from_hits(hits[:, idx], npos[c])
  return ap


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
  ap = _average_precisions(gt_video, np.zeros_like(gt_video), gt_seg,
                           max(len(names), 1), det_video,
                           np.zeros_like(det_video), det_score, det_seg, 1,
                           tiou_thresholds, tie_order)
  return ap[:, 0]


# ---------------------------------------------------------------------------
# Whole-dataset evaluation.
# ---------------------------------------------------------------------------
def _label_indices(gt: GroundTruth, dets: detection_set.Detections) -> np.ndarray:
  """(N,) class index of each detection; unknown names raise ValueError."""
  index = {name: i for i, name in enumerate(gt.class_names)}
  names, inverse = np.unique(dets.labels.astype(str), return_inverse=True)
  unknown = [str(n) for n in names if n not in index]
  if unknown:
    raise ValueError(
        f"{dets.source}: prediction label {unknown[0]!r} is not a class of the "
        f"{gt.subset!r} subset of {gt.source} (unknown labels: {unknown}; GT "
        f"classes: {list(gt.class_names)}). Fix the labels or evaluate against "
        "the matching ground truth and subset.")
  return np.array([index[n] for n in names], np.int64)[inverse].reshape(-1)


def _video_indices(gt: GroundTruth, dets: detection_set.Detections) -> np.ndarray:
  """(N,) GT video index of each detection, -1 when not in the GT subset."""
  index = {vid: i for i, vid in enumerate(gt.video_ids)}
  names, inverse = np.unique(dets.video_ids.astype(str), return_inverse=True)
  return np.array([index.get(n, -1) for n in names], np.int64)[inverse].reshape(-1)


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

  A label that is not a class of the GT subset raises ValueError (official:
  KeyError).  Detections of videos outside the GT subset are FPs of their
  class (the official code finds no GT for them); GT of videos without
  detections are misses.

  Returns a dict: ``tiou_thresholds`` (T,), ``class_names`` (C,), ``ap``
  (T, C), ``map`` (T,) mean over the C classes of the GT subset,
  ``average_map`` (mean of ``map``), ``summary`` {name: mAP} for the THUMOS
  averages AVG(0.1:0.5), AVG(0.3:0.7), AVG(0.1:0.7) and ActivityNet
  AVG(0.5:0.95) whose thresholds were all evaluated, ``num_gt`` (C,),
  ``num_detections`` (C,), ``tie_order``, ``subset``.  Values are fractions.
  """
  if isinstance(gt, (str, os.PathLike)):
    gt = load_ground_truth(os.fspath(gt))
  if isinstance(detections, (str, os.PathLike)):
    detections = detection_set.load_detections(os.fspath(detections))
  elif isinstance(detections, Mapping):
    detections = detection_set.detections_from_results(detections)
  thresholds = _check_thresholds(tiou_thresholds)
  det_label = _label_indices(gt, detections)
  ap = _average_precisions(
      gt.video, gt.label, gt.segments, max(len(gt.video_ids), 1),
      _video_indices(gt, detections), det_label, detections.scores,
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
  }


# ---------------------------------------------------------------------------
# CLI.
# ---------------------------------------------------------------------------
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


def main(argv: Optional[Sequence[str]] = None) -> dict:
  parser = argparse.ArgumentParser(
      prog="python -m case_jax.evaluation",
      description="Detection mAP (official ActivityNet protocol) of a result "
                  "json against a gt.json or W-TALC annotation directory.")
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
  args = parser.parse_args(argv)
  gt = load_ground_truth(args.gt, args.subset)
  if args.split:
    check_split(gt, read_split(args.split), name=args.split)
  dets = detection_set.load_detections(args.detections)
  result = evaluate_detections(gt, dets, args.tiou, tie_order=args.tie_order)
  print(f"{len(gt.video_ids)} {gt.subset!r} videos, {len(gt.video)} instances, "
        f"{gt.num_classes} classes; {int(result['num_detections'].sum())} "
        f"detections; tie order {args.tie_order}")
  print(outputs.format_map_table(result, per_class=args.per_class))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"gt": args.gt, "detections": args.detections,
                 **outputs.result_to_json(result)}, f, indent=1)
  return result


if __name__ == "__main__":
  main()
