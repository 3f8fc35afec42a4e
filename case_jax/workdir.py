"""A run's directory: the files training writes beside the checkpoints.

    <workdir>/config.json     the config it was trained with (the current one)
    <workdir>/config_history.jsonl  every earlier config.json, with the step
                              at which a resume changed it and the diff
    <workdir>/run.json        what rebuilding the model needs: classes, dims
    <workdir>/checkpoints/    Orbax steps (case_jax/checkpoint.py)
    <workdir>/metrics.jsonl   one JSON line per logged or evaluated step
    <workdir>/tensorboard/    the same scalars for TensorBoard
    <workdir>/eval/           the final evaluation (case_jax/evaluator.py)

It also holds the one rule for "was this workdir trained with this config"
(``trained_diff``), used to resume (``check_trained_config``: refused unless
``allow_config_change`` names the keys), to reuse finished seeds and to
evaluate (``evaluation_config``: the workdir's own config.json).
"""
from __future__ import annotations

import json
import os
import time
from typing import Optional

import jax
import ml_collections

from case_jax import errors
from case_jax import checkpoint as ckpt_lib
from case_jax import defaults, distributed, fileio, tracking

# Keys that only say how a run is carried out, not what it trains.
RUN_KEYS = ("seed", "seeds", "seeds_mode", "data.root", "num_steps", "eval_every",
            "log_every", "checkpoint_every", "keep_checkpoints", "checkpoint_commit",
            "parallel", "allow_config_change", "data.check_values",
            "data.verified_cache")
# Keys that only say how a trained model is evaluated: another value re-evaluates.
EVAL_PREFIXES = ("inference.", "eval.")


def local_workdir(workdir: str) -> str:
  """The absolute workdir; a URL is refused with the fix (everything but the
  checkpoints is written with plain file I/O, so a bucket must be mounted)."""
  if "://" in workdir:
    bucket = workdir.split("://", 1)[1]
    raise errors.ConfigError(
        f"--workdir={workdir}: a URL is not a usable workdir. Mount the bucket "
        f"(gcsfuse --implicit-dirs BUCKET /gcs/BUCKET; launch/tpu_pod.py does "
        f"this on every worker) and pass --workdir=/gcs/{bucket}; checkpoints "
        "there are committed with commit files (checkpoint_commit='auto').")
  return os.path.abspath(workdir)


# =============================================================================
# What was trained here.
# =============================================================================
def saved_config(directory: str) -> Optional[dict]:
  path = os.path.join(directory, "config.json")
  return fileio.read_json(path) if os.path.exists(path) else None


def trained_keys_diff(saved: dict, cfg) -> list:
  """[(key, saved value, cfg's value)] in what is trained (not RUN_KEYS,
  not inference.*/eval.*).  A key that a config.json written before it
  existed lacks is no difference when ``cfg`` has its default (e.g.
  model.streams: every earlier run trained both streams)."""
  base = defaults.base_config()
  return [d for d in defaults.config_diff(saved, cfg, ignore=RUN_KEYS)
          if not d[0].startswith(EVAL_PREFIXES)
          and not (_lacks(saved, d[0]) and _default_of(base, d[0]) == d[2])]


def _default_of(base, dotted: str):
  """The value a key had before it existed: the base config's, or for the
  synthetic generator's settings (no section in the base config) the
  generator's own default (e.g. data.synthetic.instance_lengths "scaled")."""
  prefix = "data.synthetic."
  if dotted.startswith(prefix) and "." not in dotted[len(prefix):]:
    from case_jax.data.synthetic import SyntheticConfig
    return getattr(SyntheticConfig(), dotted[len(prefix):], None)
  return _lookup(base, dotted)


def _lacks(tree: dict, dotted: str) -> bool:
  for k in dotted.split("."):
    if not isinstance(tree, dict) or k not in tree:
      return True
    tree = tree[k]
  return False


def _lookup(cfg, dotted: str):
  for k in dotted.split("."):
    if k not in cfg:
      return None
    cfg = cfg[k]
  return cfg


def trained_diff(directory: str, cfg) -> list:
  """[(key, trained value, given value)] where ``cfg`` trains another model
  than the one in ``directory`` (empty when there is none yet)."""
  saved = saved_config(directory)
  return [] if saved is None else trained_keys_diff(saved, cfg)


