"""Detection post-processing on the host (numpy): from snippet class scores to
ActivityNet-format detections (notes §3 steps 4-9; paper appendix E.3).

Per video, as the released inference does it:
  1. classes: video scores >= class threshold, else the argmax class;
  2. each class's snippet score column, linearly upsampled x24 (with linear
     extrapolation past the last snippet, as scipy's interp1d does);
  3. for each of the thresholds np.arange(0.1, 1.0, 0.1), runs of consecutive
     upsampled positions >= threshold are proposals;
  4. each proposal is scored by the outer-inner-contrastive (OIC) score plus a
     weighted video score, and mapped to seconds;
  5. proposals pooled per class over the thresholds go through NMS (the
     released "basnet" soft-NMS by default).

Everything is vectorized over the proposals of one class (all thresholds at
once); the only Python loops are over classes and over NMS picks.  Results
equal the step-by-step description except that means come from cumulative
sums, which differ from np.mean by float rounding (about 1e-12 at T = 750).

Parameters have no defaults: the released values live in the config
(case_jax/defaults.py, ``c.inference.*``), the time base (fps, frames per
snippet) in the dataset.  The result files are written by case_jax/outputs.py.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

# The released proposal thresholds (config value "released"), used as
# np.arange gives them: two are 0.30000000000000004 and 0.7000000000000001,
# which decides ties at those values (notes §3 step 6).
RELEASED_THRESHOLDS = np.arange(0.1, 1.0, 0.1)
NMS_KINDS = ("soft_released", "hard", "none")


# ---------------------------------------------------------------------------
# Classes and upsampling.

def select_classes(video_scores, threshold: float) -> np.ndarray:
  """Predicted class indices (ascending): scores >= threshold, else the argmax.

  video_scores: (C,) continuous video-level class probabilities.
  Returns int64 (n,), n >= 1.
  """
  video_scores = np.asarray(video_scores)
  if video_scores.ndim != 1 or video_scores.size == 0:
    raise ValueError(f"video_scores must have shape (C,) with C >= 1, got {video_scores.shape}")
  picked = np.flatnonzero(video_scores >= threshold)
  if picked.size == 0:
    picked = np.array([np.argmax(video_scores)])
  return picked.astype(np.int64)


def upsample(scores, scale: int) -> np.ndarray:
  """Linear upsampling at np.arange(0, T, 1/scale), float64.

  scores: (T, ...) with T >= 1.  Returns (len(np.arange(0, T, 1/scale)), ...),
  i.e. (T*scale, ...) for every practical T.

  Matches scipy interp1d(np.arange(T), scores, kind='linear', axis=0,
  fill_value='extrapolate') bit for bit: positions in [k-1, k] use the segment
  k-1..k; positions past T-1 (the last scale-1 points) extend the last
  segment's line.  As in scipy, the segment slope is taken in the input's
  own float dtype (float32 stays float32 there), the rest in float64.
  T == 1 (which scipy rejects) gives a constant.
  """
  y = np.asarray(scores)
  if y.ndim == 0 or y.shape[0] == 0:
    raise ValueError(f"scores must have shape (T, ...) with T >= 1, got {y.shape}")
  if not np.issubdtype(y.dtype, np.inexact):
    y = y.astype(np.float64)
  if int(scale) != scale or scale < 1:
    raise ValueError(f"scale must be a positive integer, got {scale!r}")
  num = y.shape[0]
  x_new = np.arange(0, num, 1 / scale)   # the released grid, float error included
  if num == 1:
    return np.broadcast_to(y[:1].astype(np.float64), (x_new.size,) + y.shape[1:]).copy()
  # Segment index as interp1d picks it: searchsorted(left), clipped to 1..T-1.
  hi = np.clip(np.searchsorted(np.arange(num, dtype=np.float64), x_new), 1, num - 1)
  lo = hi - 1
  # Knots are integers, so x_hi - x_lo == 1 and the slope is y_hi - y_lo exactly.
  slope = (y[hi] - y[lo]).astype(np.float64)
  offset = (x_new - lo).reshape((-1,) + (1,) * (y.ndim - 1))
  return slope * offset + y[lo]


# ---------------------------------------------------------------------------
# Proposals: runs above thresholds, OIC scores.

def _runs(upsampled: np.ndarray, thresholds: np.ndarray, released_quirks: bool):
  """Runs of consecutive positions >= each threshold, all thresholds at once.

  upsampled: (L,); thresholds: (K,).  Returns int64 arrays (level, start, end),
  each (R,), ordered by threshold then time (the released pooling order);
  start and end are inclusive.
  """
  keep = upsampled[None, :] >= thresholds[:, None]                     # (K, L)
  padded = np.zeros((keep.shape[0], keep.shape[1] + 2), np.int8)
  padded[:, 1:-1] = keep
  step = np.diff(padded, axis=1)                                       # (K, L+1)
  # Row-major nonzero: every row has as many rises as falls, so they pair up.
  level, start = np.nonzero(step == 1)       # keep[i] and not keep[i-1]
  _, stop = np.nonzero(step == -1)           # keep[i-1] and not keep[i]
  if released_quirks:
    # Released: a class is skipped when its kept positions are exactly [0]
    # (`temp_list.any()` is False for an all-zero index list).
    only_zero = keep[:, 0] & (keep.sum(axis=1) == 1)
    ok = ~only_zero[level]
    level, start, stop = level[ok], start[ok], stop[ok]
  return level.astype(np.int64), start.astype(np.int64), (stop - 1).astype(np.int64)


def proposal_runs(upsampled, threshold: float, released_quirks: bool = True) -> list:
  """Inclusive (start, end) index runs of consecutive positions >= threshold.

  upsampled: (L,).  Returns a list of (int, int) in time order.  With
  released_quirks, the positions list [0] alone yields no run (notes §3 step
  6: the released `temp_list.any()` check).
  """
  upsampled = np.asarray(upsampled, np.float64)
  if upsampled.ndim != 1:
    raise ValueError(f"upsampled must have shape (L,), got {upsampled.shape}")
  _, start, end = _runs(upsampled, np.array([threshold], np.float64), released_quirks)
  return [(int(s), int(e)) for s, e in zip(start, end)]


def _check_oic_args(outer_ratio: float) -> None:
  if not outer_ratio >= 0:
    raise ValueError(f"outer_ratio must be >= 0, got {outer_ratio!r}")


def _oic_scores(cumsum: np.ndarray, start: np.ndarray, end: np.ndarray, video_score: float,
                outer_ratio: float, video_weight: float) -> np.ndarray:
  """OIC scores of many runs from the prefix sums of one upsampled column.

  cumsum: (L+1,) with cumsum[i] = sum(upsampled[:i]); start, end: (R,)
  inclusive.  Returns float64 (R,).
  """
  last = cumsum.size - 2
  length = end - start + 1
  inner = (cumsum[end + 1] - cumsum[start]) / length
  # Released bounds: Python int() truncates toward zero, then clips to the video.
  reach = outer_ratio * length
  outer_start = np.maximum(0, np.trunc(start - reach)).astype(np.int64)
  outer_end = np.minimum(last, np.trunc(end + reach).astype(np.int64))
  count = (start - outer_start) + (outer_end - end)
  total = (cumsum[start] - cumsum[outer_start]) + (cumsum[outer_end + 1] - cumsum[end + 1])
  outer = np.where(count > 0, total / np.maximum(count, 1), 0.0)   # empty region -> 0
  return inner - outer + video_weight * video_score


def _prefix_sums(upsampled: np.ndarray) -> np.ndarray:
  out = np.zeros(upsampled.size + 1, np.float64)
  np.cumsum(upsampled, out=out[1:])
  return out


def oic_score(upsampled, start: int, end: int, video_score: float, *,
              outer_ratio: float, video_weight: float) -> float:
  """Outer-inner-contrastive score of the run [start, end] (inclusive).

  upsampled: (L,) un-thresholded upsampled scores of the class.  With
  n = end - start + 1 and r = outer_ratio:
    inner = mean(upsampled[start..end])
    outer = mean over [max(0, int(start - r n)), start-1]
                    u [end+1, min(L-1, int(end + r n))], or 0 if that is empty
    score = inner - outer + video_weight * video_score
  video_score is the continuous video-level probability of the class.

  Released mis-binding (notes §3 step 7, §10 item 7): the call passes its
  config "gamma" (0.15) positionally into the outer-ratio parameter, so the
  effective outer ratio is 0.15 and the video-score weight keeps the function
  default 0.2.  Both are named here; the config (c.inference.outer_ratio,
  video_weight) holds those effective values.
  """
  _check_oic_args(outer_ratio)
  upsampled = np.asarray(upsampled, np.float64)
  if upsampled.ndim != 1:
    raise ValueError(f"upsampled must have shape (L,), got {upsampled.shape}")
  if not 0 <= start <= end < upsampled.size:
    raise ValueError(f"need 0 <= start <= end < {upsampled.size}, got ({start}, {end})")
  score = _oic_scores(_prefix_sums(upsampled), np.array([start]), np.array([end]),
                      float(video_score), outer_ratio, video_weight)
  return float(score[0])


def time_factor(v_len: float, num_segments: int, *, scale: int, fps: float,
                snippet_frames: int) -> float:
  """Seconds per upsampled position: snippet_frames * v_len / (scale * T * fps).

  v_len is the video's original snippet count; num_segments (T) the sampled
  one; fps and snippet_frames the features' time base.
  """
  return (snippet_frames * v_len) / (scale * num_segments * fps)


def proposal_thresholds(thresholds) -> np.ndarray:
  """(K,) float64 thresholds of a config value: "released" or numbers."""
  if isinstance(thresholds, str):
    if thresholds != "released":
      raise ValueError(f"thresholds must be 'released' or numbers, got {thresholds!r}")
    return RELEASED_THRESHOLDS
  thresholds = np.asarray(thresholds, np.float64)
  if thresholds.ndim != 1:
    raise ValueError(f"thresholds must have shape (K,), got {thresholds.shape}")
  return thresholds


def generate_proposals(snippet_scores, video_scores, class_indices, v_len: float, *,
                       scale: int, thresholds, fps: float, snippet_frames: int,
                       outer_ratio: float, video_weight: float,
                       num_segments: int | None = None,
                       released_quirks: bool = True) -> dict:
  """Scored proposals of each class, pooled over all thresholds.

  snippet_scores: (T, C); video_scores: (C,); class_indices: classes to
  localize; thresholds: "released" or (K,), see proposal_thresholds.
  Returns {class index: float64 (M, 3) rows [score, t_start, t_end]} in
  seconds, rows ordered by threshold then time as released; classes with
  no proposal are absent.  t_start = s * f and t_end = (e + 1) * f with
  f = time_factor(v_len, num_segments or T, ...).
  """
  _check_oic_args(outer_ratio)
  snippet_scores = np.asarray(snippet_scores)
  video_scores = np.asarray(video_scores)
  if snippet_scores.ndim != 2:
    raise ValueError(f"snippet_scores must have shape (T, C), got {snippet_scores.shape}")
  num, num_classes = snippet_scores.shape
  if video_scores.shape != (num_classes,):
    raise ValueError(f"video_scores must have shape ({num_classes},), got {video_scores.shape}")
  classes = np.asarray(class_indices, np.int64).reshape(-1)
  if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
    raise ValueError(f"class indices must lie in [0, {num_classes}), got {classes.tolist()}")
  thresholds = proposal_thresholds(thresholds)
  factor = time_factor(v_len, num if num_segments is None else num_segments, scale=scale,
                       fps=fps, snippet_frames=snippet_frames)

  upsampled = upsample(snippet_scores[:, classes], scale)              # (L, n)
  out = {}
  for j, c in enumerate(classes.tolist()):
    column = np.ascontiguousarray(upsampled[:, j])
    _, start, end = _runs(column, thresholds, released_quirks)
    if start.size == 0:
      continue
    # float64 first: the released float32 score times a Python float was float64.
    score = _oic_scores(_prefix_sums(column), start, end, float(video_scores[c]),
                        outer_ratio, video_weight)
    out[c] = np.stack([score, start * factor, (end + 1) * factor], axis=1)
  return out


# ---------------------------------------------------------------------------
# NMS.

def _as_proposals(proposals) -> np.ndarray:
  p = np.array(proposals, np.float64)     # a copy: scores get rewritten
  if p.size == 0:
    return np.zeros((0, 3))
  if p.ndim != 2 or p.shape[1] != 3:
    raise ValueError(f"proposals must have shape (M, 3) [score, start, end], got {p.shape}")
  return p


def soft_nms_released(proposals, iou_threshold: float, sigma: float) -> np.ndarray:
  """The released soft-NMS ("basnet_nms"), which discards nothing.

  proposals: (M, 3) rows [score, start, end] in seconds.  Returns (M, 3): the
  picked proposals in pick order, then the decayed ones in decay order.
    - The queue is sorted once by score, descending (numpy's default argsort,
      reversed, as released: its tie order).
    - Repeatedly pick the queue's head; its IoU with the rest of the queue
      uses the "+1" convention on seconds: length = end - start + 1,
      overlap = max(0, min(ends) - max(starts) + 1).
    - Queue members with IoU >= iou_threshold get score * exp(-IoU^2 / sigma)
      and leave the queue for good: decayed once, never compared again.
  """
  p = _as_proposals(proposals)
  if p.shape[0] == 0:
    return p
  score, start, end = p[:, 0].copy(), p[:, 1], p[:, 2]
  length = end - start + 1
  order = np.argsort(p[:, 0])[::-1]
  picked, decayed = [], []
  while order.size:
    head, rest = order[0], order[1:]
    picked.append(head)
    overlap = np.maximum(0.0, np.minimum(end[head], end[rest])
                         - np.maximum(start[head], start[rest]) + 1)
    iou = overlap / (length[head] + length[rest] - overlap)
    hit = iou >= iou_threshold
    score[rest[hit]] *= np.exp(-np.square(iou[hit]) / sigma)
    decayed.extend(rest[hit].tolist())
    order = rest[~hit]
  index = np.array(picked + decayed, np.int64)
  out = p[index]
  out[:, 0] = score[index]
  return out


def hard_nms(proposals, iou_threshold: float) -> np.ndarray:
  """Standard NMS: keep the best, discard the rest with IoU >= iou_threshold.

  proposals: (M, 3) [score, start, end].  IoU is the plain interval IoU
  (no "+1"; zero-length unions count as IoU 0).  Ties keep input order.
  Returns (K, 3) in pick order.
  """
  p = _as_proposals(proposals)
  start, end = p[:, 1], p[:, 2]
  length = end - start
  order = np.argsort(-p[:, 0], kind="stable")
  picked = []
  while order.size:
    head, rest = order[0], order[1:]
    picked.append(head)
    overlap = np.maximum(0.0, np.minimum(end[head], end[rest]) - np.maximum(start[head], start[rest]))
    union = length[head] + length[rest] - overlap
    iou = np.where(union > 0, overlap / np.where(union > 0, union, 1.0), 0.0)
    order = rest[iou < iou_threshold]
  return p[np.array(picked, np.int64)]


def _nms(kind: str, iou_threshold: float, sigma: float) -> Callable[[np.ndarray], np.ndarray]:
  if kind == "soft_released":
    return lambda p: soft_nms_released(p, iou_threshold, sigma)
  if kind == "hard":
    return lambda p: hard_nms(p, iou_threshold)
  if kind == "none":
    return lambda p: p
  raise ValueError(f"nms must be one of {NMS_KINDS}, got {kind!r}")


# ---------------------------------------------------------------------------
# One video.

def detect_video(snippet_scores, video_scores, v_len: float, *,
                 class_threshold: float, scale: int, thresholds, fps: float,
                 snippet_frames: int, outer_ratio: float, video_weight: float, nms: str,
                 iou_threshold: float, sigma: float, num_segments: int | None = None,
                 max_detections: int | None = None, released_quirks: bool = True) -> list:
  """Detections of one video (notes §3 steps 4-8; c.inference has the released
  parameter values, the dataset the time base fps / snippet_frames).

  snippet_scores: (T, C) fused snippet class scores; video_scores: (C,)
  continuous video class probabilities; v_len: original snippet count.
  Returns a list of {"label": class index (int), "score": float,
  "segment": [t_start, t_end]} in class order, each class in NMS output order.
  max_detections (None: no cap, as released) keeps the top-scoring ones,
  in that same order.
  """
  nms_fn = _nms(nms, iou_threshold, sigma)
  snippet_scores, video_scores = np.asarray(snippet_scores), np.asarray(video_scores)
  for name, arr in (("snippet_scores", snippet_scores), ("video_scores", video_scores)):
    if not np.all(np.isfinite(arr)):
      raise ValueError(f"{name} contain non-finite values")
  classes = select_classes(video_scores, class_threshold)
  proposals = generate_proposals(
      snippet_scores, video_scores, classes, v_len, scale=scale, thresholds=thresholds,
      num_segments=num_segments, fps=fps, snippet_frames=snippet_frames,
      outer_ratio=outer_ratio, video_weight=video_weight, released_quirks=released_quirks)
  labels, rows = [], []
  for c, props in proposals.items():
    kept = nms_fn(props)
    labels.extend([c] * kept.shape[0])
    rows.append(kept)
  if not rows:
    return []
  rows = np.concatenate(rows)
  index = np.arange(rows.shape[0])
  if max_detections is not None and rows.shape[0] > max_detections:
    if max_detections < 0:
      raise ValueError(f"max_detections must be >= 0, got {max_detections}")
    index = np.sort(np.argsort(-rows[:, 0], kind="stable")[:max_detections])
  return [{"label": labels[i], "score": float(rows[i, 0]),
           "segment": [float(rows[i, 1]), float(rows[i, 2])]} for i in index.tolist()]

