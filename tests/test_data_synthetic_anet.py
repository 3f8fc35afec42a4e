"""ActivityNet-shaped synthetic data: its statistics, and every layout the
generator writes reads back as the same dataset."""
import json
import os

import numpy as np
import pytest

from case_jax.data import detect_layout, open_dataset
from case_jax.data import synthetic
from case_jax.data import synthetic_generator as generator
from tests.cli_check import assert_clean_refusal, run_module


def _plans(shape: str, count: int):
  spec = synthetic.SHAPES[shape]
  world = generator.make_world(0, spec.num_classes, 4)
  for k in range(count):
    rng = np.random.default_rng(k)
    yield generator.plan_video(rng, spec.stats["train"], k % spec.num_classes,
                               spec.num_classes, world, 1.0, 10 ** 6)


def test_activitynet_statistics_match_the_published_totals():
  """Release 1.3: 15,410 instances in 10,024 training videos (1.54 per
  video), ~117 s mean duration, one activity class per video; instances are
  long (about half the video on average)."""
  plans = list(_plans("anet13", 2000))
  per_video = np.mean([len(p.instances) for p in plans])
  duration = np.mean([p.num_snippets * generator.SECONDS_PER_SNIPPET
                      for p in plans])
  cover = np.mean([sum(i.end_s - i.start_s for i in p.instances)
                   / (p.num_snippets * generator.SECONDS_PER_SNIPPET)
                   for p in plans])
  assert 1.45 <= per_video <= 1.65, per_video
  assert 110 <= duration <= 125, duration
  assert 0.45 <= cover <= 0.65, cover
  assert all(len({i.class_index for i in p.instances}) == 1 for p in plans)
  # THUMOS-shaped videos are the opposite: many short instances.
  thumos = list(_plans("thumos14", 300))
  assert np.mean([len(p.instances) for p in thumos]) > 5 * per_video


@pytest.mark.parametrize("shape,classes", [("anet12", 100), ("anet13", 200)])
def test_shapes_have_activitynet_subsets_ids_and_classes(tmp_path, shape,
                                                         classes):
  meta = synthetic.write_synthetic(tmp_path, shape=shape, layout="acmnet",
                                   num_train=classes, num_test=7,
                                   feature_dim=3, time_scale=0.05)
  assert meta["num_classes"] == classes and meta["shape"] == shape
  gt = json.load(open(tmp_path / "gt.json"))["database"]
  subsets = {v["subset"] for v in gt.values()}
  assert subsets == {"training", "validation"}
  assert all(vid.startswith("v_") for vid in gt)
  train = open_dataset(tmp_path, "train", "acmnet")
  test = open_dataset(tmp_path, "test", "acmnet")
  assert (train.gt_subset, test.gt_subset) == ("training", "validation")
  # Every class in the training split: the class list the reader derives.
  assert len(train.classes) == classes
  assert train.classes == synthetic.class_names(classes)


def test_the_three_layouts_hold_the_same_videos(tmp_path):
  kw = dict(shape="anet12", num_train=100, num_test=5, feature_dim=3,
            time_scale=0.05, seed=3)
  sets = {}
  for layout in ("basnet", "acmnet", "wtalc"):
    root = tmp_path / layout
    synthetic.write_synthetic(root, layout=layout, **kw)
    assert detect_layout(str(root))[0] == layout
    sets[layout] = open_dataset(root, "test", layout,
                                classes=synthetic.class_names(100))
  ref = sets["basnet"]
  for layout in ("acmnet", "wtalc"):
    other = sets[layout]
    assert other.video_ids == ref.video_ids
    for a, b in zip(ref, other):
      np.testing.assert_array_equal(a.rgb, b.rgb)
      np.testing.assert_array_equal(a.flow, b.flow)
      assert a.segments == b.segments and a.labels.tolist() == b.labels.tolist()


def test_rewriting_in_another_layout_leaves_one_layout(tmp_path):
  kw = dict(shape="anet12", num_train=100, num_test=2, feature_dim=2,
            time_scale=0.02)
  synthetic.write_synthetic(tmp_path, layout="wtalc", **kw)
  with pytest.raises(FileExistsError, match="synthetic.json"):
    synthetic.write_synthetic(tmp_path, layout="acmnet", **kw)
  synthetic.write_synthetic(tmp_path, layout="acmnet", overwrite=True, **kw)
  assert detect_layout(str(tmp_path))[0] == "acmnet"
  assert not [p for p in os.listdir(tmp_path) if "JOINT" in p]


def test_command_line_shape_and_layout(tmp_path):
  proc = run_module("case_jax.data.synthetic", "--root", tmp_path / "d",
                    "--shape", "anet13", "--layout", "wtalc", "--num-train",
                    200, "--num-test", 3, "--feature-dim", 2, "--time-scale",
                    0.02)
  assert proc.returncode == 0, proc.stderr
  assert "200 classes" in proc.stdout and "anet13-shaped, wtalc" in proc.stdout
  assert os.path.exists(tmp_path / "d" / "ActivityNet1.3-I3D-JOINTFeatures.npy")
  bad = run_module("case_jax.data.synthetic", "--root", tmp_path / "e",
                   "--num-classes", 0)
  assert_clean_refusal(bad, "num_classes")


def test_an_unknown_shape_is_named(tmp_path):
  with pytest.raises(ValueError, match="shape must be one of.*'anet14'"):
    synthetic.write_synthetic(tmp_path, shape="anet14")
