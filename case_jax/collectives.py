"""Collectives over the mapped batch axis that are the identity when the batch
is not split (``axis_name=None``), so that one code path serves a single
device, ``pmap`` and ``shard_map``.  The one home of these wrappers."""
from __future__ import annotations

from typing import Optional

import jax.numpy as jnp
from jax import lax


def psum(x, axis_name: Optional[str]):
  """Sum over devices (a pytree is fine)."""
  return x if axis_name is None else lax.psum(x, axis_name)


def pmax(x, axis_name: Optional[str]):
  """Max over devices.  pmax has no differentiation rule: use it on values
  without a tangent (or ``stop_gradient`` them first)."""
  return x if axis_name is None else lax.pmax(x, axis_name)


def pmean(x, axis_name: Optional[str]):
  """Mean over devices."""
  return x if axis_name is None else lax.pmean(x, axis_name)


def all_gather(x, axis_name: Optional[str]):
  """Concatenates the devices' (N_local, ...) blocks into (N, ...), in device
  order."""
  return x if axis_name is None else lax.all_gather(x, axis_name, tiled=True)


def local_slice(x_global, n_local: int, axis_name: Optional[str]):
  """This device's (n_local, ...) block of an ``all_gather``-ed (N, ...) array."""
  if axis_name is None:
    return x_global
  start = lax.axis_index(axis_name) * n_local
  return lax.dynamic_slice_in_dim(x_global, start, n_local)


def any_device(pred, axis_name: Optional[str]):
  """Scalar bool: ``pred`` holds somewhere, on any device."""
  return psum(jnp.any(pred).astype(jnp.int32), axis_name) > 0


def carry_zeros(x, axis_name: Optional[str]):
  """Zeros like ``x[0]`` and a scalar zero, typed like a psum-ed statistic of x.

  Inside shard_map a loop carry must be exactly as device-varying as the loop
  body's output.  Column statistics of an (N, K) x are invariant when its rows
  are split over ``axis_name`` (they are psum-ed) but varying when x itself
  varies per device (e.g. Q^R, solved redundantly on every device); initial
  carries derived from x this way have the right type in both cases, and
  cost nothing outside shard_map.
  """
  cols = psum(jnp.zeros_like(x[0]), axis_name)
  return cols, cols[0]
