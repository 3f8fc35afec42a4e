"""Snippet-level diagnostics on the host (numpy), beside inference: the F&B
accuracy of the paper's Table 2 ("ACC") and the clustering entropies of
Table 4.  inference.SnippetStats accumulates them over a detection pass.

Shapes: B videos, T snippets, K clusters, N snippets in all.
"""
from __future__ import annotations

import numpy as np


def fb_accuracy(scores, fg_mask, valid=None, threshold: float = 0.5) -> float:
  """Binary F&B accuracy of snippets (the paper's Table 2 "ACC").

  scores: (B, T) foreground probabilities; fg_mask: (B, T) ground truth in
  {0, 1}, or -1 where unknown; valid: optional (B,) bool for padded batches.
  """
  scores = np.asarray(scores, np.float64)
  fg_mask = np.asarray(fg_mask)
  known = fg_mask >= 0
  if valid is not None:
    known &= np.asarray(valid, bool)[:, None]
  hits = ((scores > threshold) == (fg_mask > 0)) & known
  return float(hits.sum() / max(known.sum(), 1))


def _row_entropy(p: np.ndarray) -> np.ndarray:
  """(..., K) probabilities -> (...) entropies in nats, with 0 log 0 = 0."""
  logp = np.log(np.where(p > 0, p, 1.0))
  return -(p * logp).sum(-1)


def clustering_entropies(p_c, mask=None) -> tuple[float, float]:
  """Entropies of the snippet-to-cluster assignment P^C (Table 4), in nats.

  p_c: (N, K) or (..., K) cluster probabilities per snippet (rows sum to 1);
  mask: optional bool array of p_c's leading shape, True for snippets to use
  (padded frames False).

  Returns ``(H(P^C), H(mean P^C))``: the mean over snippets of the row
  entropy (low = confident assignments) and the entropy of the mean row
  (high = clusters used evenly).  Both lie in [0, log K].
  """
  p = np.asarray(p_c, np.float64)
  if p.ndim < 2:
    raise ValueError(f"snippet_metrics.clustering_entropies: p_c must be (N, K), "
                     f"got shape {p.shape}")
  if mask is not None:
    p = p[np.asarray(mask, bool)]
  p = p.reshape(-1, p.shape[-1])
  if p.shape[0] == 0:
    raise ValueError("snippet_metrics.clustering_entropies: no snippets (empty "
                     "p_c or an all-False mask)")
  sums = p.sum(-1)
  if not np.all(np.isfinite(p)) or p.min() < 0 or np.abs(sums - 1).max() > 1e-4:
    raise ValueError(
        "snippet_metrics.clustering_entropies: rows of p_c must be probability "
        f"distributions over the K clusters (non-negative, summing to 1); got "
        f"row sums in [{sums.min():.6g}, {sums.max():.6g}]. Apply a softmax "
        "over the cluster axis first.")
  return float(_row_entropy(p).mean()), float(_row_entropy(p.mean(0)))
