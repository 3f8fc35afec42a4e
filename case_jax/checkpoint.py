"""Orbax checkpoints of the train state: atomic, periodic, resumable.

A save writes the whole TrainState (params, optimiser state, step, Q^R, RNG)
and a JSON side record (the data position).  Orbax commits a step directory
only once it is complete (it writes ``<step>.orbax-checkpoint-tmp-*`` and
renames it), so a crash mid-save leaves the previous checkpoint as the
latest; ``restore_latest`` then resumes from it.  A committed checkpoint that
fails to restore (damaged files) is skipped and, once an older one restored
with the same template, moved aside to ``<step>.damaged-<time>`` (outside
Orbax's listing) with a warning naming it, so the rerun trains and saves that
step again.  A checkpoint whose arrays have other shapes than the template
(another model config) is not damaged: ``IncompatibleCheckpoint``, before
any restore is tried.

Preemption (TPU preemption, SLURM requeue, Ctrl-C): ``PreemptionGuard``
turns the first SIGTERM/SIGINT into a flag that the train loop checks at each
step boundary; the loop then saves a checkpoint of that step, waits for Orbax
to commit it and raises ``Preempted`` -- a ``SystemExit`` with exit status
``PREEMPTED_EXIT_CODE`` (75, EX_TEMPFAIL: "try again"), so an uncaught one
ends ``python -m case_jax.main`` cleanly with that status and no traceback.
Rerunning the same command resumes the identical trajectory.  A second
signal of the same kind while the flag is pending acts as the default
(SIGINT -> KeyboardInterrupt, SIGTERM -> terminate) for an impatient user.
"""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import warnings
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from case_jax import distributed, errors

PREEMPTED_EXIT_CODE = 75  # os.EX_TEMPFAIL


class Preempted(SystemExit):
  """Raised by the train loop after a signal-triggered checkpoint.

  ``.code`` is ``PREEMPTED_EXIT_CODE``; ``.step`` the step saved;
  ``.signal`` the signal number received.
  """

  def __init__(self, step: int, signum: Optional[int] = None):
    super().__init__(PREEMPTED_EXIT_CODE)
    self.step = step
    self.signal = signum

  def __str__(self):
    name = signal.Signals(self.signal).name if self.signal else "signal"
    return (f"preempted by {name}: checkpoint saved at step {self.step}; rerun "
            f"the same command to resume (exit status {PREEMPTED_EXIT_CODE})")


