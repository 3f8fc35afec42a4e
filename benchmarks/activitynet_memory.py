"""Part c of benchmarks/activitynet_scale.py: memory and speed of training
configs/anet13.py on ActivityNet 1.3-sized datasets of growing size.

For each size N (default 1k, 5k, 15k training videos) a dataset is written in
the ACM-Net layout (``case_jax.data.write_layout``: gt.json, split files,
one (n, 2D) float32 .npy per video) with the durations, snippet counts
(n = duration * 25 / 16) and annotations of benchmarks/activitynet_workload.py
and random features of D per stream (taken as views of one shared random
pool, so writing needs no memory per video).  Then a fresh interpreter
(``harness.run_worker``) loads configs/anet13.py, sets data.root, num_steps
and the overrides, opens the training split as the CLI does
(``datasets.open_split``: the layout's lazy reader plus data.check_values'
one read of every file), records its RSS, and runs the training loop
(``train.train_and_evaluate``, the function ``python -m case_jax.main``
runs) on that split: no evaluation (no test split is opened), no plots, one
checkpoint at the end.  Reported per size: the time to write and to open,
RSS after imports / after opening, the worker's peak RSS (ru_maxrss), and
steps/s from the progress lines (after the first logged step, so the
compilation is excluded).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
  sys.path.insert(0, _REPO)

from benchmarks import harness  # noqa: E402
from benchmarks.activitynet_workload import CLASSES, anet_videos  # noqa: E402

MODULE = "benchmarks.activitynet_memory"


def write_dataset(root: str, num_videos: int, dim: int, seed: int = 0) -> dict:
  """An ACM-Net layout ActivityNet-shaped training split of ``num_videos``
  videos under ``root``; returns its size facts."""
  from case_jax.data import VideoSpec, write_layout
  videos = anet_videos(num_videos, seed, prefix="v_train")
  longest = max(v["snippets"] for v in videos)
  rng = np.random.default_rng(seed + 1)
  pool = rng.standard_normal((longest + 4096, 2 * dim), dtype=np.float32)
  specs = []
  for v in videos:
    at = int(rng.integers(0, 4096))
    feats = pool[at:at + v["snippets"]]
    specs.append(VideoSpec(v["video_id"], "train", "training", v["duration"],
                           tuple((s, e, CLASSES[c]) for s, e, c in v["annotations"]),
                           feats[:, :dim], feats[:, dim:]))
  t0 = time.perf_counter()
  write_layout("acmnet", root, specs)
  snippets = np.array([v["snippets"] for v in videos])
  return {"videos": num_videos, "write_seconds": time.perf_counter() - t0,
          "snippets_total": int(snippets.sum()),
          "snippets_mean": float(snippets.mean()),
          "feature_bytes": int(snippets.sum()) * 2 * dim * 4}


class _ClockedStream:
  """A text stream that notes when each progress line ("... 120/938 ...")
  was written."""

  def __init__(self):
    self.marks = []          # (seconds, step)
    self.tail = ""

  def write(self, text: str) -> None:
    now = time.perf_counter()
    for m in re.finditer(r"\] (\d+)/\d+", text):
      self.marks.append((now, int(m.group(1))))
    self.tail = (self.tail + text)[-2000:]

  def flush(self) -> None:
    pass


def _train_worker(spec: dict) -> dict:
  rss_imports = harness.current_rss_mb()
  from case_jax import datasets, defaults, train
  cfg = defaults.load_config("anet13")
  defaults.set_dotted(cfg, {"data.root": spec["root"], "num_steps": spec["num_steps"],
                            "checkpoint_every": spec["num_steps"] + 1,
                            "eval_every": 0, "eval.plots": False,
                            **spec["overrides"]})
  rss_jax = harness.current_rss_mb()
  t0 = time.perf_counter()
  train_set = datasets.open_split(cfg, spec["root"], "train")
  open_s = time.perf_counter() - t0
  rss_open, peak_open = harness.current_rss_mb(), harness.peak_rss_mb()
  stream = _ClockedStream()
  t0 = time.perf_counter()
  train.train_and_evaluate(cfg, spec["workdir"], train_set=train_set, stream=stream)
  train_s = time.perf_counter() - t0
  (t_a, s_a), (t_b, s_b) = stream.marks[0], stream.marks[-1]
  return {"videos_opened": len(train_set), "open_seconds": open_s,
          "rss_after_imports_mb": rss_imports, "rss_after_config_mb": rss_jax,
          "rss_after_open_mb": rss_open, "peak_rss_after_open_mb": peak_open,
          "train_seconds": train_s, "steps": spec["num_steps"],
          "steps_per_second": (s_b - s_a) / (t_b - t_a) if s_b > s_a else None,
          "steps_timed": s_b - s_a, "peak_rss_mb": harness.peak_rss_mb()}


def measure(sizes, *, dim: int, batch_size: int, max_steps: int | None,
            overrides: dict, keep: str | None = None) -> list[dict]:
  """One row per size: dataset facts and the worker's measurements.
  ``max_steps``: cap on the steps (None: one epoch, N // batch_size)."""
  rows = []
  with tempfile.TemporaryDirectory(dir=keep) as tmp:
    for n in sizes:
      root = os.path.join(tmp, f"anet_{n}")
      row = write_dataset(root, n, dim)
      epoch = n // batch_size
      steps = epoch if max_steps is None else min(epoch, max_steps)
      spec = {"kind": "train", "root": root, "workdir": os.path.join(tmp, f"run_{n}"),
              "num_steps": steps,
              "overrides": {"batch_size": batch_size, **overrides}}
      row.update(steps=steps, epoch_steps=epoch,
                 videos_touched=min(n, steps * batch_size),
                 loadavg_before=harness.loadavg())
      row.update(harness.run_worker(MODULE, spec, timeout=3600))
      row["loadavg_after"] = harness.loadavg()
      rows.append(row)
      print(f"  {n} videos: " + ", ".join(
          f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
          for k, v in row.items() if k in ("open_seconds", "rss_after_open_mb",
                                            "peak_rss_mb", "steps",
                                            "steps_per_second", "error")),
            flush=True)
  return rows


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  harness.add_worker_args(parser)
  sys.exit(harness.serve_worker(parser.parse_args(), {"train": _train_worker}))
