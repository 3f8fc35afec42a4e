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

* ``sequential``: ``train.train`` once per seed.
* ``vmap``: all seeds at once.  The train state is stacked along a leading
  seed axis (S, ...), and the per-device step of ``train.make_step_fn`` is
  ``jax.vmap``-ed over it inside the pmap (or shard_map): the collectives
  name the device axis, which vmap leaves alone, so each seed sees exactly
  its own single-run step.  Batches are a pure function of (seed, step), so
  each seed keeps its own data order: the device batch is (n, S, B/n, ...).
  Each seed's slice is checkpointed into its own ``seed_<s>/checkpoints`` and
  evaluated with the single run's evaluator; results equal the sequential
  ones to float rounding (tests/test_seeds.py).
* ``auto`` picks vmap when ``estimate_step_bytes`` (S x (5 copies of the
  parameters for params, grads and Adam moments + the activations of one
  per-device batch)) is at most half of the free device memory (host RAM
  shared by the devices on CPU), and there are several seeds in one process;
  else sequential.  The choice and its numbers are printed.
"""
from __future__ import annotations

import copy
import json
import os
import sys
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from case_jax import checkpoint as ckpt_lib
from case_jax import defaults, report
from case_jax import fileio
from case_jax import model as model_lib
from case_jax import train

MODES = ("auto", "vmap", "sequential")
# Config keys that may change between a finished run and its reuse: they do
# not change the trained model (num_steps is checked through the final step).
_REUSE_IGNORES = ("seed", "seeds", "seeds_mode", "data.root", "num_steps",
                  "eval_every", "log_every", "checkpoint_every", "keep_checkpoints",
                  "eval.num_plots", "inference.batch_size")


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
    raise ValueError(f"seeds must be comma-separated integers like '0,1,2', "
                     f"got {text!r}") from None
  if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
    raise ValueError(f"seeds must be distinct non-negative integers, got {text!r}")
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


def override(cfg, overrides: dict):
  """A copy of ``cfg`` with dotted-key ``overrides`` set."""
  from case_jax.defaults import set_dotted
  return set_dotted(copy.deepcopy(cfg), overrides)


def check_reusable(cfg, directory: str) -> None:
  """Raises if ``directory`` holds a run trained with a different config
  (anything but ``_REUSE_IGNORES``): its checkpoints would be resumed and
  its numbers reported as this config's."""
  path = os.path.join(directory, "config.json")
  if not os.path.exists(path):
    return
  diff = defaults.config_diff(fileio.read_json(path), cfg, ignore=_REUSE_IGNORES)
  if diff:
    shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:5])
    raise ValueError(f"{directory} holds a run with another config ({shown}"
                     f"{', ...' if len(diff) > 5 else ''}); use another --workdir "
                     "or remove that directory.")


