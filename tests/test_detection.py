"""Tests of case_jax.detection against naive, loop-by-loop transcriptions of
the released post-processing as the notes describe it (official_code_notes.md
§3 steps 4-9, §10 items 7-8; paper appendix E.3)."""
import math

import numpy as np
import pytest

from case_jax import defaults
from case_jax import detection as det

try:
  from scipy.interpolate import interp1d
except ImportError:  # pragma: no cover - scipy is a test extra
  interp1d = None

# The released values, written as expectations (the code takes them as
# arguments; case_jax/defaults.py is their home, checked in the first test).
THRESHOLDS = np.arange(0.1, 1.0, 0.1)
LAMBDA, GAMMA = 0.15, 0.2   # the effective released values (mis-binding, notes §3 step 7)
CLASS_THRESHOLD, SCALE = 0.25, 24
NMS_IOU, NMS_SIGMA = 0.4, 0.35
FPS, SNIPPET_FRAMES = 25.0, 16
SCORE_ATOL = 1e-10          # cumulative-sum means vs np.mean: rounding only
OIC = dict(outer_ratio=LAMBDA, video_weight=GAMMA)
TIME_BASE = dict(fps=FPS, snippet_frames=SNIPPET_FRAMES)
PROPOSALS = dict(scale=SCALE, thresholds=THRESHOLDS, **TIME_BASE, **OIC)
RELEASED = dict(class_threshold=CLASS_THRESHOLD, nms="soft_released", iou_threshold=NMS_IOU,
                sigma=NMS_SIGMA, **PROPOSALS)


def detect(snippet, video, v_len, **overrides):
  """detect_video with the released values, some overridden."""
  return det.detect_video(snippet, video, v_len, **{**RELEASED, **overrides})


# ---------------------------------------------------------------------------
# Naive transcriptions of notes §3 (loops, np.split, np.mean, interp1d).

def naive_upsample(y, scale=24):
  """interp1d(kind='linear', fill_value='extrapolate') at np.arange(0, T, 1/scale)."""
  t = len(y)
  x_new = np.arange(0, t, 1 / scale)
  if interp1d is not None:
    return interp1d(np.arange(t), y, kind="linear", axis=0, fill_value="extrapolate")(x_new)
  out = []
  for x in x_new:  # scipy's rule: segment searchsorted(left) clipped to [1, T-1]
    hi = min(max(int(np.searchsorted(np.arange(t), x)), 1), t - 1)
    out.append((y[hi] - y[hi - 1]) / 1.0 * (x - (hi - 1)) + y[hi - 1])
  return np.array(out, np.float64)


def naive_runs(up, thr, quirk=True):
  pos = np.where(up >= thr)[0]
  if quirk:
    if not pos.any():
      return []
  elif pos.size == 0:
    return []
  groups = np.split(pos, np.where(np.diff(pos) != 1)[0] + 1)
  return [(int(g[0]), int(g[-1])) for g in groups]


def naive_oic(up, s, e, video_score, lam=LAMBDA, gamma=GAMMA):
  idx = list(range(s, e + 1))
  inner = np.mean(up[idx])
  n = len(idx)
  outer_s = max(0, int(s - lam * n))
  outer_e = min(int(up.shape[0] - 1), int(e + lam * n))
  outer_idx = list(range(outer_s, s)) + list(range(e + 1, outer_e + 1))
  outer = 0 if len(outer_idx) == 0 else np.mean(up[outer_idx])
  return inner - outer + gamma * video_score


def naive_proposals(snippet, video, classes, v_len, scale=24, fps=25, frames=16, quirk=True):
  t = snippet.shape[0]
  t_factor = float(frames * v_len) / (scale * t * fps)
  out = {}
  for thr in THRESHOLDS:
    for c in classes:
      up = naive_upsample(snippet[:, c], scale)
      for s, e in naive_runs(up, thr, quirk):
        score = naive_oic(up, s, e, float(video[c]))
        out.setdefault(int(c), []).append([score, s * t_factor, (e + 1) * t_factor])
  return out


