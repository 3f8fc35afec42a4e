"""case_jax.detection_set: the detections container and its readers (the
evaluation through them: tests/test_evaluation.py)."""
import json

import numpy as np
import pytest

from case_jax import detection_set as ds


def test_results_file_keeps_input_order_and_parses_strings(tmp_path):
  path = tmp_path / "r.json"
  path.write_text(json.dumps({"results": {
      "w": [{"label": "B", "score": "0.5", "segment": ["1.5", 2]}],
      "v": [{"label": "A", "score": 0.9, "segment": [0, 1]},
            {"label": "B", "score": 0.9, "segment": [3, 4]}],
      "x": []}}))
  dets = ds.load_detections(str(path))
  assert len(dets) == 3 and dets.source == str(path)
  assert list(dets.video_ids) == ["w", "v", "v"] and list(dets.labels) == ["B", "A", "B"]
  np.testing.assert_array_equal(dets.scores, [0.5, 0.9, 0.9])
  np.testing.assert_array_equal(dets.segments, [[1.5, 2], [0, 1], [3, 4]])


def test_integer_labels_map_through_class_names():
  dets = ds.detections_from_arrays(["v", "w"], [1, 0], [0.5, 0.25], [[0, 1], [2, 3]],
                                   class_names=["A", "B"])
  assert list(dets.labels) == ["B", "A"]
  empty = ds.detections_from_results({"results": {}})
  assert len(empty) == 0 and empty.segments.shape == (0, 2)


def test_malformed_detections_raise():
  with pytest.raises(ValueError, match="no 'results'"):
    ds.detections_from_results({"database": {}})
  with pytest.raises(ValueError, match="needs 'label'"):
    ds.detections_from_results({"results": {"v": [{"score": 1, "segment": [0, 1]}]}})
  with pytest.raises(ValueError, match=r"segment must be \[start, end\]"):
    ds.checked_segment([0, "x"], "here")
  with pytest.raises(ValueError, match="NaN in segment"):
    ds.checked_segment([0, float("nan")], "here")
  with pytest.raises(ValueError, match="shape"):
    ds.Detections(np.array(["v"]), np.array(["A"]), np.zeros(2), np.zeros((2, 2)))


@pytest.mark.parametrize("det,message", [
    ({"label": "a", "score": None, "segment": [1, 2]},
     r"video 'v' detection 1 needs 'label', 'score' \(a number\)"),
    ({"label": "a", "score": "x", "segment": [1, 2]},
     r"video 'v' detection 1 needs 'label', 'score' \(a number\)"),
    ({"label": "a", "score": 0.5, "segment": [1, None]},
     r"video 'v' detection 1: segment must be \[start, end\]"),
    ({"label": "a", "score": 0.5, "segment": [1, 2, 3]},
     r"video 'v' detection 1: segment must be \[start, end\]"),
    ({"label": "a", "score": float("nan"), "segment": [1, 2]},
     r"1 detection\(s\) with a NaN score"),
    ({"score": 0.5, "segment": [1, 2]}, r"video 'v' detection 1 needs 'label'"),
])
def test_a_bad_detection_is_named_among_many(det, message):
  """The bulk conversion still names the one bad detection."""
  from case_jax.detection_set import BadDetections, detections_from_results
  good = {"label": "a", "score": 1, "segment": [0, 1]}
  results = {"results": {"u": [good] * 3, "v": [good, det], "w": [good]}}
  with pytest.raises(BadDetections, match=message):
    detections_from_results(results, source="f.json")
