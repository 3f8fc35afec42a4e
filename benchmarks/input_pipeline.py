#!/usr/bin/env python
"""Input pipeline speed: THUMOS-size training batches per second per layout.

Workload: --videos training videos (default 200, as THUMOS14) whose lengths
follow the real THUMOS14 durations (../shared/data gt.json, n = duration *
25 / 16 snippets; a seeded log-normal fit when absent), random float32
features of D = 1024 per stream, written to a temporary directory in each
layout (basnet: two .npy per video; acmnet: one (n, 2048) .npy per video;
wtalc: one pickled joint file) and, when tensorflow-datasets is installed,
prepared from the basnet copy as TFDS array_record (``tfds_builders``; its
"open" decodes every example once to learn the lengths).  The files were just written, so they sit in
the page cache: this measures the loader, not a cold disk.

Timed, per layout: opening the split; ``train_batch`` (B=16, T=750) for
--steps consecutive steps on the main thread; the same steps through
``Prefetcher`` (one background thread, depth 2) while the main thread sleeps
for --step_seconds to stand in for the device's train step, reporting how
long the consumer waited for each batch.  The loader is no bottleneck when
that wait is ~0.

Usage (from the repository root):
  python benchmarks/input_pipeline.py [--videos 200] [--steps 20]
Writes benchmarks/results/input_pipeline_<hostname>.json unless --json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
  sys.path.insert(0, _REPO)

from benchmarks import harness  # noqa: E402
from case_jax.data import (LAYOUTS, LayoutWarning, Prefetcher, VideoSpec,
                           open_dataset, read_gt, train_batch, write_layout)

REAL_GT = os.path.join(os.path.dirname(_REPO), "shared", "data",
                       "thumos14_acmnet_gt", "gt.json")


def thumos_lengths(num: int, seed: int) -> tuple[np.ndarray, str]:
  """(num,) snippet counts drawn from real THUMOS14 train durations."""
  rng = np.random.default_rng(seed)
  if os.path.isfile(REAL_GT):
    durations = np.array([v.duration for v in read_gt(REAL_GT).values()
                          if v.subset == "validation"])
    source = "real THUMOS14 validation-subset durations (gt.json)"
  else:
    durations = rng.lognormal(np.log(170.0), 0.7, 200)
    source = "log-normal fit (gt.json absent)"
  picked = rng.choice(durations, num, replace=num > len(durations))
  return np.maximum(1, np.round(picked * 25 / 16)).astype(int), source


def make_videos(lengths: np.ndarray, dim: int, seed: int) -> list[VideoSpec]:
  rng = np.random.default_rng(seed)
  out = []
  for k, n in enumerate(lengths):
    feats = rng.standard_normal((int(n), 2 * dim), dtype=np.float32)
    out.append(VideoSpec(f"video_validation_{k:07d}", "train", "validation",
                         float(n) * 0.64, ((0.0, 1.0, "BaseballPitch"),),
                         feats[:, :dim], feats[:, dim:]))
  # One test video so every layout's test split exists.
  out.append(out[0]._replace(video_id="video_test_0000001", split="test",
                             subset="test"))
  return out


def open_raw(root: str, layout: str, args):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", LayoutWarning)
    return open_dataset(root, "train", layout, feature_dim=args.dim)


def prepare_tfds(raw_root: str, data_dir: str):
  """Prepares the basnet copy as array_record; returns an opener."""
  from case_jax.data import tfds_builders as tb
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", LayoutWarning)
    tb.prepare("thumos14", raw_root, data_dir, layout="basnet")
  return lambda: tb.TFDSDataset("thumos14/basnet", "train", data_dir=data_dir)


def time_layout(opener, args) -> dict:
  t0 = time.perf_counter()
  ds = opener()
  open_s = time.perf_counter() - t0
  fn = lambda s: train_batch(ds, s, seed=0, batch_size=args.batch,
                             num_segments=args.segments)
  fn(0)   # warm-up
  t0 = time.perf_counter()
  for s in range(args.steps):
    fn(s)
  sync = (time.perf_counter() - t0) / args.steps
  waits = []
  t_all = time.perf_counter()
  with Prefetcher(fn, range(args.steps), depth=2) as it:
    while True:
      t0 = time.perf_counter()
      try:
        next(it)
      except StopIteration:
        break
      waits.append(time.perf_counter() - t0)
      time.sleep(args.step_seconds)   # the device's train step
  total = time.perf_counter() - t_all
  return {"open_seconds": open_s, "seconds_per_batch": sync,
          "batches_per_second": 1.0 / sync,
          "prefetch_mean_wait_seconds": float(np.mean(waits[1:])),
          "prefetch_first_wait_seconds": float(waits[0]),
          "prefetch_loop_seconds_per_step": total / args.steps}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--videos", type=int, default=200)
  parser.add_argument("--dim", type=int, default=1024)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--segments", type=int, default=750)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--step_seconds", type=float, default=0.5,
                      help="stand-in device step (the CPU train step is "
                           "about 0.5-1 s)")
  parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no_tfds", dest="tfds", action="store_false",
                      help="skip the TFDS row (needs tensorflow-datasets)")
  parser.add_argument("--json", help="output path (default: benchmarks/"
                                     "results/input_pipeline_<hostname>.json)")
  args = parser.parse_args(argv)
  lengths, source = thumos_lengths(args.videos, args.seed)
  videos = make_videos(lengths, args.dim, args.seed)
  rows = {}
  with tempfile.TemporaryDirectory() as tmp:
    for layout in args.layouts:
      root = os.path.join(tmp, layout)
      t0 = time.perf_counter()
      write_layout(layout, root, videos)
      write_s = time.perf_counter() - t0
      rows[layout] = {"write_seconds": write_s, **time_layout(
          lambda: open_raw(root, layout, args), args)}
    if args.tfds and "basnet" in args.layouts:
      try:
        t0 = time.perf_counter()
        opener = prepare_tfds(os.path.join(tmp, "basnet"),
                              os.path.join(tmp, "tfds"))
        write_s = time.perf_counter() - t0
        rows["tfds (array_record)"] = {"write_seconds": write_s,
                                       **time_layout(opener, args)}
      except ImportError as e:
        print(f"TFDS row skipped: {e}")
  mb = sum(v.rgb.nbytes + v.flow.nbytes for v in videos) / 2**20
  print(f"{args.videos} videos ({source}), snippets median "
        f"{np.median(lengths):.0f} max {lengths.max()}, {mb:.0f} MiB; "
        f"B={args.batch} T={args.segments} D={args.dim}/stream; "
        f"{os.cpu_count()} CPUs")
  print(f"{'layout':<20}{'open s':>8}{'batch s':>9}{'batch/s':>9}"
        f"{f'wait s (prefetch, {args.step_seconds} s step)':>32}")
  for layout, r in rows.items():
    print(f"{layout:<20}{r['open_seconds']:>8.2f}{r['seconds_per_batch']:>9.3f}"
          f"{r['batches_per_second']:>9.1f}"
          f"{r['prefetch_mean_wait_seconds']:>32.4f}")
  out = {"benchmark": "input_pipeline", **harness.run_facts(),
         "workload": {"videos": args.videos, "length_source": source,
                      "snippets_median": float(np.median(lengths)),
                      "snippets_max": int(lengths.max()),
                      "feature_mib": mb, "batch_size": args.batch,
                      "num_segments": args.segments, "dim": args.dim,
                      "steps": args.steps, "seed": args.seed,
                      "stand_in_step_seconds": args.step_seconds},
         "rows": rows}
  harness.write_json(harness.results_path("input_pipeline", args.json), out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
