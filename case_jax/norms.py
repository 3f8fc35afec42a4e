"""L2 normalisation, the one home of the formula (cosine heads, prototypes)."""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def l2_normalize(x, eps=1e-12):
  """x / max(||x||, eps) along the last axis, with a finite gradient at 0.

  ``jnp.linalg.norm`` has a NaN gradient at a zero vector (an empty cluster,
  a snippet whose ReLU embedding is all zero); like torch's F.normalize the
  gradient there is taken as zero.  (model.normalize_prototypes keeps the
  released x / max(||x||, eps): same value, but other last bits.)
  """
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  return x * lax.rsqrt(jnp.maximum(sq, eps * eps))
