"""Several seeds: vmapped == sequential per seed, the mean ± std table, reuse."""
import contextlib
import json
import os

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from case_jax import checkpoint as ckpt_lib, runs, seeds, train, workdir as workdir_lib
from case_jax.data.synthetic import write_synthetic_thumos
from test_train import assert_trees_close, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def no_figures():
  """Skips the end-of-run PNGs (a convenience tested elsewhere; ~1 s a run)."""
  with pytest.MonkeyPatch.context() as mp:
    try:
      from case_jax import visualize
      mp.setattr(visualize, "write_plots", lambda *a, **k: None)
    except ImportError:
      pass
    yield


def seeds_config(root, **over):
  cfg = tiny_config(**{"num_steps": 6, "eval_every": 3, "checkpoint_every": 3,
                       "log_every": 3, "eval.num_plots": 0, "seeds": "0,1", **over})
  cfg.data.root = root
  return cfg


@pytest.fixture(scope="module")
def two_ways(tmp_path_factory):
  """Seeds 0,1 trained vmapped over 2 devices, and one by one as single runs."""
  base = tmp_path_factory.mktemp("seeds")
  root = str(base / "data")
  write_synthetic_thumos(root, num_train=24, num_test=8, num_classes=4,
                         feature_dim=12, seed=3)
  devices = jax.devices()[:2]   # the vmap inside a 2-device pmap
  quiet = open(os.devnull, "w")
  with no_figures():
    vmapped = train.train_and_evaluate(seeds_config(root, seeds_mode="vmap"), str(base / "vmap"),
                        devices=devices, stream=quiet)
    single = {s: train.train_and_evaluate(seeds.seed_config(seeds_config(root), s),
                             str(base / "single" / f"seed_{s}"), devices=devices,
                             stream=quiet) for s in (0, 1)}
  return {"root": root, "base": base, "vmap": vmapped, "single": single,
          "devices": devices}


def test_vmapped_seeds_equal_single_runs(two_ways):
  vm = two_ways["vmap"]
  assert vm["mode"] == "vmap" and vm["seeds"] == [0, 1]
  cfg = seeds_config(two_ways["root"])
  for s in (0, 1):
    single = two_ways["single"][s]
    d = os.path.join(two_ways["base"], "vmap", f"seed_{s}")
    # the seed's own checkpoint restores like a single run's (--mode=evaluate)
    _, state, _ = runs.load_trained(seeds.seed_config(cfg, s), d)
    assert int(state.step) == 6
    assert_trees_close(state.params, single["state"].params, atol=1e-5)
    np.testing.assert_allclose(state.q_r, single["state"].q_r, atol=1e-5)
    for k in ("mAP", "mAP@0.10", "test_fb_acc", "test_H_pc"):
      assert vm["metrics"][s][k] == pytest.approx(single["metrics"][k], abs=1e-5), k
    # same logging as the single run: train lines and the two evaluations
    lines = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
    ref = [json.loads(l) for l in open(os.path.join(single["workdir"], "metrics.jsonl"))]
    assert [sorted(l) for l in lines] == [sorted(l) for l in ref]
    np.testing.assert_allclose([l.get("loss", 0) for l in lines],
                               [l.get("loss", 0) for l in ref], atol=1e-5)
    assert json.load(open(os.path.join(d, "config.json")))["seed"] == s
  # different seeds: different runs
  p0 = two_ways["single"][0]["state"].params["rgb"]["attention"]["kernel"]
  p1 = two_ways["single"][1]["state"].params["rgb"]["attention"]["kernel"]
  assert np.abs(np.asarray(p0) - np.asarray(p1)).max() > 1e-3


def test_table_is_the_per_seed_metric_files(two_ways):
  d = os.path.join(two_ways["base"], "vmap")
  info = json.load(open(os.path.join(d, "seeds.json")))
  md = open(os.path.join(d, "seeds.md")).read().strip().splitlines()
  assert md[0].startswith("| seed | mAP@0.1 |") and "| AVG | ACC |" in md[0]
  assert [l.split("|")[1].strip() for l in md[2:]] == ["0", "1", "mean ± std"]
  per_seed = {}
  for s in (0, 1):
    m = json.load(open(os.path.join(d, f"seed_{s}", "eval", "metrics.json")))
    assert info["per_seed"][str(s)]["mAP"] == m["average_map"]
    assert info["per_seed"][str(s)]["mAP@0.30"] == m["map"][2]
    assert info["per_seed"][str(s)]["test_fb_acc"] == m["test_fb_acc"]
    per_seed[s] = m
  avg = [per_seed[s]["average_map"] for s in (0, 1)]
  assert info["summary"]["AVG"]["mean"] == pytest.approx(np.mean(avg), abs=1e-12)
  assert info["summary"]["AVG"]["std"] == pytest.approx(np.std(avg, ddof=1), abs=1e-12)
  acc = [per_seed[s]["test_fb_acc"] for s in (0, 1)]
  last = md[-1].split("|")[-2].strip()
  assert last == f"{100 * np.mean(acc):.2f} ± {100 * np.std(acc, ddof=1):.2f}"


