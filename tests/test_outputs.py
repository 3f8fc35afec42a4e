"""case_jax.outputs: the result files (ActivityNet json, CSV, THUMOS14
toolkit text, metrics.json) and the mAP table."""
import csv
import json
import os

import numpy as np
import pytest

from case_jax import evaluation, outputs
from case_jax.data import ground_truth
from case_jax.data import THUMOS14_CLASSES
from tests.conftest import SHARED_DATA


# ---------------------------------------------------------------------------
# A whole evaluation directory, byte for byte.

CLASSES = ["BaseballPitch", "Billiards", "VolleyballSpiking"]
RAW = {   # detect_video output per video: awkward floats, a tie, an empty video
    "video_test_0000004": [
        {"label": 1, "score": 1 / 3, "segment": [0.1 + 0.2, 2.5]},
        {"label": 0, "score": 0.9, "segment": [12.32, 17.6]},
        {"label": 0, "score": 0.9, "segment": [13.0, 17.0]}],
    "video_test_0000001": [
        {"label": 2, "score": 1e-7, "segment": [0.0, 0.64]},
        {"label": 0, "score": 0.7000000000000001, "segment": [5.12, 9.600000000000001]}],
    "video_test_0000002": [],
}
GT = {"database": {
    "video_test_0000001": {"subset": "test", "annotations": [
        {"segment": [0.0, 1.0], "label": "VolleyballSpiking"},
        {"segment": [5.0, 9.0], "label": "BaseballPitch"}]},
    "video_test_0000004": {"subset": "test", "annotations": [
        {"segment": [12.0, 17.0], "label": "BaseballPitch"},
        {"segment": [0.5, 2.0], "label": "Billiards"}]},
}}
# Written by report.write_outputs (detection.write_results,
# export.write_thumos14, evaluation.result_to_json) before they moved here.
_AP_ROW = "    [\n      1.0,\n      0.8333333333333333,\n      1.0\n    ]"
_MAP = "0.9444444444444443"
EXPECTED = {
    "detections.csv": (
        b"video,label,start,end,score\r\n"
        b"video_test_0000004,Billiards,0.30000000000000004,2.5,0.3333333333333333\r\n"
        b"video_test_0000004,BaseballPitch,12.32,17.6,0.9\r\n"
        b"video_test_0000004,BaseballPitch,13.0,17.0,0.9\r\n"
        b"video_test_0000001,VolleyballSpiking,0.0,0.64,1e-07\r\n"
        b"video_test_0000001,BaseballPitch,5.12,9.600000000000001,0.7000000000000001\r\n"),
    "detections.json": (
        b'{"version": "VERSION 1.3", "results": {"video_test_0000004": [{"label": '
        b'"Billiards", "score": 0.3333333333333333, "segment": [0.30000000000000004, '
        b'2.5]}, {"label": "BaseballPitch", "score": 0.9, "segment": [12.32, 17.6]}, '
        b'{"label": "BaseballPitch", "score": 0.9, "segment": [13.0, 17.0]}], '
        b'"video_test_0000001": [{"label": "VolleyballSpiking", "score": 1e-07, '
        b'"segment": [0.0, 0.64]}, {"label": "BaseballPitch", "score": '
        b'0.7000000000000001, "segment": [5.12, 9.600000000000001]}]}, '
        b'"external_data": {}}'),
    "detections_thumos14.txt": (
        b"video_test_0000001 5.1200 9.6000 1 0.7\n"
        b"video_test_0000001 0.0000 0.6400 3 1e-07\n"
        b"video_test_0000004 12.3200 17.6000 1 0.9\n"
        b"video_test_0000004 13.0000 17.0000 1 0.9\n"
        b"video_test_0000004 0.3000 2.5000 2 0.33333333\n"),
    "metrics.json": (
        '{\n  "tiou_thresholds": [\n    0.1,\n    0.2,\n    0.30000000000000004,\n'
        '    0.4,\n    0.5\n  ],\n  "class_names": [\n    "VolleyballSpiking",\n'
        '    "BaseballPitch",\n    "Billiards"\n  ],\n  "ap": [\n'
        + ",\n".join([_AP_ROW] * 5) + "\n  ],\n"
        '  "map": [\n' + ",\n".join([f"    {_MAP}"] * 5) + "\n  ],\n"
        f'  "average_map": {_MAP},\n  "summary": {{\n    "AVG(0.1:0.5)": {_MAP}\n  }},\n'
        '  "num_gt": [\n    1,\n    2,\n    1\n  ],\n'
        '  "num_detections": [\n    1,\n    3,\n    1\n  ],\n'
        '  "tie_order": "numpy",\n  "subset": "test",\n  "videos_not_in_gt": 0,\n'
        '  "detections_not_in_gt": 0,\n'
        '  "thumos14_class_ids": "1..C in model order",\n  "step": 80,\n'
        '  "test_fb_acc": 0.8125\n}').encode(),
}


