"""Tests of case_jax.evaluation: detection mAP (official ActivityNet protocol,
official_code_notes.md §5), GT/detection readers on the real THUMOS14
annotations, the CLI and the clustering entropies.

``naive_evaluate`` (benchmarks/naive_evaluation.py, shared with the speed
benchmark) is a deliberately plain second implementation (Python loops over
dicts and lists, written from the algorithm description), the oracle of the
randomized comparison.
"""
import json
import os
import warnings

import numpy as np
import pytest

from benchmarks.naive_evaluation import naive_class_ap, naive_evaluate
from case_jax import detection_set
from case_jax import evaluation as ev
from case_jax.data import ground_truth as gtm

from tests.conftest import SHARED_DATA as DATA
GT_JSON = os.path.join(DATA, "thumos14_acmnet_gt", "gt.json")
WTALC_DIR = os.path.join(DATA, "thumos14_wtalc_annotations")


# ---------------------------------------------------------------------------
# Fixtures.
# ---------------------------------------------------------------------------
def gt_json_dict(videos, duration=100.0):
  """videos: {vid: (subset, [(label, s, e), ...])} -> gt.json dict."""
  return {"version": "test", "database": {
      vid: {"subset": sub, "duration": duration, "annotations": [
          {"segment": [s, e], "label": lab} for lab, s, e in anns]}
      for vid, (sub, anns) in videos.items()}}


def results_dict(dets):
  """dets: [(vid, label, score, s, e)] -> result json dict (input order kept)."""
  out = {}
  for vid, lab, score, s, e in dets:
    out.setdefault(vid, []).append({"label": lab, "score": score, "segment": [s, e]})
  return {"version": "VERSION 1.3", "results": out, "external_data": {}}


def _evaluate(gt_json, result_json, thresholds, tie_order="numpy", subset="test"):
  gt = gtm.ground_truth_from_dict(gt_json, subset)
  return ev.evaluate_detections(gt, detection_set.detections_from_results(result_json),
                                thresholds, tie_order=tie_order)


def _random_fixture(rng):
  """Small GT/detections with score ties, GT ties, duplicates, empty classes,
  detections in videos without their class or outside the GT."""
  num_classes = int(rng.integers(1, 5))
  labels = [f"class{c}" for c in rng.permutation(num_classes)]
  videos, gt_list = {}, []
  for v in range(int(rng.integers(1, 6))):
    anns = []
    for _ in range(int(rng.integers(0, 7))):
      s = float(rng.integers(0, 80)) * 0.5        # dyadic: exact tIoU ties
      length = float(rng.choice([2.0, 2.0, 4.0, 3.5, 10.0]))
      anns.append((str(rng.choice(labels)), s, s + length))
    subset = "test" if rng.random() < 0.85 else "validation"
    videos[f"vid{v}"] = (subset, anns)
    if subset == "test":
      gt_list += [(f"vid{v}",) + a for a in anns]
  if not gt_list:
    videos["vid_extra"] = ("test", [(labels[0], 1.0, 5.0)])
    gt_list.append(("vid_extra", labels[0], 1.0, 5.0))
  present = sorted({g[1] for g in gt_list})
  score_pool = rng.choice([0.1, 0.5, 0.5, 0.9], size=4)
  dets = []
  for _ in range(int(rng.integers(0, 40))):
    kind = rng.random()
    lab = str(rng.choice(present))
    tied = rng.random() < 0.5
    score = float(rng.choice(score_pool)) if tied else float(rng.random())
    if kind < 0.45:                                  # near a GT of any class
      g = gt_list[int(rng.integers(len(gt_list)))]
      jitter = rng.integers(-4, 5, size=2) * 0.5 * (rng.random() < 0.7)
      dets.append((g[0], lab if rng.random() < 0.3 else g[1], score,
                   g[2] + jitter[0], g[3] + jitter[1]))
    elif kind < 0.6 and dets:                        # duplicate detection
      d = dets[int(rng.integers(len(dets)))]
      dets.append(d[:2] + (score,) + d[3:])
    elif kind < 0.7:                                 # video outside the GT
      dets.append(("unknown_vid", lab, score, 0.0, 5.0))
    elif kind < 0.8:                                 # long one: covers GT ties
      g = gt_list[int(rng.integers(len(gt_list)))]
      dets.append((g[0], g[1], score, g[2] - 20.0, g[3] + 20.0))
    else:                                            # random segment
      vid = str(rng.choice(list(videos)))
      s = float(rng.integers(0, 80)) * 0.5
      dets.append((vid, lab, score, s, s + float(rng.integers(1, 20))))
  return gt_json_dict(videos), results_dict(dets)