def naive_basnet_nms(props, thresh=0.4, sigma=0.35):
  props = [list(p) for p in props]
  scores = np.array([p[0] for p in props])
  order = list(scores.argsort()[::-1])
  keep, side = [], []
  while order:
    i = order.pop(0)
    keep.append(props[i])
    remaining = []
    for j in order:
      x1, x2 = max(props[i][1], props[j][1]), min(props[i][2], props[j][2])
      inter = max(0.0, x2 - x1 + 1)
      area_i = props[i][2] - props[i][1] + 1
      area_j = props[j][2] - props[j][1] + 1
      iou = inter / (area_i + area_j - inter)
      if iou >= thresh:
        props[j][0] = props[j][0] * np.exp(-np.square(iou) / sigma)
        side.append(props[j])
      else:
        remaining.append(j)
    order = remaining
  return keep + side


def naive_select(video, thr=0.25):
  pred = np.where(video >= thr)[0]
  return pred if len(pred) else np.array([np.argmax(video)])


def _fake_scores(rng, t=120, c=6, noise=0.15):
  """Bumpy, noisy class curves in [0, 1] (many runs at low thresholds)."""
  x = np.arange(t)
  s = 0.05 + 0.1 * rng.random((t, c))
  for k in range(c):
    for _ in range(3):
      mu, w = rng.uniform(0, t), rng.uniform(2, 10)
      s[:, k] += rng.uniform(0.3, 0.9) * np.exp(-0.5 * ((x - mu) / w) ** 2)
  s += noise * rng.standard_normal((t, c))
  return np.clip(s, 0, 1).astype(np.float32)


# ---------------------------------------------------------------------------
# The config holds the released values.

def test_config_defaults_are_the_released_values():
  c = defaults.base_config()
  inf = c.inference
  assert (inf.class_threshold, inf.scale, inf.thresholds) == (CLASS_THRESHOLD, SCALE, "released")
  assert (inf.outer_ratio, inf.video_weight) == (LAMBDA, GAMMA)
  assert (inf.nms, inf.nms_iou, inf.nms_sigma) == ("soft_released", NMS_IOU, NMS_SIGMA)
  assert (c.data.fps, c.data.snippet_frames) == (FPS, SNIPPET_FRAMES)
  assert det.proposal_thresholds(inf.thresholds) is det.RELEASED_THRESHOLDS
  np.testing.assert_array_equal(det.proposal_thresholds([0.5, 0.25]), [0.5, 0.25])
  with pytest.raises(ValueError, match="released"):
    det.proposal_thresholds("paper")
  with pytest.raises(ValueError, match="shape"):
    det.proposal_thresholds([[0.1]])


# ---------------------------------------------------------------------------
# Classes, upsampling, thresholds.

def test_select_classes_threshold_inclusive_and_argmax_fallback():
  scores = np.array([0.1, 0.25, 0.7, 0.2499])
  np.testing.assert_array_equal(det.select_classes(scores, 0.25), [1, 2])
  np.testing.assert_array_equal(det.select_classes(np.array([0.1, 0.2, 0.05]), 0.25), [1])
  rng = np.random.default_rng(0)
  for _ in range(50):
    v = rng.random(20) * 0.4
    np.testing.assert_array_equal(det.select_classes(v, CLASS_THRESHOLD), naive_select(v))
  with pytest.raises(ValueError, match="shape"):
    det.select_classes(np.zeros((2, 3)), CLASS_THRESHOLD)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_upsample_matches_interp1d_exactly(dtype):
  rng = np.random.default_rng(1)
  for t in (2, 3, 17, 750):
    y = rng.random(t).astype(dtype)
    up = det.upsample(y, 24)
    assert up.dtype == np.float64 and up.shape == (t * 24,)
    np.testing.assert_array_equal(up, naive_upsample(y, 24))
  y2 = rng.random((50, 3)).astype(dtype)
  up2 = det.upsample(y2, 24)
  assert up2.shape == (1200, 3)
  for k in range(3):
    np.testing.assert_array_equal(up2[:, k], naive_upsample(y2[:, k], 24))


def test_upsample_extrapolates_last_segment():
  up = det.upsample(np.array([0.0, 1.0, 3.0]), 24)
  assert up.shape == (72,)
  tail = np.arange(48, 72) / 24                         # x in [2, 3 - 1/24]
  np.testing.assert_allclose(up[48:], 3.0 + 2.0 * (tail - 2), rtol=0, atol=1e-12)
  assert up[-1] > 3.0                                   # beyond the last value
  np.testing.assert_array_equal(det.upsample(np.array([0.4]), 4), [0.4] * 4)


