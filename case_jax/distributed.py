"""Multi-process (multi-host) JAX: initialisation and process-local data.

``maybe_initialize()`` must run before anything touches a JAX backend (call
it first thing in ``main``).  It calls ``jax.distributed.initialize`` when
the environment asks for it:

  CASE_COORDINATOR_ADDRESS=host:port  CASE_NUM_PROCESSES=N  CASE_PROCESS_ID=i
      explicit (launch/local_multiprocess.py sets these; any cluster works);
  CASE_DISTRIBUTED=auto
      no arguments: JAX detects the cluster itself (TPU pod slices, SLURM via
      SLURM_* variables, ...); launch/tpu_pod.py and launch/slurm_gpu.py set it.
  CASE_LOCAL_DEVICE_IDS=0,1   optional: this process's local devices.

Nothing set -> a single-process run, nothing is initialised.

``python -m case_jax.distributed <case_jax.main flags>`` initialises and then
runs ``case_jax.main`` (the same as ``python -m case_jax.main`` once main
calls ``maybe_initialize()`` itself).

Data: every process reads only its own rows of each global batch
(``process_rows``), and ``global_array`` assembles the per-process pieces
(leading device axis, as the pmap/shard_map step expects) into one global
``jax.Array`` over all devices of all processes.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np

ENV_COORDINATOR = "CASE_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "CASE_NUM_PROCESSES"
ENV_PROCESS_ID = "CASE_PROCESS_ID"
ENV_AUTO = "CASE_DISTRIBUTED"
ENV_LOCAL_DEVICES = "CASE_LOCAL_DEVICE_IDS"

_initialized = False


def settings(environ=None) -> Optional[dict]:
  """The ``jax.distributed.initialize`` kwargs the environment asks for, or
  None for a single-process run.  Pure (testable without JAX)."""
  env = os.environ if environ is None else environ
  if env.get(ENV_COORDINATOR):
    missing = [k for k in (ENV_NUM_PROCESSES, ENV_PROCESS_ID) if not env.get(k)]
    if missing:
      raise ValueError(f"{ENV_COORDINATOR} is set but {', '.join(missing)} "
                       "is not.")
    kw = dict(coordinator_address=env[ENV_COORDINATOR],
              num_processes=int(env[ENV_NUM_PROCESSES]),
              process_id=int(env[ENV_PROCESS_ID]))
    if not 0 <= kw["process_id"] < kw["num_processes"]:
      raise ValueError(f"{ENV_PROCESS_ID}={kw['process_id']} is not in "
                       f"[0, {kw['num_processes']}).")
  elif env.get(ENV_AUTO, "").lower() in ("1", "auto", "true", "yes"):
    kw = {}
  else:
    return None
  if env.get(ENV_LOCAL_DEVICES):
    kw["local_device_ids"] = [int(x) for x in env[ENV_LOCAL_DEVICES].split(",")]
  return kw


def maybe_initialize(environ=None) -> bool:
  """Initialises the JAX distributed runtime if the environment asks for it.
  Returns True when running multi-process.  Idempotent."""
  global _initialized
  kw = settings(environ)
  if kw is None:
    return False
  import jax
  if not _initialized and not jax.distributed.is_initialized():
    if "coordinator_address" in kw:
      # CPU-only multi-process runs need the gloo cross-process collectives.
      try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
      except Exception:  # option absent/renamed: the default may already work
        pass
    jax.distributed.initialize(**kw)
    _initialized = True
  return True


def is_multiprocess() -> bool:
  import jax
  return jax.process_count() > 1


def process_rows(global_batch: int, process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> slice:
  """This process's contiguous rows of a global batch of ``global_batch``."""
  import jax
  p = jax.process_index() if process_index is None else process_index
  n = jax.process_count() if process_count is None else process_count
  if global_batch % n:
    raise ValueError(f"batch_size {global_batch} is not divisible by the {n} "
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


def global_array(local: Any, devices, axis_name: str) -> Any:
  """Per-process pieces with a leading local-device axis -> global arrays with
  a leading axis over ``devices`` (all processes' devices, process-major).

  ``local`` leaves are (num_local_devices, ...) numpy arrays.
  """
  import jax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  sharding = NamedSharding(Mesh(np.array(devices), (axis_name,)), P(axis_name))
  n = len(devices)

  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x, (n,) + x.shape[1:])
  return jax.tree.map(one, local)


def replicate_global(tree: Any, devices, axis_name: str) -> Any:
  """``tree`` (identical on all processes) copied onto every global device."""
  import jax
  k = len([d for d in devices if d.process_index == jax.process_index()])
  stacked = jax.tree.map(
      lambda x: np.broadcast_to(np.asarray(x), (k,) + np.shape(x)), tree)
  return global_array(stacked, devices, axis_name)


def shard_global_batch(batch: dict, devices, axis_name: str,
                       keys: Sequence[str]) -> dict:
  """The global batch (B, ...), same on every process -> (n, B/n, ...) global
  arrays where each process supplies only its own rows."""
  return shard_process_rows(local_batch(batch, keys), devices, axis_name, keys)


def shard_process_rows(rows: dict, devices, axis_name: str,
                       keys: Sequence[str]) -> dict:
  """This process's rows of the global batch (``process_rows``, e.g. read with
  ``train_batch(..., rows=...)``) -> (n, B/n, ...) global arrays; the other
  processes supply the other rows."""
  import jax
  from case_jax.train import split_rows
  k = sum(1 for d in devices if d.process_index == jax.process_index())
  return global_array(split_rows(rows, k, keys, multiple=len(devices)), devices,
                      axis_name)


def first_replica(tree: Any) -> Any:
  """Host numpy copy of the first addressable replica (leading device axis)."""
  import jax
  return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)


_AGREE = {}


def any_process(flag: bool) -> bool:
  """True on every process if ``flag`` is True on any; also a barrier.

  A max over every device of every process, on the same device set as the
  train step (one gloo communicator): ``multihost_utils.process_allgather``
  uses a one-device-per-process subset and its gloo context set-up timed out
  ("Gloo context initialization failed: DEADLINE_EXCEEDED") mid-training.
  """
  import jax
  if jax.process_count() == 1:
    return bool(flag)
  import jax.numpy as jnp
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  if "fn" not in _AGREE:
    mesh = Mesh(np.array(jax.devices()), ("p",))
    _AGREE["sharding"] = NamedSharding(mesh, P("p"))
    _AGREE["fn"] = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, P()))
  local = np.full((jax.local_device_count(),), int(bool(flag)), np.int32)
  flags = jax.make_array_from_process_local_data(_AGREE["sharding"], local,
                                                 (jax.device_count(),))
  return bool(np.asarray(_AGREE["fn"](flags).addressable_data(0)))


def barrier() -> None:
  """Waits until every process gets here (no-op for one process)."""
  any_process(False)


def _run_main():
  maybe_initialize()
  from absl import app
  from case_jax import main as main_lib
  app.run(main_lib.main)


if __name__ == "__main__":
  _run_main()