def test_eval_outputs_are_byte_identical_to_the_old_writers(tmp_path):
  gt = ground_truth.ground_truth_from_dict(GT)
  result = evaluation.evaluate_detections(gt, outputs.to_result_json(RAW, CLASSES),
                                          np.linspace(0.1, 0.5, 5))
  evaluated = {"result": result, "raw": RAW, "class_names": CLASSES}
  out = tmp_path / "eval"
  paths = outputs.write_eval_outputs(str(out), evaluated, {"step": 80, "test_fb_acc": 0.8125})
  assert paths == {"detections": str(out / "detections.json"),
                   "metrics": str(out / "metrics.json"),
                   "thumos14_class_ids": outputs.MODEL_ORDER_IDS}
  assert sorted(os.listdir(out)) == sorted(EXPECTED)
  for name, want in EXPECTED.items():
    assert (out / name).read_bytes() == want, name


def test_eval_outputs_without_a_result(tmp_path):
  outputs.write_eval_outputs(str(tmp_path), {"raw": {}, "class_names": CLASSES}, None)
  assert json.loads((tmp_path / "metrics.json").read_text()) == {
      "thumos14_class_ids": "1..C in model order"}
  assert (tmp_path / "detections_thumos14.txt").read_bytes() == b""


# ---------------------------------------------------------------------------
# ActivityNet result json and CSV.

def _sample_detections():
  return {
      "video_a": [{"label": 1, "score": 0.5, "segment": [1.0, 2.5]},
                  {"label": 0, "score": 0.25, "segment": [3.0, 4.0]}],
      "video_b": [],
      "video_c": [{"label": 1, "score": 0.75, "segment": [0.0, 0.64]}],
  }


def test_result_json_format():
  res = outputs.to_result_json(_sample_detections(), ["Run", "Jump"])
  assert set(res) == {"version", "results", "external_data"}
  assert res["version"] == "VERSION 1.3" and res["external_data"] == {}
  assert list(res["results"]) == ["video_a", "video_c"]        # empty video absent
  assert res["results"]["video_a"][0] == {"label": "Jump", "score": 0.5, "segment": [1.0, 2.5]}
  assert res["results"]["video_c"] == [{"label": "Jump", "score": 0.75, "segment": [0.0, 0.64]}]
  with pytest.raises(ValueError, match="out of range"):
    outputs.to_result_json({"v": [{"label": 5, "score": 1.0, "segment": [0, 1]}]}, ["Run"])


def test_write_results_json_and_csv(tmp_path):
  pj, pc = tmp_path / "out" / "result.json", tmp_path / "out" / "result.csv"
  res = outputs.write_results(pj, pc, _sample_detections(), ["Run", "Jump"])
  assert json.loads(pj.read_text()) == res
  with open(pc, newline="") as f:
    rows = list(csv.reader(f))
  assert rows == [["video", "label", "start", "end", "score"],
                  ["video_a", "Jump", "1.0", "2.5", "0.5"],
                  ["video_a", "Run", "3.0", "4.0", "0.25"],
                  ["video_c", "Jump", "0.0", "0.64", "0.75"]]
  assert sorted(os.listdir(pj.parent)) == ["result.csv", "result.json"]


def test_write_results_is_atomic(tmp_path, monkeypatch):
  pj, pc = tmp_path / "result.json", tmp_path / "result.csv"

  def broken_dump(obj, f, **kw):
    f.write('{"version": "VERS')               # a partial write, then failure
    raise RuntimeError("disk full")

  monkeypatch.setattr(json, "dump", broken_dump)
  with pytest.raises(RuntimeError, match="disk full"):
    outputs.write_results(pj, pc, _sample_detections(), ["Run", "Jump"])
  assert os.listdir(tmp_path) == []           # no partial file, no temp file
  monkeypatch.undo()
  outputs.write_results(pj, None, _sample_detections(), ["Run", "Jump"])
  before = pj.read_text()
  monkeypatch.setattr(json, "dump", broken_dump)
  with pytest.raises(RuntimeError):
    outputs.write_results(pj, None, {"x": []}, ["Run", "Jump"])
  assert pj.read_text() == before             # the old file survives a failed rewrite
  assert os.listdir(tmp_path) == ["result.json"]


# ---------------------------------------------------------------------------
# THUMOS14 toolkit text.

def _result():
  return {"version": "VERSION 1.3", "external_data": {}, "results": {
      "video_test_0000004": [
          {"label": "Billiards", "score": 0.25, "segment": [1.0, 2.5]},
          {"label": "BaseballPitch", "score": 0.9, "segment": [12.32, 17.6]}],
      "video_test_0000001": [
          {"label": "VolleyballSpiking", "score": 1e-7, "segment": [0.0, 0.64]}]}}


def test_default_ids_are_the_official_ones_for_thumos14_classes(tmp_path):
  n = outputs.write_thumos14(tmp_path / "out" / "dets.txt", _result(), THUMOS14_CLASSES)
  text = (tmp_path / "out" / "dets.txt").read_text()
  assert n == 3
  assert text == ("video_test_0000001 0.0000 0.6400 97 1e-07\n"
                  "video_test_0000004 12.3200 17.6000 7 0.9\n"
                  "video_test_0000004 1.0000 2.5000 12 0.25\n")