def test_released_threshold_values_used_as_is():
  assert det.RELEASED_THRESHOLDS.shape == (9,)
  assert det.RELEASED_THRESHOLDS[2] == 0.30000000000000004
  assert det.RELEASED_THRESHOLDS[6] == 0.7000000000000001
  up = np.array([0.1, 0.3, 0.3, 0.2, 0.7, 0.7, 0.0])
  assert det.proposal_runs(up, det.RELEASED_THRESHOLDS[2]) == [(4, 5)]
  assert det.proposal_runs(up, 0.3) == [(1, 2), (4, 5)]
  assert det.proposal_runs(up, det.RELEASED_THRESHOLDS[6]) == []
  assert det.proposal_runs(up, det.RELEASED_THRESHOLDS[0]) == [(0, 5)]


# ---------------------------------------------------------------------------
# Runs and the [0] quirk.

def test_proposal_runs_match_np_split_grouping():
  rng = np.random.default_rng(2)
  for _ in range(30):
    up = det.upsample(_fake_scores(rng, t=60, c=1)[:, 0], SCALE)
    for thr in THRESHOLDS:
      for quirk in (True, False):
        assert det.proposal_runs(up, thr, quirk) == naive_runs(up, thr, quirk)


def test_proposal_runs_zero_only_quirk():
  up = np.array([0.5, 0.0, 0.0, 0.2])
  assert det.proposal_runs(up, 0.4) == []                      # positions [0]: skipped
  assert det.proposal_runs(up, 0.4, released_quirks=False) == [(0, 0)]
  assert det.proposal_runs(np.array([0.5, 0.5, 0.0]), 0.4) == [(0, 1)]
  assert det.proposal_runs(np.array([0.5, 0.0, 0.5]), 0.4) == [(0, 0), (2, 2)]
  assert det.proposal_runs(np.zeros(5), 0.1) == []
  assert det.proposal_runs(np.ones(5), 0.1) == [(0, 4)]


# ---------------------------------------------------------------------------
# OIC score.

def test_oic_with_the_effective_released_values():
  up = np.linspace(0, 1, 40)
  assert det.oic_score(up, 10, 19, 0.5, **OIC) == pytest.approx(
      naive_oic(up, 10, 19, 0.5, 0.15, 0.2),
                                                         abs=SCORE_ATOL)
  # The names say which is which: 0.2 weights the video score.
  a = det.oic_score(up, 10, 19, 0.0, **OIC)
  b = det.oic_score(up, 10, 19, 1.0, **OIC)
  assert b - a == pytest.approx(0.2, abs=1e-12)


def test_oic_matches_naive_on_random_runs():
  rng = np.random.default_rng(3)
  up = det.upsample(_fake_scores(rng, t=80, c=1)[:, 0], SCALE)
  n = up.size
  for _ in range(300):
    s = int(rng.integers(0, n))
    e = int(rng.integers(s, min(n, s + rng.integers(1, 400))))
    vs = float(rng.random())
    ratio, weight = float(rng.uniform(0, 0.5)), float(rng.uniform(0, 1))
    got = det.oic_score(up, s, e, vs, outer_ratio=ratio, video_weight=weight)
    assert got == pytest.approx(naive_oic(up, s, e, vs, ratio, weight), abs=SCORE_ATOL)


def test_oic_edge_cases():
  up = np.array([0.9, 0.8, 0.1, 0.2, 0.6, 0.7, 0.3, 0.4, 0.5, 0.0])
  # Whole video: both outer parts empty -> outer 0.
  assert det.oic_score(up, 0, 9, 0.5, **OIC) == pytest.approx(up.mean() + 0.1, abs=1e-12)
  # Run at the start, length 2: int(0 - 0.3) = 0 (no left part); right
  # int(1 + 0.3) = 1 -> empty too.
  assert det.oic_score(up, 0, 1, 0.0, **OIC) == pytest.approx(0.85, abs=1e-12)
  # Run at the end, length 7 (reach 1.05): left int(3 - 1.05) = 1 -> [1, 2]; right clipped.
  assert det.oic_score(up, 3, 9, 0.0, **OIC) == pytest.approx(up[3:].mean() - 0.45, abs=1e-12)
  # int() truncation toward zero: s = 1, n = 10, reach 1.5 -> int(-0.5) = 0 -> [0, 0].
  up2 = np.arange(12, dtype=np.float64)
  assert det.oic_score(up2, 1, 10, 0.0, **OIC) == pytest.approx(5.5 - (0 + 11) / 2, abs=1e-12)
  for s, e in ((0, 1), (3, 9), (0, 9), (4, 4), (9, 9), (0, 0)):
    assert det.oic_score(up, s, e, 0.3, **OIC) == pytest.approx(naive_oic(up, s, e, 0.3),
                                                                abs=1e-12)
  with pytest.raises(ValueError, match="start"):
    det.oic_score(up, 5, 10, 0.0, **OIC)
  with pytest.raises(ValueError, match="outer_ratio"):
    det.oic_score(up, 0, 1, 0.0, outer_ratio=-0.1, video_weight=GAMMA)


