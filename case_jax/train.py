"""Training CASE: one per-device step, run data-parallel, and the loop.

The per-device step (``make_step_fn``) is written once and wrapped either as
``jax.pmap`` (the default; the design card's single pmap'd train step) or as
``jax.jit(jax.shard_map(...))``; both see the same pytrees with a leading
device axis and give the same result (tests/test_train.py).

Multi-device gradients: the objective returns, per device, the local loss
terms divided by the device count plus the global terms (whose gradient
reaches only this device's share of the batch statistics), so ``psum`` of
the per-device gradients is the gradient of Eq. 16 on the global batch.  No
collective is differentiated, so the answer does not depend on how a
mapping primitive transposes ``psum``.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from case_jax import checkpoint as ckpt_lib
from case_jax import labeling
from case_jax import model as model_lib
from case_jax.objective import ObjectiveSettings, case_objective

AXIS = "batch"
DEVICE_KEYS = ("rgb", "flow", "labels", "fg_mask")  # what a step consumes


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # () int32, optimizer steps taken
  params: Any
  opt_state: Any
  q_r: jax.Array           # (K^C, 2) Q^R of the last step: DDCL prior and CAT
  rng: jax.Array           # (2,) uint32 PRNG key for anything stochastic


# =============================================================================
# Optimiser and state.
# =============================================================================
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
  raise ValueError(f"optim.decay must be 'coupled' or 'decoupled', got "
                   f"{optim_cfg.decay!r}")


def create_train_state(cfg, model, tx, *, rgb_dim: int, flow_dim: int,
                       seed: Optional[int] = None) -> TrainState:
  """Initial parameters (from ``seed``), optimiser state and Q^R."""
  key = jax.random.PRNGKey(cfg.seed if seed is None else seed)
  init_key, run_key = jax.random.split(key)
  t = min(8, cfg.data.num_segments)
  params = model.init(init_key, jnp.zeros((1, t, rgb_dim)),
                      jnp.zeros((1, t, flow_dim)))["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params),
                    q_r=labeling.initial_q_r(cfg.model.num_clusters,
                                             cfg.labeling.prior_qr_init),
                    rng=run_key)


# =============================================================================
# The per-device step.
# =============================================================================
def make_step_fn(model, tx, cfg, *, axis_name: Optional[str] = AXIS,
                 num_devices: int = 1) -> Callable:
  """Returns step(state, batch) -> (state, metrics) for one device's shard.

  batch: rgb (b, T, D), flow (b, T, D), labels (b, C), fg_mask (b, T) with
  b = global batch / num_devices.
  """
  ccc = cfg.labeling.cluster_classification
  settings = ObjectiveSettings.from_config(cfg)

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    # As released: prototypes are normalised in place before the forward, and
    # Adam then updates the normalised values.
    params = model_lib.normalize_prototypes(state.params)

    def loss_fn(p):
      out = model.apply({"params": p}, batch["rgb"], batch["flow"])
      res = case_objective(out, batch["labels"], state.q_r, settings,
                           fg_mask=batch.get("fg_mask"), axis_name=axis_name,
                           num_devices=num_devices)
      return res.grad_loss, res

    grads, res = jax.grad(loss_fn, has_aux=True)(params)
    if axis_name is not None:
      grads = lax.psum(grads, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = dict(res.metrics)
    metrics["grad_norm"] = optax.tree.norm(grads)
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state,
                              q_r=res.q_r if ccc else state.q_r)
    return new_state, metrics

  return step


# =============================================================================
# Data-parallel wrappers: pmap or jit(shard_map), same pytrees.
# =============================================================================
def replicate(tree, devices):
  """Copies a pytree onto every device with a leading device axis (n, ...)."""
  n = len(devices)
  stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)),
                         tree)
  return jax.device_put(stacked, _leading_sharding(devices))


def unreplicate(tree):
  """The first device's copy, on the host as numpy."""
  return jax.tree.map(lambda x: np.asarray(x[0]), tree)


def _leading_sharding(devices):
  return jax.sharding.NamedSharding(Mesh(np.array(devices), (AXIS,)), P(AXIS))


