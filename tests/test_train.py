"""Train step, data parallelism, optimiser, checkpoints and the loop."""
import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from case_jax import defaults, model as model_lib, placement, train
from case_jax.data.synthetic import write_synthetic_thumos


def tiny_config(**over):
  c = defaults.base_config()
  c.data.dataset = "synthetic"
  c.data.num_segments = 32
  c.model.embed_dim = 16
  c.model.num_clusters = 6
  c.batch_size = 8
  c.log_every = 5
  c.checkpoint_every = 5
  return defaults.set_dotted(c, over)


def random_batch(rng, b=8, t=32, d=12, c=5):
  labels = np.zeros((b, c), np.float32)
  labels[np.arange(b), rng.integers(0, c, b)] = 1
  labels[0, (np.argmax(labels[0]) + 1) % c] = 1      # one multi-label video
  fg = (rng.uniform(size=(b, t)) < 0.3).astype(np.float32)
  return {"rgb": rng.normal(size=(b, t, d)).astype(np.float32),
          "flow": rng.normal(size=(b, t, d)).astype(np.float32),
          "labels": labels, "fg_mask": fg}


def setup(cfg, d=12, c=5):
  model = model_lib.from_config(cfg.model, c)
  tx = train.make_optimizer(cfg.optim)
  state = train.create_train_state(cfg, model, tx, rgb_dim=d, flow_dim=d)
  return model, tx, state


def run_parallel(cfg, batches, devices, how):
  model, tx, state = setup(cfg)
  step = train.parallel_step(cfg, devices, how)
  rstate = placement.replicate(state, devices)
  for batch in batches:
    rstate, metrics = step(rstate, placement.shard_batch(batch, devices))
    jax.block_until_ready(metrics)           # sync every step (simulated devices)
  return placement.unreplicate(rstate), jax.tree.map(lambda x: float(x[0]), metrics)


def assert_trees_close(a, b, atol):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("mode", ["released", "auto"])
def test_one_four_devices_pmap_and_shard_map_agree(mode):
  if len(jax.devices()) < 4:
    pytest.skip("needs 4 simulated devices (tests/conftest.py)")
  cfg = tiny_config(**{"labeling.sinkhorn_mode": mode})
  rng = np.random.default_rng(0)
  batches = [random_batch(rng) for _ in range(3)]
  one, m1 = run_parallel(cfg, batches, jax.devices()[:1], "pmap")
  four, m4 = run_parallel(cfg, batches, jax.devices()[:4], "pmap")
  four_sm, m4s = run_parallel(cfg, batches, jax.devices()[:4], "shard_map")
  assert_trees_close(four.params, one.params, atol=2e-5)
  assert_trees_close(four_sm.params, four.params, atol=1e-6)
  np.testing.assert_allclose(four.q_r, one.q_r, atol=1e-5)
  for key in ("loss", "L_V", "L_A", "L_C", "L_R", "fb_acc", "H_qc", "pa_max",
              "pa_min", "qr_fg_max", "qr_fg_min"):
    assert m4[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-5), key
    assert m4s[key] == pytest.approx(m4[key], rel=1e-5, abs=1e-6), key
  assert int(four.step) == 3


def _device_counts_worker(out_path):
  """Run in a subprocess with 8 simulated devices: three steps of the same
  global batches on 1, 2, 4 and 8 devices; saves params, Q^R and metrics."""
  cfg = tiny_config()                      # global batch 8: divisible by 8
  rng = np.random.default_rng(0)
  batches = [random_batch(rng) for _ in range(3)]
  out = {}
  for n in (1, 2, 4, 8):
    state, metrics = run_parallel(cfg, batches, jax.devices()[:n], "pmap")
    for i, leaf in enumerate(jax.tree.leaves((state.params, state.q_r))):
      out[f"n{n}_leaf{i}"] = np.asarray(leaf)
    for key in ("loss", "L_C", "L_R", "H_qc", "qr_fg_max"):
      out[f"n{n}_{key}"] = np.asarray(metrics[key])
  np.savez(out_path, **out)