# ---------------------------------------------------------------------------
# Proposals and the time mapping.

def test_generate_proposals_match_naive_pipeline():
  rng = np.random.default_rng(4)
  snippet = _fake_scores(rng, t=100, c=5)
  video = rng.random(5).astype(np.float32)
  classes = [0, 2, 4]
  got = det.generate_proposals(snippet, video, classes, 333, **PROPOSALS)
  want = naive_proposals(snippet, video, classes, 333)
  assert list(got) == list(want)
  for c in want:
    w = np.array(want[c])
    assert got[c].shape == w.shape and got[c].dtype == np.float64
    np.testing.assert_allclose(got[c][:, 0], w[:, 0], rtol=0, atol=SCORE_ATOL)
    np.testing.assert_array_equal(got[c][:, 1:], w[:, 1:])


def test_time_mapping_when_v_len_differs_from_t():
  t, v_len = 10, 37
  snippet = np.zeros((t, 2), np.float32)
  snippet[3:6, 1] = 1.0
  props = det.generate_proposals(snippet, np.array([0.0, 1.0]), [0, 1], v_len, **PROPOSALS)
  assert list(props) == [1]                   # class 0 has no position >= 0.1
  factor = 16 * v_len / (24 * t * 25)
  assert det.time_factor(v_len, t, scale=SCALE, **TIME_BASE) == factor
  up = det.upsample(snippet[:, 1], SCALE)
  for (score, t0, t1) in props[1]:
    assert t0 / factor == pytest.approx(round(t0 / factor))
  first = det.proposal_runs(up, THRESHOLDS[0])
  assert props[1][0, 1] == first[0][0] * factor
  assert props[1][0, 2] == (first[0][1] + 1) * factor
  # num_segments overrides T in the mapping only.
  other = det.generate_proposals(snippet, np.array([0.0, 1.0]), [1], v_len, num_segments=20,
                                 **PROPOSALS)
  np.testing.assert_allclose(other[1][:, 1:], props[1][:, 1:] / 2, rtol=1e-15)
  np.testing.assert_array_equal(other[1][:, 0], props[1][:, 0])


# ---------------------------------------------------------------------------
# NMS.

def test_soft_nms_hand_case():
  props = np.array([[0.9, 0.0, 1.0], [0.8, 0.5, 2.0], [0.6, 1.2, 3.0]])
  out = det.soft_nms_released(props, NMS_IOU, NMS_SIGMA)
  # P1 vs P2, "+1" IoU: inter 1 - 0.5 + 1 = 1.5, union 2 + 2.5 - 1.5 = 3 -> 0.5: decayed.
  # P1 vs P3: inter 0.8, union 4 -> 0.2: stays and is picked next.  P2 would
  # overlap P3 by 0.514, but decayed proposals are never compared again.
  want = np.array([[0.9, 0.0, 1.0], [0.6, 1.2, 3.0], [0.8 * math.exp(-0.25 / 0.35), 0.5, 2.0]])
  np.testing.assert_allclose(out, want, rtol=1e-15)
  assert props[1, 0] == 0.8                   # input untouched


