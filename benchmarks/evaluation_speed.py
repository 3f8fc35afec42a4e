#!/usr/bin/env python
"""Speed of the detection-mAP evaluator: case_jax vs the naive oracle.

Workload (THUMOS14-like, seeded): 200 videos, 20 classes, about 16 GT
instances per video (one class, some two), 1e5 detections (500 per video:
mostly the video's own classes, jittered GT segments or random ones, scores
rounded to 3 decimals so ties occur), 7 tIoU thresholds 0.1:0.1:0.7.

Timed (median of --repeats runs, after one warm-up):
* ``evaluate_detections`` from in-memory Detections, tie order numpy and
  stable;
* ``load_detections`` + ``evaluate_detections`` from a result json on disk
  (what the CLI and training loop do);
* ``naive_evaluate`` of benchmarks/naive_evaluation.py (plain Python loops
  over the parsed json dicts; the oracle of tests/test_evaluation.py), once; its AP is also the correctness check
  (max |dAP|).

Usage (from the repository root):
  python benchmarks/evaluation_speed.py [--detections 100000] [--repeats 5]
Writes benchmarks/results/evaluation_speed_<hostname>.json unless --json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
  sys.path.insert(0, _REPO)

from benchmarks import harness  # noqa: E402
from benchmarks.naive_evaluation import naive_evaluate  # noqa: E402
from case_jax import detection_set  # noqa: E402
from case_jax.data import ground_truth  # noqa: E402
from case_jax import evaluation as ev  # noqa: E402


def make_workload(num_videos: int, num_classes: int, num_detections: int,
                  seed: int = 0) -> tuple[dict, dict]:
  """Seeded (gt.json dict, result json dict) in the THUMOS14 layout."""
  rng = np.random.default_rng(seed)
  classes = [f"Action{c:02d}" for c in range(num_classes)]
  database, own = {}, {}
  for v in range(num_videos):
    vid = f"video_test_{v:07d}"
    mine = rng.choice(num_classes, size=1 + int(rng.random() < 0.15), replace=False)
    own[vid] = mine
    starts = np.sort(rng.uniform(0, 200, size=max(1, rng.poisson(16))))
    anns = [{"segment": [round(s, 1), round(s + rng.uniform(1, 20), 1)],
             "label": classes[int(rng.choice(mine))]} for s in starts]
    database[vid] = {"subset": "test", "duration": 220.0, "annotations": anns}
  results = {}
  per_video = num_detections // num_videos
  for vid, entry in database.items():
    dets = []
    for _ in range(per_video):
      if rng.random() < 0.6:            # a jittered GT segment, its class
        ann = entry["annotations"][int(rng.integers(len(entry["annotations"])))]
        s, e = ann["segment"]
        length = e - s
        s, e = s + rng.normal(0, 0.3 * length), e + rng.normal(0, 0.3 * length)
        label = ann["label"]
      else:                             # a random segment
        s = rng.uniform(0, 210)
        e = s + rng.uniform(0.5, 30)
        label = classes[int(rng.choice(own[vid]))] if rng.random() < 0.8 else \
            classes[int(rng.integers(num_classes))]
      dets.append({"label": label, "score": round(float(rng.random()), 3),
                   "segment": [float(min(s, e)), float(max(s, e))]})
    results[vid] = dets
  gt = {"version": "bench", "database": database}
  return gt, {"version": "VERSION 1.3", "results": results, "external_data": {}}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--videos", type=int, default=200)
  parser.add_argument("--classes", type=int, default=20)
  parser.add_argument("--detections", type=int, default=100_000)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--skip-naive", action="store_true")
  parser.add_argument("--json", help="output path (default: benchmarks/results/"
                                     "evaluation_speed_<hostname>.json)")
  args = parser.parse_args(argv)
  thresholds = ev.THUMOS_TIOUS
  gt_json, res_json = make_workload(args.videos, args.classes, args.detections)
  gt = ground_truth.ground_truth_from_dict(gt_json, "test", source="<bench gt>")
  dets = detection_set.detections_from_results(res_json, source="<bench results>")
  rows = {}
  for tie in ev.TIE_ORDERS:
    sec, out = harness.median_seconds(
        lambda: ev.evaluate_detections(gt, dets, thresholds, tie_order=tie),
        args.repeats)
    rows[f"case_jax evaluate ({tie})"] = {"seconds": sec,
                                          "average_map": out["average_map"]}
    if tie == "numpy":
      ours = out
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "result.json")
    with open(path, "w") as f:
      json.dump(res_json, f)
    sec, out = harness.median_seconds(
        lambda: ev.evaluate_detections(gt, detection_set.load_detections(path), thresholds),
        args.repeats)
    rows["case_jax load json + evaluate"] = {"seconds": sec,
                                             "average_map": out["average_map"]}
  if not args.skip_naive:
    t0 = time.perf_counter()
    naive_ap, classes = naive_evaluate(gt_json, res_json, "test", thresholds, "numpy")
    sec = time.perf_counter() - t0
    assert classes == ours["class_names"]
    rows["naive loops (tests)"] = {"seconds": sec,
                                   "average_map": float(naive_ap.mean())}
    max_diff = float(np.abs(naive_ap - ours["ap"]).max())
  else:
    max_diff = None
  base = rows["case_jax evaluate (numpy)"]["seconds"]
  print(f"{len(gt.video_ids)} videos, {gt.num_classes} classes, {len(gt.video)} "
        f"GT instances, {len(dets)} detections, {len(thresholds)} thresholds; "
        f"numpy {np.__version__}, {os.cpu_count()} CPUs")
  print(f"{'implementation':<32}{'seconds':>10}{'x case_jax':>12}{'avg mAP %':>11}")
  for name, row in rows.items():
    print(f"{name:<32}{row['seconds']:>10.3f}{row['seconds'] / base:>12.1f}"
          f"{100 * row['average_map']:>11.3f}")
  if max_diff is not None:
    print(f"max |AP case_jax - AP naive| = {max_diff:.3g}")
  report = {
      "benchmark": "evaluation_speed", **harness.run_facts(),
      "workload": {"videos": len(gt.video_ids), "classes": gt.num_classes,
                   "gt_instances": int(len(gt.video)), "detections": len(dets),
                   "tiou_thresholds": thresholds.tolist(), "seed": 0},
      "repeats": args.repeats, "rows": rows, "max_abs_ap_diff_vs_naive": max_diff,
  }
  harness.write_json(harness.results_path("evaluation_speed", args.json), report)
  return report


if __name__ == "__main__":
  main()