# ---------------------------------------------------------------------------
# Hand-computed cases.
# ---------------------------------------------------------------------------
def test_hand_computed_two_instances():
  # GT [0,10], [20,30]; detections: exact (tIoU 1), half of GT 1 (0.5, GT
  # already taken), half of GT 2 (0.5).  At t=0.5: TP FP TP -> precision
  # (1, 1/2, 2/3), recall (1/2, 1/2, 1) -> AP = 0.5*1 + 0.5*2/3.  At t=0.6:
  # TP FP FP -> AP = 0.5.
  ap = ev.average_precision_detection(
      ["a", "a"], [[0, 10], [20, 30]], ["a", "a", "a"], [0.9, 0.8, 0.7],
      [[0, 10], [0, 5], [20, 25]], [0.5, 0.6])
  np.testing.assert_allclose(ap, [0.5 + 0.5 * 2 / 3, 0.5], rtol=0, atol=1e-15)


def test_duplicate_takes_lower_tiou_free_gt():
  # GT1 [0,10] and GT2 [5,15]; two identical detections [0,10].  The second
  # skips the taken GT1 (tIoU 1) and takes GT2 (tIoU 5/15) when t <= 1/3.
  ap = ev.average_precision_detection(
      ["v", "v"], [[0, 10], [5, 15]], ["v", "v"], [0.9, 0.8],
      [[0, 10], [0, 10]], [0.3, 0.5])
  np.testing.assert_allclose(ap, [1.0, 0.5], atol=1e-15)


def test_gt_tie_order_stable():
  # A long detection [0,10] covers two equal GTs [0,4], [6,10] (tIoU 0.4
  # each); stable order takes the first, so the later exact [0,4] detection
  # finds its GT taken and its other GT below t -> FP: AP = 0.5.
  args = (["v", "v"], [[0, 4], [6, 10]], ["v", "v"], [0.9, 0.8],
          [[0, 10], [0, 4]], [0.3])
  np.testing.assert_allclose(
      ev.average_precision_detection(*args, tie_order="stable"), [0.5])
  # numpy order: whatever this numpy's argsort does, as the naive oracle.
  gts = [("v", 0.0, 4.0), ("v", 6.0, 10.0)]
  preds = [("v", 0.9, 0.0, 10.0), ("v", 0.8, 0.0, 4.0)]
  np.testing.assert_allclose(ev.average_precision_detection(*args),
                             naive_class_ap(gts, preds, [0.3], "numpy"))


def test_detection_in_video_without_its_class_is_fp():
  gt = gt_json_dict({"v1": ("test", [("A", 0, 10)]), "v2": ("test", [("B", 0, 10)])})
  res = results_dict([("v2", "A", 0.9, 0, 10),      # right place, wrong video: FP
                  ("v1", "A", 0.5, 0, 10),      # TP
                  ("elsewhere", "B", 0.95, 0, 10),  # video outside GT: FP
                  ("v2", "B", 0.1, 0, 10)])     # TP
  out = _evaluate(gt, res, [0.5])
  assert out["class_names"] == ["A", "B"]
  # Both classes: FP then TP -> precision (0, 1/2), recall (0, 1) -> 0.5.
  np.testing.assert_allclose(out["ap"], [[0.5, 0.5]])


