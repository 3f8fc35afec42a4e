"""Training CASE: the state, the per-device step and the one loop.

    train_and_evaluate(cfg, workdir)     # one seed, or cfg.seeds=0,1,2

The per-device step (``make_step_fn``) is written once; case_jax/placement.py
runs it data-parallel as ``jax.pmap`` (the default) or
``jax.jit(jax.shard_map(...))``.  Several seeds are one more leading axis
of the same state: the per-device step is ``jax.vmap``-ed over it inside
the same mapped step (``seeds_mode=vmap``), or the seeds run one after the
other through the same loop (``sequential``); case_jax/seeds.py chooses.

Multi-device gradients: the objective returns, per device, the local loss
terms divided by the device count plus the global terms (whose gradient
reaches only this device's share of the batch statistics), so ``psum`` of
the per-device gradients is the gradient of Eq. 16 on the global batch.  No
collective is differentiated, so the answer does not depend on how a
mapping primitive transposes ``psum``.
"""
from __future__ import annotations

import copy
import os
import sys
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax import lax

from case_jax import errors
from case_jax import checkpoint as ckpt_lib
from case_jax import data as data_lib
from case_jax import (datasets, distributed, evaluator as evaluator_lib, labeling,
                      placement as placement_lib, seeds as seeds_lib, tracking,
                      visualize, workdir as workdir_lib)
from case_jax import model as model_lib
from case_jax.objective import ObjectiveSettings, case_objective
from case_jax.placement import AXIS


# =============================================================================
# State.
# =============================================================================
class TrainState(train_state.TrainState):
  """Flax's TrainState (step, params, opt_state, apply_fn, tx) plus CASE's
  own carried quantities."""
  q_r: jax.Array           # (K^C, 2) Q^R of the last step: DDCL prior and CAT
  rng: jax.Array           # (2,) uint32 PRNG key for anything stochastic


def make_optimizer(optim_cfg) -> optax.GradientTransformation:
  """Adam with coupled L2 as released (PyTorch Adam weight_decay), or AdamW."""
  adam = dict(b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps)
  if optim_cfg.decay == "coupled":
    # grad += wd * w, then Adam: the order matters.
    return optax.chain(optax.add_decayed_weights(optim_cfg.weight_decay),
                       optax.adam(optim_cfg.learning_rate, **adam))
  if optim_cfg.decay == "decoupled":
    return optax.adamw(optim_cfg.learning_rate, weight_decay=optim_cfg.weight_decay,
                       **adam)
  raise errors.ConfigError(f"optim.decay must be 'coupled' or 'decoupled', got "
                           f"{optim_cfg.decay!r}")


def create_train_state(cfg, model, tx, *, rgb_dim: int, flow_dim: int,
                       seed: Optional[int] = None) -> TrainState:
  """Initial parameters (from ``seed``, default ``cfg.seed``), optimiser
  state and Q^R."""
  key = jax.random.PRNGKey(cfg.seed if seed is None else seed)
  init_key, run_key = jax.random.split(key)
  t = min(8, cfg.data.num_segments)
  params = model.init(init_key, jnp.zeros((1, t, rgb_dim)),
                      jnp.zeros((1, t, flow_dim)))["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), apply_fn=model.apply,
                    params=params, tx=tx, opt_state=tx.init(params),
                    q_r=labeling.initial_q_r(cfg.model.num_clusters,
                                             cfg.labeling.prior_qr_init),
                    rng=run_key)


# =============================================================================
# Step.
# =============================================================================
def make_step_fn(cfg, *, axis_name: Optional[str] = AXIS,
                 num_devices: int = 1) -> Callable:
  """Returns step(state, batch) -> (state, metrics) for one device's shard.

  batch: rgb (b, T, D), flow (b, T, D), labels (b, C), fg_mask (b, T) with
  b = global batch / num_devices.
  """
  ccc = cfg.labeling.cluster_classification
  settings = ObjectiveSettings.from_config(cfg)   # built once, not per trace

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    # As released: prototypes are normalised in place before the forward, and
    # Adam then updates the normalised values.
    params = model_lib.normalize_prototypes(state.params)

    def loss_fn(p):
      out = state.apply_fn({"params": p}, batch["rgb"], batch["flow"])
      res = case_objective(out, batch["labels"], state.q_r, settings,
                           fg_mask=batch.get("fg_mask"), axis_name=axis_name,
                           num_devices=num_devices)
      return res.grad_loss, res

    grads, res = jax.grad(loss_fn, has_aux=True)(params)
    if axis_name is not None:
      grads = lax.psum(grads, axis_name)
    new_state = state.replace(params=params).apply_gradients(
        grads=grads, q_r=res.q_r if ccc else state.q_r)
    metrics = dict(res.metrics)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return new_state, metrics

  return step