# =============================================================================
# Final metrics of a run (its eval/metrics.json).
# =============================================================================
def evaluate_variant(cfg, directory: str, name: str, overrides: dict, *,
                     cache: Optional[dict] = None, stream=None) -> dict:
  """The final checkpoint in ``directory`` evaluated with ``overrides`` (e.g.
  another inference.fg_score) -> ``<directory>/eval_<name>/metrics.json``;
  reused when it exists for the final step.  ``cache`` keeps the test split
  and ground truth between calls."""
  from case_jax import runs
  c = override(cfg, overrides)
  if c.to_json_best_effort() == cfg.to_json_best_effort():
    # The training config's own evaluation: its eval/ already has it.
    done = report.read_eval_metrics(os.path.join(directory, "eval"), cfg.num_steps)
    if done is not None:
      return done
  out_dir = os.path.join(directory, f"eval_{name}")
  done = report.read_eval_metrics(out_dir, cfg.num_steps)
  if done is not None:
    return done
  model, state, info = runs.load_trained(c, directory)
  cache = {} if cache is None else cache
  if "test" not in cache:
    cache["test"] = runs.open_test(c, directory, info["classes"], stream)
  test_set, gt = cache["test"]
  out = report.evaluate_state(test_set, model, state.params, state.q_r, c, gt)
  report.write_outputs(out_dir, out, extra={
      "step": int(state.step), **report.snippet_scalars(out["stats"]),
      "overrides": overrides})
  return report.read_eval_metrics(out_dir)


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
    raise ValueError(f"seeds_mode must be one of {MODES}, got {mode!r}")
  if mode == "vmap" and jax.process_count() > 1:
    raise ValueError("seeds_mode='vmap' runs in one process; use 'sequential' "
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


def _dims(cfg, train_set) -> dict:
  rec = train_set[0]
  model = model_lib.from_config(cfg.model, len(train_set.classes))
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 8, rec.rgb.shape[1])),
      jnp.zeros((1, 8, rec.flow.shape[1]))))
  return {"rgb_dim": int(rec.rgb.shape[1]), "flow_dim": int(rec.flow.shape[1]),
          "num_classes": len(train_set.classes),
          "num_params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))}


# =============================================================================
# Training all seeds at once.
# =============================================================================
def vmapped_step(model, tx, cfg, devices):
  """The per-device step vmapped over a leading seed axis, data-parallel
  over ``devices``: f(state (n, S, ...), batch (n, S, b, ...))."""
  return train.parallel_step(model, tx, cfg, devices, cfg.parallel,
                             transform=jax.vmap)


def _stacked_batch(train_set, step, seeds, cfg, n) -> dict:
  """Each seed's batch of ``step``, as (n, S, B/n, ...) numpy arrays."""
  from case_jax import data as data_lib
  per_seed = []
  for s in seeds:
    b = data_lib.train_batch(train_set, step, seed=s, batch_size=cfg.batch_size,
                             num_segments=cfg.data.num_segments)
    per_seed.append(train.split_rows(b, n))
  return {k: np.stack([p[k] for p in per_seed], axis=1) for k in per_seed[0]}


class _SeedRun:
  """One seed's files: config, checkpoints, metrics.jsonl, TensorBoard, eval."""

  def __init__(self, cfg, directory, train_set, evaluator):
    from case_jax import tracking
    self.cfg, self.dir = cfg, directory
    os.makedirs(directory, exist_ok=True)
    train._write_run_info(directory, train_set)
    train._write_config(cfg, directory)
    self.manager = ckpt_lib.Checkpointer(os.path.join(directory, "checkpoints"),
                                         keep=cfg.keep_checkpoints,
                                         commit=cfg.get("checkpoint_commit", "auto"))
    self.evaluator = copy.copy(evaluator) if evaluator else None
    if self.evaluator:
      self.evaluator.best = None  # its own test-set model selection
    self.log = open(os.path.join(directory, "metrics.jsonl"), "a")
    self.board = tracking.ScalarWriter(os.path.join(directory, "tensorboard"))

  def close(self):  # idempotent: also the cleanup after an error
    self.log.close()
    self.board.close()


def train_vmapped(cfg, seeds, workdir: str, *, devices=None, stream=None
                  ) -> Optional[dict]:
  """Trains ``seeds`` of ``cfg`` in one seed-stacked loop into
  ``<workdir>/seed_<s>/``.  Returns {seed: summary like train.train's}, or
  None when the seeds' checkpoints are at different steps (resume them
  sequentially)."""
  devices = devices or jax.local_devices()
  stream = stream or sys.stdout
  n = len(devices)
  root = train.resolve_data_root(cfg, workdir)
  train_set = train.open_split(cfg, root, "train", stream=stream)
  dims = _dims(cfg, train_set)
  evaluator = train._Evaluator.maybe(cfg, root, train_set, stream)
  model = model_lib.from_config(cfg.model, dims["num_classes"])
  tx = train.make_optimizer(cfg.optim)

  states, runs = [], []
  for s in seeds:
    c = seed_config(cfg, s)
    run = _SeedRun(c, seed_dir(workdir, s), train_set, evaluator)
    state = train.create_train_state(c, model, tx, rgb_dim=dims["rgb_dim"],
                                     flow_dim=dims["flow_dim"], seed=s)
    state, meta = run.manager.restore_latest(state)
    if meta is not None:
      stream.write(f"seed {s}: resumed from step {int(state.step)}\n")
    states.append(state)
    runs.append(run)
  if len({int(st.step) for st in states}) > 1:
    for run in runs:
      run.close()
    stream.write("The seeds' checkpoints are at different steps "
                 f"({[int(st.step) for st in states]}): resuming them one by one.\n")
    return None

  # (S, ...) on the host, then (n, S, ...) on the devices.
  stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *states)
  rstate = train.replicate(stacked, devices)
  step_fn = vmapped_step(model, tx, cfg, devices)
  sharding = NamedSharding(Mesh(np.array(devices), (train.AXIS,)), P(train.AXIS))
  start = int(states[0].step)
  try:
    return _train_loop(cfg, seeds, workdir, runs, evaluator, model, train_set,
                       rstate, step_fn, sharding, start, n, stream)
  finally:
    for run in runs:
      run.close()


