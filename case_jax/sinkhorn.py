"""Entropic optimal transport with a KL prior: the pseudo-labeling engine of CASE.

Solves (paper Eq. 6, 14, 25/26)

    min_Q  <Q, -log P> + (1/eps) KL(Q || Qhat)   s.t.  Q 1 = alpha,  Q^T 1 = beta

whose minimiser is (Eq. 7, 15, 30)

    Q = diag(u) (Qhat * P^eps) diag(v),   i.e.  log Q = eps*log P + log Qhat + f 1^T + 1 g^T.

With no prior (a constant Qhat) the KL term is the negative entropy up to a
constant, which is Eq. 6 / 7.  Everything here works on the log-kernel
``log K = eps * log_p + log_prior`` of shape (N, K):

* ``mode="log"``: log-domain Sinkhorn (logsumexp updates of the potentials f, g).
  Never over- or underflows; the reference answer.
* ``mode="scaling"``: scaling-domain iterations ``v = b / K~^T u``,
  ``u = a / K~ v`` on a stabilised kernel ``K~ = exp(log K + f + g)``; whenever
  the scalings drift past ``exp(+-absorb_threshold)`` they are absorbed into the
  log potentials and K~ is recomputed (Schmitzer 2019).  Two mat-vecs per
  iteration instead of two exp passes, so several times faster on CPU
  (sinkhorn_scaling.py).
* ``mode="auto"`` (default): ``scaling`` and, only for problems where it broke
  down (a row or column of K~ underflowed to zero, or anything non-finite),
  ``log`` from scratch.  Under ``vmap`` the fallback loop runs zero iterations
  unless some problem in the batch needs it.
* ``mode="released"``: the routine of the released PyTorch code (SwAV style):
  a global normalisation then ``num_iters`` (default 3) passes of
  normalise-clusters / weight by beta / normalise-samples, returning rows that
  sum exactly to alpha and columns only approximately.  Computed in log space
  (same operations, same order) so that it cannot overflow.

Both the iterative modes start from the row-stabilised potentials
``f = -max_k log K[n, k]``, ``g = 0`` (folded into log K once) and alternate a column update then a row
update, so the returned Q has exact rows (each pseudo-label sums to alpha_n)
and a column error reported in ``info``.  Because f starts at minus the row
max, adding a constant to a row of log P changes no iterate.

No gradient flows through the solver: inputs are ``stop_gradient``-ed, since
pseudo-labels are targets (the released code runs it under ``no_grad``).

Distributed use: pass ``axis_name`` when called inside ``pmap``/``shard_map``
with the N rows split across devices; column sums (and the totals used for the
default marginals) are ``psum``-ed so the constraints hold over the global batch.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from case_jax import collectives as coll
from case_jax import sinkhorn_scaling

MODES = ("auto", "scaling", "log", "released")


class SinkhornInfo(NamedTuple):
  """Diagnostics of one solve (all scalars; batched under vmap).

  row_error: ||Q 1 - alpha||_1 / ||alpha||_1 of the returned Q.
  col_error: ||Q^T 1 - beta||_1 / ||beta||_1 of the returned Q (beta rescaled
    to alpha's total, see ``solve``).
  num_iters: iterations run (for ``auto``: of the path whose Q is returned).
  converged: ``tol`` was given and met (by the loop's check or by the
    returned Q's errors); always False for fixed iteration counts.
  fell_back: ``auto`` only: the scaling path broke down and the log-domain
    answer is returned.
  """
  row_error: jax.Array
  col_error: jax.Array
  num_iters: jax.Array
  converged: jax.Array
  fell_back: jax.Array


def _safe_max(m):
  """A max usable as a logsumexp shift: 0 where every entry was -inf."""
  return jnp.where(jnp.isfinite(m), m, 0.0)


def _lse_over_rows(x, axis_name):
  """logsumexp over axis 0 (the possibly sharded N axis). x: (N, K) -> (K,)."""
  m = _safe_max(coll.pmax(jnp.max(x, axis=0), axis_name))
  s = coll.psum(jnp.sum(jnp.exp(x - m), axis=0), axis_name)
  return m + jnp.log(s)


def _lse_over_cols(x):
  """logsumexp over axis 1 (K, always local). x: (N, K) -> (N,)."""
  m = _safe_max(jnp.max(x, axis=1))
  return m + jnp.log(jnp.sum(jnp.exp(x - m[:, None]), axis=1))


# ---------------------------------------------------------------------------
# Marginals and errors.
# ---------------------------------------------------------------------------
def _marginals(n_local, k, dtype, alpha, beta, axis_name):
  """Returns (a (N,), b (K,)) with sum(b) == sum(a) over the global batch."""
  if alpha is None:
    a = jnp.ones((n_local,), dtype)
  else:
    a = jnp.asarray(alpha, dtype)
  a_total = coll.psum(jnp.sum(a), axis_name)
  if beta is None:
    b = jnp.full((k,), 1.0 / k, dtype) * a_total
  else:
    b = jnp.asarray(beta, dtype)
    b = b * (a_total / jnp.sum(b))
  return a, b


def _errors(q, a, b, axis_name):
  """Relative L1 marginal errors of q. q: (N, K), a: (N,), b: (K,)."""
  a_total = coll.psum(jnp.sum(a), axis_name)
  row = coll.psum(jnp.sum(jnp.abs(jnp.sum(q, axis=1) - a)), axis_name) / a_total
  col = jnp.sum(jnp.abs(coll.psum(jnp.sum(q, axis=0), axis_name) - b)) / jnp.sum(b)
  return row, col


# ---------------------------------------------------------------------------
# Log-domain Sinkhorn.
# ---------------------------------------------------------------------------
def _log_loop(log_k, log_a, log_b, f, g, limit, tol, axis_name):
  """Runs at most ``limit`` log-domain iterations (col update, row update).

  Stops early once the column error of the current iterate (rows are exact
  after each row update) is <= tol; that error falls out of the column
  update's logsumexp for free.  Returns (f, g, iterations).
  """
  b = jnp.exp(log_b)
  b_total = jnp.sum(b)

  def cond(state):
    _, _, it, err = state
    return (it < limit) & (err > tol)

  def body(state):
    f, g, it, _ = state
    s = _lse_over_rows(log_k + f[:, None], axis_name)            # (K,)
    err = jnp.sum(jnp.abs(jnp.exp(g + s) - b)) / b_total        # of (f, g)
    g = log_b - s
    f = log_a - _lse_over_cols(log_k + g[None, :])
    # The error belongs to the previous iterate: count that one as converged.
    return f, g, it + 1, jnp.where(it == 0, jnp.inf, err)

  _, zero = coll.carry_zeros(log_k, axis_name)
  f, g, it, err = lax.while_loop(cond, body, (f, g, jnp.zeros((), jnp.int32),
                                              zero + jnp.inf))
  return f, g, it


# ---------------------------------------------------------------------------
# The released code's routine.
# ---------------------------------------------------------------------------
def _released(log_k, a, b, num_iters, axis_name):
  """SwAV-style normalisation passes in log space, as the released OT().

  Released order on Q (K x N): Q /= sum(Q); repeat: Q /= per-cluster sum;
  Q *= beta_k (or /K); Q /= per-sample sum; Q /= N; finally N * Q^T.
  Generalised here to any alpha (per-sample totals alpha_n / sum(alpha), final
  factor sum(alpha)); identical to the released code for alpha = 1 and beta a
  probability vector (or None).
  """
  a_total = coll.psum(jnp.sum(a), axis_name)
  log_a = jnp.log(a / a_total)
  log_b = jnp.log(b / jnp.sum(b))
  total = _lse_over_rows(log_k, axis_name)                         # (K,)
  m = _safe_max(jnp.max(total))
  log_q = log_k - (m + jnp.log(jnp.sum(jnp.exp(total - m))))

  def body(_, log_q):
    log_q = log_q - _lse_over_rows(log_q, axis_name)[None, :] + log_b[None, :]
    log_q = log_q - _lse_over_cols(log_q)[:, None] + log_a[:, None]
    return log_q

  log_q = lax.fori_loop(0, num_iters, body, log_q)
  return jnp.exp(log_q) * a_total


# ---------------------------------------------------------------------------
# Public entry point.
# ---------------------------------------------------------------------------
def _check_shapes(log_p, alpha, beta, log_prior):
  if log_p.ndim != 2:
    raise ValueError(
        f"sinkhorn.solve: log_p must be (N, K), got shape {log_p.shape}; "
        "for several problems wrap solve in jax.vmap.")
  n, k = log_p.shape
  if k < 1 or n < 1:
    raise ValueError(f"sinkhorn.solve: empty problem, log_p shape {log_p.shape}.")
  if alpha is not None and jnp.shape(alpha) != (n,):
    raise ValueError(f"sinkhorn.solve: alpha must have shape ({n},), got "
                     f"{jnp.shape(alpha)}.")
  if beta is not None and jnp.shape(beta) != (k,):
    raise ValueError(f"sinkhorn.solve: beta must have shape ({k},), got "
                     f"{jnp.shape(beta)}.")
  if log_prior is not None and jnp.shape(log_prior) != (n, k):
    raise ValueError(f"sinkhorn.solve: log_prior must have shape ({n}, {k}) "
                     f"like log_p, got {jnp.shape(log_prior)}.")


def _reject_nonpositive_marginals(fn):
  """Checks concrete alpha / beta eagerly: a zero (or negative, non-finite)
  entry is rejected, since a row or column without mass has log-marginal
  -inf, which the scaling iterations turn into 0/0.  Traced marginals (under
  jit / vmap) cannot be checked here; they must be positive too."""
  @functools.wraps(fn)
  def checked(log_p, alpha=None, beta=None, **kwargs):
    for name, m in (("alpha", alpha), ("beta", beta)):
      if m is None or isinstance(m, jax.core.Tracer):
        continue
      m = np.asarray(m)
      if m.size and not np.all(np.isfinite(m) & (m > 0)):
        bad = int(np.flatnonzero(~(np.isfinite(m) & (m > 0)))[0])
        raise ValueError(
            f"sinkhorn.solve: {name} must be finite and positive, got "
            f"{name}[{bad}] = {m.reshape(-1)[bad]}; drop the "
            f"{'rows' if name == 'alpha' else 'columns'} without mass before "
            "solving.")
    return fn(log_p, alpha, beta, **kwargs)
  return checked


@_reject_nonpositive_marginals
@functools.partial(
    jax.jit, static_argnames=("mode", "axis_name", "absorb_threshold"))
def solve(log_p: jax.Array,
          alpha: Optional[jax.Array] = None,
          beta: Optional[jax.Array] = None,
          *,
          eps: float = 20.0,
          log_prior: Optional[jax.Array] = None,
          num_iters: Optional[int] = None,
          tol: Optional[float] = None,
          max_iters: int = 1000,
          mode: str = "auto",
          axis_name: Optional[str] = None,
          absorb_threshold: float = 30.0) -> tuple[jax.Array, SinkhornInfo]:
  """Distribution-constrained pseudo-labels Q = diag(u) (Qhat * P^eps) diag(v).

  Args:
    log_p: (N, K) log-probabilities or logits (any per-row constant is
      irrelevant). With ``axis_name``, the local (N_local, K) block.
    alpha: (N,) positive row marginals (a concrete zero entry raises
      ValueError); None means ones (each pseudo-label is
      a distribution).
    beta: (K,) positive column marginals of any scale; rescaled to the total
      of alpha (the polytope is empty otherwise), so proportions suffice
      (Eq. 12's beta^R). None means equipartition N/K (Eq. 5).
    eps: sharpness; the kernel is P^eps (paper: 20).
    log_prior: optional (N, K) log Qhat of the KL prior (Eq. 13-15); any
      normalisation of Qhat is irrelevant.
    num_iters: fixed iteration count (for ``released``: its passes, default 3).
    tol: stop when the relative L1 column error is <= tol (rows are exact);
      used when num_iters is None, default 1e-5 then.
    max_iters: iteration cap with ``tol``.
    mode: "auto" | "scaling" | "log" | "released" (see module docstring).
    axis_name: mapped axis over which the N rows are split, or None.
    absorb_threshold: log-scale bound on the scalings before absorption.

  Returns:
    q: (N, K) float, rows summing to alpha.
    info: SinkhornInfo.
  """
  if mode not in MODES:
    raise ValueError(f"sinkhorn.solve: unknown mode {mode!r}; choose one of {MODES}.")
  _check_shapes(log_p, alpha, beta, log_prior)
  log_p = lax.stop_gradient(jnp.asarray(log_p))
  if not jnp.issubdtype(log_p.dtype, jnp.floating):
    log_p = log_p.astype(jnp.float32)
  dtype = log_p.dtype
  n_local, k = log_p.shape
  if alpha is not None:
    alpha = lax.stop_gradient(alpha)
  if beta is not None:
    beta = lax.stop_gradient(beta)
  a, b = _marginals(n_local, k, dtype, alpha, beta, axis_name)

  log_k = jnp.asarray(eps, dtype) * log_p
  if log_prior is not None:
    log_k = log_k + lax.stop_gradient(jnp.asarray(log_prior, dtype))

  false = jnp.zeros((), bool)
  if mode == "released":
    iters = 3 if num_iters is None else num_iters
    q = _released(log_k, a, b, iters, axis_name)
    row, col = _errors(q, a, b, axis_name)
    return q, SinkhornInfo(row, col, jnp.asarray(iters, jnp.int32), false, false)

  if num_iters is not None:
    limit = jnp.asarray(num_iters, jnp.int32)
    tol_v = jnp.asarray(-1.0, dtype)          # never met: run all iterations
  else:
    limit = jnp.asarray(max_iters, jnp.int32)
    tol_v = jnp.asarray(1e-5 if tol is None else tol, dtype)

  # Row-stabilise once (invariant to per-row constants in log P, and exact
  # near each row's max, where f32 would otherwise lose digits to
  # cancellation when log P is as large as -1e4 * eps); then f starts at 0.
  log_k = log_k - _safe_max(jnp.max(log_k, axis=1))[:, None]
  log_a, log_b = jnp.log(a), jnp.log(b)

  def log_solution(limit):
    f0, g0 = jnp.zeros_like(log_k[:, 0]), coll.carry_zeros(log_k, axis_name)[0]
    _, g, it = _log_loop(log_k, log_a, log_b, f0, g0, limit, tol_v, axis_name)
    # The last row update, written as a softmax so rows are exact to rounding.
    return a[:, None] * jax.nn.softmax(log_k + g[None, :], axis=1), it

  if mode == "log":
    q, it = log_solution(limit)
    fell_back = false
  else:
    g, it, broke = sinkhorn_scaling.scaling_loop(
        log_k, a, b, limit, tol_v, absorb_threshold, axis_name,
        stop_on_breakdown=(mode == "auto"))
    # The last row update, as a softmax: rows exact to rounding, no overflow.
    q = a[:, None] * jax.nn.softmax(log_k + g[None, :], axis=1)
    broke = broke | coll.any_device(~jnp.isfinite(q), axis_name)
    if mode == "auto":
      # lax.cond runs the log-domain solve only where the scaling path broke
      # down.  Under vmap the predicate is batched and cond becomes a select
      # of both branches; the fallback's loop limit is then 0 for the
      # problems that did not break, so it costs one pass, not a solve.
      q, it = lax.cond(broke,
                       lambda: log_solution(jnp.where(broke, limit, 0)),
                       lambda: (q, it))
      fell_back = broke
    else:
      fell_back = false

  row, col = _errors(q, a, b, axis_name)
  # Converged: the loop met tol (its check is on the iterate before the last
  # update, which f32 rounding can leave a hair worse) or the result does.
  met = (it < limit) | ((row <= tol_v) & (col <= tol_v))
  converged = (num_iters is None) & met
  return q, SinkhornInfo(row, col, it, jnp.asarray(converged), fell_back)



@dataclasses.dataclass(frozen=True)
class Solver:
  """The settings of a family of solves, built once and passed around.

  ``solver(log_p, alpha, beta, log_prior=..., axis_name=...)`` is ``solve``
  with these settings.  Frozen and hashable, so it can be a static argument.
  """
  mode: str = "auto"
  eps: float = 20.0
  num_iters: Optional[int] = None
  tol: Optional[float] = None
  max_iters: int = 1000
  absorb_threshold: float = 30.0

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"sinkhorn.Solver: unknown mode {self.mode!r}; choose "
                       f"one of {MODES}.")

  @classmethod
  def from_config(cls, labeling_cfg) -> "Solver":
    """From ``config.labeling``: ``released`` runs ``sinkhorn_iters`` passes,
    the iterative modes run to ``sinkhorn_tol`` (``sinkhorn_max_iters`` at
    most)."""
    if labeling_cfg.sinkhorn_mode == "released":
      return cls(mode="released", eps=labeling_cfg.eps,
                 num_iters=labeling_cfg.sinkhorn_iters)
    return cls(mode=labeling_cfg.sinkhorn_mode, eps=labeling_cfg.eps,
               tol=labeling_cfg.sinkhorn_tol,
               max_iters=labeling_cfg.sinkhorn_max_iters)

  def __call__(self, log_p, alpha=None, beta=None, *, log_prior=None,
               axis_name: Optional[str] = None):
    """(q (N, K), SinkhornInfo) of ``solve`` with these settings."""
    return solve(log_p, alpha, beta, eps=self.eps, log_prior=log_prior,
                 num_iters=self.num_iters, tol=self.tol,
                 max_iters=self.max_iters, mode=self.mode, axis_name=axis_name,
                 absorb_threshold=self.absorb_threshold)