def parallel_step(cfg, devices, how: str = "pmap",
                  transform: Optional[Callable] = None) -> Callable:
  """The train step data-parallel over ``devices``: f(state (n, ...), batch
  (n, b, ...)) -> (state, metrics (n, ...)).  ``transform`` wraps the
  per-device step first (``jax.vmap``: several seeds per device); the
  collectives name the device axis, which it leaves alone."""
  step = make_step_fn(cfg, axis_name=AXIS, num_devices=len(devices))
  if transform is not None:
    step = transform(step)
  return placement_lib.data_parallel(step, devices, how)


def is_time(step: int, every: int, total: int, *, last: bool) -> bool:
  """Whether step ``step`` (1-based, steps done) logs / saves / evaluates
  every ``every`` steps; at ``total`` itself: ``last``."""
  if step >= total:
    return last
  return bool(every) and step % every == 0


def check_finite(metrics: dict, step: int) -> None:
  bad = [k for k, v in metrics.items() if not np.isfinite(v)]
  if bad:
    raise FloatingPointError(
        f"step {step}: non-finite {', '.join(bad)} ({metrics}). Check the input "
        "features for NaN/inf and consider a lower optim.learning_rate; the last "
        "checkpoint is intact.")


# =============================================================================
# The loop: one seed or several stacked seeds.
# =============================================================================
def train_and_evaluate(cfg, workdir: str, *, train_set=None, devices=None,
                       stream=None) -> dict:
  """Trains ``cfg`` into ``workdir`` (resuming its checkpoint), evaluates and
  reports.  With ``cfg.seeds`` every seed is a run in ``workdir/seed_<s>/``
  and the seeds' table is written (case_jax/seeds.py).  Returns a summary:
  {"state", "metrics", "eval", "model", "classes", "workdir"} for one seed,
  {"seeds", "mode", "metrics" {seed: scalars}, "table", "paths"} for several.
  """
  workdir = workdir_lib.local_workdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  stream = stream or sys.stdout
  if seeds_lib.parse_seeds(cfg.get("seeds", "")):
    return _train_seeds(cfg, workdir, devices=devices, stream=stream)
  return fit(cfg, [(cfg, workdir)], stacked=False, train_set=train_set,
             devices=devices, stream=stream)[0]


def fit(cfg, runs: Sequence[tuple], *, stacked: bool, train_set=None,
        devices=None, stream=None) -> Optional[list]:
  """Trains each (run config, directory) of ``runs`` -- one run, or several
  seeds stacked along a vmapped leading axis (``stacked``) -- and finishes
  each (final checkpoint, evaluation, report, figures).  Returns one
  summary per run, or None when stacked seeds' checkpoints are at
  different steps (train them one by one instead)."""
  stream = stream or sys.stdout
  place = placement_lib.Placement.create(devices, cfg.batch_size)
  if stacked and place.multiprocess:
    raise errors.ConfigError("stacked seeds run in one process; use seeds_mode="
                             "'sequential' for a multi-process run.")

  # ---- Input -------------------------------------------------------------------
  root = None
  if train_set is None:
    # One process generates synthetic data; the others wait for it.
    if not place.primary:
      distributed.barrier()
    root = datasets.resolve_data_root(cfg, runs[0][1])
    if place.primary and place.multiprocess:
      distributed.barrier()
    train_set = datasets.open_split(cfg, root, "train", stream=stream)
  record = train_set[0]
  # ---- Evaluation: the primary process evaluates ----------------------------------
  evaluator = None
  if place.primary and root is not None:
    evaluator = evaluator_lib.Evaluator.from_config(
        cfg, root, train_set.classes, stream=stream, required=False)

  # ---- State and checkpoints --------------------------------------------------
  model = model_lib.from_config(cfg.model, len(train_set.classes))
  tx = make_optimizer(cfg.optim)
  files, states = [], []
  try:
    for run_cfg, directory in runs:
      files.append(workdir_lib.RunFiles(run_cfg, directory, train_set,
                                        primary=place.primary))
      state = create_train_state(run_cfg, model, tx, rgb_dim=record.rgb.shape[1],
                                 flow_dim=record.flow.shape[1])
      # The config is checked before the restore, and the logs cut back to
      # the restored step (workdir.RunFiles.resume).
      state, meta = files[-1].resume(state)
      if meta is not None:
        who = f"seed {run_cfg.seed}: r" if stacked else "R"
        stream.write(f"{who}esumed from step {int(state.step)} in "
                     f"{files[-1].manager.directory}\n")
      states.append(state)
    if len({int(s.step) for s in states}) > 1:
      stream.write("The seeds' checkpoints are at different steps "
                   f"({[int(s.step) for s in states]}): resuming them one by one.\n")
      return None
    return _loop(cfg, files, states, model, train_set, place, evaluator,
                 stacked=stacked, stream=stream)
  finally:  # also on an error: each run's save in flight is committed first
    for f in files:
      f.close()