def _train_loop(cfg, seeds, workdir, runs, evaluator, model, train_set, rstate,
                step_fn, sharding, start, n, stream) -> dict:
  """train_vmapped's loop and end; ``runs`` are closed by the caller."""
  from case_jax import data as data_lib
  host_state = lambda: train.unreplicate(rstate)  # (S, ...) leaves
  seed_state = lambda hs, i: jax.tree.map(lambda x: x[i], hs)
  progress = train.Progress(cfg.num_steps, start, stream, cfg.log_every)
  guard = ckpt_lib.PreemptionGuard()
  batches = data_lib.Prefetcher(
      lambda st: _stacked_batch(train_set, st, seeds, cfg, n),
      range(start, cfg.num_steps))
  metrics = [{} for _ in seeds]
  with guard, batches:
    for step, batch in zip(range(start, cfg.num_steps), batches):
      rstate, rmetrics = step_fn(rstate, jax.device_put(batch, sharding))
      # Host sync every step (simulated multi-device CPU runs hang without).
      host = jax.device_get(rmetrics)     # (n, S) each
      metrics = [{k: float(v[0, i]) for k, v in host.items()}
                 for i in range(len(seeds))]
      done = step + 1
      for m in metrics:
        train._check_finite(m, done)
      if done % cfg.log_every == 0 or done == cfg.num_steps:
        for run, m in zip(runs, metrics):
          run.log.write(json.dumps({"step": done, **m}) + "\n")
          run.log.flush()
          run.board.write(done, m)
      progress.update(done, {k: float(np.mean([m[k] for m in metrics]))
                             for k in metrics[0]})
      stop = guard.should_stop() and done < cfg.num_steps
      save = (done % cfg.checkpoint_every == 0 and done < cfg.num_steps) or stop
      evaluate = (evaluator and cfg.eval_every and done % cfg.eval_every == 0
                  and done < cfg.num_steps)
      if save or evaluate:
        hs = host_state()
        for i, run in enumerate(runs):
          if save:
            run.manager.save(seed_state(hs, i), meta=train._meta(run.cfg, done))
          if evaluate:
            sc = run.evaluator.run(model, seed_state(hs, i), done, run.log)["scalars"]
            run.board.write(done, sc)
      if stop:
        for run in runs:
          run.manager.wait()
          run.close()
        stream.write(f"\nPreempted at step {done}: checkpoints saved in "
                     f"{workdir}/seed_*/checkpoints; rerun to resume.\n")
        stream.flush()
        raise ckpt_lib.Preempted(done, guard.signum)

  # ---- Final save and evaluation, per seed, as train.train does ------------------
  hs = host_state()
  # Every seed's final checkpoint first, so that an error in one seed's
  # evaluation cannot cost another seed its last steps.
  for i, run in enumerate(runs):
    run.manager.save(seed_state(hs, i), meta=train._meta(run.cfg, cfg.num_steps))
  for run in runs:
    run.manager.wait()
  summaries = {}
  for i, (s, run) in enumerate(zip(seeds, runs)):
    if run.evaluator:
      stream.write(f"\n== seed {s} ==")
    summaries[s] = train.finish_run(
        run.cfg, run.dir, model, seed_state(hs, i), metrics[i],
        manager=run.manager, evaluator=run.evaluator, log=run.log, board=run.board,
        classes=train_set.classes, stream=stream)
    run.log.close()
  return summaries


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


