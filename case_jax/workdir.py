"""A run's directory: the files training writes beside the checkpoints.

    <workdir>/config.json     the config it was trained with
    <workdir>/run.json        what rebuilding the model needs: classes, dims
    <workdir>/checkpoints/    Orbax steps (case_jax/checkpoint.py)
    <workdir>/metrics.jsonl   one JSON line per logged or evaluated step
    <workdir>/tensorboard/    the same scalars for TensorBoard
    <workdir>/eval/           the final evaluation (case_jax/evaluator.py)

It also holds the one rule for "was this workdir trained with this config"
(``trained_diff``), used to resume, to reuse finished seeds and to evaluate.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from case_jax import errors
from case_jax import checkpoint as ckpt_lib
from case_jax import defaults, fileio, tracking

# Keys that only say how a run is carried out, not what it trains.
RUN_KEYS = ("seed", "seeds", "seeds_mode", "data.root", "num_steps", "eval_every",
            "log_every", "checkpoint_every", "keep_checkpoints", "checkpoint_commit",
            "parallel")
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


def trained_diff(directory: str, cfg) -> list:
  """[(key, trained value, given value)] where ``cfg`` trains another model
  than the one in ``directory`` (empty when there is none yet)."""
  saved = saved_config(directory)
  if saved is None:
    return []
  return [d for d in defaults.config_diff(saved, cfg, ignore=RUN_KEYS)
          if not d[0].startswith(EVAL_PREFIXES)]


def eval_diff(directory: str, cfg) -> list:
  """Differences in how the model in ``directory`` was evaluated."""
  saved = saved_config(directory)
  if saved is None:
    return []
  return [d for d in defaults.config_diff(saved, cfg) if d[0].startswith(EVAL_PREFIXES)]


def describe_diff(diff: list, limit: int = 6) -> str:
  shown = ", ".join(f"{k}: trained {a!r}, given {b!r}" for k, a, b in diff[:limit])
  return shown + (", ..." if len(diff) > limit else "")


def write_config(cfg, directory: str) -> None:
  fileio.write_text(os.path.join(directory, "config.json"),
                    cfg.to_json_best_effort(indent=2))


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
  """config.json and run.json written; the checkpointer, metrics.jsonl and
  TensorBoard open (the logs only on the primary process); the best test
  mAP so far (test-set model selection, as the released code reports)."""

  def __init__(self, cfg, directory: str, train_set, *, primary: bool = True):
    self.cfg, self.dir, self.primary = cfg, directory, primary
    os.makedirs(directory, exist_ok=True)
    write_run_info(directory, train_set)
    self.manager = checkpointer(cfg, directory)
    self.best = None      # (mAP, step)
    self._log = open(os.path.join(directory, "metrics.jsonl") if primary
                     else os.devnull, "a")
    self.board = (tracking.ScalarWriter(os.path.join(directory, "tensorboard"))
                  if primary else None)

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
    return self._log.closed

  def close(self) -> None:  # idempotent: also the cleanup after an error
    self._log.close()
    if self.board:
      self.board.close()
