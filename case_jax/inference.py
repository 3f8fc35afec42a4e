"""Inference: snippet-level scores from a trained state (paper §3.3, Eq. 17).

This module holds the device part; proposals, OIC scoring and NMS (issue #4)
build on ``foreground_scores``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from case_jax import model as model_lib

FG_SCORES = ("attention", "cluster", "fused")


def foreground_scores(out, q_r, how: str = "fused"):
  """Snippet foreground probability (Table 5 columns).

  attention: P^A = mean of the two streams' attention;
  cluster:   P-hat^A = P^C Q^R[:, 0] (Eq. 17), P^C the streams' mean softmax;
  fused:     P-ddot^A = 0.5 P^A + 0.5 P-hat^A (the paper's CAT).
  out: per-stream outputs (B, T, ...); q_r: (K, 2).  Returns (B, T).
  """
  p_a = 0.5 * (out["rgb"].att + out["flow"].att)
  if how == "attention":
    return p_a
  p_c = 0.5 * (jax.nn.softmax(out["rgb"].clu, -1) + jax.nn.softmax(out["flow"].clu, -1))
  p_hat = p_c @ q_r[:, 0]
  if how == "cluster":
    return p_hat
  if how == "fused":
    return 0.5 * p_a + 0.5 * p_hat
  raise ValueError(f"inference.fg_score must be one of {FG_SCORES}, got {how!r}")


@functools.partial(jax.jit, static_argnums=(0,))
def forward(model, params, rgb, flow):
  """Model outputs with the prototypes normalised first, as released."""
  return model.apply({"params": model_lib.normalize_prototypes(params)}, rgb, flow)


def dataset_fb_accuracy(dataset, model, params, q_r, *, num_segments: int,
                        how: str = "fused", batch_size: int = 32) -> float:
  """F&B snippet accuracy of ``how``-scores over a dataset (uniform sampling)."""
  from case_jax import data as data_lib
  from case_jax.evaluation import fb_accuracy
  hits = total = 0.0
  for batch in data_lib.eval_batches(dataset, num_segments=num_segments,
                                     batch_size=batch_size, pad_last=True):
    out = forward(model, params, batch["rgb"], batch["flow"])
    scores = foreground_scores(out, q_r, how)
    n = float(((batch["fg_mask"] >= 0) & batch["valid"][:, None]).sum())
    hits += fb_accuracy(scores, batch["fg_mask"], batch["valid"]) * n
    total += n
  return hits / max(total, 1.0)
