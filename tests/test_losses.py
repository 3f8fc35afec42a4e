"""Tests of case_jax.losses against the float64 loop oracles of case_reference
(notes §2.2 (b), (d), (f), (h); paper Eq. 1, 2, 3, 11)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from case_jax import losses
from tests import case_reference as ref

SEEDS = (0, 1, 2)


def _att_and_q(rng, b=3, t=24):
  att = rng.uniform(0.01, 0.99, size=(b, t)).astype(np.float32)
  q = (rng.random((b, t)) < 0.3).astype(np.float32)
  q[:, 0] = 1.0                       # every video has a positive and a negative
  q[:, 1] = 0.0
  return att, q


# ---------------------------------------------------------------------------
# L_V (Eq. 1; notes §2.2(b)).
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_video_ce_matches_loop_oracle(seed):
  rng = np.random.default_rng(seed)
  logits = (3.0 * rng.normal(size=(3, 5))).astype(np.float32)
  labels = ref.random_labels(rng, 3, 5)
  got = float(losses.video_ce(logits, labels))
  np.testing.assert_allclose(got, ref.video_ce(logits, labels), rtol=1e-5)


def test_video_ce_closed_values():
  # Uniform logits: -sum_c (y_c/|y| + 1e-10) log(1/C) = log C (1 + C 1e-10).
  labels = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]], np.float32)
  got = float(losses.video_ce(np.zeros((2, 5), np.float32), labels))
  np.testing.assert_allclose(got, math.log(5) * (1 + 5e-10), rtol=1e-6)
  # Two GT classes: the target is 1/2 on each, so a confident single-class
  # prediction costs ~ 0.5 * margin, not 0.
  logits = np.array([[20.0, 0, 0, 0, 0]], np.float32)
  got = float(losses.video_ce(logits, np.array([[1, 1, 0, 0, 0]], np.float32)))
  np.testing.assert_allclose(got, ref.video_ce(logits, [[1, 1, 0, 0, 0]]), rtol=1e-5)
  assert got > 9.0


def test_video_ce_gradient_is_softmax_minus_target():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(3, 5)).astype(np.float32)
  labels = ref.random_labels(rng, 3, 5)
  g = np.asarray(jax.grad(losses.video_ce)(jnp.asarray(logits), labels))
  y = labels / labels.sum(1, keepdims=True) + 1e-10
  want = (ref.softmax(logits) * y.sum(1, keepdims=True) - y) / 3
  np.testing.assert_allclose(g, want, atol=1e-6)


# ---------------------------------------------------------------------------
# L_A (Eq. 2; notes §2.2(d)).
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_generalized_bce_matches_loop_oracle(seed):
  rng = np.random.default_rng(seed)
  att, q = _att_and_q(rng)
  for gamma in (0.7, 0.3):
    got = float(losses.generalized_bce(att, q, gamma))
    np.testing.assert_allclose(got, ref.gce(att, q, gamma), rtol=1e-5)


def test_generalized_bce_default_exponent_is_0_7():
  rng = np.random.default_rng(4)
  att, q = _att_and_q(rng)
  np.testing.assert_allclose(float(losses.generalized_bce(att, q)),
                             ref.gce(att, q, 0.7), rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_balanced_bce_matches_loop_oracle(seed):
  rng = np.random.default_rng(seed)
  att, q = _att_and_q(rng)
  np.testing.assert_allclose(float(losses.balanced_bce(att, q)),
                             ref.balanced_bce(att, q), rtol=1e-5)


def test_generalized_bce_tends_to_balanced_bce():
  rng = np.random.default_rng(5)
  att, q = _att_and_q(rng)
  bce = float(losses.balanced_bce(att, q))
  gaps = [abs(float(losses.generalized_bce(att, q, g)) - bce) for g in (0.3, 0.03, 0.003)]
  assert gaps[0] > gaps[1] > gaps[2]
  assert gaps[2] < 3e-3 * bce
  # The oracle's small-gamma value agrees with its own BCE, too.
  np.testing.assert_allclose(ref.gce(att, q, 1e-6), ref.balanced_bce(att, q), rtol=1e-4)


def test_generalized_bce_closed_values():
  q = np.array([[1, 1, 0, 0, 0], [0, 1, 0, 1, 0]], np.float32)
  # Perfect attention: ~0 (only the 1e-7 offsets remain).
  assert abs(float(losses.generalized_bce(q, q))) < 1e-6
  assert abs(float(losses.balanced_bce(q, q))) < 1e-5
  # Worst attention: each balanced half is (1 - (1e-7)^g) / g.
  g = 0.7
  want = 2 * (1 - 1e-7 ** g) / g
  np.testing.assert_allclose(float(losses.generalized_bce(1 - q, q, g)), want, rtol=1e-5)
  # Constant attention 1/2: both halves (1 - 0.5^g) / g, whatever the labels.
  half = np.full_like(q, 0.5)
  np.testing.assert_allclose(float(losses.generalized_bce(half, q, g)),
                             2 * (1 - 0.5 ** g) / g, rtol=1e-5)
  # All-positive video: the empty negative half contributes 0, not nan.
  ones = np.ones((1, 6), np.float32)
  att = np.full((1, 6), 0.25, np.float32)
  np.testing.assert_allclose(float(losses.generalized_bce(att, ones, g)),
                             (1 - 0.25 ** g) / g, rtol=1e-5)


def test_balanced_halves_average_over_videos_not_snippets():
  """Eq. 2 as released: per-video balanced means, then a mean over videos
  (a video with few positives weighs as much as one with many)."""
  att = np.array([[0.9, 0.1, 0.3, 0.1], [0.2, 0.6, 0.4, 0.8]], np.float32)
  q = np.array([[1, 0, 0, 0], [1, 1, 1, 0]], np.float32)
  got = float(losses.generalized_bce(att, q))
  np.testing.assert_allclose(got, ref.gce(att, q), rtol=1e-5)
  pooled = (np.sum(q * (1 - (att + 1e-7) ** 0.7) / 0.7) / q.sum()
            + np.sum((1 - q) * (1 - (1 - att + 1e-7) ** 0.7) / 0.7) / (1 - q).sum())
  assert abs(got - pooled) > 1e-3


def test_generalized_bce_gradient_matches_analytic():
  rng = np.random.default_rng(6)
  att, q = _att_and_q(rng)
  g = 0.7
  grad = np.asarray(jax.grad(losses.generalized_bce)(jnp.asarray(att), q, g))
  a, qq = att.astype(np.float64), q.astype(np.float64)
  b = att.shape[0]
  npos = qq.sum(1, keepdims=True) + 1e-7
  nneg = (1 - qq).sum(1, keepdims=True) + 1e-7
  want = (-qq * (a + 1e-7) ** (g - 1) / npos
          + (1 - qq) * (1 - a + 1e-7) ** (g - 1) / nneg) / b
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-7)
  gb = np.asarray(jax.grad(losses.balanced_bce)(jnp.asarray(att), q))
  want_b = (-qq / (a + 1e-7) / npos + (1 - qq) / (1 - a + 1e-7) / nneg) / b
  np.testing.assert_allclose(gb, want_b, rtol=1e-4, atol=1e-7)


def test_attention_losses_gradients_finite_at_saturation():
  q = np.array([[1, 0, 1, 0]], np.float32)
  for att in (q, 1 - q, np.array([[1, 1, 0, 0]], np.float32)):
    for fn in (losses.generalized_bce, losses.balanced_bce):
      g = jax.grad(fn)(jnp.asarray(att), q)
      assert np.all(np.isfinite(np.asarray(g)))


# ---------------------------------------------------------------------------
# L_C / L_R soft CE (Eq. 3, 11; notes §2.2 (f), (h)).
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_soft_ce_matches_loop_oracle(seed):
  rng = np.random.default_rng(seed)
  logits = (10 * rng.uniform(-1, 1, size=(20, 6))).astype(np.float32)
  targets = rng.dirichlet(np.ones(6), size=20).astype(np.float32)
  np.testing.assert_allclose(float(losses.soft_ce(targets, logits)),
                             ref.soft_ce(targets, logits), rtol=1e-5)


def test_soft_ce_closed_values_and_gradient():
  rng = np.random.default_rng(7)
  logits = rng.normal(size=(8, 4)).astype(np.float32)
  p = ref.softmax(logits)
  # Target = prediction: the mean entropy.
  np.testing.assert_allclose(float(losses.soft_ce(p.astype(np.float32), logits)),
                             ref.entropy(p), rtol=1e-5)
  # Is a mean over rows, not a sum: duplicating the batch leaves it unchanged.
  t = rng.dirichlet(np.ones(4), size=8).astype(np.float32)
  one = float(losses.soft_ce(t, logits))
  two = float(losses.soft_ce(np.concatenate([t, t]), np.concatenate([logits, logits])))
  np.testing.assert_allclose(one, two, rtol=1e-6)
  # Gradient w.r.t. the logits: (softmax * sum_k q - q) / N; none to the targets
  # is required, but the logits gradient must be exact.
  g = np.asarray(jax.grad(losses.soft_ce, argnums=1)(jnp.asarray(t), jnp.asarray(logits)))
  np.testing.assert_allclose(g, (p * t.sum(1, keepdims=True) - t) / 8, atol=1e-6)
