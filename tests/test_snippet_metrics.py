"""case_jax.snippet_metrics: F&B accuracy (Table 2) and clustering
entropies (Table 4)."""
import numpy as np
import pytest

from case_jax import snippet_metrics as sm


def test_fb_accuracy_counts_known_valid_snippets_only():
  scores = np.array([[0.9, 0.2, 0.6, 0.5], [0.9, 0.9, 0.9, 0.9]])
  fg = np.array([[1, 0, 0, -1], [0, 0, 0, 0]])
  # Row 0: hit, hit, miss, unknown; 0.5 is not > 0.5 (background).
  assert sm.fb_accuracy(scores, fg, valid=[True, False]) == pytest.approx(2 / 3)
  assert sm.fb_accuracy(scores, fg) == pytest.approx(2 / 7)
  assert sm.fb_accuracy(scores, fg, threshold=0.95) == pytest.approx(6 / 7)
  assert sm.fb_accuracy(scores, np.full((2, 4), -1)) == 0.0   # nothing known


def test_clustering_entropies():
  k = 5
  h, h_mean = sm.clustering_entropies(np.full((7, k), 1 / k))
  assert h == pytest.approx(np.log(k)) and h_mean == pytest.approx(np.log(k))
  one_hot = np.eye(k)[np.arange(10) % k]                  # confident, balanced
  assert sm.clustering_entropies(one_hot) == pytest.approx((0.0, np.log(k)))
  collapsed = np.eye(k)[np.zeros(10, int)]               # everything in one
  assert sm.clustering_entropies(collapsed) == pytest.approx((0.0, 0.0))
  p = np.array([[0.5, 0.5, 0], [1, 0, 0]])
  h, h_mean = sm.clustering_entropies(p)
  assert h == pytest.approx(np.log(2) / 2)
  assert h_mean == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
  batched = np.stack([p, np.full((2, 3), 1 / 3)])         # (B, T, K), mask pad
  assert sm.clustering_entropies(batched, mask=[[1, 1], [0, 0]]) == pytest.approx((h, h_mean))
  with pytest.raises(ValueError, match="softmax"):
    sm.clustering_entropies(np.ones((3, 4)))
  with pytest.raises(ValueError, match="no snippets"):
    sm.clustering_entropies(p, mask=[0, 0])
  with pytest.raises(ValueError, match=r"\(N, K\)"):
    sm.clustering_entropies(np.ones(3))
