"""Orbax checkpoints of the train state: atomic, periodic, resumable.

A save writes the whole TrainState (params, optimiser state, step, Q^R, RNG)
and a JSON side record (the data position).  Orbax commits a step directory
only once it is complete, so a crash mid-save leaves the previous checkpoint
as the latest; ``restore_latest`` then resumes from it.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """A thin CheckpointManager: save(state, meta), restore_latest(template)."""

  def __init__(self, directory: str, keep: int = 3):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, state: Any, meta: dict) -> None:
    step = int(meta["step"])
    if self._manager.latest_step() == step:
      return  # already saved (e.g. a resume that had nothing left to run)
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def restore(self, step: int, template: Any) -> tuple[Any, dict]:
    """Restores ``step`` into the structure and dtypes of ``template``."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out.state, out.meta

  def restore_latest(self, template: Any) -> tuple[Any, Optional[dict]]:
    """(latest state, its meta), or (template, None) when there is none."""
    step = self._manager.latest_step()
    if step is None:
      return template, None
    return self.restore(step, template)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