def eval_diff(directory: str, cfg) -> list:
  """Differences in how the model in ``directory`` was evaluated."""
  saved = saved_config(directory)
  if saved is None:
    return []
  return [d for d in defaults.config_diff(saved, cfg) if d[0].startswith(EVAL_PREFIXES)]


def describe_diff(diff: list, limit: int = 6) -> str:
  shown = ", ".join(f"{k}: trained {a!r}, given {b!r}" for k, a, b in diff[:limit])
  return shown + (", ..." if len(diff) > limit else "")


def is_allowed(key: str, allow: str) -> bool:
  """Whether ``allow`` (allow_config_change: "optim.learning_rate,loss")
  names ``key`` or a section above it."""
  names = [a.strip() for a in str(allow or "").split(",") if a.strip()]
  return any(key == a or key.startswith(a.rstrip(".") + ".") for a in names)


def check_trained_config(directory: str, cfg) -> list:
  """Before a resume: the trained keys in which ``cfg`` differs from
  ``directory``'s config.json, all named by ``cfg.allow_config_change``
  (returned: they will be recorded); any other difference is refused,
  with both values and the flag that allows it."""
  diff = trained_diff(directory, cfg)
  allow = cfg.get("allow_config_change", "")
  refused = [d for d in diff if not is_allowed(d[0], allow)]
  if refused:
    keys = ",".join(k for k, _, _ in diff)
    raise errors.ConfigError(
        f"{directory} was trained with another config ({describe_diff(refused)}). "
        f"Resume with the config it was trained with ({directory}/config.json) or "
        f"use another --workdir; to change it anyway pass "
        f"--config.allow_config_change={keys} (recorded in "
        f"{directory}/config_history.jsonl).")
  return diff


def write_config(cfg, directory: str) -> None:
  fileio.write_text(os.path.join(directory, "config.json"),
                    cfg.to_json_best_effort(indent=2))


def record_config(cfg, directory: str, step: int, *, history: bool = True) -> None:
  """config.json := ``cfg``; when that changes it, the earlier config, the
  step and the diff go first to config_history.jsonl (``history``: this
  process keeps it), so no config the run was trained with is lost."""
  saved = saved_config(directory)
  diff = [] if saved is None else defaults.config_diff(saved, cfg)
  if diff and history:
    entry = {"step": int(step), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "changed": {k: {"from": a, "to": b} for k, a, b in diff},
             "config": saved}
    with open(os.path.join(directory, "config_history.jsonl"), "a") as f:
      f.write(json.dumps(entry) + "\n")
  write_config(cfg, directory)


def config_from_json(saved: dict) -> ml_collections.ConfigDict:
  """A saved config.json as the locked ConfigDict it was: the base config's
  fields (typed: None-valued FieldReferences such as inference.omega, tuples)
  set from it, and its own extra fields (a dataset's section) added."""
  def overlay(node, tree, prefix):
    for k, v in tree.items():
      if isinstance(v, dict):
        if k not in node:
          node[k] = ml_collections.ConfigDict()
        overlay(node[k], v, f"{prefix}{k}.")
        continue
      if k in node and isinstance(node[k], tuple) and isinstance(v, list):
        v = tuple(v)
      try:
        node[k] = v
      except (TypeError, ValueError) as e:
        raise errors.ConfigError(f"config.json: {prefix}{k} = {v!r} does not fit "
                                 f"this version's config ({e}).") from None
  cfg = defaults.base_config()
  overlay(cfg, saved, "")
  cfg.lock()
  return cfg


def evaluation_config(directory: str, given=None, overrides=None):
  """The config --mode=evaluate/predict/plots use: ``directory``'s
  config.json, with the command line's ``overrides`` ({dotted key: value})
  of evaluation keys (inference.*, eval.*) and RUN_KEYS on top.  A
  ``given`` config that trains another model is refused; without a
  config.json (an older workdir) ``given`` is used as it is."""
  saved = saved_config(directory)
  if saved is None:
    if given is None:
      raise errors.MissingFile(f"{directory}/config.json is missing: pass the "
                               "config the run was trained with (--config=...).")
    return given
  cfg = config_from_json(saved)
  if given is not None:
    diff = trained_keys_diff(saved, given)
    if diff:
      raise errors.ConfigError(
          f"{directory} was trained with another config ({describe_diff(diff)}). "
          f"This mode reads {directory}/config.json: omit --config, or override "
          "only inference.*, eval.* or run keys.")
    defaults.set_dotted(cfg, {k: v for k, v in (overrides or {}).items()
                              if k.startswith(EVAL_PREFIXES) or k in RUN_KEYS})
  return cfg


