"""Independent float64 numpy transcriptions used as test oracles.

Written from the equations and the description of the released code, not from
case_jax.sinkhorn, so that a bug there cannot hide in the oracle too.
"""
import numpy as np


def sinkhorn_scaling_f64(log_p, alpha, beta, eps, log_prior=None, iters=50):
  """Plain scaling-domain Sinkhorn in float64: col update then row update.

  Starts from u = exp(-rowmax) like the solver (a per-row constant is
  absorbed into u, so this start is mathematically the same iteration).
  Returns Q (N, K) with rows summing to alpha.
  """
  log_k = eps * np.asarray(log_p, np.float64)
  if log_prior is not None:
    log_k = log_k + log_prior
  log_k = log_k - log_k.max(axis=1, keepdims=True)
  kern = np.exp(log_k)
  a = np.asarray(alpha, np.float64)
  b = np.asarray(beta, np.float64)
  b = b * a.sum() / b.sum()
  u = np.ones_like(a)
  v = np.ones_like(b)
  for _ in range(iters):
    v = b / (kern.T @ u)
    u = a / (kern @ v)
  return u[:, None] * kern * v[None, :]


def released_ot_numpy(out, prior=1.0, beta=None, eps=20.0, temp=10.0, iters=3):
  """The released code's OT() as described in official_code_notes §2.2(f).

  out: (B_, K) logits; the kernel is exp(out / temp * eps) * prior.
  Q is held as (K, B_); returns B_ * Q^T of shape (B_, K).
  """
  out = np.asarray(out, np.float64)
  q = (np.exp(out / temp * eps) * prior).T
  k, n = q.shape
  q = q / q.sum()
  for _ in range(iters):
    q = q / q.sum(axis=1, keepdims=True)
    if beta is None:
      q = q / k
    else:
      q = q * np.asarray(beta, np.float64)[:, None]
    q = q / q.sum(axis=0, keepdims=True)
    q = q / n
  return n * q.T
