"""Pseudo-labels of CASE: MIL top-k, F&B labels, snippet clustering, DDCL
prior, prototypes and cluster classification (paper §3.1-3.2, E.1-E.2; notes
§2.2).  Pure functions; every label is ``stop_gradient``-ed.

Shapes: B videos, T snippets, C = K^V classes, K = K^C clusters, E embedding
width, N = B*T snippets of the *local* batch.  With ``axis_name`` the batch is
split over devices and every statistic that the paper takes over the batch
(Sinkhorn column sums, beta^R, prototype sums, DDCL ranks) is global.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from case_jax import collectives as coll
from case_jax.norms import l2_normalize
from case_jax.sinkhorn import Solver

sg = lax.stop_gradient


def fuse(a, b):
  """Two-stream fusion 0.5*a + 0.5*b (Eq. 20, 22, 24; P^A, P^C, scores).

  Written 0.5*(a + b): under jit XLA compiles 0.5*a + 0.5*b to this same
  (a + b)*0.5, so the jitted callers that spelled it either way and the
  eager ones that spelled it 0.5*(a + b) keep their bits (eagerly the two
  spellings differ only where a half underflows to a subnormal).
  """
  return 0.5 * (a + b)


def fuse_streams(values):
  """``fuse`` over a model's streams: both -> fuse(rgb, flow); a one-stream
  model's fusion is that stream's own value."""
  values = list(values)
  if len(values) == 1:
    return values[0]
  if len(values) != 2:
    raise ValueError(f"fuse_streams takes one or two streams, got {len(values)}")
  return fuse(values[0], values[1])


# ---------------------------------------------------------------------------
# MIL baseline (Eq. 18-19, 24).
# ---------------------------------------------------------------------------
def calibrated_cas(cas, att, omega, use_attention=True):
  """P-hat^V = w * softmax(cas) + (1 - w) * P^A.  (B,T,C), (B,T) -> (B,T,C)."""
  probs = jax.nn.softmax(cas, axis=-1)
  if not use_attention:
    return probs
  return omega * probs + (1.0 - omega) * att[..., None]


def topk_indices(scores, k):
  """Indices of the k highest-scoring snippets per video and class (Eq. 18).

  scores: (B, T, C) -> (B, k, C) int32 (no gradient).
  """
  _, idx = lax.top_k(jnp.swapaxes(sg(scores), 1, 2), k)
  return jnp.swapaxes(idx, 1, 2)


def video_logits(cas, idx):
  """Mean of the T-CAS logits over the selected snippets (Eq. 19, before
  softmax).  cas (B,T,C), idx (B,k,C) -> (B,C)."""
  return jnp.take_along_axis(cas, idx, axis=1).mean(axis=1)


def foreground_labels(idx, labels, num_segments):
  """Q^A: union over the video's classes of their top-k snippets.

  idx (B,k,C), labels (B,C) multi-hot -> (B,T) in {0, 1}.
  """
  b, k, c = idx.shape
  hit = jnp.zeros((b, num_segments, c), jnp.float32)
  hit = hit.at[jnp.arange(b)[:, None, None], idx,
               jnp.arange(c)[None, None, :]].set(1.0)
  return sg(jnp.max(hit * (labels[:, None, :] > 0), axis=-1))


# ---------------------------------------------------------------------------
# Snippet clustering (Eq. 3-7) and its dynamic prior (Eq. 13-15).
# ---------------------------------------------------------------------------
def ot_log_p(logits, temp, eps_on):
  """What the OT kernel exponentiates: kernel = exp(eps * ot_log_p).

  "cosine" (released): logits / temp = cos, so the kernel is exp(eps * cos).
  "log_prob" (paper Eq. 7): log_softmax(logits), the kernel (P^C)^eps.
  """
  if eps_on == "cosine":
    return logits / temp
  if eps_on == "log_prob":
    return jax.nn.log_softmax(logits, axis=-1)
  raise ValueError(f"labeling.eps_on must be 'cosine' or 'log_prob', got {eps_on!r}")


def fused_log_p(logits_a, logits_b, temp, eps_on, fuse_how):
  """Co-labeled OT input from two streams' logits (Eq. 20 / 22)."""
  if fuse_how == "logits":
    return ot_log_p(fuse(logits_a, logits_b), temp, eps_on)
  if fuse_how == "probs":
    if eps_on != "log_prob":
      raise ValueError("labeling.colabel_fuse='probs' fuses probabilities, which "
                       "needs labeling.eps_on='log_prob' (the paper's pairing).")
    p = fuse(jax.nn.softmax(logits_a, -1), jax.nn.softmax(logits_b, -1))
    return jnp.log(jnp.maximum(p, 1e-30))
  raise ValueError(f"labeling.colabel_fuse must be 'logits' or 'probs', got {fuse_how!r}")


