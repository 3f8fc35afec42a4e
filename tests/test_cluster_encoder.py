"""model.cluster_encoder: the clusters read the attention's encoder
("shared", released and paper) or one of their own ("separate", an
ablation of that sharing).  Checked by what each output depends on."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from case_jax import defaults, errors
from case_jax import model as model_lib

B, T, D, C, K, E = 2, 12, 16, 4, 5, 8


def _model(how):
  cfg = defaults.base_config()
  cfg.model.embed_dim, cfg.model.num_clusters = E, K
  cfg.model.cluster_encoder = how
  return model_lib.from_config(cfg.model, C)


def _x():
  rng = np.random.default_rng(0)
  return (jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32),
          jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32))


def _bumped(params, stream, layer):
  """params with every leaf of params[stream][layer] moved by 0.5."""
  out = jax.tree_util.tree_map(lambda a: a, params)
  out[stream] = dict(out[stream])
  out[stream][layer] = jax.tree_util.tree_map(lambda a: a + 0.5,
                                              params[stream][layer])
  return out


def test_shared_is_the_released_model():
  assert defaults.base_config().model.cluster_encoder == "shared"
  rgb, flow = _x()
  shared = _model("shared")
  params = shared.init(jax.random.PRNGKey(0), rgb, flow)["params"]
  assert "clu_encoder" not in params["rgb"]
  plain = model_lib.CASEModel(num_classes=C, embed_dim=E, num_clusters=K)
  a = shared.apply({"params": params}, rgb, flow)
  b = plain.apply({"params": params}, rgb, flow)
  for s in ("rgb", "flow"):
    for f in a[s]._fields:
      np.testing.assert_array_equal(np.asarray(getattr(a[s], f)),
                                    np.asarray(getattr(b[s], f)))
  # Shared: moving the attention's encoder moves the clusters too.
  moved = shared.apply({"params": _bumped(params, "rgb", "att_encoder")}, rgb, flow)
  assert not np.allclose(np.asarray(moved["rgb"].clu), np.asarray(a["rgb"].clu))


def test_separate_encoder_decouples_attention_and_clusters():
  rgb, flow = _x()
  sep = _model("separate")
  params = sep.init(jax.random.PRNGKey(0), rgb, flow)["params"]
  assert {"att_encoder", "clu_encoder"} <= set(params["rgb"])
  base = sep.apply({"params": params}, rgb, flow)
  # The attention's encoder moves P^A only; the cluster encoder moves the
  # cluster logits and Z only; the CAS depends on neither.
  att_moved = sep.apply({"params": _bumped(params, "rgb", "att_encoder")}, rgb, flow)
  clu_moved = sep.apply({"params": _bumped(params, "rgb", "clu_encoder")}, rgb, flow)
  same = lambda a, b: np.array_equal(np.asarray(a), np.asarray(b))
  assert not same(att_moved["rgb"].att, base["rgb"].att)
  assert same(att_moved["rgb"].clu, base["rgb"].clu)
  assert same(att_moved["rgb"].emb, base["rgb"].emb)
  assert same(clu_moved["rgb"].att, base["rgb"].att)
  assert not same(clu_moved["rgb"].clu, base["rgb"].clu)
  assert same(clu_moved["rgb"].cas, base["rgb"].cas)
  # Z is the cluster encoder's: relu(x W + b) by hand.
  w = np.asarray(params["rgb"]["clu_encoder"]["kernel"])
  bias = np.asarray(params["rgb"]["clu_encoder"]["bias"])
  np.testing.assert_allclose(np.asarray(base["rgb"].emb),
                             np.maximum(np.asarray(rgb) @ w + bias, 0),
                             rtol=1e-5, atol=1e-5)


def test_unknown_cluster_encoder_is_refused():
  rgb, flow = _x()
  with pytest.raises(ValueError, match="cluster_encoder"):
    _model("tied").init(jax.random.PRNGKey(0), rgb, flow)


@pytest.mark.parametrize("key,value", [("cluster_encoder", "tied"),
                                       ("init", "xavier"), ("dtype", "fp16")])
def test_a_bad_model_choice_is_a_config_error_naming_the_key(key, value):
  cfg = defaults.base_config()
  cfg.model[key] = value
  with pytest.raises(errors.ConfigError, match=f"model.{key} must be one of"):
    model_lib.from_config(cfg.model, C)
