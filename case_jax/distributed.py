"""Multi-process (multi-host) JAX: process set-up and agreement between processes.

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

``python -m case_jax.main`` calls ``maybe_initialize()`` first thing.

This module is process set-up only (and ``any_process``/``barrier``, the
agreement between processes); which rows each process reads and how the
global arrays are assembled is case_jax/placement.py.
"""
from __future__ import annotations

import os
from typing import Optional

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