def write_run_info(directory: str, train_set) -> None:
  """What --mode=evaluate/predict need to rebuild the model: classes, dims."""
  rec = train_set[0]
  fileio.write_json(os.path.join(directory, "run.json"), {
      "classes": list(train_set.classes), "rgb_dim": int(rec.rgb.shape[1]),
      "flow_dim": int(rec.flow.shape[1])})


def read_run_info(directory: str) -> dict:
  path = os.path.join(directory, "run.json")
  if not os.path.exists(path):
    raise errors.MissingFile(f"{path} is missing: is {directory!r} a training "
                             "workdir (python -m case_jax.main --mode=train)?")
  return fileio.read_json(path)


def checkpoint_meta(cfg, step: int) -> dict:
  # The data position: batches are a pure function of (seed, step).
  return {"step": step, "data": {"seed": cfg.seed, "step": step,
                                 "batch_size": cfg.batch_size}}


def checkpointer(cfg, directory: str) -> ckpt_lib.Checkpointer:
  return ckpt_lib.Checkpointer(os.path.join(directory, "checkpoints"),
                               keep=cfg.keep_checkpoints,
                               commit=cfg.get("checkpoint_commit", "auto"))


# =============================================================================
# One training run's open files.
# =============================================================================
class RunFiles:
  """config.json and run.json written; the checkpointer open; after
  ``resume``, metrics.jsonl and TensorBoard (the logs only on the primary
  process); the best test mAP so far (test-set model selection, as the
  released code reports)."""

  def __init__(self, cfg, directory: str, train_set, *, primary: bool = True):
    self.cfg, self.dir, self.primary = cfg, directory, primary
    os.makedirs(directory, exist_ok=True)
    write_run_info(directory, train_set)
    self.manager = checkpointer(cfg, directory)
    self.best = None      # (mAP, step)
    self._log, self.board = None, None

  def resume(self, template):
    """(state, meta) of the latest checkpoint, or (template, None).  The
    config is checked first (``check_trained_config``: a refused change
    never reaches the restore), then recorded (``record_config``), and the
    logs are cut back to the restored step, so a re-run step shows once."""
    check_trained_config(self.dir, self.cfg)
    state, meta = self.manager.restore_latest(template)
    step = int(state.step)
    if jax.process_count() > 1:  # every process checked the old config.json
      distributed.barrier()
    record_config(self.cfg, self.dir, step, history=self.primary)
    path = os.path.join(self.dir, "metrics.jsonl")
    if self.primary:
      truncate_metrics(path, step)
    self._log = open(path if self.primary else os.devnull, "a")
    self.board = (tracking.ScalarWriter(os.path.join(self.dir, "tensorboard"),
                                        purge_step=step + 1)
                  if self.primary else None)
    return state, meta

  def log(self, step: int, scalars: dict) -> None:
    """One metrics.jsonl line and the TensorBoard scalars of ``step``."""
    self._log.write(json.dumps({"step": step, **scalars}) + "\n")
    self._log.flush()
    if self.board:
      self.board.write(step, scalars)

  def note_eval(self, step: int, map_value: float) -> None:
    if self.best is None or map_value > self.best[0]:
      self.best = (map_value, step)

  def save(self, state, step: int) -> None:
    self.manager.save(state, meta=checkpoint_meta(self.cfg, step))

  @property
  def closed(self) -> bool:
    return self._log is None or self._log.closed

  def close(self) -> None:
    """Idempotent, and the cleanup after an error: a save still in flight
    is committed first (an error exit must not cost the last checkpoint)."""
    try:
      self.manager.wait()
    finally:
      if self._log is not None:
        self._log.close()
      if self.board:
        self.board.close()


def truncate_metrics(path: str, step: int) -> None:
  """Drops the lines of ``path`` logged after ``step`` (a run that went on
  past its last checkpoint, now re-run from it) and any partial line."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.read().splitlines()
  kept = []
  for line in lines:
    try:
      if int(json.loads(line)["step"]) <= step:
        kept.append(line)
    except (ValueError, KeyError, TypeError):
      continue
  if len(kept) < len(lines):
    fileio.write_text(path, "".join(l + "\n" for l in kept))
