"""Device-side inference scores against the released formulas (notes §3)."""
import numpy as np
import pytest

from case_jax import inference
from case_jax.model import StreamOutputs


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def random_out(rng, b=2, t=40, c=5, k=6, e=8):
  def stream():
    return StreamOutputs(cas=rng.normal(size=(b, t, c)).astype(np.float32),
                         att=rng.uniform(size=(b, t)).astype(np.float32),
                         clu=(10 * rng.uniform(-1, 1, size=(b, t, k))).astype(np.float32),
                         emb=rng.normal(size=(b, t, e)).astype(np.float32))
  return {"rgb": stream(), "flow": stream()}


def test_released_five_term_fusion_is_omega_one_fifth_with_cat():
  rng = np.random.default_rng(0)
  out = random_out(rng)
  q_r = rng.dirichlet([1, 1], size=6).astype(np.float32)
  f, r = out["flow"], out["rgb"]
  pt = [softmax(s.clu.astype(np.float64)) @ q_r[:, 0] for s in (f, r)]
  released = (0.5 * softmax(f.cas) + 0.5 * softmax(r.cas) + f.att[..., None]
              + r.att[..., None] + pt[0][..., None] + pt[1][..., None]) / 5
  ours = inference.snippet_class_scores(out, q_r, omega=0.2, fg_score="fused")
  np.testing.assert_allclose(np.asarray(ours), released, atol=1e-6)


def test_without_cat_it_is_the_three_term_fusion():
  rng = np.random.default_rng(1)
  out = random_out(rng)
  f, r = out["flow"], out["rgb"]
  released = (0.5 * softmax(f.cas) + 0.5 * softmax(r.cas) + f.att[..., None]
              + r.att[..., None]) / 3
  ours = inference.snippet_class_scores(out, np.zeros((6, 2), np.float32),
                                        omega=1 / 3, fg_score="attention")
  np.testing.assert_allclose(np.asarray(ours), released, atol=1e-6)


def test_eq17_cluster_score_and_fused():
  rng = np.random.default_rng(2)
  out = random_out(rng)
  q_r = rng.dirichlet([1, 1], size=6).astype(np.float32)
  p_c = 0.5 * (softmax(out["rgb"].clu.astype(np.float64)) + softmax(out["flow"].clu))
  p_hat = np.einsum("btk,k->bt", p_c, q_r[:, 0])
  p_a = 0.5 * (out["rgb"].att + out["flow"].att)
  np.testing.assert_allclose(np.asarray(inference.foreground_scores(out, q_r, "cluster")),
                             p_hat, atol=1e-6)
  np.testing.assert_allclose(np.asarray(inference.foreground_scores(out, q_r, "fused")),
                             0.5 * p_a + 0.5 * p_hat, atol=1e-6)
  with pytest.raises(ValueError, match="fg_score"):
    inference.foreground_scores(out, q_r, "nope")


def test_video_scores_follow_the_released_recipe():
  rng = np.random.default_rng(3)
  out = random_out(rng, t=40)
  q_r = rng.dirichlet([1, 1], size=6).astype(np.float32)
  s = np.asarray(inference.snippet_class_scores(out, q_r, omega=0.2, fg_score="fused"))
  k = 40 // 8
  got = np.asarray(inference.video_scores(out, s, k))
  b, t, c = s.shape
  want = np.zeros((b, c))
  for i in range(b):
    tops = [np.argsort(-s[i, :, j], kind="stable")[:k] for j in range(c)]
    lr = np.array([out["rgb"].cas[i][tops[j], j].mean() for j in range(c)])
    lf = np.array([out["flow"].cas[i][tops[j], j].mean() for j in range(c)])
    want[i] = 0.5 * softmax(lr) + 0.5 * softmax(lf)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_inference_omega_defaults():
  import ml_collections
  c = ml_collections.ConfigDict({"omega": None, "cat": True})
  assert inference.inference_omega(c) == pytest.approx(0.2)
  c.cat = False
  assert inference.inference_omega(c) == pytest.approx(1 / 3)
