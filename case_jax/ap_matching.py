"""The matching and AP core of detection mAP (numpy, host): tIoU, the
official greedy matching vectorized across (class, video) groups, and VOC
all-point interpolated AP.  case_jax/evaluation.py builds the dataset-level
evaluation and its CLI on it; see its docstring for the protocol.

Shapes: M ground-truth instances, N detections, T tIoU thresholds, C classes.
"""
from __future__ import annotations

import numpy as np

from case_jax.errors import ConfigError

TIE_ORDERS = ("numpy", "stable")


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


def check_tie_order(tie_order: str) -> None:
  if tie_order not in TIE_ORDERS:
    raise ConfigError(f"evaluation: tie_order must be one of {TIE_ORDERS}, got "
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


def check_thresholds(tiou_thresholds) -> np.ndarray:
  thr = np.atleast_1d(np.asarray(tiou_thresholds, np.float64))
  if thr.ndim != 1 or thr.size == 0 or not np.all(np.isfinite(thr)):
    raise ConfigError(f"evaluation: tiou_thresholds must be a non-empty 1-D list "
                     f"of finite numbers, got {tiou_thresholds!r}")
  return thr


def average_precisions(gt_video, gt_label, gt_seg, num_videos, det_video,
                        det_label, det_score, det_seg, num_classes,
                        thresholds, tie_order) -> np.ndarray:
  """(T, C) AP from index arrays.

  gt_video, gt_label: (M,) int64; gt_seg: (M, 2); det_video: (N,) int64,
  -1 for videos outside the GT subset (every such detection is a FP);
  det_label: (N,) int64 in [0, C); det_score: (N,); det_seg: (N, 2).
  """
  thresholds = check_thresholds(thresholds)
  check_tie_order(tie_order)
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