def test_default_ids_are_one_based_indices_for_other_classes():
  classes = ["VolleyballSpiking", "BaseballPitch", "Billiards"]  # not THUMOS14's 20
  assert [int(l.split()[3]) for l in outputs.thumos14_lines(_result(), classes)] == [1, 2, 3]
  assert outputs.thumos14_class_ids(classes)[1] == outputs.MODEL_ORDER_IDS


def _real_thumos14_class_lists():
  """The class lists of the real THUMOS14 annotation releases in shared/data:
  W-TALC's classlist.npy and ACM-Net's gt.json (first-appearance order)."""
  wtalc = [c.decode() for c in np.load(os.path.join(
      SHARED_DATA, "thumos14_wtalc_annotations", "classlist.npy"))]
  acmnet = list(ground_truth.load_ground_truth(
      os.path.join(SHARED_DATA, "thumos14_acmnet_gt", "gt.json"), "test").class_names)
  return wtalc, acmnet


def test_real_thumos14_class_lists_get_the_official_ucf101_ids(tmp_path):
  wtalc, acmnet = _real_thumos14_class_lists()
  assert acmnet != wtalc and sorted(acmnet) == sorted(wtalc)  # another model order
  for classes in (wtalc, acmnet):
    ids, mapping = outputs.thumos14_class_ids(classes)
    assert mapping == outputs.OFFICIAL_IDS
    assert ids == outputs.THUMOS14_DETECTION_CLASS_IDS
  # Written through the evaluation directory, in ACM-Net's class order: the
  # toolkit ids do not depend on the order, and metrics.json names the mapping.
  raw = {"video_test_0000004": [
      {"label": acmnet.index("BaseballPitch"), "score": 0.9, "segment": [1.0, 2.0]},
      {"label": acmnet.index("VolleyballSpiking"), "score": 0.5, "segment": [3.0, 4.0]}]}
  paths = outputs.write_eval_outputs(str(tmp_path), {"raw": raw, "class_names": acmnet})
  assert paths["thumos14_class_ids"] == "official UCF101"
  assert json.loads((tmp_path / "metrics.json").read_text()) == {
      "thumos14_class_ids": "official UCF101"}
  assert (tmp_path / "detections_thumos14.txt").read_text() == (
      "video_test_0000004 1.0000 2.0000 7 0.9\n"
      "video_test_0000004 3.0000 4.0000 97 0.5\n")


def test_official_thumos14_ids_and_custom_mapping():
  lines = outputs.thumos14_lines(_result(), class_ids="thumos14")
  assert [int(l.split()[3]) for l in lines] == [97, 7, 12]
  lines = outputs.thumos14_lines(_result()["results"],
                                 class_ids={"Billiards": 5, "BaseballPitch": 4,
                                            "VolleyballSpiking": 3})
  assert [int(l.split()[3]) for l in lines] == [3, 4, 5]
  assert sorted(outputs.THUMOS14_DETECTION_CLASS_IDS) == sorted(THUMOS14_CLASSES)


def test_round_trip_through_the_detection_writer(tmp_path):
  classes = ["a", "b", "c"]
  rng = np.random.default_rng(0)
  dets = {f"v{i}": [{"label": int(rng.integers(3)), "score": float(rng.random()),
                     "segment": sorted(rng.random(2) * 100)} for _ in range(5)]
          for i in range(4)}
  result = outputs.write_results(tmp_path / "d.json", None, dets, classes)
  lines = outputs.thumos14_lines(result, classes)
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


def test_thumos14_errors():
  with pytest.raises(ValueError, match="class_names"):
    outputs.thumos14_lines(_result())
  with pytest.raises(ValueError, match="no class id"):
    outputs.thumos14_lines(_result(), ["Billiards"])
  bad = {"results": {"video 1": [{"label": "a", "score": 1, "segment": [0, 1]}]}}
  with pytest.raises(ValueError, match="whitespace"):
    outputs.thumos14_lines(bad, ["a"])
  with pytest.raises(ValueError, match="thumos14"):
    outputs.thumos14_lines(_result(), class_ids="ucf")


# ---------------------------------------------------------------------------
# The mAP table.

def test_format_map_table_rows():
  res = {"tiou_thresholds": evaluation.THUMOS_TIOUS, "map": np.linspace(0.7, 0.1, 7),
         "summary": {"AVG(0.1:0.5)": 0.5}, "average_map": 0.4,
         "class_names": ["A"], "ap": np.zeros((7, 1))}
  lines = outputs.format_map_table(res, per_class=True).splitlines()
  assert lines[0].split() == ["tIoU"] + [f"{t:.2f}" for t in evaluation.THUMOS_TIOUS]
  assert lines[1].split()[-1] == "10.00" and lines[2].split()[-1] == "50.00"
  assert lines[3].split()[-1] == "40.00" and lines[-1].startswith("A")
