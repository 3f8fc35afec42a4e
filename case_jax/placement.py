"""Device placement: where the train state and the batches live.

Everything about devices in one place: copying a pytree onto every device
(leading device axis ``(n, ...)``), splitting a global batch ``(B, ...)``
into ``(n, B/n, ...)``, wrapping the per-device step as ``jax.pmap`` or
``jax.jit(jax.shard_map(...))`` (same pytrees, same result), and, in a
multi-process run, assembling the global arrays from each process's own
rows.  ``Placement`` bundles the choice for one run so the train loop only
calls ``put_state``, ``put_batch``, ``get_state`` and ``host_metrics``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from case_jax import errors

AXIS = "batch"
DEVICE_KEYS = ("rgb", "flow", "labels", "fg_mask")  # what a step consumes


# =============================================================================
# One process.
# =============================================================================
def leading_sharding(devices) -> NamedSharding:
  """Arrays split along their leading axis, one slot per device."""
  return NamedSharding(Mesh(np.array(devices), (AXIS,)), P(AXIS))


def replicate(tree, devices):
  """Copies a pytree onto every device with a leading device axis (n, ...)."""
  n = len(devices)
  stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)),
                         tree)
  return jax.device_put(stacked, leading_sharding(devices))


def unreplicate(tree):
  """The first device's copy, on the host as numpy."""
  return jax.tree.map(lambda x: np.asarray(x[0]), tree)


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
      raise errors.ConfigError(f"{x.shape[0]} rows are not divisible by the {n} devices; "
                               f"set --config.batch_size to a multiple of {multiple or n}.")
    out[key] = x.reshape((n, x.shape[0] // n) + x.shape[1:])
  return out


def shard_batch(batch: dict, devices) -> dict:
  """Splits the global batch (B, ...) into (n, B/n, ...) over the devices."""
  return jax.device_put(split_rows(batch, len(devices)), leading_sharding(devices))


def shard_seed_batches(batches: Sequence[dict], devices) -> dict:
  """Each seed's global batch (B, ...) -> (n, S, B/n, ...) on the devices:
  the input of the seed-vmapped step."""
  per_seed = [split_rows(b, len(devices)) for b in batches]
  stacked = {k: np.stack([p[k] for p in per_seed], axis=1) for k in per_seed[0]}
  return jax.device_put(stacked, leading_sharding(devices))


def data_parallel(step: Callable, devices, how: str = "pmap") -> Callable:
  """The per-device ``step(state, batch)`` run over ``devices``: f(state
  (n, ...), batch (n, b, ...)) -> (state (n, ...), metrics (n, ...)).

  Collectives in ``step`` name ``AXIS``.  "pmap" (the default) or
  "shard_map" (``jax.jit(jax.shard_map(...))``); both donate the state.
  """
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
  raise errors.ConfigError(f"parallel must be 'pmap' or 'shard_map', got {how!r}")


# =============================================================================
# Several processes (jax.distributed): global arrays from process-local rows.
# =============================================================================
def process_rows(global_batch: int, process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> slice:
  """This process's contiguous rows of a global batch of ``global_batch``."""
  p = jax.process_index() if process_index is None else process_index
  n = jax.process_count() if process_count is None else process_count
  if global_batch % n:
    raise errors.ConfigError(f"batch_size {global_batch} is not divisible by the {n} "
                             "processes.")
  per = global_batch // n
  return slice(p * per, (p + 1) * per)


def local_batch(batch: dict, keys: Sequence[str]) -> dict:
  """The rows of ``batch`` (global, identical on every process) that this
  process feeds to its local devices."""
  out = {}
  for key in keys:
    if key in batch:
      x = np.asarray(batch[key])
      out[key] = x[process_rows(x.shape[0])]
  return out


def _local_count(devices) -> int:
  return sum(1 for d in devices if d.process_index == jax.process_index())


def global_array(local: Any, devices) -> Any:
  """Per-process pieces with a leading local-device axis -> global arrays with
  a leading axis over ``devices`` (all processes' devices, process-major).

  ``local`` leaves are (num_local_devices, ...) numpy arrays.
  """
  sharding = leading_sharding(devices)
  n = len(devices)

  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x, (n,) + x.shape[1:])
  return jax.tree.map(one, local)


def replicate_global(tree: Any, devices) -> Any:
  """``tree`` (identical on all processes) copied onto every global device."""
  k = _local_count(devices)
  stacked = jax.tree.map(
      lambda x: np.broadcast_to(np.asarray(x), (k,) + np.shape(x)), tree)
  return global_array(stacked, devices)


def shard_process_rows(rows: dict, devices, keys: Sequence[str] = DEVICE_KEYS
                       ) -> dict:
  """This process's rows of the global batch (``process_rows``, e.g. read with
  ``train_batch(..., rows=...)``) -> (n, B/n, ...) global arrays; the other
  processes supply the other rows."""
  k = _local_count(devices)
  return global_array(split_rows(rows, k, keys, multiple=len(devices)), devices)


def shard_global_batch(batch: dict, devices, keys: Sequence[str] = DEVICE_KEYS
                       ) -> dict:
  """The global batch (B, ...), same on every process -> (n, B/n, ...) global
  arrays where each process supplies only its own rows."""
  return shard_process_rows(local_batch(batch, keys), devices, keys)


def first_replica(tree: Any) -> Any:
  """Host numpy copy of the first addressable replica (leading device axis)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)


# =============================================================================
# The choice for one run.
# =============================================================================
@dataclasses.dataclass(frozen=True)
class Placement:
  """Where one run's state and batches go.

  ``devices``: every device the step runs on (all processes' in a
  multi-process run); ``rows``: this process's rows of each global batch
  (None: all of them).
  """
  devices: tuple
  multiprocess: bool
  rows: Optional[slice]

  @classmethod
  def create(cls, devices=None, batch_size: Optional[int] = None) -> "Placement":
    if jax.process_count() > 1:
      return cls(tuple(jax.devices()), True,
                 process_rows(batch_size) if batch_size else None)
    return cls(tuple(devices or jax.local_devices()), False, None)

  @property
  def primary(self) -> bool:
    """Process 0 writes the logs and runs the evaluations."""
    return jax.process_index() == 0

  def put_state(self, state):
    if self.multiprocess:
      return replicate_global(state, self.devices)
    return replicate(state, self.devices)

  def put_batch(self, batch: dict) -> dict:
    """The global batch (or, multi-process, this process's ``rows``)."""
    if self.multiprocess:
      return shard_process_rows(batch, self.devices)
    return shard_batch(batch, self.devices)

  def get_state(self, rstate):
    return first_replica(rstate) if self.multiprocess else unreplicate(rstate)

  def host_metrics(self, rmetrics) -> dict:
    """Replicated metrics -> {name: value} (arrays when seeds are stacked)."""
    m = self.get_state(rmetrics)
    return {k: np.asarray(v) for k, v in m.items()}