def test_validation_video_counts_as_outside_test_subset():
  gt = gt_json_dict({"t": ("test", [("A", 0, 10)]), "val": ("validation", [("A", 0, 10)])})
  out = _evaluate(gt, results_dict([("val", "A", 0.9, 0, 10), ("t", "A", 0.8, 0, 10)]), [0.5])
  np.testing.assert_allclose(out["ap"], [[0.5]])
  assert out["num_gt"].tolist() == [1]


def test_empty_predictions():
  gt = gt_json_dict({"v": ("test", [("A", 0, 10), ("B", 20, 30)])})
  out = _evaluate(gt, results_dict([("v", "A", 0.9, 0, 10)]), ev.THUMOS_TIOUS)
  np.testing.assert_allclose(out["ap"][:, 0], 1.0)
  np.testing.assert_allclose(out["ap"][:, 1], 0.0)   # class without predictions
  np.testing.assert_allclose(out["map"], 0.5)
  out = _evaluate(gt, results_dict([]), ev.THUMOS_TIOUS)
  assert out["average_map"] == 0.0 and not out["ap"].any()
  assert set(out["summary"]) == {"AVG(0.1:0.5)", "AVG(0.3:0.7)", "AVG(0.1:0.7)"}


def test_unknown_label_is_rejected(tmp_path):
  gt = gt_json_dict({"v": ("test", [("A", 0, 10)]), "w": ("validation", [("Z", 0, 1)])})
  path = tmp_path / "pred.json"
  # "Z" is a class of the file but not of the test subset: also unknown.
  for label in ("NotAClass", "Z"):
    path.write_text(json.dumps(results_dict([("v", label, 0.9, 0, 10)])))
    with pytest.raises(ValueError, match=rf"pred\.json.*{label!r}"):
      ev.evaluate_detections(gtm.ground_truth_from_dict(gt), str(path))


def test_bad_inputs_raise_clear_errors(tmp_path):
  gt = gt_json_dict({"v": ("test", [("A", 0, 10)])})
  with pytest.raises(ValueError, match="subsets present"):
    gtm.ground_truth_from_dict(gt, subset="testing")
  with pytest.raises(ValueError, match="NaN"):
    detection_set.detections_from_arrays(["v"], ["A"], [float("nan")], [[0, 1]])
  with pytest.raises(ValueError, match="tie_order"):
    _evaluate(gt, results_dict([("v", "A", 0.9, 0, 10)]), [0.5], tie_order="fast")
  with pytest.raises(ValueError, match="class_names"):
    detection_set.detections_from_arrays(["v"], [0], [0.5], [[0, 1]])
  with pytest.raises(FileNotFoundError, match="missing W-TALC"):
    ev.load_ground_truth(str(tmp_path))