def _loop(cfg, files, states, model, train_set, place, evaluator, *, stacked,
          stream) -> list:
  seeds = [f.cfg.seed for f in files]
  if stacked:   # (S, ...) on the host, then (n, S, ...) on the devices
    state = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *states)
    step_fn = parallel_step(cfg, place.devices, cfg.parallel, transform=jax.vmap)
    put_batch = lambda bs: placement_lib.shard_seed_batches(bs, place.devices)
    member = lambda hs, i: jax.tree.map(lambda x: x[i], hs)
    scalars = lambda m, i: {k: float(v[i]) for k, v in m.items()}
  else:
    state = states[0]
    step_fn = parallel_step(cfg, place.devices, cfg.parallel)
    put_batch = lambda bs: place.put_batch(bs[0])
    member = lambda hs, i: hs
    scalars = lambda m, i: {k: float(v) for k, v in m.items()}
  rstate = place.put_state(state)
  start, total = int(states[0].step), cfg.num_steps
  progress = tracking.Progress(total, start, stream, cfg.log_every)
  guard = ckpt_lib.PreemptionGuard()
  # Batches are a pure function of (seed, step); a background thread reads
  # the next ones while the device computes.
  batches = data_lib.Prefetcher(
      lambda st: [data_lib.train_batch(train_set, st, seed=s, batch_size=cfg.batch_size,
                                       num_segments=cfg.data.num_segments,
                                       rows=place.rows) for s in seeds],
      range(start, total))
  metrics = [{} for _ in files]
  with guard, batches:
    for step, batch in zip(range(start, total), batches):
      rstate, rmetrics = step_fn(rstate, put_batch(batch))
      # A host sync every step: cheap here, and simulated multi-device CPU
      # runs hang without one (jax_stack_notes.md).
      host = place.host_metrics(rmetrics)
      metrics = [scalars(host, i) for i in range(len(files))]
      done = step + 1
      for m in metrics:
        check_finite(m, done)
      if is_time(done, cfg.log_every, total, last=True):
        for f, m in zip(files, metrics):
          f.log(done, m)
      progress.update(done, {k: float(np.mean([m[k] for m in metrics]))
                             for k in metrics[0]})
      stop = guard.should_stop() and done < total
      save = is_time(done, cfg.checkpoint_every, total, last=False) or stop
      evaluate = evaluator and is_time(done, cfg.eval_every, total, last=False)
      if save or evaluate:
        hs = place.get_state(rstate)
        for i, f in enumerate(files):
          if save:
            f.save(member(hs, i), done)
          if evaluate:
            sc = evaluator.run(model, member(hs, i))["scalars"]
            f.note_eval(done, sc["mAP"])
            f.log(done, sc)
            stream.write(f"\n  eval @ {done}{f' (seed {seeds[i]})' if stacked else ''}: "
                         f"mAP {100 * sc['mAP']:.2f}  F&B acc "
                         f"{100 * sc['test_fb_acc']:.2f}\n")
      # ---- Preemption: this step is saved; wait for the commit, exit.
      if stop:
        for f in files:
          f.manager.wait()
        where = ", ".join(f.manager.directory for f in files)
        stream.write(f"\nPreempted at step {done}: checkpoint saved in {where}; "
                     "rerun to resume.\n")
        stream.flush()
        raise ckpt_lib.Preempted(done, guard.signum)

  # ---- Final checkpoints (all first: an error in one run's evaluation must
  # not cost another its last steps), then each run's evaluation and report.
  hs = place.get_state(rstate)
  for i, f in enumerate(files):
    f.save(member(hs, i), total)
  for f in files:
    f.manager.wait()
  summaries = []
  for i, f in enumerate(files):
    if stacked and evaluator:
      stream.write(f"\n== seed {seeds[i]} ==")
    summaries.append(finish_run(f, model, member(hs, i), metrics[i], evaluator,
                                train_set.classes, place.primary, stream))
  return summaries