def test_one_two_four_eight_devices_give_the_same_step(tmp_path):
  """Issue #6 §1 at every device count it names (8 needs its own process:
  the device count is fixed when jax starts)."""
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = str(tmp_path / "counts.npz")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8",
             PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(
      [sys.executable, "-c", "import sys; from tests.test_train import "
       "_device_counts_worker as w; w(sys.argv[1])", out],
      cwd=repo, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = np.load(out)
  leaves = sorted({k.split("_", 1)[1] for k in got.files if k.startswith("n1_leaf")})
  assert len(leaves) > 10
  for n in (2, 4, 8):
    for name in leaves:
      np.testing.assert_allclose(got[f"n{n}_{name}"], got[f"n1_{name}"], atol=1e-5,
                                 rtol=0, err_msg=f"{n} devices, {name}")
    for key in ("loss", "L_C", "L_R", "H_qc", "qr_fg_max"):
      np.testing.assert_allclose(got[f"n{n}_{key}"], got[f"n1_{key}"], rtol=1e-4,
                                 atol=1e-5, err_msg=f"{n} devices, {key}")


def test_step_metrics_are_finite_and_complete():
  cfg = tiny_config()
  _, metrics = run_parallel(cfg, [random_batch(np.random.default_rng(1))],
                            jax.devices()[:1], "pmap")
  for key in ("loss", "L_V", "L_A", "L_C", "L_R", "H_qc", "H_qr", "mean_att",
              "pseudo_fg", "fb_acc", "beta_fg", "grad_norm", "pa_max", "pa_min",
              "qr_fg_max", "qr_fg_mean", "qr_fg_min"):
    assert np.isfinite(metrics[key]), key
  assert 0 <= metrics["fb_acc"] <= 1


def test_coupled_l2_adam_matches_a_hand_written_update():
  """PyTorch Adam(weight_decay): g' = g + wd*w; first step w -= lr * g'/(|g'|+eps)."""
  cfg = tiny_config()
  tx = train.make_optimizer(cfg.optim)
  w = jnp.array([0.5, -2.0, 3.0])
  g = jnp.array([0.1, 0.0, -1e-3])
  updates, _ = tx.update(g, tx.init(w), w)
  g2 = np.asarray(g) + 5e-4 * np.asarray(w)
  m_hat = g2        # (1 - b1) g / (1 - b1)
  v_hat = g2 ** 2
  expected = -1e-4 * m_hat / (np.sqrt(v_hat) + 1e-8)
  np.testing.assert_allclose(np.asarray(updates), expected, rtol=1e-5)
  # The decoupled option differs (AdamW).
  cfg.optim.decay = "decoupled"
  tx2 = train.make_optimizer(cfg.optim)
  u2, _ = tx2.update(g, tx2.init(w), w)
  assert not np.allclose(np.asarray(u2), expected)


def test_prototypes_are_normalised_before_the_step_like_released():
  cfg = tiny_config()
  model, tx, state = setup(cfg)
  params = model_lib.normalize_prototypes(state.params)
  for s in ("rgb", "flow"):
    w = np.asarray(params[s]["prototypes"])
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(params[s]["att_encoder"]["kernel"]),
                                  np.asarray(state.params[s]["att_encoder"]["kernel"]))
  # One step: Adam's update is applied to the normalised prototypes.
  step = train.make_step_fn(cfg, axis_name=None)
  new, _ = jax.jit(step)(state, random_batch(np.random.default_rng(2)))
  for s in ("rgb", "flow"):
    moved = np.asarray(new.params[s]["prototypes"]) - np.asarray(params[s]["prototypes"])
    assert np.abs(moved).max() < 2e-4          # a single lr=1e-4 Adam step


def test_pytorch_default_init_bounds():
  cfg = tiny_config()
  _, _, state = setup(cfg, d=12)
  enc = state.params["rgb"]["cas_encoder"]
  bound = 1 / np.sqrt(12)
  for leaf in (enc["kernel"], enc["bias"]):
    assert np.abs(np.asarray(leaf)).max() <= bound
  assert np.abs(np.asarray(enc["bias"])).max() > 0   # not Flax's zero bias
  cls = np.asarray(state.params["rgb"]["classifier"]["kernel"])
  assert np.abs(cls).max() <= 1 / np.sqrt(16)
  assert np.std(np.asarray(enc["kernel"])) == pytest.approx(bound / np.sqrt(3), rel=0.15)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("synthetic"))
  write_synthetic_thumos(root, num_train=24, num_test=8, num_classes=4,
                         feature_dim=12, seed=3)
  return root


def _train(cfg, workdir, root):
  cfg.data.root = root
  return train.train_and_evaluate(cfg, workdir, devices=jax.devices()[:1],
                     stream=open(os.devnull, "w"))


def test_resume_equals_uninterrupted_run(tiny_data, tmp_path):
  cfg = tiny_config(num_steps=20)
  straight = _train(cfg, str(tmp_path / "a"), tiny_data)
  first = _train(tiny_config(num_steps=10), str(tmp_path / "b"), tiny_data)
  assert int(first["state"].step) == 10
  resumed = _train(tiny_config(num_steps=20), str(tmp_path / "b"), tiny_data)
  assert int(resumed["state"].step) == 20
  assert_trees_close(resumed["state"].params, straight["state"].params, atol=1e-6)
  np.testing.assert_allclose(resumed["state"].q_r, straight["state"].q_r, atol=1e-6)
  assert_trees_close(resumed["state"].opt_state, straight["state"].opt_state, atol=1e-6)
  lines = [json.loads(l) for l in open(tmp_path / "b" / "metrics.jsonl")]
  assert [l["step"] for l in lines if "loss" in l] == [5, 10, 15, 20]
  # Each run ends with a test-split evaluation (the data have a test split).
  assert [l["step"] for l in lines if "mAP" in l] == [10, 20]


