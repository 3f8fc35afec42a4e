"""What every benchmark shares: where results go and how they are written,
facts about the machine and its load, the timing loop, and workers run in a
fresh interpreter.  Configs are loaded with ``case_jax.defaults.load_config``
(as ``--config=configs/<name>.py`` loads them) and mean ± sample std comes
from ``case_jax.seeds.mean_std``.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")


# ---------------------------------------------------------------------------
# Results.
# ---------------------------------------------------------------------------
def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
  """ROC AUC by the rank-sum (ties broken by position); 0 when a class is
  empty.  scores (N,), positive (N,) bool."""
  scores, positive = np.asarray(scores), np.asarray(positive, bool)
  ranks = np.empty(len(scores))
  ranks[np.argsort(scores, kind="stable")] = np.arange(1, len(scores) + 1)
  n_pos, n_neg = positive.sum(), (~positive).sum()
  return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2)
               / max(n_pos * n_neg, 1))


def results_path(stem: str, given: str | None = None, suffix: str = "") -> str:
  """``given`` (a --json argument) or
  benchmarks/results/<stem>_<hostname><suffix>.json."""
  return given or os.path.join(RESULTS, f"{stem}_{socket.gethostname()}{suffix}.json")


def write_json(path: str, obj, *, indent: int = 1, **dump_kw) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f, indent=indent, **dump_kw)
  print(f"wrote {path}")
  return path


def run_facts(numpy_version: bool = True) -> dict:
  """Date, host, platform, python (and numpy) and CPU count of this run."""
  facts = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "host": socket.gethostname(), "platform": platform.platform(),
           "python": platform.python_version()}
  if numpy_version:
    facts["numpy"] = np.__version__
  facts["cpus"] = os.cpu_count()
  return facts


def cpu_name() -> str | None:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or None


# ---------------------------------------------------------------------------
# Load and memory: other processes on a small machine skew every timing.
# ---------------------------------------------------------------------------
def loadavg() -> list:
  try:
    with open("/proc/loadavg") as f:
      return [float(x) for x in f.read().split()[:3]]
  except OSError:
    return [float("nan")] * 3


def wait_quiet(max_wait: float, threshold: float = 1.2, poll: float = 30.0) -> list:
  """Waits (up to max_wait s) until the 1-minute load is <= threshold."""
  t0 = time.time()
  while loadavg()[0] > threshold and time.time() - t0 < max_wait:
    time.sleep(poll)
  return loadavg()


def calib_gflops(reps: int = 5) -> float:
  """numpy (12000x1024)@(1024x512) f32 GFLOP/s: a contention check run next
  to the timed steps (a drop means another process was on the cores)."""
  rng = np.random.default_rng(0)
  a = rng.random((12000, 1024), dtype=np.float32)
  w = rng.random((1024, 512), dtype=np.float32)
  a @ w
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    a @ w
    ts.append(time.perf_counter() - t0)
  return 2 * 12000 * 1024 * 512 / float(np.median(ts)) / 1e9


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return float("nan")


# ---------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------
def median_seconds(fn, repeats: int) -> tuple[float, object]:
  """(median seconds of ``repeats`` calls after one untimed warm-up call, the
  last output).  ``fn`` must block until its work is done (JAX: on
  block_until_ready), or the time is only the dispatch."""
  out = fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), out


# ---------------------------------------------------------------------------
# Workers: each configuration in a fresh interpreter, so that its XLA flags
# take effect and its peak RSS is its own.
# ---------------------------------------------------------------------------
def run_worker(module: str, spec: dict, env_extra: dict | None = None,
               timeout: int = 1800, cpu_only: bool = True) -> dict:
  """Runs ``python -m <module> --worker SPEC --worker-out FILE``; returns the
  JSON the worker wrote, or {"error"}.  ``cpu_only``: JAX_PLATFORMS=cpu;
  otherwise the caller's environment (plus ``env_extra``)."""
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
  if cpu_only:
    env["JAX_PLATFORMS"] = "cpu"
  env.update(env_extra or {})
  with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as out:
    path = out.name
  cmd = [sys.executable, "-m", module, "--worker", json.dumps(spec),
         "--worker-out", path]
  try:
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
      return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}"}
    with open(path) as f:
      return json.load(f)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout} s"}
  finally:
    os.unlink(path)


def add_worker_args(parser) -> None:
  """The hidden --worker/--worker-out pair ``run_worker`` passes."""
  import argparse
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)


def serve_worker(args, workers: dict) -> int:
  """In a worker process: runs ``workers[spec["kind"]](spec)`` and writes
  its JSON where ``run_worker`` reads it."""
  spec = json.loads(args.worker)
  with open(args.worker_out, "w") as f:
    json.dump(workers[spec["kind"]](spec), f)
  return 0