def finish_run(files, model, final, metrics: dict, evaluator, classes,
               primary: bool, stream) -> dict:
  """The end of a run: final test evaluation and report (``<dir>/eval/``),
  TensorBoard, PNG figures (``<dir>/plots/``)."""
  cfg, step = files.cfg, int(final.step)
  summary = {"state": final, "metrics": metrics, "workdir": files.dir,
             "classes": list(classes), "model": model}
  if evaluator:
    ev = evaluator.run(model, final, references=True)
    files.note_eval(step, ev["scalars"]["mAP"])
    files.log(step, ev["scalars"])
    summary["eval"] = ev
    summary["metrics"] = {**metrics, **ev["scalars"]}
    best = files.best
    paths = evaluator.write(os.path.join(files.dir, "eval"), ev, {
        "step": step, "best_test_selected": {"mAP": best[0], "step": best[1]}})
    stream.write(
        "\n" + evaluator.summary_text(ev, f"the final checkpoint (step {step})") +
        f"Best of the evaluations during training (test-set model selection, as "
        f"the released code reports): mAP {100 * best[0]:.2f} at step {best[1]}\n"
        f"Wrote {paths['detections']}, detections.csv, detections_thumos14.txt "
        "and metrics.json\n")
  files.close()
  if primary and cfg.eval.get("plots", True):
    # Figures are a convenience: any failure is a note, never a failed run.
    try:
      visualize.write_plots(cfg, files.dir, model=model, state=final,
                            test_set=evaluator.test_set if evaluator else None,
                            evaluated=summary.get("eval"), stream=stream)
    except Exception as e:  # noqa: BLE001
      stream.write(f"(plots not written: {type(e).__name__}: {e}; rerun them "
                   "with --mode=plots)\n")
  if evaluator:  # last, so that the run ends on where the model stands
    stream.write("\n" + evaluator.standing_text(summary["eval"]))
  return summary


# =============================================================================
# Several seeds.
# =============================================================================
def _train_seeds(cfg, workdir: str, *, devices, stream) -> dict:
  """Every seed of ``cfg.seeds`` into ``<workdir>/seed_<s>/`` (finished ones
  are reused), then seeds.md/.json."""
  devices = devices or jax.local_devices()
  seeds = seeds_lib.seed_list(cfg)
  cfg = copy.deepcopy(cfg)
  cfg.data.root = datasets.shared_data_root(cfg, workdir)
  members = {s: (seeds_lib.seed_config(cfg, s), seeds_lib.seed_dir(workdir, s))
             for s in seeds}
  for c, d in members.values():  # every seed's config, before any training
    workdir_lib.check_trained_config(d, c)
  todo = [s for s in seeds if not seeds_lib.finished(*members[s])]
  mode = "sequential"
  if todo:
    mode, why = seeds_lib.choose_mode(cfg, todo, devices, dims=lambda: seeds_lib.dims(
        cfg, datasets.open_split(cfg, cfg.data.root, "train", stream=stream)))
    done = len(seeds) - len(todo)
    stream.write(f"Seeds {','.join(map(str, seeds))}: {mode} ({why})"
                 + (f"; {done} already trained" if done else "") + "\n")
    stream.flush()
    if mode == "vmap" and fit(cfg, [members[s] for s in todo], stacked=True,
                              devices=devices, stream=stream) is None:
      mode = "sequential"
    if mode == "sequential":
      for s in todo:
        stream.write(f"\n== seed {s} -> {members[s][1]} ==\n")
        fit(members[s][0], [members[s]], stacked=False, devices=devices,
            stream=stream)
  else:
    stream.write(f"Seeds {','.join(map(str, seeds))}: all already trained in "
                 f"{workdir}\n")
  if jax.process_index() != 0:  # process 0 writes the table
    return {"seeds": seeds, "mode": mode}
  return {"seeds": seeds, "mode": mode,
          **seeds_lib.write_table(workdir, seeds, mode, cfg.num_steps, stream)}
