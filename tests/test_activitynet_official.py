"""benchmarks/activitynet_official.py (the official ActivityNet evaluator's
algorithm, ported) against case_jax.evaluation.evaluate_detections: the same
AP on hand-computed cases and on seeded ActivityNet-shaped fixtures with tied
scores, tied tIoUs, overlapping GT, duplicates, classes without predictions,
videos without GT and GT of another subset.  Two independent implementations
agreeing checks both (the benchmark's speed ratio rests on it).  A few seconds.
"""
import numpy as np
import pytest

from benchmarks.activitynet_official import ANETdetection, interpolated_prec_rec
from case_jax import detection_set
from case_jax import evaluation as ev
from case_jax.data import ground_truth as gtm
from tests.test_evaluation import gt_json_dict, results_dict


def _gt_json(videos):
  return gt_json_dict(videos, duration=200.0)


def _both(gt_json, res_json, thresholds):
  anet = ANETdetection(ground_truth=gt_json, prediction=res_json,
                       tiou_thresholds=thresholds, subset="validation")
  m_ap, avg = anet.evaluate()
  gt = gtm.ground_truth_from_dict(gt_json, "validation")
  ours = ev.evaluate_detections(gt, detection_set.detections_from_results(res_json),
                                thresholds, tie_order="numpy")
  assert ours["class_names"] == list(anet.activity_index)
  return anet, m_ap, avg, ours


def test_interpolated_prec_rec_hand_computed():
  # precision (1, 1/2, 2/3), recall (1/2, 1/2, 1): 0.5*1 + 0.5*2/3.
  assert interpolated_prec_rec(np.array([1, 0.5, 2 / 3]),
                               np.array([0.5, 0.5, 1.0])) == pytest.approx(
                                   0.5 + 0.5 * 2 / 3, abs=1e-15)


def test_hand_computed_lock_continue_stop():
  # GT [0,10], [5,15] in v1; a [0,10] pair of duplicates and a detection in
  # a video without GT.  The second duplicate skips the locked GT (tIoU 1)
  # and takes [5,15] (tIoU 1/3) when t <= 1/3; the v2 detection is an FP.
  gt = _gt_json({"v1": ("validation", [("A", 0.0, 10.0), ("A", 5.0, 15.0)]),
                 "v2": ("validation", [("B", 0.0, 5.0)]),
                 "v3": ("training", [("A", 0.0, 10.0)])})
  res = results_dict([("v1", "A", 0.9, 0.0, 10.0), ("v1", "A", 0.8, 0.0, 10.0),
                  ("v2", "A", 0.95, 0.0, 10.0)])
  anet, m_ap, avg, ours = _both(gt, res, [0.3, 0.5])
  # t=0.3: FP TP TP -> precisions (0, 1/2, 2/3) at recalls (0, 1/2, 1).
  # t=0.5: FP TP FP -> 1/2 * 1/2.  Class B has no predictions: AP 0.
  np.testing.assert_allclose(anet.ap, [[0.5 * 2 / 3 + 0.5 * 2 / 3, 0.0],
                                       [0.25, 0.0]], atol=1e-15)
  np.testing.assert_array_equal(anet.ap, ours["ap"])
  assert avg == pytest.approx(ours["average_map"], abs=1e-15)


def _anet_fixture(rng, num_videos, num_classes, dets_per_video, score_levels):
  """ActivityNet-shaped: 1-2 classes per video, long overlapping instances,
  a few videos of another subset; detections jittered from GT or random,
  scores from ``score_levels`` values (ties) or continuous."""
  classes = [f"c{c}" for c in rng.permutation(num_classes)]
  videos, own = {}, {}
  for v in range(num_videos):
    mine = list(rng.choice(classes, size=1 + int(rng.random() < 0.3), replace=False))
    anns = []
    for _ in range(int(rng.integers(1, 4))):
      s = float(rng.integers(0, 60)) * 2.0         # even: exact tIoU ties
      anns.append((str(rng.choice(mine)), s, s + float(rng.choice([4.0, 8.0, 20.0, 60.0]))))
    subset = "validation" if rng.random() < 0.85 else "training"
    videos[f"v_{v:03d}"] = (subset, anns)
    own[f"v_{v:03d}"] = (mine, anns)
  present = sorted({a[0] for sub, anns in videos.values() if sub == "validation"
                    for a in anns})
  levels = rng.random(score_levels)
  dets = []
  for vid, (mine, anns) in own.items():
    for _ in range(dets_per_video):
      score = float(rng.choice(levels)) if rng.random() < 0.6 else float(rng.random())
      if rng.random() < 0.6:
        lab, s, e = anns[int(rng.integers(len(anns)))]
        j = rng.integers(-3, 4, size=2) * 2.0 * (rng.random() < 0.7)
        s, e = s + j[0], e + j[1]
        lab = lab if lab in present and rng.random() < 0.9 else str(rng.choice(present))
      else:
        s = float(rng.integers(0, 80)) * 2.0
        e = s + float(rng.integers(1, 40)) * 2.0
        lab = str(rng.choice(present))
      dets.append((vid, lab, score, float(min(s, e)), float(max(s, e) + 1.0)))
  dets.append(("v_not_in_gt", present[0], 0.5, 0.0, 10.0))
  order = rng.permutation(len(dets))
  return _gt_json(videos), results_dict([dets[i] for i in order])


@pytest.mark.parametrize("seed", range(6))
def test_matches_case_jax_on_anet_fixtures(seed):
  rng = np.random.default_rng(100 + seed)
  gt, res = _anet_fixture(rng, num_videos=int(rng.integers(5, 40)),
                          num_classes=int(rng.integers(2, 8)),
                          dets_per_video=int(rng.integers(2, 30)),
                          score_levels=int(rng.integers(1, 5)))
  anet, m_ap, avg, ours = _both(gt, res, ev.ACTIVITYNET_TIOUS)
  np.testing.assert_allclose(anet.ap, ours["ap"], rtol=0, atol=1e-12)
  np.testing.assert_allclose(m_ap, ours["map"], rtol=0, atol=1e-12)
  assert avg == pytest.approx(ours["average_map"], abs=1e-12)


def test_many_ties_follow_numpy_order():
  # 40 detections of one score over 20 overlapping GTs of one video (tIoU
  # ties too): which duplicate locks which GT depends on numpy's unstable
  # sort; the port and case_jax's 'numpy' order must agree on it.
  gts = [("A", float(2 * (k % 5)), float(2 * (k % 5) + 10 + 2 * (k // 5)))
         for k in range(20)]
  gt = _gt_json({"v_a": ("validation", gts)})
  rng = np.random.default_rng(7)
  dets = [("v_a", "A", 0.5, float(2 * rng.integers(0, 6)),
           float(2 * rng.integers(6, 14))) for _ in range(40)]
  res = results_dict(dets)
  thr = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
  anet, _, _, ours = _both(gt, res, thr)
  np.testing.assert_allclose(anet.ap, ours["ap"], rtol=0, atol=1e-12)


def test_unknown_label_is_a_key_error():
  gt = _gt_json({"v1": ("validation", [("A", 0.0, 10.0)])})
  with pytest.raises(KeyError):
    ANETdetection(ground_truth=gt, prediction=results_dict([("v1", "Z", 0.9, 0.0, 1.0)]))
