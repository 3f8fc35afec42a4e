#!/usr/bin/env python
"""ActivityNet 1.3 at full scale, measured (issue #13 §6).

Three parts, each selectable (--parts eval,postproc,memory; default all), on
seeded ActivityNet-shaped workloads (benchmarks/activitynet_workload.py):

a. eval: detection mAP at validation size (4,926 videos, 200 classes, about
   1.5 GT instances per video, --per-video 100 detections per video, tIoU
   0.5:0.05:0.95).  Timed side by side in this process: case_jax's
   ``evaluate_detections`` from in-memory Detections (median of --repeats)
   and the CLI's path from json files on disk (``case_jax.evaluation.main``:
   read gt.json, read the result json, evaluate); the official algorithm's
   port (benchmarks/activitynet_official.py, per-prediction Python loops)
   from the parsed dicts and from the same files, once each.  Reported: the
   speed ratios and max |dmAP| per threshold and of the average (the port
   and case_jax with tie_order='numpy', as the official code).
b. postproc: detection post-processing throughput, videos per second of
   ``detection.detect_video`` (class selection, upsampling, multi-threshold
   proposals, OIC scores, soft-NMS) with configs/anet13.py's inference
   values, on every validation-size video's (min(T, n), 200) scores (T = 50;
   short videos at their length, as data.test_sampling="no_upsample").  Only
   the detect_video calls are timed (scores are generated per chunk, untimed).
c. memory: peak RSS and steps/s of training configs/anet13.py in a fresh
   interpreter per dataset size (benchmarks/activitynet_memory.py).

Usage (from the repository root):
  python benchmarks/activitynet_scale.py [--parts eval,postproc,memory] [--quick]
--quick: a smoke run (300 videos; memory sizes 100, 200, 300 for 12 steps).
Writes benchmarks/results/activitynet_scale_<hostname>.json (--quick:
..._quick.json) unless --json.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
  sys.path.insert(0, _REPO)

from benchmarks import activitynet_memory, harness  # noqa: E402
from benchmarks import activitynet_workload as workload  # noqa: E402
from benchmarks.activitynet_official import ANETdetection  # noqa: E402
from case_jax import defaults, detection, detection_set  # noqa: E402
from case_jax import evaluation as ev  # noqa: E402
from case_jax.data import ground_truth  # noqa: E402

PARTS = ("eval", "postproc", "memory")
SUBSET = "validation"


def _timed(fn, repeats: int = 1) -> tuple[dict, object]:
  """({"seconds": median wall, "cpu_seconds": median process CPU}, output)
  of ``repeats`` calls (after one warm-up call when repeats > 1).  CPU
  time is what stays comparable when other work shares the machine."""
  out = fn() if repeats > 1 else None
  walls, cpus = [], []
  for _ in range(repeats):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    walls.append(time.perf_counter() - w0)
    cpus.append(time.process_time() - c0)
  return {"seconds": float(np.median(walls)),
          "cpu_seconds": float(np.median(cpus))}, out


def bench_eval(num_videos: int, per_video: int, repeats: int) -> dict:
  """Part a: case_jax's evaluator against the official algorithm's port."""
  tious = ev.ACTIVITYNET_TIOUS
  videos = workload.anet_videos(num_videos, seed=0)
  gt_json = workload.gt_json(videos, SUBSET)
  res_json = workload.result_json(videos, per_video, seed=1)
  gt = ground_truth.ground_truth_from_dict(gt_json, SUBSET, source="<bench gt>")
  dets = detection_set.detections_from_results(res_json, source="<bench results>")
  rows = {}
  with tempfile.TemporaryDirectory() as tmp:
    gt_path, res_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "result.json")
    for path, obj in ((gt_path, gt_json), (res_path, res_json)):
      with open(path, "w") as f:
        json.dump(obj, f)
    cli = [gt_path, res_path, "--subset", SUBSET, "--tiou",
           f"{tious[0]}:{tious[-1]}:{len(tious)}"]

    def ours_cli():
      with contextlib.redirect_stdout(io.StringIO()):
        return ev.main(cli)

    def official(**inputs):
      anet = ANETdetection(tiou_thresholds=tious, subset=SUBSET, **inputs)
      anet.evaluate()
      return anet

    rows["case_jax evaluate_detections (in memory)"], ours = _timed(
        lambda: ev.evaluate_detections(gt, dets, tious, tie_order="numpy"), repeats)
    rows["official port (parsed dicts)"], port = _timed(
        lambda: official(ground_truth=gt_json, prediction=res_json))
    rows["case_jax CLI (json files)"], ours_disk = _timed(ours_cli, repeats)
    rows["official port (json files)"], port_disk = _timed(
        lambda: official(ground_truth_filename=gt_path, prediction_filename=res_path))
  assert ours["class_names"] == list(port.activity_index)
  for row, m_ap in zip(rows.values(), (ours["map"], port.mAP, ours_disk["map"],
                                       port_disk.mAP)):
    row["average_map"] = float(np.mean(m_ap))
  d_map = np.abs(ours["map"] - port.mAP)
  return {
      "workload": {"videos": len(gt.video_ids), "classes": gt.num_classes,
                   "gt_instances": int(len(gt.video)), "detections": len(dets),
                   "detections_per_video": per_video,
                   "tiou_thresholds": tious.tolist(), "seeds": [0, 1]},
      "repeats_case_jax": repeats, "repeats_official": 1, "rows": rows,
      "map_case_jax": ours["map"].tolist(), "map_official": port.mAP.tolist(),
      "max_abs_dmap_per_threshold": float(d_map.max()),
      "abs_d_average_map": float(abs(ours["average_map"] - port.average_mAP)),
      "max_abs_dap_per_class": float(np.abs(ours["ap"] - port.ap).max()),
      "max_abs_dmap_files": float(np.abs(ours_disk["map"] - port_disk.mAP).max()),
      **{f"speedup_{where}{kind}": rows[f"official port ({theirs})"][key]
         / rows[f"case_jax {ours_name}"][key]
         for where, theirs, ours_name in (
             ("in_memory", "parsed dicts", "evaluate_detections (in memory)"),
             ("files", "json files", "CLI (json files)"))
         for kind, key in (("", "seconds"), ("_cpu", "cpu_seconds"))},
      "goal_speedup": 20.0,
  }


def bench_postproc(num_videos: int, chunk: int = 250) -> dict:
  """Part b: videos/s of detect_video at configs/anet13.py's values."""
  cfg = defaults.load_config("anet13")
  inf, t = cfg.inference, cfg.data.num_segments
  thresholds = detection.proposal_thresholds(inf.thresholds)
  videos = workload.anet_videos(num_videos, seed=0)
  rng = np.random.default_rng(2)
  seconds, num_dets, short = 0.0, 0, 0
  for lo in range(0, num_videos, chunk):
    part = videos[lo:lo + chunk]
    inputs = [workload.snippet_scores(v, t, rng) for v in part]
    t0 = time.perf_counter()
    for v, (scores, video_scores) in zip(part, inputs):
      num_dets += len(detection.detect_video(
          scores, video_scores, v["snippets"], class_threshold=inf.class_threshold,
          scale=inf.scale, thresholds=thresholds, num_segments=scores.shape[0],
          fps=cfg.data.fps, snippet_frames=cfg.data.snippet_frames,
          outer_ratio=inf.outer_ratio, video_weight=inf.video_weight, nms=inf.nms,
          iou_threshold=inf.nms_iou, sigma=inf.nms_sigma,
          max_detections=inf.max_detections))
    seconds += time.perf_counter() - t0
    short += sum(v["snippets"] < t for v in part)
  return {"videos": num_videos, "classes": workload.NUM_CLASSES,
          "num_segments": t, "videos_shorter_than_T": int(short),
          "inference": {k: inf[k] for k in ("class_threshold", "scale", "thresholds",
                                           "outer_ratio", "video_weight", "nms",
                                           "nms_iou", "nms_sigma")},
          "seconds": seconds, "videos_per_second": num_videos / seconds,
          "detections_per_video": num_dets / num_videos}