def test_soft_nms_plus_one_iou_and_nothing_discarded():
  # Disjoint in seconds yet overlapping under "+1": inter 1 - 1.05 + 1 = 0.95,
  # union 2 + 1.05 - 0.95 = 2.1 -> IoU 0.452 (0 without the "+1").
  out = det.soft_nms_released(np.array([[0.9, 0.0, 1.0], [0.5, 1.05, 1.1]]), NMS_IOU,
                              NMS_SIGMA)
  iou = (1.0 - 1.05 + 1) / (2.0 + (1.1 - 1.05 + 1) - (1.0 - 1.05 + 1))
  assert iou == pytest.approx(0.95 / 2.1) and iou >= 0.4
  np.testing.assert_allclose(out[1, 0], 0.5 * math.exp(-iou ** 2 / 0.35), rtol=1e-15)
  # Duplicates (the same run at several thresholds) all come back, decayed once.
  dup = np.array([[0.7, 2.0, 5.0]] * 4 + [[0.3, 10.0, 12.0]])
  out = det.soft_nms_released(dup, NMS_IOU, NMS_SIGMA)
  assert out.shape == dup.shape
  np.testing.assert_allclose(np.sort(out[:, 0]), np.sort([0.7, 0.3] + [0.7 * math.exp(-1 / 0.35)] * 3))
  assert det.soft_nms_released(np.zeros((0, 3)), NMS_IOU, NMS_SIGMA).shape == (0, 3)


def test_soft_nms_matches_naive_loop():
  rng = np.random.default_rng(5)
  for _ in range(40):
    m = int(rng.integers(1, 60))
    starts = rng.uniform(0, 30, m)
    props = np.stack([rng.random(m), starts, starts + rng.uniform(0.1, 8, m)], 1)
    props = np.concatenate([props, props[: m // 3]])          # exact ties, as in real pools
    np.testing.assert_array_equal(det.soft_nms_released(props, NMS_IOU, NMS_SIGMA),
                                  np.array(naive_basnet_nms(props)))
    np.testing.assert_array_equal(det.soft_nms_released(props, 0.7, 0.5),
                                  np.array(naive_basnet_nms(props, 0.7, 0.5)))


def test_hard_nms_hand_case():
  props = np.array([[0.8, 2.0, 12.0], [0.9, 0.0, 10.0], [0.7, 6.0, 16.0], [0.6, 0.0, 4.0]])
  out = det.hard_nms(props, 0.4)
  # [0, 10] keeps; [2, 12]: IoU 8/12 -> gone; [6, 16]: 4/16 -> kept;
  # [0, 4]: IoU with [0, 10] is exactly 0.4 -> gone (>= threshold).
  np.testing.assert_array_equal(out, props[[1, 2]])
  np.testing.assert_array_equal(det.hard_nms(props, 0.41), props[[1, 2, 3]])
  assert det.hard_nms(np.zeros((0, 3)), NMS_IOU).shape == (0, 3)
  with pytest.raises(ValueError, match="shape"):
    det.hard_nms(np.zeros((3, 2)), NMS_IOU)


# ---------------------------------------------------------------------------
# One video.

def test_detect_video_matches_naive_pipeline():
  rng = np.random.default_rng(6)
  snippet = _fake_scores(rng, t=90, c=8)
  video = np.array([0.3, 0.01, 0.6, 0.1, 0.25, 0.0, 0.2, 0.05], np.float32)
  dets = detect(snippet, video, v_len=140)
  want = []
  for c, props in naive_proposals(snippet, video, naive_select(video), 140).items():
    want += [(c, p) for p in naive_basnet_nms(props)]
  assert [d["label"] for d in dets] == [c for c, _ in want]
  np.testing.assert_allclose([d["score"] for d in dets], [p[0] for _, p in want], rtol=0,
                             atol=SCORE_ATOL)
  np.testing.assert_array_equal([d["segment"] for d in dets], [p[1:] for _, p in want])
  assert all(isinstance(d["score"], float) and isinstance(d["label"], int) for d in dets)


def test_detect_video_options():
  rng = np.random.default_rng(7)
  snippet = _fake_scores(rng, t=60, c=3)
  video = np.array([0.9, 0.1, 0.5], np.float32)
  full = detect(snippet, video, 60)
  raw = detect(snippet, video, 60, nms="none")
  assert len(full) == len(raw)                # soft-NMS discards nothing
  hard = detect(snippet, video, 60, nms="hard")
  assert 0 < len(hard) < len(raw)
  capped = detect(snippet, video, 60, max_detections=5)
  assert len(capped) == 5
  top = sorted((d["score"] for d in full), reverse=True)[:5]
  assert sorted((d["score"] for d in capped), reverse=True) == top
  with pytest.raises(ValueError, match="nms"):
    detect(snippet, video, 60, nms="soft")
  with pytest.raises(ValueError, match="non-finite"):
    detect(np.full((60, 3), np.nan), video, 60)
  assert detect(np.zeros((60, 3)), video, 60) == []

