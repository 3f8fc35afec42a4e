"""Loss terms of CASE (paper Eq. 1, 2, 3, 11; released forms: notes §2.2).

All return scalars averaged over the local batch; targets are constants.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def video_ce(logits, labels):
  """L_V (Eq. 1): softmax CE against the normalised multi-hot label.

  Released form: y_hat = y / sum(y) + 1e-10 (the 1e-10 on every class).
  logits, labels: (B, C).
  """
  target = labels / jnp.sum(labels, axis=-1, keepdims=True) + 1e-10
  return -jnp.mean(jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def _balanced(pos_term, neg_term, q):
  """mean_b [sum_t q*pos / (sum_t q + 1e-7)] + mean_b [same for 1-q, neg]."""
  pos = jnp.sum(q * pos_term, axis=-1) / (jnp.sum(q, axis=-1) + 1e-7)
  neg = jnp.sum((1 - q) * neg_term, axis=-1) / (jnp.sum(1 - q, axis=-1) + 1e-7)
  return jnp.mean(pos) + jnp.mean(neg)


def generalized_bce(att, q, exponent=0.7):
  """L_A (Eq. 2): balanced generalized BCE, (1 - a^g)/g, as released (ASL).

  att: (B, T) in (0, 1); q: (B, T) in {0, 1}; exponent: gamma = 0.7.
  """
  pos = (1.0 - (att + 1e-7) ** exponent) / exponent
  neg = (1.0 - (1.0 - att + 1e-7) ** exponent) / exponent
  return _balanced(pos, neg, q)


def balanced_bce(att, q):
  """The traditional BCE (Table 9 without GBCE), balanced like L_A: the
  gamma -> 0 limit of ``generalized_bce``."""
  pos = -jnp.log(att + 1e-7)
  neg = -jnp.log(1.0 - att + 1e-7)
  return _balanced(pos, neg, q)


def soft_ce(targets, logits):
  """L_C (Eq. 3) and L_R (Eq. 11): -mean_n sum_k Q_nk log softmax(logits)_nk.

  The paper writes a sum over n; the released code averages (used here).
  targets, logits: (N, K).
  """
  return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))
