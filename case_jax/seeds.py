"""Several seeds of one config, and their mean +- std (paper Table 12).

    python -m case_jax.main --config=configs/thumos14.py --workdir=DIR \
        --config.seeds=0,1,2 [--config.seeds_mode=auto|vmap|sequential]

Each seed ``s`` is a complete run in ``DIR/seed_<s>/`` (checkpoints/,
metrics.jsonl, eval/, run.json, config.json with ``seed = s``), so it
resumes, and ``--mode=evaluate --workdir=DIR/seed_<s>`` works on it, as on a
single run.  A seed whose ``eval/metrics.json`` already holds the final step
is not trained again.  Afterwards ``DIR/seeds.md`` (one row per seed and a
mean +- std row; mAP at each tIoU, the partial AVGs, AVG, F&B ACC, in %) and
``DIR/seeds.json`` are written and the table is printed.  The std is the
sample standard deviation (``np.std(ddof=1)``; 0 for one seed).

Two ways to train the seeds:

* ``sequential``: the train loop (case_jax/train.py) once per seed.
* ``vmap``: all seeds at once, in the same loop.  The train state is stacked
  along a leading seed axis (S, ...), and the per-device step is
  ``jax.vmap``-ed over it inside the pmap (or shard_map): the collectives
  name the device axis, which vmap leaves alone, so each seed sees exactly
  its own single-run step.  Batches are a pure function of (seed, step), so
  each seed keeps its own data order: the device batch is (n, S, B/n, ...).
  Each seed's slice is checkpointed into its own ``seed_<s>/checkpoints`` and
  evaluated with the single run's evaluator; results equal the sequential
  ones to float rounding (tests/test_seeds.py).

This module holds what is particular to seeds: parsing them, the mode
choice and its memory estimate, and the table.
* ``auto`` picks vmap when ``estimate_step_bytes`` (S x (5 copies of the
  parameters for params, grads and Adam moments + the activations of one
  per-device batch)) is at most half of the free device memory (host RAM
  shared by the devices on CPU), and there are several seeds in one process;
  else sequential.  The choice and its numbers are printed.
"""
from __future__ import annotations

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np

from case_jax import errors
from case_jax import evaluator as evaluator_lib
from case_jax import fileio
from case_jax import model as model_lib
from case_jax import workdir as workdir_lib

MODES = ("auto", "vmap", "sequential")


# =============================================================================
# Seeds and configs.
# =============================================================================
def parse_seeds(text) -> list[int]:
  """"0,1,2" -> [0, 1, 2]; "" -> []; repeated or negative seeds are errors."""
  if text is None or not str(text).strip():
    return []
  try:
    seeds = [int(p) for p in str(text).replace(" ", "").split(",") if p != ""]
  except ValueError:
    raise errors.ConfigError(f"seeds must be comma-separated integers like '0,1,2', "
                             f"got {text!r}") from None
  if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
    raise errors.ConfigError(f"seeds must be distinct non-negative integers, got {text!r}")
  return seeds


def seed_list(cfg) -> list[int]:
  """``cfg.seeds`` parsed, or ``[cfg.seed]`` when it is empty."""
  return parse_seeds(cfg.get("seeds", "")) or [int(cfg.seed)]


def seed_config(cfg, seed: int):
  """A copy of ``cfg`` for one seed's run (seed = s, no seeds list)."""
  c = copy.deepcopy(cfg)
  c.seed = int(seed)
  c.seeds = ""
  return c


def seed_dir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, f"seed_{seed}")


def finished(cfg, directory: str) -> bool:
  """Whether ``directory`` holds this seed's final evaluation, made the way
  ``cfg`` evaluates (another inference/eval setting re-evaluates it)."""
  done = evaluator_lib.read_eval_metrics(os.path.join(directory, "eval"),
                                         cfg.num_steps)
  return done is not None and not workdir_lib.eval_diff(directory, cfg)


