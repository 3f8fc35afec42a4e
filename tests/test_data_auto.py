"""data.layout="auto" (data/detect.py), subset-name variants and the
test-time sampling of short videos (issue #13)."""
import io
import json
import os
import warnings

import jax
import numpy as np
import pytest

from case_jax import datasets, defaults, errors, train
from case_jax.data import (LAYOUTS, LayoutError, VideoSpec, detect_layout,
                           eval_batches, open_dataset, write_layout)
from case_jax.data import detect
from case_jax.data.synthetic import write_synthetic_thumos

D = 8
WHY = {"basnet": "features/train/rgb/<vid>.npy (6, 8)",
       "acmnet": "features/train/<vid>.npy (6, 16)",
       "wtalc": "Thumos14reduced-I3D-JOINTFeatures.npy"}


def videos(subsets=("validation", "test"), n=(6, 5, 7)):
  rng = np.random.default_rng(0)
  splits = ("train", "train", "test")
  anns = [(0.5, 1.5, "Jump"), (1.0, 2.0, "Run"), (0.0, 1.0, "Jump")]
  return [VideoSpec(f"v{i}", s, subsets[s == "test"], None, (a,),
                    rng.standard_normal((k, D)), rng.standard_normal((k, D)))
          for i, (k, s, a) in enumerate(zip(n, splits, anns))]


def write(tmp_path, layout, vids):
  root = str(tmp_path / layout)
  write_layout(layout, root, vids,
               **({"classes": ("Jump", "Run")} if layout == "wtalc" else {}))
  return root


def fake_tfds(root, *names):
  for name in names:
    d = os.path.join(root, *name.split("/"), "1.0.0")
    os.makedirs(d)
    open(os.path.join(d, "dataset_info.json"), "w").write("{}")
  return str(root)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_is_recognised_and_opens(tmp_path, layout):
  root = write(tmp_path, layout, videos())
  found, why = detect_layout(root)
  assert found == layout and WHY[layout] in why
  ds = open_dataset(root, "train", "auto")
  assert ds.video_ids == ("v0", "v1")


def test_auto_is_printed_once_and_explicit_layout_wins(tmp_path):
  root = write(tmp_path, "acmnet", videos())
  cfg = defaults.base_config()
  cfg.data.check_values = False
  out = io.StringIO()
  datasets.open_split(cfg, root, "train", stream=out)
  datasets.open_split(cfg, root, "test", stream=out)
  assert out.getvalue().count("data.layout=auto") == 1
  assert f"{root} looks like the acmnet layout (features/train/" in out.getvalue()
  cfg.data.layout = "basnet"     # explicit: no detection, basnet's own refusal
  with pytest.raises(LayoutError, match="rgb"):
    datasets.open_split(cfg, root, "train", stream=out)


def test_nothing_matches_lists_what_each_layout_needs(tmp_path):
  (tmp_path / "gt.json").write_text("{}")
  with pytest.raises(errors.UserError) as e:
    detect_layout(str(tmp_path))
  msg = str(e.value)
  for layout, needs in detect.NEEDS.items():
    assert f"{layout}: {needs}" in msg
  assert "--config.data.layout" in msg and "\n" not in msg


def test_tfds_data_dir_and_its_name(tmp_path):
  root = fake_tfds(tmp_path / "one", "anet12/acmnet")
  assert detect_layout(root)[0] == "tfds"
  assert detect.tfds_name(root, "thumos14/basnet") == "anet12/acmnet"
  root = fake_tfds(tmp_path / "two", "anet12/acmnet", "thumos14/basnet")
  assert detect.tfds_name(root, "thumos14/basnet") == "thumos14/basnet"
  with pytest.raises(LayoutError, match=r"anet12/acmnet.*thumos14/basnet.*"
                     "data.tfds_name"):
    detect.tfds_name(root, "")
  with pytest.raises(LayoutError, match="open_split"):
    open_dataset(root, "train", "auto")


@pytest.mark.parametrize("subsets", [("training", "validation"),
                                     ("train", "val"), ("validation", "test"),
                                     ("train", "test")])
@pytest.mark.parametrize("layout", ["basnet", "acmnet"])
def test_subset_name_variants_open_without_warnings(tmp_path, layout, subsets):
  root = write(tmp_path, layout, videos(subsets))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    train_set = open_dataset(root, "train", layout)
    test_set = open_dataset(root, "test", layout)
  assert (train_set.gt_subset, test_set.gt_subset) == subsets
  assert test_set.video_ids == ("v2",)


def test_train_val_gt_json_trains_and_evaluates(tmp_path):
  root = str(tmp_path / "data")
  write_synthetic_thumos(root, num_train=16, num_test=4, num_classes=3,
                         feature_dim=8, seed=1)
  path = os.path.join(root, "gt.json")
  gt = json.load(open(path))
  for v in gt["database"].values():
    v["subset"] = {"validation": "train", "test": "val"}[v["subset"]]
  json.dump(gt, open(path, "w"))
  cfg = defaults.base_config()
  defaults.set_dotted(cfg, {"data.dataset": "synthetic", "data.root": root,
                            "data.num_segments": 16, "model.embed_dim": 8,
                            "model.num_clusters": 4, "batch_size": 8,
                            "num_steps": 2, "eval.plots": False})
  out = io.StringIO()
  summary = train.train_and_evaluate(cfg, str(tmp_path / "w"),
                                     devices=jax.devices()[:1], stream=out)
  assert summary["eval"]["result"]["subset"] == "val"
  assert out.getvalue().count("ground truth's 'val' subset") == 1

  # A test video shorter than T under "no_upsample" is scored at its own
  # length: exactly what T = its length gives (identity sampling).
  from case_jax import inference
  short = open_dataset(write(tmp_path, "basnet", videos(n=(20, 20, 6))),
                       "test", "basnet")
  model, state = summary["model"], summary["state"]
  cfg.data.test_sampling = "no_upsample"
  kept, _, _ = inference.detect_dataset(short, model, state.params, state.q_r,
                                        cfg)
  cfg.data.test_sampling, cfg.data.num_segments = "resample", 6
  at_6, _, _ = inference.detect_dataset(short, model, state.params, state.q_r,
                                        cfg)
  assert kept["v2"] and kept == at_6
  assert max(d["segment"][1] for d in kept["v2"]) <= 6 * 0.64 + 1e-6


def test_short_test_videos_keep_their_length_under_no_upsample(tmp_path):
  ds = open_dataset(write(tmp_path, "basnet", videos(n=(6, 12, 3))), "train",
                    "basnet")
  ds = list(ds) + list(open_dataset(tmp_path / "basnet", "test", "basnet"))
  same = list(eval_batches(ds, num_segments=8, batch_size=2, pad_last=True))
  assert [b["rgb"].shape[1] for b in same] == [8, 8]   # resample: as released
  short = list(eval_batches(ds, num_segments=8, batch_size=2, pad_last=True,
                            test_sampling="no_upsample"))
  shapes = [(tuple(b["video_ids"]), b["rgb"].shape[1]) for b in short]
  assert shapes == [(("v0", ""), 6), (("v2", ""), 3), (("v1", ""), 8)]
  np.testing.assert_array_equal(short[0]["rgb"][0], ds[0].rgb)
  assert short[0]["lengths"][0] == 6


def test_dataset_defaults():
  assert defaults.base_config().data.test_sampling == "resample"
  anet = defaults.activitynet_config("1.2")
  assert anet.data.test_sampling == "no_upsample"
  assert (anet.inference.outer_ratio, anet.inference.video_weight) == (0.2, 0.2)
  assert defaults.base_config().data.layout == "auto"