def ddcl_log_prior(p_a, q_r_fg, sigma, rank="argsort", axis_name=None):
  """log Q-hat^C of Eq. 13 (up to a constant, which Sinkhorn ignores).

  p_a: (N_local,) snippet foreground probabilities (fused attention).
  q_r_fg: (K,) foreground column of Q^R (the previous step's, as released).
  rank: "argsort": the released code's D = |(r + 1)/N - (1 - q_k)| with
    r = argsort(-p_a), the sort permutation (not a rank; notes §2.2(e));
    "rank": the same formula with the true descending rank;
    "prob": D = |p_a - q_k| (paper appendix F.2 alternative).
  Returns (N_local, K): -D^2 / (2 sigma^2).
  """
  p_a = sg(p_a)
  q_r_fg = sg(q_r_fg)
  n_local = p_a.shape[0]
  if rank == "prob":
    dist = jnp.abs(p_a[:, None] - q_r_fg[None, :])
  elif rank in ("argsort", "rank"):
    p_all = coll.all_gather(p_a, axis_name)                # ranks are over the batch
    n = p_all.shape[0]
    order = jnp.argsort(-p_all)
    if rank == "argsort":
      r = order
    else:
      r = jnp.zeros_like(order).at[order].set(jnp.arange(n, dtype=order.dtype))
    r = coll.local_slice(r.astype(jnp.float32), n_local, axis_name)
    dist = jnp.abs((r[:, None] + 1.0) / n - (1.0 - q_r_fg[None, :]))
  else:
    raise ValueError(f"labeling.rank must be 'argsort', 'rank' or 'prob', got {rank!r}")
  return -dist ** 2 / (2.0 * sigma ** 2)


def _solve(solver, log_p, beta=None, log_prior=None, axis_name=None):
  q, info = solver(log_p, beta=beta, log_prior=log_prior, axis_name=axis_name)
  return sg(q), info


def _harden(q):
  return jax.nn.one_hot(jnp.argmax(q, axis=-1), q.shape[-1], dtype=q.dtype)


def cluster_labels(log_p, logits, solver: Solver, *, dcl: bool = True,
                   hard: bool = False, log_prior=None,
                   axis_name: Optional[str] = None):
  """Q^C for N snippets (Eq. 4-7 / 14-15, Table 4 variants).

  log_p: (N_local, K) OT input; logits: (N_local, K) cluster logits used by
  the unconstrained "PL" variant (dcl=False); hard: one-hot argmax labels;
  log_prior: optional (N_local, K) DDCL log prior.
  Returns (q (N_local, K), sinkhorn info | None).
  """
  if dcl:
    q, info = _solve(solver, log_p, log_prior=log_prior, axis_name=axis_name)
  else:  # "PL": the prediction itself, no distribution constraint
    q, info = sg(jax.nn.softmax(logits, axis=-1)), None
  return (_harden(q) if hard else q), info


# ---------------------------------------------------------------------------
# Cluster classification (Eq. 8-12, 22-23).
# ---------------------------------------------------------------------------
def prototypes(weights, emb, axis_name=None):
  """Unit prototypes normalize(weights^T emb) over the global batch (Eq. 8-9;
  the 1/sum(weights) of the paper vanishes under the normalisation).

  weights: (N_local, M) constants; emb: (N_local, E) with gradient.
  Returns (M, E).  Across devices the value is the global sum, while the
  gradient flows only through this device's share (no collective is
  differentiated, so pmap and shard_map agree; see train.py).
  """
  local = weights.T @ emb
  total = local + sg(coll.psum(local, axis_name) - local)
  return l2_normalize(total)


def cluster_cls_logits(q_c, q_a, emb, rho, axis_name=None):
  """rho * cos(Z^C_k, [Z^F, Z^B]): (K, 2) logits of P^R (Eq. 10).

  q_c: (N_local, K); q_a: (N_local,) in {0,1}; emb: (N_local, E).
  """
  z_c = prototypes(q_c, emb, axis_name)
  fb = jnp.stack([q_a, 1.0 - q_a], axis=1)
  z_f = prototypes(fb, emb, axis_name)
  return rho * z_c @ z_f.T


def beta_r(q_a, how="empirical", axis_name=None):
  """Eq. 12: [fg fraction, bg fraction] of Q^A over the global batch, or
  [0.5, 0.5] (Table 5).  q_a: (N_local,) -> (2,)."""
  if how == "uniform":
    return jnp.array([0.5, 0.5], jnp.float32)
  if how != "empirical":
    raise ValueError(f"labeling.beta_r must be 'empirical' or 'uniform', got {how!r}")
  fg = coll.psum(jnp.sum(q_a), axis_name) / coll.psum(q_a.shape[0], axis_name)
  fg = jnp.clip(fg, 1e-6, 1.0 - 1e-6)
  return sg(jnp.stack([fg, 1.0 - fg]))


def cluster_cls_labels(log_p, beta, solver: Solver):
  """Q^R (K, 2) by Sinkhorn with column marginal beta^R (Eq. 11-12).

  log_p: (K, 2); beta: (2,).  Returns (q (K, 2), sinkhorn info)."""
  return _solve(solver, log_p, beta=beta)


def initial_q_r(num_clusters, how="uniform_all"):
  """Q^R before the first step: released (K, 2) filled with 1/K; or 0.5."""
  if how == "uniform_all":
    return jnp.full((num_clusters, 2), 1.0 / num_clusters, jnp.float32)
  if how == "half":
    return jnp.full((num_clusters, 2), 0.5, jnp.float32)
  raise ValueError(f"labeling.prior_qr_init must be 'uniform_all' or 'half', got {how!r}")


def entropy(p, axis=-1):
  """Mean Shannon entropy (nats) of distributions along ``axis``."""
  return -jnp.mean(jnp.sum(p * jnp.log(jnp.maximum(p, 1e-30)), axis=axis))