# =============================================================================
# Choosing vmap or sequential.
# =============================================================================
def estimate_step_bytes(cfg, *, num_seeds: int, num_devices: int, rgb_dim: int,
                        flow_dim: int, num_classes: int, num_params: int) -> int:
  """Rough bytes one device needs for the seed-stacked step (f32).

  Per seed: 5 copies of the parameters (params, grads, Adam mu and nu, the
  update) + the activations of B/n videos x T snippets: the inputs and, per
  stream, three E-wide layers, class and cluster logits and the OT
  matrices, x4 for what the backward pass keeps and temporaries.
  """
  b = max(1, cfg.batch_size // max(1, num_devices))
  e, k = cfg.model.embed_dim, cfg.model.num_clusters
  per_snippet = rgb_dim + flow_dim + 2 * (3 * e + 2 * (num_classes + 1) + 4 * k)
  act = 4 * b * cfg.data.num_segments * per_snippet * 4
  return int(num_seeds * (5 * 4 * num_params + act))


def free_device_bytes(devices) -> int:
  """Free memory of one device: the allocator's limit minus what is in use;
  on CPU the host's available RAM shared by the local devices."""
  stats = None
  try:
    stats = devices[0].memory_stats()
  except Exception:  # some backends do not implement it
    pass
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  try:
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    avail = 4 << 30
  return int(avail) // max(1, len(jax.local_devices()))


def choose_mode(cfg, seeds, devices, *, dims) -> tuple[str, str]:
  """("vmap" | "sequential", why) for ``cfg.seeds_mode``; ``dims``: the
  estimate's data sizes (see ``estimate_step_bytes``), or a function
  returning them (called only when the estimate is needed)."""
  mode = cfg.get("seeds_mode", "auto")
  if mode not in MODES:
    raise errors.ConfigError(f"seeds_mode must be one of {MODES}, got {mode!r}")
  if mode == "vmap" and jax.process_count() > 1:
    raise errors.ConfigError("seeds_mode='vmap' runs in one process; use 'sequential' "
                             "for a multi-process run.")
  if mode != "auto":
    return mode, "as configured"
  if len(seeds) < 2:
    return "sequential", "one seed"
  if jax.process_count() > 1:
    return "sequential", "multi-process run"
  dims = dims() if callable(dims) else dims
  need = estimate_step_bytes(cfg, num_seeds=len(seeds), num_devices=len(devices),
                             **dims)
  free = free_device_bytes(devices)
  gib = lambda x: f"{x / 2**30:.2f} GiB"
  if need <= free // 2:
    return "vmap", f"estimated {gib(need)} per device <= half of {gib(free)} free"
  return "sequential", f"estimated {gib(need)} per device > half of {gib(free)} free"


def dims(cfg, train_set) -> dict:
  """The data sizes ``estimate_step_bytes`` needs, from the train split."""
  rec = train_set[0]
  model = model_lib.from_config(cfg.model, len(train_set.classes))
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 8, rec.rgb.shape[1])),
      jnp.zeros((1, 8, rec.flow.shape[1]))))
  return {"rgb_dim": int(rec.rgb.shape[1]), "flow_dim": int(rec.flow.shape[1]),
          "num_classes": len(train_set.classes),
          "num_params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))}


# =============================================================================
# The table.
# =============================================================================
def metric_columns(metrics: dict) -> list[tuple[str, str]]:
  """(header, key) of the table's metric columns, from one run's metrics:
  mAP at each tIoU, the partial AVG(lo:hi) summaries, AVG, ACC."""
  thr = sorted((float(k[4:]), k) for k in metrics if k.startswith("mAP@"))
  cols = [(f"mAP@{t:g}", k) for t, k in thr]
  lo, hi = (thr[0][0], thr[-1][0]) if thr else (None, None)
  for k in metrics:
    if k.startswith("AVG("):
      a, b = (float(x) for x in k[4:-1].split(":"))
      if not (np.isclose(a, lo) and np.isclose(b, hi)):  # the full one is AVG
        cols.append((k, k))
  cols.append(("AVG", "mAP"))
  if "test_fb_acc" in metrics:
    cols.append(("ACC", "test_fb_acc"))
  return cols


def mean_std(values) -> tuple[float, float]:
  """(mean, sample std with ddof=1; 0 for a single value)."""
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def cell(values, scale: float = 100.0) -> str:
  m, s = mean_std(values)
  return f"{scale * m:.2f} ± {scale * s:.2f}"


def seeds_table(per_seed: dict) -> tuple[str, dict]:
  """Markdown (one row per seed, then mean ± std; in %) and its JSON."""
  seeds = list(per_seed)
  cols = metric_columns(per_seed[seeds[0]])
  lines = ["| seed | " + " | ".join(h for h, _ in cols) + " |",
           "|---:|" + "---:|" * len(cols)]
  for s in seeds:
    lines.append(f"| {s} | " + " | ".join(f"{100 * per_seed[s][k]:.2f}"
                                          for _, k in cols) + " |")
  lines.append("| mean ± std | " + " | ".join(
      cell([per_seed[s][k] for s in seeds]) for _, k in cols) + " |")
  stats = {h: dict(zip(("mean", "std"), mean_std([per_seed[s][k] for s in seeds])))
           for h, k in cols}
  return "\n".join(lines), {"columns": [h for h, _ in cols], "summary": stats}


def write_table(workdir: str, seeds, mode: str, num_steps: int, stream) -> dict:
  """Reads each seed's final metrics, writes seeds.md/.json, prints the
  table.  Returns {"metrics" {seed: scalars}, "table", "paths"}."""
  per_seed = {}
  for s in seeds:
    m = evaluator_lib.read_eval_metrics(os.path.join(seed_dir(workdir, s), "eval"),
                                        num_steps)
    if m is None:
      raise RuntimeError(f"seed {s}: no final evaluation in "
                         f"{seed_dir(workdir, s)}/eval (does the data have a "
                         "test split?)")
    per_seed[s] = m
  md, info = seeds_table(per_seed)
  paths = {"md": os.path.join(workdir, "seeds.md"),
           "json": os.path.join(workdir, "seeds.json")}
  fileio.write_text(paths["md"], md + "\n")
  fileio.write_json(paths["json"], {
      "seeds": list(seeds), "mode": mode, "num_steps": num_steps,
      "per_seed": {str(s): m for s, m in per_seed.items()}, **info})
  stream.write(f"\nFinal test metrics over {len(seeds)} seed(s), % "
               f"(mean ± sample std):\n{md}\nWrote {paths['md']} and "
               f"{paths['json']}\n")
  stream.flush()
  return {"metrics": per_seed, "table": md, "paths": paths}
