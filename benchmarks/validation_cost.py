"""What validating a THUMOS14-size dataset before training costs (issue #12 §2).

    python -m benchmarks.validation_cost [--root /tmp/val_bench] [--scale 1.0]
        [--json PATH]

Writes a BaS-Net-layout dataset shaped like THUMOS14's I3D release (200
train + 213 test videos, lognormal lengths with mean ~750 snippets, rgb and
flow 1024-d float32: ~2.5 GB at --scale 1; --scale shrinks the number of
videos) with ``np.save``, then opens both splits as training does
(``datasets.open_split``) four ways:

  headers      data.check_values=False: file headers only (shapes, labels)
  values_off   every value read and checked, no record (verified_cache=off)
  values_first every value read, verified files recorded (the first run)
  values_again the record says nothing changed: headers only again

Reads come from the page cache (the files were just written, and the run
repeats each pass), so ``values_*`` is the CPU cost; a cold disk adds
size / disk bandwidth once, in the first run only.  Results:
benchmarks/results/validation_cost_<host>.json and a printed table.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import time

import numpy as np

from benchmarks import harness
from case_jax import datasets, defaults
from case_jax.data.thumos_layout import (STREAMS, THUMOS14_CLASSES,
                                         feature_path, gt_path, split_path)
from case_jax.data.verified import ROOT_FILE

SPLIT_SIZES = {"train": 200, "test": 213}
MEAN_SNIPPETS, DIM = 750, 1024


def write_dataset(root: str, scale: float, seed: int = 0) -> dict:
  """THUMOS14-shaped random features; returns {videos, snippets, bytes}."""
  rng = np.random.default_rng(seed)
  # One random block, sliced per video: writing, not drawing, is what the
  # files must cost (values do not change the check's speed).
  block = rng.standard_normal((8192, DIM), dtype=np.float32)
  database, videos, snippets, size = {}, 0, 0, 0
  sigma = 0.8   # lognormal spread; mean exp(mu + sigma^2 / 2) = 750
  mu = np.log(MEAN_SNIPPETS) - sigma ** 2 / 2
  for split, n in SPLIT_SIZES.items():
    ids = [f"video_{split}_{k:07d}" for k in range(max(1, round(n * scale)))]
    for k, vid in enumerate(ids):
      t = int(np.clip(rng.lognormal(mu, sigma), 16, 8000))
      for s in STREAMS:
        path = feature_path(root, split, s, vid)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        start = int(rng.integers(0, 8192 - min(t, 8192) + 1))
        x = np.resize(block[start:start + t], (t, DIM))
        np.save(path, x)
        size += os.path.getsize(path)
      label = THUMOS14_CLASSES[k % len(THUMOS14_CLASSES)]
      database[vid] = {"subset": "validation" if split == "train" else "test",
                       "duration": t * 0.64, "annotations": [
                           {"segment": [0.0, min(5.0, t * 0.64)],
                            "label": label}]}
      videos, snippets = videos + 1, snippets + t
    with open(split_path(root, split), "w") as f:
      f.write("\n".join(ids) + "\n")
  with open(gt_path(root), "w") as f:
    json.dump({"database": database}, f)
  return {"videos": videos, "snippets": snippets, "bytes": size}


def open_both(root: str, **data) -> float:
  """Seconds to open and validate both splits as training does."""
  cfg = defaults.load_config("thumos14")
  cfg.data.root = root
  for k, v in data.items():
    cfg.data[k] = v
  t0 = time.perf_counter()
  train = datasets.open_split(cfg, root, "train", stream=io.StringIO())
  datasets.open_split(cfg, root, "test", classes=train.classes,
                      stream=io.StringIO())
  return time.perf_counter() - t0


def measure(root: str, repeats: int) -> dict:
  record = os.path.join(root, ROOT_FILE)
  ways = {}

  def best(fn):
    return min(fn() for _ in range(repeats))
  ways["headers"] = best(lambda: open_both(root, check_values=False))
  ways["values_off"] = best(lambda: open_both(root, verified_cache="off"))

  def first():
    if os.path.exists(record):
      os.remove(record)
    return open_both(root)
  ways["values_first"] = best(first)
  ways["values_again"] = best(lambda: open_both(root))
  return ways


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--root", default="/tmp/case_jax_validation_bench")
  parser.add_argument("--scale", type=float, default=1.0,
                      help="fraction of THUMOS14's 413 videos")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--keep", action="store_true",
                      help="keep the generated dataset")
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  shutil.rmtree(args.root, ignore_errors=True)
  t0 = time.perf_counter()
  size = write_dataset(args.root, args.scale)
  written = time.perf_counter() - t0
  try:
    ways = measure(args.root, args.repeats)
  finally:
    if not args.keep:
      shutil.rmtree(args.root, ignore_errors=True)
  gb = size["bytes"] / 1e9
  full = 2 * sum(SPLIT_SIZES.values()) * MEAN_SNIPPETS * DIM * 4 / 1e9
  out = {**harness.run_facts(), "scale": args.scale, **size,
         "gigabytes": gb, "write_s": written, "seconds": ways,
         "gb_per_s_values": gb / ways["values_off"],
         "thumos14_gigabytes": full,
         "thumos14_values_s_extrapolated":
             ways["values_off"] * full / gb,
         "note": "page-cached reads, best of --repeats; a cold disk adds "
                 "size / bandwidth to the first run only"}
  harness.write_json(harness.results_path("validation_cost", args.json), out)
  print(f"\n{size['videos']} videos, {size['snippets']} snippets, "
        f"{gb:.2f} GB (written in {written:.1f} s)")
  print(f"{'pass':<14}{'seconds':>9}")
  for k, v in ways.items():
    print(f"{k:<14}{v:>9.2f}")
  print(f"values read at {out['gb_per_s_values']:.2f} GB/s; a THUMOS14-size "
        f"dataset ({full:.2f} GB): {out['thumos14_values_s_extrapolated']:.1f}"
        " s the first time")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
