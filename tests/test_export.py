"""case_jax.export: THUMOS14 toolkit text from the ActivityNet result dict."""
import numpy as np
import pytest

from case_jax import detection, export
from case_jax.data import THUMOS14_CLASSES


def _result():
  return {"version": "VERSION 1.3", "external_data": {}, "results": {
      "video_test_0000004": [
          {"label": "Billiards", "score": 0.25, "segment": [1.0, 2.5]},
          {"label": "BaseballPitch", "score": 0.9, "segment": [12.32, 17.6]}],
      "video_test_0000001": [
          {"label": "VolleyballSpiking", "score": 1e-7, "segment": [0.0, 0.64]}]}}


def test_default_ids_are_one_based_indices(tmp_path):
  n = export.write_thumos14(tmp_path / "out" / "dets.txt", _result(), THUMOS14_CLASSES)
  text = (tmp_path / "out" / "dets.txt").read_text()
  assert n == 3
  assert text == ("video_test_0000001 0.0000 0.6400 20 1e-07\n"
                  "video_test_0000004 12.3200 17.6000 1 0.9\n"
                  "video_test_0000004 1.0000 2.5000 3 0.25\n")


def test_official_thumos14_ids_and_custom_mapping():
  lines = export.thumos14_lines(_result(), class_ids="thumos14")
  assert [int(l.split()[3]) for l in lines] == [97, 7, 12]
  lines = export.thumos14_lines(_result()["results"],
                                class_ids={"Billiards": 5, "BaseballPitch": 4,
                                           "VolleyballSpiking": 3})
  assert [int(l.split()[3]) for l in lines] == [3, 4, 5]
  assert sorted(export.THUMOS14_DETECTION_CLASS_IDS) == sorted(THUMOS14_CLASSES)


def test_round_trip_through_the_detection_writer(tmp_path):
  classes = ["a", "b", "c"]
  rng = np.random.default_rng(0)
  dets = {f"v{i}": [{"label": int(rng.integers(3)), "score": float(rng.random()),
                     "segment": sorted(rng.random(2) * 100)} for _ in range(5)]
          for i in range(4)}
  result = detection.write_results(tmp_path / "d.json", None, dets, classes)
  lines = export.thumos14_lines(result, classes)
  assert len(lines) == 20
  parsed = {}
  for line in lines:
    vid, t0, t1, cid, score = line.split()
    parsed.setdefault(vid, []).append((classes[int(cid) - 1], float(t0), float(t1),
                                       float(score)))
  for vid, ds in result["results"].items():
    want = sorted(((d["label"], *d["segment"], d["score"]) for d in ds), key=lambda x: -x[3])
    got = parsed[vid]
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1:] for g in got], [w[1:] for w in want], atol=1e-4)


def test_errors():
  with pytest.raises(ValueError, match="class_names"):
    export.thumos14_lines(_result())
  with pytest.raises(ValueError, match="no class id"):
    export.thumos14_lines(_result(), ["Billiards"])
  bad = {"results": {"video 1": [{"label": "a", "score": 1, "segment": [0, 1]}]}}
  with pytest.raises(ValueError, match="whitespace"):
    export.thumos14_lines(bad, ["a"])
  with pytest.raises(ValueError, match="thumos14"):
    export.thumos14_lines(_result(), class_ids="ucf")