def _print_tables(report: dict) -> None:
  if "eval" in report:
    e = report["eval"]
    w = e["workload"]
    print(f"\n(a) evaluation: {w['videos']} videos, {w['classes']} classes, "
          f"{w['gt_instances']} GT, {w['detections']} detections, "
          f"{len(w['tiou_thresholds'])} thresholds")
    print(f"{'implementation':<44}{'wall s':>9}{'CPU s':>9}{'avg mAP %':>11}")
    for name, row in e["rows"].items():
      print(f"{name:<44}{row['seconds']:>9.2f}{row['cpu_seconds']:>9.2f}"
            f"{100 * row['average_map']:>11.4f}")
    print(f"speed-up (wall / CPU): {e['speedup_in_memory']:.1f}x / "
          f"{e['speedup_in_memory_cpu']:.1f}x in memory, "
          f"{e['speedup_files']:.1f}x / {e['speedup_files_cpu']:.1f}x from "
          f"files (goal >= 20x); max |dmAP| "
          f"{e['max_abs_dmap_per_threshold']:.2g}, |d avg mAP| "
          f"{e['abs_d_average_map']:.2g}")
  if "postproc" in report:
    p = report["postproc"]
    print(f"\n(b) post-processing: {p['videos']} videos x {p['classes']} classes: "
          f"{p['seconds']:.2f} s, {p['videos_per_second']:.0f} videos/s, "
          f"{p['detections_per_video']:.1f} detections/video")
  if "memory" in report:
    rows = report["memory"]["rows"]
    print(f"\n(c) training configs/anet13.py, D = {report['memory']['dim']} per stream")
    print(f"{'videos':>7}{'steps':>7}{'open s':>8}{'RSS open MB':>13}"
          f"{'peak RSS MB':>13}{'steps/s':>9}")
    for r in rows:
      if "error" in r:
        print(f"{r['videos']:>7}  error: {r['error'][:200]}")
        continue
      print(f"{r['videos']:>7}{r['steps']:>7}{r['open_seconds']:>8.1f}"
            f"{r['rss_after_open_mb']:>13.0f}{r['peak_rss_mb']:>13.0f}"
            f"{r['steps_per_second'] or float('nan'):>9.1f}")
    ratio = report["memory"].get("peak_rss_ratio_largest_smallest")
    if ratio:
      print(f"peak RSS ratio largest/smallest: {ratio:.3f}")


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", default=",".join(PARTS),
                      help=f"comma-separated subset of {PARTS}")
  parser.add_argument("--quick", action="store_true", help="a smoke run")
  parser.add_argument("--videos", type=int, default=workload.VALIDATION_VIDEOS)
  parser.add_argument("--per-video", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--sizes", default="1000,5000,15000",
                      help="memory part: training videos per dataset")
  parser.add_argument("--dim", type=int, default=32, help="memory part: D per stream")
  parser.add_argument("--max-steps", type=int, default=None,
                      help="memory part: cap on steps (default one epoch)")
  parser.add_argument("--json", help="output path (default: benchmarks/results/"
                                     "activitynet_scale_<hostname>.json)")
  args = parser.parse_args(argv)
  parts = [p for p in args.parts.split(",") if p]
  if any(p not in PARTS for p in parts):
    parser.error(f"--parts: choose from {PARTS}")
  sizes = [int(s) for s in args.sizes.split(",")]
  if args.quick:
    args.videos, args.repeats, sizes, args.max_steps = 300, 1, [100, 200, 300], 12
  report = {"benchmark": "activitynet_scale", **harness.run_facts(),
            "quick": args.quick, "loadavg_start": harness.loadavg()}
  if "eval" in parts:
    report["eval"] = bench_eval(args.videos, args.per_video, args.repeats)
    report["loadavg_after_eval"] = harness.loadavg()
  if "postproc" in parts:
    report["postproc"] = bench_postproc(args.videos)
    report["loadavg_after_postproc"] = harness.loadavg()
  if "memory" in parts:
    batch = defaults.load_config("anet13").batch_size
    rows = activitynet_memory.measure(sizes, dim=args.dim, batch_size=batch,
                                      max_steps=args.max_steps, overrides={})
    report["memory"] = {"dim": args.dim, "batch_size": batch, "rows": rows}
    ok = [r for r in rows if "peak_rss_mb" in r]
    if len(ok) > 1:
      report["memory"]["peak_rss_ratio_largest_smallest"] = (
          ok[-1]["peak_rss_mb"] / ok[0]["peak_rss_mb"])
      report["memory"]["rss_after_open_ratio_largest_smallest"] = (
          ok[-1]["rss_after_open_mb"] / ok[0]["rss_after_open_mb"])
  report["loadavg_end"] = harness.loadavg()
  _print_tables(report)
  harness.write_json(harness.results_path(
      "activitynet_scale", args.json, "_quick" if args.quick else ""), report)
  return report


if __name__ == "__main__":
  main()