def split_rows(batch: dict, n: int, keys=DEVICE_KEYS, multiple: Optional[int] = None
               ) -> dict:
  """The ``keys`` of a batch (B, ...) as numpy (n, B/n, ...), one slot per
  device; ``multiple``: what --config.batch_size must be a multiple of
  (default n), for the error."""
  out = {}
  for key in keys:
    if key not in batch:
      continue
    x = np.asarray(batch[key])
    if x.shape[0] % n:
      raise ValueError(f"{x.shape[0]} rows are not divisible by the {n} devices; "
                       f"set --config.batch_size to a multiple of {multiple or n}.")
    out[key] = x.reshape((n, x.shape[0] // n) + x.shape[1:])
  return out


def shard_batch(batch: dict, devices) -> dict:
  """Splits the global batch (B, ...) into (n, B/n, ...) over the devices."""
  return jax.device_put(split_rows(batch, len(devices)), _leading_sharding(devices))


def parallel_step(model, tx, cfg, devices, how: str = "pmap",
                  transform: Optional[Callable] = None) -> Callable:
  """The data-parallel train step over ``devices``.

  Returns f(state, batch) with state replicated (n, ...) and batch sharded
  (n, b, ...); metrics come back replicated (n,).  ``transform`` wraps the
  per-device step first (``jax.vmap``: several seeds per device, see
  seeds.py); collectives name the device axis, which it leaves alone.
  """
  n = len(devices)
  step = make_step_fn(model, tx, cfg, axis_name=AXIS, num_devices=n)
  if transform is not None:
    step = transform(step)
  if how == "pmap":
    return jax.pmap(step, axis_name=AXIS, devices=devices, donate_argnums=(0,))
  if how == "shard_map":
    mesh = Mesh(np.array(devices), (AXIS,))

    def body(state, batch):
      # Each shard holds a leading axis of size 1, like one pmap slot.
      squeeze = functools.partial(jax.tree.map, lambda x: x[0])
      new_state, metrics = step(squeeze(state), squeeze(batch))
      expand = functools.partial(jax.tree.map, lambda x: x[None])
      return expand(new_state), expand(metrics)

    mapped = jax.shard_map(body, mesh=mesh, in_specs=(P(AXIS), P(AXIS)),
                           out_specs=(P(AXIS), P(AXIS)))
    return jax.jit(mapped, donate_argnums=(0,))
  raise ValueError(f"parallel must be 'pmap' or 'shard_map', got {how!r}")


# =============================================================================
# Progress and metric logging.
# =============================================================================
class Progress:
  """A one-line progress bar on a terminal, plain lines elsewhere (CI logs)."""

  def __init__(self, total: int, start: int = 0, stream=None, every: int = 10):
    self.total, self.start = total, start
    self.stream = stream or sys.stdout
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.every = max(1, every)
    self.t0 = time.perf_counter()

  def update(self, step: int, metrics: dict) -> None:
    done = step - self.start
    elapsed = time.perf_counter() - self.t0
    eta = elapsed / max(done, 1) * (self.total - step)
    frac = step / max(self.total, 1)
    bar = "#" * int(24 * frac) + "." * (24 - int(24 * frac))
    shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                      if k in ("loss", "L_V", "L_A", "L_C", "L_R", "fb_acc", "H_qc"))
    line = f"[{bar}] {step}/{self.total}  {shown}  eta {eta:4.0f}s"
    if self.tty:
      self.stream.write("\r" + line[:160])
      if step >= self.total:
        self.stream.write("\n")
    elif step % self.every == 0 or step >= self.total:
      self.stream.write(line + "\n")
    self.stream.flush()


def _host_metrics(metrics) -> dict:
  return {k: float(np.asarray(v)[0]) for k, v in metrics.items()}


# =============================================================================
# The loop.
# =============================================================================
def train(cfg: ml_collections.ConfigDict, workdir: str, *,
          train_set=None, devices=None, stream=None) -> dict:
  """Trains ``cfg.num_steps`` steps, resuming from ``workdir`` if it holds a
  checkpoint.  Returns a summary dict (final metrics, state, paths)."""
  from case_jax import data as data_lib  # host-side reading

  workdir = local_workdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  devices = devices or jax.local_devices()
  stream = stream or sys.stdout
  # ---- multi-process (jax.distributed): the step runs over every
  # process's devices and each process feeds only its rows of the global batch.
  from case_jax import distributed as dist_lib
  if jax.process_count() > 1:
    devices = jax.devices()
    put_state = lambda s: dist_lib.replicate_global(s, devices, AXIS)
    # Each process reads only its rows of every global batch.
    rows = dist_lib.process_rows(cfg.batch_size)
    put_batch = lambda b: dist_lib.shard_process_rows(b, devices, AXIS, DEVICE_KEYS)
    get_state = dist_lib.first_replica
    host_metrics = lambda m: {k: float(v) for k, v in get_state(m).items()}
  else:
    put_state = lambda s: replicate(s, devices)
    rows = None
    put_batch = lambda b: shard_batch(b, devices)
    get_state, host_metrics = unreplicate, _host_metrics
  primary = jax.process_index() == 0   # writes the logs and runs evaluations

  # ---- Data ------------------------------------------------------------------
  root = None
  if train_set is None:
    # one process generates synthetic data; the others wait for it
    if not primary:
      dist_lib.barrier()
    root = resolve_data_root(cfg, workdir)
    if primary and jax.process_count() > 1:
      dist_lib.barrier()
    train_set = open_split(cfg, root, "train", stream=stream)
  record = train_set[0]
  num_classes = len(train_set.classes)
  evaluator = _Evaluator.maybe(cfg, root, train_set, stream) if primary else None
  _write_run_info(workdir, train_set)

  # ---- Model, optimiser, state -----------------------------------------------
  model = model_lib.from_config(cfg.model, num_classes)
  tx = make_optimizer(cfg.optim)
  state = create_train_state(cfg, model, tx, rgb_dim=record.rgb.shape[1],
                             flow_dim=record.flow.shape[1])
  manager = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                  keep=cfg.keep_checkpoints,
                                  commit=cfg.get("checkpoint_commit", "auto"))
  state, meta = manager.restore_latest(state)
  if meta is not None:
    stream.write(f"Resumed from step {int(state.step)} in {manager.directory}\n")
  _write_config(cfg, workdir)

  # ---- Train -------------------------------------------------------------------
  step_fn = parallel_step(model, tx, cfg, devices, cfg.parallel)
  rstate = put_state(state)
  start = int(state.step)
  progress = Progress(cfg.num_steps, start, stream, cfg.log_every)
  log_path = os.path.join(workdir, "metrics.jsonl")
  metrics = {}
  # ---- preemption: SIGTERM/SIGINT -> checkpoint at the step boundary
  guard = ckpt_lib.PreemptionGuard()
  from case_jax import tracking
  board = tracking.ScalarWriter(os.path.join(workdir, "tensorboard")) if primary else None
  # Batches are a pure function of (seed, step); a background thread reads
  # the next ones while the device computes.
  batches = data_lib.Prefetcher(
      lambda s: data_lib.train_batch(train_set, s, seed=cfg.seed,
                                     batch_size=cfg.batch_size,
                                     num_segments=cfg.data.num_segments,
                                     rows=rows),
      range(start, cfg.num_steps))
  with open(log_path if primary else os.devnull, "a") as log, guard, batches:
    for step, batch in zip(range(start, cfg.num_steps), batches):
      rstate, rmetrics = step_fn(rstate, put_batch(batch))
      # A host sync every step: cheap here, and simulated multi-device CPU
      # runs hang without one (jax_stack_notes.md).
      metrics = host_metrics(rmetrics)
      _check_finite(metrics, step + 1)
      done = step + 1
      if done % cfg.log_every == 0 or done == cfg.num_steps:
        log.write(json.dumps({"step": done, **metrics}) + "\n")
        log.flush()
        if board:
          board.write(done, metrics)
      progress.update(done, metrics)
      if done % cfg.checkpoint_every == 0 and done < cfg.num_steps:
        manager.save(get_state(rstate), meta=_meta(cfg, done))
      if (evaluator and cfg.eval_every and done % cfg.eval_every == 0
          and done < cfg.num_steps):
        scalars = evaluator.run(model, get_state(rstate), done, log)["scalars"]
        board.write(done, scalars)
      # ---- preemption: save this step, wait for the commit, exit
      if guard.should_stop() and done < cfg.num_steps:
        manager.save(get_state(rstate), meta=_meta(cfg, done))
        manager.wait()
        stream.write(f"\nPreempted at step {done}: checkpoint saved in "
                     f"{manager.directory}; rerun to resume.\n")
        stream.flush()
        raise ckpt_lib.Preempted(done, guard.signum)

  # ---- Final save and evaluation -------------------------------------------------
  with open(log_path if primary else os.devnull, "a") as log:
    return finish_run(cfg, workdir, model, get_state(rstate), metrics,
                      manager=manager, evaluator=evaluator, log=log, board=board,
                      classes=train_set.classes, stream=stream, primary=primary)