def test_numpy_and_stable_tie_orders_can_differ():
  # 40 detections with one score, alternating TP/FP.  Stable order keeps the
  # alternation; numpy's unstable sort reorders the ties (which order depends
  # on the numpy version and CPU), changing the precision curve.
  n = 40
  scores = np.full(n, 0.5)
  if (np.argsort(scores)[::-1] == np.arange(n)).all():
    pytest.skip("this numpy orders these ties like the stable order")
  gts = [("v", 10.0 * i, 10.0 * i + 5) for i in range(n // 2)]
  preds = [("v", 0.5, 10.0 * (i // 2), 10.0 * (i // 2) + (5 if i % 2 == 0 else 0.5))
           for i in range(n)]
  args = ([g[0] for g in gts], [g[1:] for g in gts], [p[0] for p in preds],
          [p[1] for p in preds], [p[2:] for p in preds], [0.5])
  ap_numpy = ev.average_precision_detection(*args, tie_order="numpy")
  ap_stable = ev.average_precision_detection(*args, tie_order="stable")
  np.testing.assert_allclose(ap_numpy, naive_class_ap(gts, preds, [0.5], "numpy"))
  np.testing.assert_allclose(ap_stable, naive_class_ap(gts, preds, [0.5], "stable"))
  assert abs(ap_numpy[0] - ap_stable[0]) > 1e-6, (ap_numpy, ap_stable)


def test_per_class_routine_agrees_with_evaluate():
  rng = np.random.default_rng(7)
  gt_json, res = _random_fixture(rng)
  gt = gtm.ground_truth_from_dict(gt_json)
  out = ev.evaluate_detections(gt, res, ev.THUMOS_TIOUS, tie_order="stable")
  dets = detection_set.detections_from_results(res)
  for c, name in enumerate(gt.class_names):
    video, start, end = gt.for_class(c)
    mine = dets.labels == name
    ap = ev.average_precision_detection(
        [gt.video_ids[v] for v in video], np.stack([start, end], 1),
        dets.video_ids[mine], dets.scores[mine], dets.segments[mine],
        ev.THUMOS_TIOUS, tie_order="stable")
    np.testing.assert_allclose(ap, out["ap"][:, c], atol=1e-15)


# ---------------------------------------------------------------------------
# Randomized comparison with the naive oracle.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("tie_order", ev.TIE_ORDERS)
def test_matches_naive_on_random_fixtures(tie_order):
  rng = np.random.default_rng(2023 + len(tie_order))
  threshold_sets = [ev.THUMOS_TIOUS, ev.ACTIVITYNET_TIOUS, [0.5], [0.0, 0.25, 1.0 / 3]]
  for trial in range(300):
    gt_json, res = _random_fixture(rng)
    thr = threshold_sets[trial % len(threshold_sets)]
    want, classes = naive_evaluate(gt_json, res, "test", thr, tie_order)
    got = _evaluate(gt_json, res, thr, tie_order)
    assert got["class_names"] == classes
    np.testing.assert_allclose(got["ap"], want, rtol=0, atol=1e-9,
                               err_msg=f"trial {trial}")
    np.testing.assert_allclose(got["map"], want.mean(1), rtol=0, atol=1e-9)


def test_matches_naive_with_many_gt_ties():
  # Many equal GTs under one long detection: rows longer than the small-sort
  # cutoffs, where numpy's unstable order is least like the stable one.
  gts = [("v", 1.0 * i, 1.0 * i + 0.5) for i in range(40)]
  preds = [("v", 0.9, -1.0, 41.0)] + [("v", 0.8, g[1], g[2]) for g in gts[::3]]
  preds += [("v", 0.7, -1.0, 41.0)] * 3
  thr = [0.0, 0.01, 0.5]
  for tie_order in ev.TIE_ORDERS:
    ap = ev.average_precision_detection(
        [g[0] for g in gts], [g[1:] for g in gts], [p[0] for p in preds],
        [p[1] for p in preds], [p[2:] for p in preds], thr, tie_order=tie_order)
    np.testing.assert_allclose(ap, naive_class_ap(gts, preds, thr, tie_order),
                               atol=1e-9)


# ---------------------------------------------------------------------------
# Real THUMOS14 annotations.
# ---------------------------------------------------------------------------
needs_data = pytest.mark.skipif(not os.path.isfile(GT_JSON),
                                reason="real THUMOS14 annotations not present")


@needs_data
def test_real_thumos_gt_json_loads():
  test = gtm.load_gt_json(GT_JSON, "test")
  assert len(test.video_ids) == 212 and test.num_classes == 20
  assert len(test.video) == 3358 and test.num_instances().min() > 0
  train = ev.load_ground_truth(GT_JSON, "validation")
  assert len(train.video_ids) == 200 and len(train.video) == 3007
  assert set(train.class_names) == set(test.class_names)
  # First-appearance order, not alphabetical.
  assert test.class_names[0] == "HighJump"


@needs_data
def test_real_wtalc_arrays_agree_with_gt_json():
  # Known differences (printed): the video order, the class first-appearance
  # order, and the interleaving of classes inside multi-label videos (e.g.
  # video_test_0000045, 0000367).  None matters to the mAP: matching only
  # sees the instances of one class in one video, and their order agrees.
  for subset in ("test", "validation"):
    a = gtm.load_gt_json(GT_JSON, subset)
    b = gtm.load_wtalc_annotations(WTALC_DIR, subset)
    assert set(a.video_ids) == set(b.video_ids)
    assert set(a.class_names) == set(b.class_names)
    assert len(a.video) == len(b.video)

    def by_video_and_class(gt):
      out = {}
      for v, c, seg in zip(gt.video, gt.label, gt.segments.tolist()):
        out.setdefault((gt.video_ids[v], gt.class_names[c]), []).append(seg)
      return out

    def by_video(gt):
      out = {vid: [] for vid in gt.video_ids}
      for v, c, seg in zip(gt.video, gt.label, gt.segments.tolist()):
        out[gt.video_ids[v]].append((gt.class_names[c], *seg))
      return out
    pa, pb = by_video(a), by_video(b)
    reordered = sorted(v for v in pa if pa[v] != pb[v])
    print(f"\n{subset}: {len(pa)} videos, {len(a.video)} instances; same video "
          f"order {a.video_ids == b.video_ids}, same class order "
          f"{a.class_names == b.class_names}; classes interleaved differently "
          f"in {len(reordered)} videos: {reordered}")
    assert len(reordered) <= 0.1 * len(pa)
    assert all(sorted(pa[v]) == sorted(pb[v]) for v in pa)
    assert by_video_and_class(a) == by_video_and_class(b)
    # So any detections score the same against either file.
    dets = detection_set.detections_from_arrays(
        [b.video_ids[v] for v in b.video], [b.class_names[c] for c in b.label],
        np.round(np.linspace(1, 0.5, len(b.video)), 2), b.segments + 0.3)
    maps = [ev.evaluate_detections(gt, dets)["map"] for gt in (a, b)]
    np.testing.assert_allclose(maps[0], maps[1], rtol=0, atol=1e-12)


@needs_data
def test_split_check_warns_on_disagreement():
  gt = gtm.load_gt_json(GT_JSON, "test")
  bas_net = [v for v in gt.video_ids if v not in
             ("video_test_0000270", "video_test_0001292", "video_test_0001496")]
  with pytest.warns(UserWarning, match="video_test_0000270"):
    only_split, only_gt = ev.check_split(gt, bas_net + ["video_test_9999999"])
  assert only_split == ["video_test_9999999"]
  assert only_gt == ["video_test_0000270", "video_test_0001496"]
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert ev.check_split(gt, list(gt.video_ids)) == ([], [])


# ---------------------------------------------------------------------------
# CLI.
# ---------------------------------------------------------------------------
def test_cli_prints_table_and_writes_json(tmp_path, capsys):
  gt_path, pred_path, out_path = (tmp_path / n for n in ("gt.json", "p.json", "o.json"))
  gt_path.write_text(json.dumps(gt_json_dict({"v": ("test", [("A", 0, 10), ("B", 20, 30)])})))
  pred_path.write_text(json.dumps(results_dict([("v", "A", 0.9, 0, 10), ("v", "B", 0.9, 20, 24)])))
  ev.main([str(gt_path), str(pred_path), "--json", str(out_path)])
  text = capsys.readouterr().out
  assert "mAP (%)" in text and "AVG(0.3:0.7)" in text
  saved = json.loads(out_path.read_text())
  # B's tIoU is 0.4: a hit at 0.1..0.4 only.
  np.testing.assert_allclose(saved["map"], [1, 1, 1, 1, 0.5, 0.5, 0.5])
  ev.main([str(gt_path), str(pred_path), "--tiou", "0.5:0.95:10", "--tie-order", "stable"])
  assert "AVG(0.5:0.95)" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    ev.main([str(gt_path), str(pred_path), "--tiou", "0.1-0.7"])

