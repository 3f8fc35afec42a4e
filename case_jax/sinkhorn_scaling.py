"""Stabilised scaling-domain Sinkhorn with absorption (Schmitzer 2019): the
fast path of ``sinkhorn.solve`` (modes "scaling" and "auto").

Each iteration is two mat-vecs with a stabilised kernel K~ = exp(log K + f + g)
instead of two exp passes over log K; the scalings are absorbed into the log
potentials f, g whenever they drift past exp(+-absorb_threshold).

The mat-vecs are blocked for accuracy: a plain f32 ``u @ kern`` accumulates
the N products serially (relative error ~1e-5 at N = 12000, which stalls the
convergence checks); partial dots over B-row blocks followed by a sum over
blocks are as fast and ~100x more accurate.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from case_jax import collectives as coll

class BlockedKernel(NamedTuple):
  """An (N, K) kernel split into (N // B, B, K) blocks and an (N % B, K) rest.

  The split is made once (per absorption in sinkhorn.py), not per iteration:
  slicing inside a loop would copy the kernel every iteration.
  """
  main: jax.Array
  rest: jax.Array

  @classmethod
  def split(cls, kern, block=128):
    n, k = kern.shape
    n_main = (n // block) * block
    return cls(kern[:n_main].reshape(-1, block, k), kern[n_main:])

  @property
  def n_main(self):
    return self.main.shape[0] * self.main.shape[1]

  def col_sums(self, u):
    """u^T kern: (N,) -> (K,)."""
    nb, block, _ = self.main.shape
    out = jnp.einsum("bn,bnk->bk", u[:self.n_main].reshape(nb, block),
                     self.main).sum(axis=0)
    if self.rest.shape[0]:
      out = out + u[self.n_main:] @ self.rest
    return out

  def row_dots(self, v):
    """kern v: (K,) -> (N,)."""
    out = (self.main @ v).reshape(-1)
    if self.rest.shape[0]:
      out = jnp.concatenate([out, self.rest @ v])
    return out


_TINY = 1e-30  # relative floor on K~ v and K~^T u (see scaling_loop)


def scaling_loop(log_k, a, b, limit, tol, absorb_threshold, axis_name,
                  stop_on_breakdown):
  """Scaling iterations on K~ = exp(log K + f + g), absorbing drifted scalings.

  The outer loop absorbs (f += log u, g += log v, recompute K~) and runs an
  inner loop of cheap mat-vec iterations until the scalings leave
  [exp(-t), exp(t)], the budget ``limit`` is spent, or the error is <= tol.

  Where a row or column of K~ has underflowed to zero, K~ v (or K~^T u) is
  floored at 1e-30 of its target, so the scalings stay finite and the next
  absorption re-expands the kernel; such a "breakdown" is flagged because
  progress is then slow (``auto`` answers with the log-domain solve instead).
  Returns (g, iterations, broke_down); the caller finishes with a row update.
  """
  b_total = jnp.sum(b)
  bound = jnp.exp(jnp.asarray(absorb_threshold, log_k.dtype))
  _, zero = coll.carry_zeros(log_k, axis_name)

  def spread(x):
    # max(x, 1/x): one fused reduction that is > bound when x drifted and
    # NaN (failing every <=) when x is NaN.
    return jnp.max(jnp.maximum(x, 1.0 / x))

  def inner(kern, u, v, it):
    def cond(state):
      _, _, it, err, health, _ = state
      return (it < limit) & (err > tol) & (health <= bound)

    def body(state):
      u, v, it, _, _, floored = state
      ktu = coll.psum(kern.col_sums(u), axis_name)                      # (K,)
      err = jnp.sum(jnp.abs(v * ktu - b)) / b_total                # of (u, v)
      floor_b = b * _TINY
      v = b / jnp.maximum(ktu, floor_b)
      kv = kern.row_dots(v)                                         # (N,)
      floor_a = a * _TINY
      u = a / jnp.maximum(kv, floor_a)
      floored = (floored | jnp.any(ktu < floor_b)
                 | coll.any_device(kv < floor_a, axis_name))
      health = jnp.maximum(coll.pmax(spread(u), axis_name), spread(v))
      return u, v, it + 1, err, health, floored

    # The first error is of the absorbed plan, not yet measured: start at inf.
    init = (u, v, it, zero + jnp.inf, zero + 1.0, zero > 1.0)
    u, v, it, err, health, floored = lax.while_loop(cond, body, init)
    return u, v, it, err, floored | ~(health < jnp.inf)

  def outer_cond(state):
    _, _, _, _, it, err, broke = state
    go = (it < limit) & (err > tol)
    return go & ~broke if stop_on_breakdown else go

  def outer_body(state):
    f, g, u, v, it, _, broke = state
    f = f + jnp.log(u)
    g = g + jnp.log(v)
    kern = BlockedKernel.split(jnp.exp(log_k + f[:, None] + g[None, :]))
    u, v, it, err, floored = inner(kern, jnp.ones_like(u), jnp.ones_like(v), it)
    return f, g, u, v, it, err, broke | floored

  # Carries start from data-derived zeros so that inside shard_map they are
  # exactly as device-varying as the loop body's outputs (see collectives.carry_zeros).
  rows = jnp.zeros_like(log_k[:, 0])
  cols, zero = coll.carry_zeros(log_k, axis_name)
  state = (rows, cols, rows + 1, cols + 1, jnp.zeros((), jnp.int32),
           zero + jnp.inf, zero > 1.0)
  _, g, _, v, it, _, broke = lax.while_loop(outer_cond, outer_body, state)
  return g + jnp.log(v), it, broke