def test_same_seed_same_run_other_seed_differs(tiny_data, tmp_path):
  a = _train(tiny_config(num_steps=3), str(tmp_path / "a"), tiny_data)
  b = _train(tiny_config(num_steps=3), str(tmp_path / "b"), tiny_data)
  c = _train(tiny_config(num_steps=3, seed=2), str(tmp_path / "c"), tiny_data)
  assert_trees_close(a["state"].params, b["state"].params, atol=0)
  diff = np.abs(np.asarray(a["state"].params["rgb"]["attention"]["kernel"])
                - np.asarray(c["state"].params["rgb"]["attention"]["kernel"])).max()
  assert diff > 1e-3


def test_training_without_a_test_split_finishes(tiny_data, tmp_path):
  """A train split alone (no test videos): training, checkpoints and the
  training-curve plots still come out; no evaluation is attempted."""
  from case_jax.data import open_dataset
  cfg = tiny_config(num_steps=4)
  train_set = open_dataset(tiny_data, "train", cfg.data.layout)
  out = io.StringIO()
  summary = train.train_and_evaluate(cfg, str(tmp_path), train_set=train_set,
                        devices=jax.devices()[:1], stream=out)
  assert int(summary["state"].step) == 4 and "eval" not in summary
  assert os.path.isdir(tmp_path / "checkpoints" / "4")
  assert not (tmp_path / "eval").exists()
  assert (tmp_path / "plots" / "training_curves.png").stat().st_size > 0
  assert "plots not written" not in out.getvalue()


def test_missing_data_root_names_the_fix(tmp_path):
  cfg = tiny_config()
  cfg.data.dataset = "thumos14"
  with pytest.raises(ValueError, match="--config.data.root"):
    train.train_and_evaluate(cfg, str(tmp_path))


def test_temporal_kernel_three_mixes_neighbours():
  """The paper's "temporal convolution" variant (model.kernel_size = 3)."""
  cfg = tiny_config(**{"model.kernel_size": 3})
  model, _, state = setup(cfg, d=12)
  assert state.params["rgb"]["att_encoder"]["kernel"].shape == (3, 12, 16)
  x = np.zeros((1, 10, 12), np.float32)
  x2 = x.copy()
  x2[0, 5] = 1.0                          # perturb one snippet
  a = model.apply({"params": state.params}, x, x)["rgb"].att[0]
  b = model.apply({"params": state.params}, x2, x)["rgb"].att[0]
  changed = np.flatnonzero(np.abs(np.asarray(a) - np.asarray(b)) > 0)
  assert set(changed) == {4, 5, 6}


def test_bf16_option_is_close_to_f32_and_uses_bf16_dense():
  """model.dtype=bfloat16: bf16 operands with f32 accumulation; same params
  tree, outputs and gradients close to f32."""
  from case_jax.model import bf16_dense
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(2, 6, 12)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(12, 9)), jnp.float32)
  np.testing.assert_allclose(np.asarray(bf16_dense(x, w)), np.asarray(x @ w),
                             rtol=3e-2, atol=3e-2)
  gx, gw = jax.grad(lambda a, b: jnp.sum(jnp.sin(bf16_dense(a, b))), (0, 1))(x, w)
  rx, rw = jax.grad(lambda a, b: jnp.sum(jnp.sin(a @ b)), (0, 1))(x, w)
  np.testing.assert_allclose(np.asarray(gx), np.asarray(rx), rtol=0.1, atol=0.1)
  np.testing.assert_allclose(np.asarray(gw), np.asarray(rw), rtol=0.1, atol=0.15)
  assert gx.dtype == jnp.float32 and gw.dtype == jnp.float32

  cfg32 = tiny_config()
  cfg16 = tiny_config(**{"model.dtype": "bfloat16"})
  batch = random_batch(np.random.default_rng(6))
  m32, tx, s32 = setup(cfg32)
  m16, _, _ = setup(cfg16)
  # Same parameter tree: the bf16 model runs from the f32 initialisation.
  o32 = m32.apply({"params": s32.params}, batch["rgb"], batch["flow"])
  o16 = m16.apply({"params": s32.params}, batch["rgb"], batch["flow"])
  np.testing.assert_allclose(np.asarray(o16["rgb"].att), np.asarray(o32["rgb"].att),
                             atol=2e-2)
  step16 = jax.jit(train.make_step_fn(cfg16, axis_name=None))
  step32 = jax.jit(train.make_step_fn(cfg32, axis_name=None))
  _, met16 = step16(s32.replace(apply_fn=m16.apply), batch)
  _, met32 = step32(s32, batch)
  assert float(met16["loss"]) == pytest.approx(float(met32["loss"]), rel=1e-2)


def test_a_batch_that_does_not_split_over_the_devices_names_the_fix():
  batch = random_batch(np.random.default_rng(0))          # 8 rows
  parts = placement.split_rows(batch, 4)
  assert parts["rgb"].shape[:2] == (4, 2)
  np.testing.assert_array_equal(parts["rgb"].reshape(batch["rgb"].shape), batch["rgb"])
  with pytest.raises(ValueError, match="not divisible by the 3 devices.*multiple of 6"):
    placement.split_rows(batch, 3, multiple=6)