# =============================================================================
# The entry point.
# =============================================================================
def shared_data_root(cfg, workdir: str) -> str:
  """data.root for every seed (and ablation row) under ``workdir``: one
  copy of generated (synthetic) data.  With several processes it is only
  named here; train.train's primary process generates it behind a barrier."""
  if jax.process_count() == 1:
    return train.resolve_data_root(cfg, workdir)
  if cfg.data.dataset == "synthetic" and not cfg.data.root:
    return os.path.join(workdir, "synthetic_data")
  return cfg.data.root


def run(cfg, workdir: str, *, devices=None, stream=None,
        evaluations: tuple = ()) -> dict:
  """Trains every seed of ``cfg.seeds`` into ``<workdir>/seed_<s>/`` (skipping
  finished ones), writes seeds.md/.json and prints the table.

  ``evaluations``: ((name, overrides), ...) further evaluations of each
  seed's final checkpoint (Table 5's fg_score), written to
  ``seed_<s>/eval_<name>/``.  Returns {"seeds", "mode", "metrics" {seed:
  scalars}, "evaluations" {name: {seed: scalars}}, "table", "paths"}.
  """
  devices = devices or jax.local_devices()
  stream = stream or sys.stdout
  workdir = train.local_workdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  seeds = seed_list(cfg)
  cfg = copy.deepcopy(cfg)
  primary = jax.process_index() == 0
  cfg.data.root = shared_data_root(cfg, workdir)
  for s in seeds:
    check_reusable(seed_config(cfg, s), seed_dir(workdir, s))
  todo = [s for s in seeds
          if report.read_eval_metrics(os.path.join(seed_dir(workdir, s), "eval"),
                                      cfg.num_steps) is None]
  mode = "sequential"
  if todo:
    mode, why = choose_mode(cfg, todo, devices, dims=lambda: _dims(
        cfg, train.open_split(cfg, cfg.data.root, "train", stream=stream)))
    done = len(seeds) - len(todo)
    stream.write(f"Seeds {','.join(map(str, seeds))}: {mode} ({why})"
                 + (f"; {done} already trained" if done else "") + "\n")
    stream.flush()
    if mode == "vmap" and train_vmapped(cfg, todo, workdir, devices=devices,
                                        stream=stream) is None:
      mode = "sequential"
    if mode == "sequential":
      for s in todo:
        stream.write(f"\n== seed {s} -> {seed_dir(workdir, s)} ==\n")
        train.train(seed_config(cfg, s), seed_dir(workdir, s), devices=devices,
                    stream=stream)
  else:
    stream.write(f"Seeds {','.join(map(str, seeds))}: all already trained in "
                 f"{workdir}\n")
  if not primary:  # process 0 evaluates and writes the table
    return {"seeds": seeds, "mode": mode}

  per_seed = {}
  for s in seeds:
    m = report.read_eval_metrics(os.path.join(seed_dir(workdir, s), "eval"),
                                 cfg.num_steps)
    if m is None:
      raise RuntimeError(f"seed {s}: no final evaluation in "
                         f"{seed_dir(workdir, s)}/eval (does the data have a "
                         "test split?)")
    per_seed[s] = m
  extra = {}
  cache = {}
  for name, overrides in evaluations:
    extra[name] = {s: evaluate_variant(seed_config(cfg, s), seed_dir(workdir, s),
                                       name, overrides, cache=cache, stream=stream)
                   for s in seeds}

  md, info = seeds_table(per_seed)
  paths = {"md": os.path.join(workdir, "seeds.md"),
           "json": os.path.join(workdir, "seeds.json")}
  fileio.write_text(paths["md"], md + "\n")
  fileio.write_json(paths["json"], {
      "seeds": seeds, "mode": mode, "num_steps": cfg.num_steps,
      "per_seed": {str(s): m for s, m in per_seed.items()},
      "evaluations": {n: {str(s): m for s, m in v.items()} for n, v in extra.items()},
      **info})
  stream.write(f"\nFinal test metrics over {len(seeds)} seed(s), % "
               f"(mean ± sample std):\n{md}\nWrote {paths['md']} and "
               f"{paths['json']}\n")
  stream.flush()
  return {"seeds": seeds, "mode": mode, "metrics": per_seed,
          "evaluations": extra, "table": md, "paths": paths}
