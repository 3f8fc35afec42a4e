"""Reference points (chance, upper bound) on cases with known answers."""
import numpy as np
import pytest

from case_jax import defaults, inference, outputs, reference_points
from case_jax.data.ground_truth import ground_truth_from_dict
from case_jax.data.records import Segment, VideoRecord

SPP = 16 / 25   # seconds per snippet


class _Split(list):
  """The parts of a dataset the reference points read."""
  classes = ("A", "B")
  fps, snippet_frames = 25.0, 16


def _record(vid, n, segments):
  labels = np.zeros(2, np.float32)
  for s in segments:
    labels[s.class_index] = 1
  x = np.zeros((n, 4), np.float32)
  return VideoRecord(vid, x, x, labels, tuple(segments), n * SPP)


def _gt(records):
  names = _Split.classes
  return ground_truth_from_dict({"database": {r.video_id: {
      "subset": "test", "annotations": [
          {"segment": [s.start_s, s.end_s], "label": names[s.class_index]}
          for s in r.segments]} for r in records}})


def _cfg(num_segments):
  cfg = defaults.load_config("synthetic")
  cfg.data.num_segments = num_segments
  return cfg


def test_upper_bound_is_100_when_segments_align_with_snippets():
  # Whole snippets, each video at its own length (T = n: no resampling).
  records = _Split([
      _record("v1", 64, [Segment(10 * SPP, 30 * SPP, 0)]),
      _record("v2", 64, [Segment(5 * SPP, 25 * SPP, 1),
                         Segment(40 * SPP, 60 * SPP, 0)])])
  ub = reference_points.upper_bound_map(_gt(records), records, _cfg(64))
  assert ub["map"] == pytest.approx([1.0] * 7)
  assert ub["average_map"] == pytest.approx(1.0)


def test_upper_bound_uses_the_ground_truth_mask_per_class():
  rec = _record("v1", 20, [Segment(2 * SPP, 6 * SPP, 1)])
  masks = reference_points.class_masks(rec, np.arange(20))
  assert masks.shape == (20, 2) and not masks[:, 0].any()
  # Snippet centres (i + 0.5) * SPP inside [2, 6] snippets: i = 2..5.
  np.testing.assert_array_equal(np.flatnonzero(masks[:, 1]), [2, 3, 4, 5])
  # A video longer than T is read at the sampled snippets, as the test batches.
  long = _record("v2", 256, [Segment(0.0, 128 * SPP, 0)])
  dets = reference_points.upper_bound_detections(_Split([long]), _cfg(128))
  assert {d["label"] for d in dets["v2"]} == {0}


def test_upper_bound_below_100_when_instances_are_shorter_than_a_snippet():
  records = _Split([_record("v1", 64, [Segment(10 * SPP + 0.1, 10 * SPP + 0.3, 0)])])
  ub = reference_points.upper_bound_map(_gt(records), records, _cfg(64))
  assert ub["average_map"] == 0.0        # no snippet centre inside: never found


def _tiou(seg, gt):
  inter = np.clip(np.minimum(seg[..., 1], gt[1]) - np.maximum(seg[..., 0], gt[0]), 0, None)
  union = (seg[..., 1] - seg[..., 0]) + (gt[1] - gt[0]) - inter
  return inter / union


def test_chance_matches_its_expectation_by_brute_force():
  """One video, one instance, one detection: AP at threshold t is 1 when the
  random segment reaches tIoU t, else 0, so the expected mAP is P(tIoU >= t)
  over two uniform points, here by exhaustive midpoint quadrature."""
  duration, gt_seg = 10.0, np.array([2.0, 6.0])
  rec = _record("v1", 16, [Segment(*gt_seg, 0)])
  gt = _gt([rec])
  grid = (np.arange(600) + 0.5) / 600 * duration
  a, b = np.meshgrid(grid, grid)
  tiou = _tiou(np.stack([np.minimum(a, b), np.maximum(a, b)], -1), gt_seg)
  thresholds = np.array([0.1, 0.3, 0.5])
  expected = [(tiou >= t).mean() for t in thresholds]
  got = reference_points.chance_map(gt, {"v1": 1}, {"v1": duration}, thresholds,
                                    draws=400, seed=3)
  # 400 Bernoulli draws: standard error below 0.025.
  assert got["map"] == pytest.approx(expected, abs=0.08)
  assert got["draws"] == 400 and got["average_map_std"] > 0


def test_chance_uses_the_true_labels_and_the_detection_count():
  rec = _record("v1", 100, [Segment(1.0, 3.0, 0), Segment(5.0, 9.0, 1)])
  counts = {"v1": 50, "v_missing": 7}
  dets = reference_points.chance_detections(_gt([rec]), counts, {"v1": rec.duration},
                                            np.random.default_rng(0))
  assert len(dets.labels) == 50 and set(dets.labels) == {"A", "B"}
  assert np.all(dets.segments[:, 0] <= dets.segments[:, 1])
  assert dets.segments.min() >= 0 and dets.segments.max() <= rec.duration
  same = reference_points.chance_map(_gt([rec]), counts, {"v1": rec.duration},
                                     [0.5], draws=2, seed=1)
  assert same == reference_points.chance_map(_gt([rec]), counts, {"v1": rec.duration},
                                             [0.5], draws=2, seed=1)


def test_snippet_stats_background_rate():
  stats = inference.SnippetStats()
  batch = {"fg_mask": np.array([[1, 0, 0, -1], [0, 0, 1, 1]], np.float32),
           "valid": np.array([True, False])}
  stats.add(np.zeros((2, 4)), np.full((2, 4, 3), 1 / 3), batch)
  res = stats.result()
  assert res["bg_rate"] == pytest.approx(2 / 3)      # 3 known snippets, 2 bg
  assert res["fb_acc"] == pytest.approx(2 / 3)       # all-bg scores: the same


def test_table_and_standing_text():
  refs = {"chance": {"map": [0.1, 0.0], "average_map": 0.05, "average_map_std": 0.01,
                     "draws": 5},
          "upper_bound": {"map": [0.9, 0.7], "average_map": 0.8}}
  result = {"tiou_thresholds": [0.1, 0.2], "map": [0.5, 0.3], "average_map": 0.4,
            "summary": {}, "class_names": ["A"]}
  table = outputs.format_map_table(result, references=refs)
  assert "chance (%)" in table and "upper bound (%)" in table and "80.00" in table
  text = reference_points.standing_text(0.4, refs, 0.8, 0.7)
  assert "chance 5.00" in text and "upper bound 80.00" in text
  assert "47% of the way" in text and "above the 70.00%" in text
  assert "NOT above" in reference_points.standing_text(0.4, refs, 0.6, 0.7)