def finish_run(cfg, workdir: str, model, final: TrainState, metrics: dict, *,
               manager, evaluator, log, board, classes, stream,
               primary: bool = True) -> dict:
  """The end of a run: final checkpoint, final test evaluation and report
  (``<workdir>/eval/``), TensorBoard, PNG figures.  ``log`` is the open
  metrics.jsonl; ``board`` is closed here.  Returns train()'s summary."""
  step = int(final.step)
  manager.save(final, meta=_meta(cfg, step))
  manager.wait()
  summary = {"state": final, "metrics": metrics, "workdir": workdir,
             "classes": list(classes), "model": model}
  final_eval = None
  if evaluator:
    final_eval = evaluator.run(model, final, step, log, final=True)
    summary["eval"] = final_eval
    summary["metrics"] = {**metrics, **final_eval["scalars"]}
    board.write(step, final_eval["scalars"])
  if board:
    board.close()
  if evaluator:
    evaluator.report(workdir, final_eval, step)
  if primary and cfg.eval.get("plots", True):
    # PNGs into <workdir>/plots/, from the final evaluation's detections.
    # Figures are a convenience: any failure is a note, never a failed run.
    try:
      from case_jax import visualize
      visualize.write_plots(
          cfg, workdir, model=model, state=final, metrics_only=evaluator is None,
          test_set=evaluator.test_set if evaluator else None,
          evaluated=final_eval, stream=stream)
    except Exception as e:  # noqa: BLE001
      stream.write(f"(plots not written: {type(e).__name__}: {e}; rerun them "
                   "with --mode=plots)\n")
  return summary


