"""benchmarks/boundary_quality.py: best fit per instance on hand cases."""
import pytest

from benchmarks.boundary_quality import best_fits, by_length
from case_jax.data.records import GtVideo


def _video(subset, anns):
  return GtVideo(subset=subset, duration=60.0, annotations=tuple(anns))


def test_best_fit_and_cover_by_hand():
  gt = {"a": _video("test", [(0.0, 4.0, "Jump"), (10.0, 30.0, "Run")]),
        "b": _video("test", [(5.0, 7.0, "Jump")]),
        "c": _video("validation", [(0.0, 1.0, "Jump")])}
  dets = {"a": [("Jump", 2.0, 6.0),        # tIoU 2/6, covers 2/4 of the Jump
                ("Jump", 0.0, 40.0),        # 4/40: not the best
                ("Run", 0.0, 4.0),          # another class: ignored for Jump
                ("Run", 10.0, 20.0)]}       # tIoU 0.5, covers 0.5 of the Run
  fits = best_fits(gt, dets, "test")       # video b has no detections; c is not test
  assert [round(f, 6) for fit in fits for f in fit] == [
      4.0, round(2 / 6, 6), 0.5, 20.0, 0.5, 0.5, 2.0, 0.0, 0.0]
  rows = by_length(fits)
  assert [r["instances"] for r in rows] == [1, 1, 1]   # 2 s, 4 s, 20 s
  assert rows[2]["share_best_tiou_ge_0.5"] == 1.0
  assert rows[0]["median_best_tiou"] == 0.0


def test_an_empty_length_bin_prints_a_dash(tmp_path, capsys):
  import json
  from benchmarks import boundary_quality
  gt = {"database": {"v": {"subset": "test", "duration": 9.0, "annotations": [
      {"segment": [1.0, 2.0], "label": "Jump"}]}}}
  dets = {"results": {"v": [{"label": "Jump", "score": 0.9,
                             "segment": [1.0, 2.0]}]}}
  (tmp_path / "gt.json").write_text(json.dumps(gt))
  (tmp_path / "d.json").write_text(json.dumps(dets))
  out = tmp_path / "out.json"
  assert boundary_quality.main(["--gt", str(tmp_path / "gt.json"), "--detections",
                                str(tmp_path / "d.json"), "--json", str(out)]) == 0
  text = capsys.readouterr().out
  assert "| 0-3 s | 1 | 1.00 | 1.00 | 1.00 |" in text
  assert "| >= 10 s | 0 | – | – | – |" in text
  rows = json.loads(out.read_text())["rows"]    # strict JSON: no Infinity
  assert rows[2]["length_s"] == [10.0, None]


def test_roc_auc_equals_counting_pairs():
  """harness.roc_auc (the signal benchmark's and case_vs_baseline's) against
  P(score of a positive > score of a negative) counted over all pairs."""
  import numpy as np
  from benchmarks.harness import roc_auc
  rng = np.random.default_rng(3)
  scores = rng.normal(size=60)
  positive = rng.random(60) < 0.4
  pos, neg = scores[positive], scores[~positive]
  by_pairs = np.mean(pos[:, None] > neg[None, :])
  assert roc_auc(scores, positive) == pytest.approx(by_pairs, abs=1e-12)
  assert roc_auc(np.arange(4.0), np.array([False, False, True, True])) == 1.0
