"""Evaluation on the host (numpy): F&B snippet accuracy and clustering
diagnostics.  The detection mAP of the official protocol arrives with issue #4.
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