class _Evaluator:
  """Test-set evaluation during and after training (mAP, F&B accuracy)."""

  def __init__(self, cfg, root, test_set, gt, stream):
    self.cfg, self.root, self.test_set, self.gt = cfg, root, test_set, gt
    self.stream = stream
    self.best = None   # (mAP, step): test-set model selection, as released

  @classmethod
  def maybe(cls, cfg, root, train_set, stream):
    from case_jax import data as data_lib
    from case_jax import report
    if root is None:
      return None
    try:
      test_set = open_split(cfg, root, "test", classes=train_set.classes,
                            stream=stream)
    except (FileNotFoundError, data_lib.LayoutError) as e:
      stream.write(f"No usable test split in {root} ({e}): training without "
                   "evaluation.\n")
      return None
    return cls(cfg, root, test_set, report.load_test_ground_truth(root, cfg), stream)

  def run(self, model, state, step, log, final=False):
    from case_jax import report
    out = report.evaluate_state(self.test_set, model, state.params, state.q_r,
                                self.cfg, self.gt)
    # snippet statistics from the detection pass: no second forward
    scalars = {**report.scalar_metrics(out["result"]),
               **report.snippet_scalars(out["stats"])}
    if self.best is None or scalars["mAP"] > self.best[0]:
      self.best = (scalars["mAP"], step)
    log.write(json.dumps({"step": step, **scalars}) + "\n")
    log.flush()
    if not final:
      self.stream.write(f"\n  eval @ {step}: mAP {100 * scalars['mAP']:.2f}  "
                        f"F&B acc {100 * scalars['test_fb_acc']:.2f}\n")
    out["scalars"] = scalars
    return out

  def report(self, workdir, final_eval, step):
    from case_jax import evaluation, report
    sc = final_eval["scalars"]
    extra = {"step": step, **{k: sc[k] for k in report.SNIPPET_KEYS},
             "best_test_selected": {"mAP": self.best[0], "step": self.best[1]}}
    paths = report.write_outputs(os.path.join(workdir, "eval"), final_eval, extra)
    self.stream.write(
        f"\nDetection mAP of the final checkpoint (step {step}), "
        f"{len(self.test_set)} test videos:\n"
        + evaluation.format_map_table(final_eval["result"]) + "\n"
        f"F&B snippet accuracy: {100 * sc['test_fb_acc']:.2f}%   H(P^C) "
        f"{sc['test_H_pc']:.3f}   H(mean P^C) {sc['test_H_mean_pc']:.3f} nats\n"
        f"Best of the evaluations during training (test-set model selection, as "
        f"the released code reports): mAP {100 * self.best[0]:.2f} at step "
        f"{self.best[1]}\n"
        f"Wrote {paths['detections']}, detections.csv, detections_thumos14.txt "
        "and metrics.json\n")