class PreemptionGuard:
  """Context manager: records SIGTERM/SIGINT instead of dying mid-step.

  ``guard.requested`` is True once a signal arrived (``guard.signum`` says
  which).  In a multi-process run use ``should_stop()``: it agrees across
  processes (any process signalled -> all stop at the same step).  Outside
  the main thread (signal handlers cannot be installed) it is inert.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self, signals=SIGNALS):
    self.signals = tuple(signals)
    self.signum: Optional[int] = None
    self._previous: dict = {}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def _handle(self, signum, frame):
    if self.signum == signum:  # second time: behave as without the guard
      previous = self._previous.get(signum, signal.SIG_DFL)
      signal.signal(signum, previous)
      if callable(previous):
        previous(signum, frame)
      else:
        os.kill(os.getpid(), signum)
      return
    self.signum = signum

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, previous in self._previous.items():
      signal.signal(s, previous if previous is not None else signal.SIG_DFL)
    self._previous.clear()
    return False

  def should_stop(self) -> bool:
    """``requested``, or-reduced over processes when there are several."""
    if jax.process_count() == 1:
      return self.requested
    return distributed.any_process(self.requested)


class IncompatibleCheckpoint(errors.ConfigError):
  """The checkpoint holds arrays of other shapes than the config builds."""


def _leaf_name(path) -> str:
  """A template leaf's dotted name as Orbax records it ("params.rgb.x.kernel",
  "opt_state.1.0.mu...")."""
  parts = []
  for k in path:
    for attr in ("name", "key", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return ".".join(parts)


COMMIT_MODES = ("auto", "rename", "commit_file")
_COMMIT_FILE = "commit_success.txt"  # Orbax's marker of a finished save
# Object-store FUSE mounts: no atomic directory rename (gcsfuse copies object
# by object, and refuses non-empty directories unless --rename-dir-limit).
_NO_ATOMIC_RENAME_FS = ("fuse.gcsfuse", "fuse.s3fs", "fuse.goofys", "fuse.rclone",
                        "fuse.mountpoint-s3", "fuse.blobfuse", "fuse.blobfuse2")


def mount_fstype(path: str, mounts_file: str = "/proc/mounts") -> Optional[str]:
  """File-system type of the mount holding ``path`` (longest mount-point
  prefix in ``mounts_file``), or None when it cannot be told."""
  path = os.path.realpath(path)  # also for a path not created yet (symlinked mounts)
  best, fstype = "", None
  try:
    with open(mounts_file) as f:
      for line in f:
        parts = line.split()
        if len(parts) < 3:
          continue
        point = parts[1].replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
          best, fstype = point, parts[2]
  except OSError:
    return None
  return fstype


def commit_mode(directory: str, mode: str = "auto",
                mounts_file: str = "/proc/mounts") -> str:
  """How a finished checkpoint is marked: "rename" (Orbax's default: write a
  tmp directory, rename it; atomic on POSIX file systems) or "commit_file"
  (write in place, then a commit_success.txt; what Orbax does on gs://).
  "auto": commit_file on gs:// and on object-store FUSE mounts (gcsfuse: the
  TPU pod launcher's workdir), else rename."""
  if mode not in COMMIT_MODES:
    raise ValueError(f"checkpoint commit mode must be one of {COMMIT_MODES}, "
                     f"got {mode!r}")
  if mode != "auto":
    return mode
  if directory.startswith("gs://"):
    return "commit_file"
  fstype = mount_fstype(directory, mounts_file)
  return "commit_file" if fstype in _NO_ATOMIC_RENAME_FS else "rename"


class Checkpointer:
  """A thin CheckpointManager: save(state, meta), restore_latest(template).

  ``commit``: see ``commit_mode``.  Either way a checkpoint whose save did
  not finish is never listed, hence never restored.
  """

  def __init__(self, directory: str, keep: int = 3, commit: str = "auto"):
    # local paths absolute (Orbax wants that); URLs (gs://...) as given
    self.directory = directory if "://" in directory else os.path.abspath(directory)
    self.commit = commit_mode(self.directory, commit)
    extra = {}
    if self.commit == "commit_file":
      # Orbax's own gs:// behaviour, through its public path module.
      extra["temporary_path_class"] = ocp.path.atomicity.CommitFileTemporaryPath
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=True, **extra)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    """Committed steps, oldest first.  Orbax marks a finished save with
    ``<step>/commit_success.txt`` in either commit mode; a step directory
    without it (a commit_file save that died, then listed by a Checkpointer
    opened in rename mode) is left out, so the guarantee does not depend on
    the mode a directory is reopened with."""
    # A save still in flight has no marker yet: let it finish first (Orbax
    # waits for the previous save before starting the next one anyway).
    self._manager.wait_until_finished()
    steps = sorted(self._manager.all_steps())
    if "://" in self.directory:
      return steps
    done = [s for s in steps if os.path.exists(
        os.path.join(self.directory, str(s), _COMMIT_FILE))]
    if len(done) < len(steps):
      warnings.warn(f"{self.directory}: steps {sorted(set(steps) - set(done))} "
                    "have no commit marker (unfinished saves) and are ignored.",
                    RuntimeWarning)
    return done

  def latest_step(self) -> Optional[int]:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, state: Any, meta: dict) -> bool:
    """Starts an async save of ``meta['step']``; False if it already exists."""
    step = int(meta["step"])
    if self.latest_step() == step:
      return False  # already saved (e.g. a resume that had nothing left to run)
    stale = os.path.join(self.directory, str(step))
    if "://" not in self.directory and os.path.isdir(stale):
      # An unfinished save of this very step (a run that died mid-save and
      # resumed from an older one): replace it, never keep or skip it.
      self._manager.wait_until_finished()
      if jax.process_index() == 0:
        shutil.rmtree(stale, ignore_errors=True)
      if jax.process_count() > 1:  # nobody writes the step before it is gone
        distributed.barrier()
      self._manager.reload()
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    return True

  def restore(self, step: int, template: Any) -> tuple[Any, dict]:
    """Restores ``step`` into the structure and dtypes of ``template``."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out.state, out.meta

  def shape_mismatch(self, step: int, template: Any) -> list:
    """[(array name, shape in checkpoint ``step``, shape in ``template``)]
    where they differ; [] when they agree or the metadata is unreadable
    (a damaged step: the restore then tells)."""
    try:  # the handler itself: the manager knows the items only after a save
      tree = ocp.StandardCheckpointHandler().metadata(
          epath.Path(self.directory) / str(step) / "state").tree
      saved = {m.name: tuple(m.shape) for m in jax.tree.leaves(tree)}
    except Exception:  # noqa: BLE001 - damaged metadata is the restore's case
      return []
    given = {_leaf_name(p): tuple(np.shape(x)) for p, x in
             jax.tree_util.tree_flatten_with_path(template)[0]}
    if set(saved) != set(given):  # other naming: compare the shapes alone
      if sorted(saved.values()) == sorted(given.values()):
        return []
      return [("(arrays)", sorted(saved.values()), sorted(given.values()))]
    return [(k, saved[k], given[k]) for k in  # the parameters first
            sorted(saved, key=lambda k: (not k.startswith("params."), k))
            if saved[k] != given[k]]

  def restore_latest(self, template: Any) -> tuple[Any, Optional[dict]]:
    """(latest restorable state, its meta), or (template, None) when there is
    no checkpoint.  Other array shapes than ``template``'s raise
    ``IncompatibleCheckpoint``.  A checkpoint that fails to restore is
    skipped with a warning (the next older one is tried) and, once an older
    one restored, moved aside (``set_aside``); if every one fails the newest
    error is raised and nothing is moved -- silently restarting from
    scratch would be worse."""
    steps = self.all_steps()
    if steps:
      mismatch = self.shape_mismatch(steps[-1], template)
      if mismatch:
        shown = "; ".join(f"{k}: checkpoint {a}, config {b}" for k, a, b in mismatch[:3])
        raise IncompatibleCheckpoint(
            f"checkpoint step {steps[-1]} in {self.directory} holds arrays of "
            f"other shapes than this config builds ({shown}"
            f"{f'; {len(mismatch) - 3} more' if len(mismatch) > 3 else ''}): it was trained with "
            "another model config; use that config or another --workdir.")
    first_error, failed = None, []
    for step in reversed(steps):
      try:
        state, meta = self.restore(step, template)
      except Exception as e:  # damaged files: any reader error
        first_error = first_error or e
        failed.append(step)
        warnings.warn(f"checkpoint step {step} in {self.directory} could not "
                      f"be restored ({type(e).__name__}: {str(e)[:300]}); "
                      "falling back to the previous checkpoint.", RuntimeWarning)
        continue
      if meta is not None and int(meta.get("step", step)) != step:
        warnings.warn(f"checkpoint step {step}: meta says step {meta.get('step')}",
                      RuntimeWarning)
      self.set_aside(failed)
      return state, meta
    if first_error is not None:
      raise RuntimeError(f"no checkpoint in {self.directory} could be restored "
                         f"(tried steps {steps[::-1]})") from first_error
    return template, None

  def set_aside(self, steps: list) -> list:
    """Renames each damaged step directory to ``<step>.damaged-<time>``
    (kept for inspection, no longer listed), so that step is saved again
    instead of being skipped as existing.  Returns the new paths."""
    if not steps or "://" in self.directory:
      return []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = [os.path.join(self.directory, f"{s}.damaged-{stamp}") for s in steps]
    if jax.process_index() == 0:
      for s, dst in zip(steps, moved):
        os.rename(os.path.join(self.directory, str(s)), dst)
        warnings.warn(f"checkpoint step {s} could not be restored: moved aside "
                      f"to {dst}; this run trains and saves step {s} again.",
                      RuntimeWarning)
    if jax.process_count() > 1:  # nobody lists the steps before they moved
      distributed.barrier()
    self._manager.reload()
    return moved

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
