"""model.streams: a one-stream CASE (RGB-only, for features extracted from
one's own videos) through the model, the objective, co-labeling and
inference.

The independent check: a one-stream model is what the two-stream code
computes when both streams hold the same outputs (every fusion 0.5 (a + a)
= a exactly; L_A, L_C, L_R then counted twice under the released stream
sum, once under "mean"), and the two-stream code is checked against the
float64 oracle of the released code in test_objective.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from case_jax import defaults, inference
from case_jax import model as model_lib
from case_jax.model import StreamOutputs
from case_jax.objective import ObjectiveSettings, case_objective
from tests import case_reference as ref

B, T, C, K, E = 3, 24, 5, 6, 8
FIELDS = ("cas", "att", "clu", "emb")


def _settings(**labeling):
  cfg = defaults.base_config()
  cfg.loss.stream_reduce = "mean"
  for key, val in labeling.items():
    cfg.labeling[key] = val
  return ObjectiveSettings.from_config(cfg)


def _raw(seed):
  rng = np.random.default_rng(seed)
  return ref.random_outputs(rng, B, T, C, K, E)["rgb"], ref.random_labels(rng, B, C)


def _out(raw, streams):
  one = StreamOutputs(*(jnp.asarray(raw[f]) for f in FIELDS))
  return {s: one for s in streams}


def test_parse_streams():
  assert model_lib.parse_streams("rgb,flow") == ("rgb", "flow")
  assert model_lib.parse_streams("flow, rgb") == ("rgb", "flow")
  assert model_lib.parse_streams("rgb") == ("rgb",)
  for bad in ("", "depth", "rgb,rgb", "rgb,audio"):
    with pytest.raises(ValueError, match="model.streams"):
      model_lib.parse_streams(bad)


@pytest.mark.parametrize("streams", ["rgb", "flow"])
def test_one_stream_model_has_only_its_parameters_and_ignores_the_other_input(streams):
  cfg = defaults.base_config()
  cfg.model.embed_dim, cfg.model.num_clusters, cfg.model.streams = E, K, streams
  model = model_lib.from_config(cfg.model, C)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, T, 16)), jnp.float32)
  rgb, flow = (x, None) if streams == "rgb" else (None, x)
  params = model.init(jax.random.PRNGKey(0), rgb, flow)["params"]
  assert set(params) == {streams}
  out = model.apply({"params": params}, rgb, flow)
  assert set(out) == {streams} and out[streams].cas.shape == (2, T, C)
  # The same parameters as the two-stream model's stream of that name.
  both = model_lib.CASEModel(num_classes=C, embed_dim=E, num_clusters=K)
  two = both.init(jax.random.PRNGKey(1), x, x)["params"]
  two[streams] = params[streams]
  np.testing.assert_array_equal(np.asarray(both.apply({"params": two}, x, x)[streams].cas),
                                np.asarray(out[streams].cas))


@pytest.mark.parametrize("seed", (0, 1))
@pytest.mark.parametrize("labeling", [
    {},                                                     # released co-labeling
    {"colabel_topk": False, "colabel_clusters": False, "colabel_cluster_cls": False},
    {"eps_on": "log_prob", "colabel_fuse": "probs", "rank": "rank"},
])
def test_one_stream_objective_equals_two_identical_streams(seed, labeling):
  raw, labels = _raw(seed)
  q_r_prev = np.random.default_rng(seed + 10).dirichlet([1, 1], size=K).astype(np.float32)
  st = _settings(**labeling)
  one = case_objective(_out(raw, ("rgb",)), labels, q_r_prev, st)
  two = case_objective(_out(raw, ("rgb", "flow")), labels, q_r_prev, st)
  for term in ("L_V", "L_A", "L_C", "L_R", "loss", "H_qc", "beta_fg", "mean_att"):
    np.testing.assert_allclose(float(one.metrics[term]), float(two.metrics[term]),
                               rtol=2e-5, atol=1e-7, err_msg=term)
  np.testing.assert_allclose(np.asarray(one.q_r), np.asarray(two.q_r), atol=1e-5)
  assert float(one.metrics["L_R"]) > 1e-3 and float(one.metrics["L_C"]) > 1e-3


def test_one_stream_objective_differs_from_another_stream_and_has_gradients():
  raw, labels = _raw(3)
  other, _ = _raw(4)
  q_r_prev = np.full((K, 2), 1 / K, np.float32)
  st = _settings()
  a = case_objective(_out(raw, ("rgb",)), labels, q_r_prev, st).metrics["loss"]
  b = case_objective(_out(other, ("rgb",)), labels, q_r_prev, st).metrics["loss"]
  assert abs(float(a) - float(b)) > 1e-3

  def loss(cas, att):
    out = {"rgb": StreamOutputs(cas, att, jnp.asarray(raw["clu"]), jnp.asarray(raw["emb"]))}
    return case_objective(out, labels, q_r_prev, st).grad_loss
  g_cas, g_att = jax.grad(loss, argnums=(0, 1))(jnp.asarray(raw["cas"]), jnp.asarray(raw["att"]))
  assert np.isfinite(g_cas).all() and np.abs(g_cas).max() > 0
  assert np.isfinite(g_att).all() and np.abs(g_att).max() > 0


@pytest.mark.parametrize("how", inference.FG_SCORES)
def test_one_stream_inference_equals_two_identical_streams(how):
  raw, _ = _raw(5)
  q_r = np.random.default_rng(6).dirichlet([1, 1], size=K).astype(np.float32)
  one, two = _out(raw, ("rgb",)), _out(raw, ("rgb", "flow"))
  s1 = inference.snippet_class_scores(one, q_r, omega=0.2, fg_score=how)
  s2 = inference.snippet_class_scores(two, q_r, omega=0.2, fg_score=how)
  np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2))
  np.testing.assert_array_equal(np.asarray(inference.video_scores(one, s1, 3)),
                                np.asarray(inference.video_scores(two, s2, 3)))
  # And against a direct computation from the one stream's outputs.
  probs = np.exp(raw["cas"] - raw["cas"].max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  p_c = np.exp(raw["clu"] - raw["clu"].max(-1, keepdims=True))
  p_c /= p_c.sum(-1, keepdims=True)
  fg = {"attention": raw["att"], "cluster": p_c @ q_r[:, 0],
        "fused": 0.5 * raw["att"] + 0.5 * (p_c @ q_r[:, 0])}[how]
  np.testing.assert_allclose(np.asarray(s1), 0.2 * probs + 0.8 * fg[..., None],
                             rtol=1e-5, atol=1e-6)


def test_rgb_variant():
  c = defaults.load_config("synthetic", "rgb")
  assert c.model.streams == "rgb"
  assert defaults.load_config("synthetic").model.streams == "rgb,flow"
  both = defaults.load_config("synthetic:rgb+runlocal")
  assert both.model.streams == "rgb" and both.num_steps <= 20
  with pytest.raises(ValueError, match="unknown config variant 'rbg'"):
    defaults.load_config("synthetic:rbg")


def test_a_config_json_from_before_model_streams_is_the_same_model(tmp_path):
  from case_jax import fileio, workdir
  cfg = defaults.load_config("synthetic")
  saved = cfg.to_dict()
  del saved["model"]["streams"]
  fileio.write_json(tmp_path / "config.json", saved)
  assert workdir.trained_diff(str(tmp_path), cfg) == []
  rgb = defaults.load_config("synthetic:rgb")
  assert workdir.trained_diff(str(tmp_path), rgb) == [("model.streams", None, "rgb")]
  assert workdir.config_from_json(saved).model.streams == "rgb,flow"