def local_workdir(workdir: str) -> str:
  """The absolute workdir; a URL is refused with the fix (everything but the
  checkpoints is written with plain file I/O, so a bucket must be mounted)."""
  if "://" in workdir:
    bucket = workdir.split("://", 1)[1]
    raise ValueError(
        f"--workdir={workdir}: a URL is not a usable workdir. Mount the bucket "
        f"(gcsfuse --implicit-dirs BUCKET /gcs/BUCKET; launch/tpu_pod.py does "
        f"this on every worker) and pass --workdir=/gcs/{bucket}; checkpoints "
        "there are committed with commit files (checkpoint_commit='auto').")
  return os.path.abspath(workdir)


def _write_run_info(workdir: str, train_set) -> None:
  """What --mode=evaluate/predict need to rebuild the model: classes, dims."""
  rec = train_set[0]
  info = {"classes": list(train_set.classes), "rgb_dim": int(rec.rgb.shape[1]),
          "flow_dim": int(rec.flow.shape[1])}
  with open(os.path.join(workdir, "run.json"), "w") as f:
    json.dump(info, f, indent=2)


def _meta(cfg, step: int) -> dict:
  # The data position: batches are a pure function of (seed, step).
  return {"step": step, "data": {"seed": cfg.seed, "step": step,
                                 "batch_size": cfg.batch_size}}


def _check_finite(metrics: dict, step: int) -> None:
  bad = [k for k, v in metrics.items() if not np.isfinite(v)]
  if bad:
    raise FloatingPointError(
        f"step {step}: non-finite {', '.join(bad)} ({metrics}). Check the input "
        "features for NaN/inf and consider a lower optim.learning_rate; the last "
        "checkpoint is intact.")


def _write_config(cfg, workdir: str) -> None:
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(cfg.to_json_best_effort(indent=2))


def open_split(cfg, root: str, split: str, classes=None, stream=None):
  """One split in ``cfg.data.layout``; skipped videos (data.on_error="skip")
  are reported, never dropped silently."""
  from case_jax import data as data_lib
  if cfg.data.layout == "tfds":
    # A prepared dataset (python -m case_jax.data.prepare): data.root is the
    # TFDS data_dir, data.tfds_name the builder (e.g. "thumos14/basnet").
    from case_jax.data.tfds_builders import TFDSDataset
    return TFDSDataset(cfg.data.tfds_name, split, data_dir=root)
  ds = data_lib.open_dataset(root, split, cfg.data.layout, classes,
                             on_error=cfg.data.on_error)
  for vid, why in getattr(ds, "skipped", ()):
    (stream or sys.stdout).write(f"skipped {split} video {vid}: {why}\n")
  return ds


def resolve_data_root(cfg, workdir: str) -> str:
  """``data.root``, or for the synthetic dataset a generated copy in workdir."""
  root = cfg.data.root
  if cfg.data.dataset == "synthetic":
    from case_jax.data.synthetic import write_synthetic_thumos
    root = root or os.path.join(workdir, "synthetic_data")
    if not os.path.exists(os.path.join(root, "gt.json")):
      write_synthetic_thumos(root, **dict(cfg.data.synthetic))
    return root
  if not root:
    raise ValueError(
        f"data.root is not set: pass --config.data.root=/path/to/{cfg.data.dataset} "
        "(the folder holding gt.json, split_train.txt, split_test.txt and "
        "features/{train,test}/{rgb,flow}/<video>.npy).")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"data.root {root!r} is not a directory.")
  return root