@no_figures()
def test_sequential_mode_resume_and_reuse(two_ways, tmp_path):
  root, devices = two_ways["root"], two_ways["devices"][:1]
  lines = []

  class Out:
    def write(self, s):
      lines.append(s)

    def flush(self):
      pass

  # seed 0 half-trained: vmap falls back to one-by-one resumption
  work = str(tmp_path / "w")
  train.train_and_evaluate(seeds.seed_config(seeds_config(root, num_steps=3), 0),
              os.path.join(work, "seed_0"), devices=devices, stream=open(os.devnull, "w"))
  out = train.train_and_evaluate(seeds_config(root, seeds_mode="vmap"), work, devices=devices,
                  stream=Out())
  text = "".join(lines)
  assert "different steps" in text and out["mode"] == "sequential"
  for s in (0, 1):
    assert out["metrics"][s]["mAP"] == pytest.approx(
        two_ways["vmap"]["metrics"][s]["mAP"], abs=1e-5)
  # everything done: reused, nothing trained
  lines.clear()
  again = train.train_and_evaluate(seeds_config(root), work, devices=devices, stream=Out())
  assert "all already trained" in "".join(lines)
  assert again["metrics"] == out["metrics"]
  # a different config in the same workdir is refused
  with pytest.raises(ValueError, match="model.embed_dim"):
    train.train_and_evaluate(seeds_config(root, **{"model.embed_dim": 8}), work, devices=devices,
              stream=Out())


def test_auto_mode_and_seed_parsing():
  cfg = tiny_config(seeds="0,1,2")
  dims = dict(rgb_dim=12, flow_dim=12, num_classes=4, num_params=2000)
  devs = jax.devices()[:1]
  mode, why = seeds.choose_mode(cfg, [0, 1, 2], devs, dims=dims)
  assert mode == "vmap" and "GiB" in why
  huge = dict(dims, num_params=10 ** 13)
  assert seeds.choose_mode(cfg, [0, 1, 2], devs, dims=huge)[0] == "sequential"
  assert seeds.choose_mode(cfg, [0], devs, dims=dims)[0] == "sequential"
  cfg.seeds_mode = "sequential"
  assert seeds.choose_mode(cfg, [0, 1], devs, dims=dims)[0] == "sequential"
  cfg.seeds_mode = "fast"
  with pytest.raises(ValueError, match="seeds_mode"):
    seeds.choose_mode(cfg, [0, 1], devs, dims=dims)
  assert seeds.parse_seeds("0,1, 2") == [0, 1, 2] and seeds.parse_seeds("") == []
  assert seeds.seed_list(tiny_config(seed=7)) == [7]
  for bad in ("0,x", "1,1", "-1"):
    with pytest.raises(ValueError):
      seeds.parse_seeds(bad)


def test_seeds_flag_parses_from_the_command_line():
  argv = ["prog", f"--config={REPO}/configs/synthetic.py", "--config.seeds=0,1,2",
          "--config.seeds_mode=vmap"]
  fv = flags.FlagValues()
  # the overrides are found in sys_argv (default: sys.argv), as main.py's
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv,
                                  lock_config=True, sys_argv=argv)
  fv(argv)
  assert fv.config.seeds == "0,1,2" and fv.config.seeds_mode == "vmap"
  assert seeds.seed_list(fv.config) == [0, 1, 2]


def test_an_error_in_one_seeds_evaluation_keeps_every_final_checkpoint(
    two_ways, tmp_path, monkeypatch):
  """vmap mode: the final checkpoints of all seeds are committed before any
  seed is evaluated, and every seed's files are closed on the error."""
  opened = []
  real_init = workdir_lib.RunFiles.__init__

  def tracking_init(self, *a, **k):
    real_init(self, *a, **k)
    opened.append(self)
  monkeypatch.setattr(workdir_lib.RunFiles, "__init__", tracking_init)

  def failing_finish(*a, **k):
    raise RuntimeError("evaluation broke")
  monkeypatch.setattr(train, "finish_run", failing_finish)
  cfg = seeds_config(two_ways["root"], seeds_mode="vmap", eval_every=0)
  with no_figures(), pytest.raises(RuntimeError, match="evaluation broke"):
    train.train_and_evaluate(cfg, str(tmp_path), devices=two_ways["devices"],
              stream=open(os.devnull, "w"))
  for s in (0, 1):
    mgr = ckpt_lib.Checkpointer(os.path.join(tmp_path, f"seed_{s}", "checkpoints"))
    assert mgr.latest_step() == 6, s
  assert len(opened) == 2 and all(r.closed for r in opened)
