"""Tests of case_jax.labeling against the float64 oracles of case_reference
(notes §2.2 (a), (c), (e)-(h); paper Eq. 4-24, appendix E.1-E.2, Table 4)."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from case_jax import defaults
from case_jax import labeling as lab
from case_jax.sinkhorn import Solver
from tests import case_reference as ref
from tests.sinkhorn_reference import released_ot_numpy

B, T, C, K, E = 3, 24, 5, 6, 8
N = B * T


def _cfg(**kw):
  cfg = defaults.base_config().labeling
  for key, val in kw.items():
    setattr(cfg, key, val)
  return cfg


def _solver(**kw):
  return Solver.from_config(_cfg(**kw))


def _cos_logits(rng, n=N, k=K, temp=10.0):
  x = rng.normal(size=(n, 16))
  w = rng.normal(size=(k, 16))
  return (temp * ref.l2_normalize_rows(x) @ ref.l2_normalize_rows(w).T).astype(np.float32)


def _log_normalised(log_w):
  log_w = np.asarray(log_w, np.float64)
  m = log_w.max()
  return log_w - m - np.log(np.exp(log_w - m).sum())


# ---------------------------------------------------------------------------
# MIL: calibration, top-k, video logits, Q^A (Eq. 18-19, 24; notes (a), (c)).
# ---------------------------------------------------------------------------
def test_calibrated_cas_is_convex_mix_of_softmax_and_attention():
  rng = np.random.default_rng(0)
  out = ref.random_outputs(rng)["rgb"]
  sm = ref.softmax(out["cas"])
  for w in (0.25, 1 / 3):
    got = np.asarray(lab.calibrated_cas(out["cas"], out["att"], w))
    want = np.empty_like(sm)
    for b, t, c in itertools.product(range(B), range(T), range(C)):
      want[b, t, c] = w * sm[b, t, c] + (1 - w) * out["att"][b, t]
    np.testing.assert_allclose(got, want, atol=1e-6)
  got = np.asarray(lab.calibrated_cas(out["cas"], out["att"], 0.25, use_attention=False))
  np.testing.assert_allclose(got, sm, atol=1e-6)


@pytest.mark.parametrize("seed", (0, 1, 2))
def test_released_selection_score_is_fused_calibration_with_w_one_third(seed):
  rng = np.random.default_rng(seed)
  out = ref.random_outputs(rng)
  cas = {s: out[s]["cas"] for s in ref.STREAMS}
  att = {s: out[s]["att"] for s in ref.STREAMS}
  released = ref.released_selection_score(cas, att)
  fused = np.asarray(lab.fuse(lab.calibrated_cas(cas["rgb"], att["rgb"], 1 / 3),
                              lab.calibrated_cas(cas["flow"], att["flow"], 1 / 3)))
  np.testing.assert_allclose(fused, released, atol=1e-6)
  k = T // 8
  assert ref.topk_margin(released, k) > 1e-5
  np.testing.assert_array_equal(np.asarray(lab.topk_indices(jnp.asarray(fused), k)),
                                ref.topk_sorted(released, k))
  # The default config's omega is this value.
  assert abs(defaults.base_config().labeling.mil_omega - 1 / 3) < 1e-12


@pytest.mark.parametrize("seed", (0, 1, 2))
@pytest.mark.parametrize("k", (1, 3, 7))
def test_topk_matches_sorted_selection(seed, k):
  rng = np.random.default_rng(seed)
  scores = rng.permutation(B * T * C).reshape(B, T, C).astype(np.float32)  # distinct
  idx = np.asarray(lab.topk_indices(jnp.asarray(scores), k))
  assert idx.shape == (B, k, C)
  np.testing.assert_array_equal(idx, ref.topk_sorted(scores, k))


def test_topk_solves_eq18_by_subset_enumeration():
  """Eq. 18: Gamma_{b,c} maximises the summed calibrated score over |Gamma| = k."""
  rng = np.random.default_rng(3)
  t, k = 8, 3
  scores = rng.normal(size=(2, t, 2)).astype(np.float32)
  idx = np.asarray(lab.topk_indices(jnp.asarray(scores), k))
  for b, c in itertools.product(range(2), range(2)):
    best = max(itertools.combinations(range(t), k),
               key=lambda sub: sum(float(scores[b, i, c]) for i in sub))
    assert set(idx[b, :, c].tolist()) == set(best)


def test_topk_indices_carry_no_gradient():
  rng = np.random.default_rng(4)
  cas = jnp.asarray(rng.normal(size=(B, T, C)).astype(np.float32))

  def f(x):
    return jnp.sum(lab.video_logits(cas, lab.topk_indices(x, 3)) ** 2)
  g = jax.grad(f)(cas)
  np.testing.assert_array_equal(np.asarray(g), 0.0)


@pytest.mark.parametrize("seed", (0, 1))
def test_video_logits_matches_loop(seed):
  rng = np.random.default_rng(seed)
  cas = rng.normal(size=(B, T, C)).astype(np.float32)
  idx = np.stack([np.stack([rng.choice(T, 4, replace=False) for _ in range(C)], -1)
                  for _ in range(B)]).astype(np.int32)
  np.testing.assert_allclose(np.asarray(lab.video_logits(cas, idx)),
                             ref.video_logits(cas, idx), atol=1e-6)


def test_video_logits_gradient_is_selection_average():
  rng = np.random.default_rng(5)
  cas = rng.normal(size=(B, T, C)).astype(np.float32)
  idx = ref.topk_sorted(cas, 3).astype(np.int32)
  g = np.asarray(jax.grad(lambda x: jnp.sum(lab.video_logits(x, idx)))(jnp.asarray(cas)))
  want = np.zeros((B, T, C))
  for b, c in itertools.product(range(B), range(C)):
    for j in range(3):
      want[b, idx[b, j, c], c] += 1 / 3
  np.testing.assert_allclose(g, want, atol=1e-7)


@pytest.mark.parametrize("seed", (0, 1, 2))
def test_foreground_labels_union_over_gt_classes(seed):
  rng = np.random.default_rng(seed)
  scores = rng.normal(size=(B, T, C)).astype(np.float32)
  idx = np.asarray(lab.topk_indices(jnp.asarray(scores), 3))
  labels = ref.random_labels(rng, B, C)
  labels[0] = 0
  labels[0, :3] = 1                            # a video with three classes
  got = np.asarray(lab.foreground_labels(idx, labels, T))
  want = ref.pseudo_fg(idx, labels, T)
  np.testing.assert_array_equal(got, want)
  # Between k and k * (#classes) positives per video; negatives classes ignored.
  for b in range(B):
    assert 3 <= got[b].sum() <= 3 * labels[b].sum()


def test_foreground_labels_ignore_non_gt_classes():
  idx = np.zeros((1, 2, 3), np.int32)
  idx[0, :, 0] = [0, 1]
  idx[0, :, 1] = [2, 3]
  idx[0, :, 2] = [1, 4]
  labels = np.array([[1, 0, 1]], np.float32)
  np.testing.assert_array_equal(np.asarray(lab.foreground_labels(idx, labels, 6)),
                                [[1, 1, 0, 0, 1, 0]])


# ---------------------------------------------------------------------------
# OT inputs (notes §2.2(f); paper Eq. 7, 20, 22).
# ---------------------------------------------------------------------------
def test_ot_log_p_and_fusion():
  rng = np.random.default_rng(6)
  a, b = _cos_logits(rng), _cos_logits(rng)
  np.testing.assert_allclose(np.asarray(lab.ot_log_p(a, 10.0, "cosine")), a / 10.0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(lab.ot_log_p(a, 10.0, "log_prob")),
                             ref.log_softmax(a), atol=1e-5)
  np.testing.assert_allclose(np.asarray(lab.fused_log_p(a, b, 10.0, "cosine", "logits")),
                             (0.5 * a.astype(np.float64) + 0.5 * b) / 10.0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(lab.fused_log_p(a, b, 10.0, "log_prob", "logits")),
                             ref.log_softmax(0.5 * a.astype(np.float64) + 0.5 * b), atol=1e-5)
  np.testing.assert_allclose(np.asarray(lab.fused_log_p(a, b, 10.0, "log_prob", "probs")),
                             np.log(0.5 * ref.softmax(a) + 0.5 * ref.softmax(b)), atol=1e-5)
  with pytest.raises(ValueError):
    lab.fused_log_p(a, b, 10.0, "cosine", "probs")
  with pytest.raises(ValueError):
    lab.ot_log_p(a, 10.0, "bogus")


# ---------------------------------------------------------------------------
# DDCL prior (notes §2.2(e); paper Eq. 13).
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ("argsort", "rank", "prob"))
@pytest.mark.parametrize("sigma", (10.0, 0.3))
def test_ddcl_prior_matches_loop_oracle(mode, sigma):
  rng = np.random.default_rng(7)
  p_a = rng.uniform(0, 1, N).astype(np.float32)
  q_fg = rng.uniform(0, 1, K).astype(np.float32)
  got = np.asarray(lab.ddcl_log_prior(p_a, q_fg, sigma, mode))
  assert got.shape == (N, K)
  want = ref.ddcl_prior(p_a, q_fg, sigma, mode)
  np.testing.assert_allclose(_log_normalised(got), np.log(want), atol=2e-5)
  # The returned value is exactly -D^2 / (2 sigma^2) (no constant): <= 0,
  # and its max over entries is 0 only where D = 0.
  assert got.max() <= 0.0
  d = np.sqrt(-2 * sigma ** 2 * got.astype(np.float64))
  assert d.max() <= 1.0 + 1e-5


def test_ddcl_argsort_quirk_differs_from_rank_but_same_multiset():
  rng = np.random.default_rng(8)
  p_a = rng.uniform(0, 1, N).astype(np.float32)
  q_fg = rng.uniform(0, 1, K).astype(np.float32)
  srt = np.asarray(lab.ddcl_log_prior(p_a, q_fg, 0.3, "argsort"))
  rnk = np.asarray(lab.ddcl_log_prior(p_a, q_fg, 0.3, "rank"))
  assert np.abs(srt - rnk).max() > 1e-2
  # Both use a permutation of {0..N-1}: the same rows, in another order.
  key = lambda m: sorted(map(tuple, np.round(m, 6).tolist()))
  assert key(srt) == key(rnk)
  # With 'rank', the most attended snippet has (r+1)/N = 1/N, the least 1.
  top, bottom = int(np.argmax(p_a)), int(np.argmin(p_a))
  np.testing.assert_allclose(rnk[top], -(1 / N - (1 - q_fg)) ** 2 / (2 * 0.09), rtol=1e-5)
  np.testing.assert_allclose(rnk[bottom], -(1 - (1 - q_fg)) ** 2 / (2 * 0.09), rtol=1e-5)


def test_ddcl_rank_prefers_attended_snippets_for_foreground_clusters():
  """Paper §3.2.3: high-foreground snippets prefer clusters with high Q^R_{:,0}."""
  p_a = np.linspace(0.01, 0.99, N).astype(np.float32)
  q_fg = np.array([0.95, 0.05, 0.5, 0.9, 0.1, 0.3], np.float32)
  lp = np.asarray(lab.ddcl_log_prior(p_a, q_fg, 0.3, "rank"))
  assert lp[-1, 0] > lp[-1, 1] and lp[0, 1] > lp[0, 0]


# ---------------------------------------------------------------------------
# Snippet-clustering labels Q^C (notes §2.2(f); Table 4).
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", (0, 1))
@pytest.mark.parametrize("sigma", (10.0, 0.3))
def test_released_snippet_clustering_target(seed, sigma):
  """Q^C = OT(0.5 clu_rgb + 0.5 clu_flow, T) of the released code, default config."""
  rng = np.random.default_rng(seed)
  clu_r, clu_f = _cos_logits(rng), _cos_logits(rng)
  att = rng.uniform(0, 1, size=(2, N)).astype(np.float32)
  p_a = (0.5 * att[0] + 0.5 * att[1]).astype(np.float32)
  q_r_prev = rng.dirichlet(np.ones(2), size=K).astype(np.float32)
  cfg = _cfg(sigma=sigma)
  assert cfg.eps_on == "cosine" and cfg.sinkhorn_mode == "released" and cfg.dcl
  prior = ref.ddcl_prior(p_a, q_r_prev[:, 0], sigma, "argsort")
  fused = 0.5 * clu_r.astype(np.float64) + 0.5 * clu_f
  want = released_ot_numpy(fused, prior=prior, eps=20.0, temp=10.0, iters=3)

  log_p = lab.fused_log_p(clu_r, clu_f, 10.0, cfg.eps_on, cfg.colabel_fuse)
  log_prior = lab.ddcl_log_prior(p_a, q_r_prev[:, 0], cfg.sigma, cfg.rank)
  q, info = lab.cluster_labels(log_p, lab.fuse(clu_r, clu_f), Solver.from_config(cfg),
                               log_prior=log_prior)
  np.testing.assert_allclose(np.asarray(q), want, atol=1e-5)
  assert info is not None
  if sigma < 1:   # the prior matters here: leaving it out changes Q^C
    q0, _ = lab.cluster_labels(log_p, lab.fuse(clu_r, clu_f), Solver.from_config(cfg))
    assert np.abs(np.asarray(q0) - want).max() > 1e-3


def test_pl_and_hard_variants():
  """Table 4: PL = softmax of the prediction (no constraint), Hard = argmax one-hot."""
  rng = np.random.default_rng(9)
  logits = _cos_logits(rng)
  log_p = lab.ot_log_p(logits, 10.0, "cosine")
  soft_dcl = released_ot_numpy(logits, eps=20.0, temp=10.0)

  q, info = lab.cluster_labels(log_p, logits, _solver(), dcl=False, hard=False)
  assert info is None
  np.testing.assert_allclose(np.asarray(q), ref.softmax(logits), atol=1e-6)

  q, _ = lab.cluster_labels(log_p, logits, _solver(), dcl=False, hard=True)
  np.testing.assert_array_equal(np.asarray(q), ref.one_hot_argmax(ref.softmax(logits)))

  q, _ = lab.cluster_labels(log_p, logits, _solver(), dcl=True, hard=True)
  np.testing.assert_array_equal(np.asarray(q), ref.one_hot_argmax(soft_dcl))

  q, _ = lab.cluster_labels(log_p, logits, _solver(), dcl=True, hard=False)
  np.testing.assert_allclose(np.asarray(q), soft_dcl, atol=1e-5)
  # DCL spreads the mass over clusters more evenly than PL does.
  col = lambda m: np.asarray(m).sum(0) / len(m)
  assert (ref.entropy(col(soft_dcl)[None]) > ref.entropy(col(ref.softmax(logits))[None]))


# ---------------------------------------------------------------------------
# Cluster classification (notes §2.2 (g), (h); paper Eq. 8-12, 22).
# ---------------------------------------------------------------------------
def test_prototypes_match_oracle():
  rng = np.random.default_rng(10)
  w = rng.dirichlet(np.ones(K), size=N).astype(np.float32)
  emb = np.maximum(rng.normal(size=(N, E)), 0).astype(np.float32)
  got = np.asarray(lab.prototypes(w, emb))
  np.testing.assert_allclose(got, ref.prototypes(w, emb), atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
  # Eq. 8's 1/sum(Q) normalisation is irrelevant after the L2 normalisation.
  mean_form = (w.T.astype(np.float64) @ emb) / w.sum(0)[:, None]
  np.testing.assert_allclose(got, ref.l2_normalize_rows(mean_form), atol=1e-6)
  # An empty column gives a zero prototype (as F.normalize), not nan.
  w[:, 2] = 0
  got = np.asarray(lab.prototypes(w, emb))
  np.testing.assert_array_equal(got[2], 0.0)
  assert np.all(np.isfinite(got))


@pytest.mark.parametrize("seed", (0, 1))
def test_cluster_cls_logits_match_oracle(seed):
  rng = np.random.default_rng(seed)
  q_c = rng.dirichlet(np.ones(K), size=N).astype(np.float32)
  q_a = (rng.random(N) < 0.3).astype(np.float32)
  emb = np.maximum(rng.normal(size=(N, E)), 0).astype(np.float32)
  got = np.asarray(lab.cluster_cls_logits(q_c, q_a, emb, 10.0))
  assert got.shape == (K, 2)
  np.testing.assert_allclose(got, ref.cluster_cls_logits(q_c, q_a, emb, 10.0), atol=1e-5)
  assert np.abs(got).max() <= 10.0 + 1e-4          # rho * cosine
  # Column 0 is the foreground prototype: swapping Q^A swaps the columns.
  swapped = np.asarray(lab.cluster_cls_logits(q_c, 1 - q_a, emb, 10.0))
  np.testing.assert_allclose(swapped, got[:, ::-1], atol=1e-5)


def test_cluster_cls_logits_gradient_finite_with_empty_cluster():
  rng = np.random.default_rng(11)
  scores = rng.normal(size=(N, K))
  scores[:, 3] = -np.inf                           # no snippet in cluster 3
  q_c = ref.one_hot_argmax(scores).astype(np.float32)
  assert q_c[:, 3].sum() == 0 and np.all(q_c.sum(0)[[0, 1, 2, 4, 5]] > 0)
  q_a = (rng.random(N) < 0.3).astype(np.float32)
  emb = np.maximum(rng.normal(size=(N, E)), 0).astype(np.float32)

  def loss(e):
    return jnp.sum(jax.nn.log_softmax(lab.cluster_cls_logits(q_c, q_a, e, 10.0)))
  g = np.asarray(jax.grad(loss)(jnp.asarray(emb)))
  assert np.all(np.isfinite(g))


def test_beta_r():
  q_a = np.array([1, 0, 0, 1, 0, 0, 0, 0], np.float32)
  np.testing.assert_allclose(np.asarray(lab.beta_r(q_a)), [0.25, 0.75], atol=1e-7)
  np.testing.assert_allclose(np.asarray(lab.beta_r(q_a, "uniform")), [0.5, 0.5])
  with pytest.raises(ValueError):
    lab.beta_r(q_a, "bogus")


@pytest.mark.parametrize("seed", (0, 1, 2))
def test_cluster_cls_labels_are_released_ot_with_beta(seed):
  rng = np.random.default_rng(seed)
  cls_r = (10 * rng.uniform(-1, 1, size=(K, 2))).astype(np.float32)
  cls_f = (10 * rng.uniform(-1, 1, size=(K, 2))).astype(np.float32)
  q_a = (rng.random(N) < 0.3).astype(np.float32)
  beta = np.asarray(lab.beta_r(q_a))
  np.testing.assert_allclose(beta, [q_a.mean(), 1 - q_a.mean()], atol=1e-7)
  cfg = _cfg()
  log_p = lab.fused_log_p(cls_r, cls_f, 10.0, cfg.eps_on, cfg.colabel_fuse)
  q_r, _ = lab.cluster_cls_labels(log_p, beta, Solver.from_config(cfg))
  want = released_ot_numpy(0.5 * cls_r.astype(np.float64) + 0.5 * cls_f,
                           beta=[q_a.mean(), 1 - q_a.mean()], eps=20.0, temp=10.0)
  np.testing.assert_allclose(np.asarray(q_r), want, atol=1e-5)
  np.testing.assert_allclose(np.asarray(q_r).sum(1), 1.0, atol=1e-6)


def test_initial_q_r_and_entropy():
  np.testing.assert_array_equal(np.asarray(lab.initial_q_r(16)), np.full((16, 2), 1 / 16))
  np.testing.assert_array_equal(np.asarray(lab.initial_q_r(4, "half")), np.full((4, 2), 0.5))
  with pytest.raises(ValueError):
    lab.initial_q_r(4, "bogus")
  rng = np.random.default_rng(12)
  p = rng.dirichlet(np.ones(K), size=10)
  p[0] = np.eye(K)[1]                              # 0 log 0 = 0
  np.testing.assert_allclose(float(lab.entropy(p.astype(np.float32))), ref.entropy(p),
                             rtol=1e-5)
  np.testing.assert_allclose(float(lab.entropy(np.full((3, K), 1 / K, np.float32))),
                             math.log(K), rtol=1e-6)


def test_qc_and_qr_marginals_with_the_iterative_solver():
  """Q^C rows sum to 1 and columns to N/K^C (Eq. 4-5); Q^R columns follow
  beta^R (Eq. 11-12), to the solver tolerance."""
  from case_jax import defaults
  cfg = defaults.base_config().labeling
  cfg.sinkhorn_mode = "auto"
  cfg.sinkhorn_tol = 1e-6
  cfg.sinkhorn_max_iters = 5000
  rng = np.random.default_rng(42)
  n, k = 240, 6
  logits = (10 * rng.uniform(-1, 1, size=(n, k))).astype(np.float32)
  log_p = lab.ot_log_p(logits, 10.0, "cosine")
  q_c, info = lab.cluster_labels(log_p, logits, Solver.from_config(cfg))
  q_c = np.asarray(q_c, np.float64)
  np.testing.assert_allclose(q_c.sum(1), 1.0, atol=1e-5)
  np.testing.assert_allclose(q_c.sum(0), n / k, rtol=1e-5)
  cls = (10 * rng.uniform(-1, 1, size=(k, 2))).astype(np.float32)
  beta = np.array([0.3, 0.7], np.float32)
  q_r, _ = lab.cluster_cls_labels(lab.ot_log_p(cls, 10.0, "cosine"), beta,
                                  Solver.from_config(cfg))
  q_r = np.asarray(q_r, np.float64)
  np.testing.assert_allclose(q_r.sum(1), 1.0, atol=1e-5)
  np.testing.assert_allclose(q_r.sum(0), k * beta, rtol=1e-5)
