"""TFDS array_record builders: prepared data read back like the raw layouts.

Skipped unless the optional `data` extra (tensorflow-datasets) is installed;
never needs TensorFlow.
"""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from case_jax.data import (LAYOUTS, LayoutWarning, VideoDataset,  # noqa: E402
                           eval_batches, open_dataset, train_batch,
                           write_layout)
from case_jax.data import tfds_builders as tb  # noqa: E402
from case_jax.data.prepare import main as prepare_main  # noqa: E402
from tests.test_data_layouts_more import needs_real, real_videos  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """The real-annotation fixture in each layout, prepared per layout."""
  videos = [v for v in real_videos(max_snippets=60)]
  tmp = tmp_path_factory.mktemp("tfds")
  data_dir = str(tmp / "tfds")
  raws = {}
  for layout in LAYOUTS:
    raws[layout] = str(tmp / layout)
    write_layout(layout, raws[layout], videos)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", LayoutWarning)
      assert prepare_main(["--dataset=thumos14", f"--layout={layout}",
                           f"--manual_dir={raws[layout]}",
                           f"--data_dir={data_dir}"]) == 0
  return raws, data_dir


def quiet_raw(root, split, layout):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", LayoutWarning)
    return open_dataset(root, split, layout)


@needs_real
@pytest.mark.parametrize("layout", LAYOUTS)
def test_tfds_reads_back_identically(prepared, layout):
  raws, data_dir = prepared
  for split in ("train", "test"):
    ds = tb.TFDSDataset(f"thumos14/{layout}", split, data_dir=data_dir)
    raw = quiet_raw(raws["basnet"], split, "basnet")
    assert isinstance(ds, VideoDataset) and ds.skipped == ()
    assert ds.video_ids == raw.video_ids and ds.classes == raw.classes
    np.testing.assert_array_equal(ds.lengths, raw.lengths)
    np.testing.assert_array_equal(ds.labels(), raw.labels())
    for a, b in zip(ds, raw):
      np.testing.assert_array_equal(a.rgb, b.rgb)
      np.testing.assert_array_equal(a.flow, b.flow)
      assert a.segments == b.segments and a.duration == b.duration
      assert (a.fps, a.snippet_frames) == (b.fps, b.snippet_frames)
  train = tb.TFDSDataset(f"thumos14/{layout}", "train", data_dir=data_dir)
  raw = quiet_raw(raws[layout], "train", layout)
  for step in (0, 12):
    x = train_batch(train, step, seed=5, batch_size=16, num_segments=30)
    y = train_batch(raw, step, seed=5, batch_size=16, num_segments=30)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  test = tb.TFDSDataset(f"thumos14/{layout}", "test", data_dir=data_dir)
  x = next(eval_batches(test, num_segments=20, batch_size=3))
  y = next(eval_batches(quiet_raw(raws[layout], "test", layout),
                        num_segments=20, batch_size=3))
  for k in x:
    np.testing.assert_array_equal(x[k], y[k])


@needs_real
def test_tfds_fresh_process_without_tensorflow(prepared):
  _, data_dir = prepared
  code = (
      "import sys, tensorflow_datasets as tfds\n"
      f"s = tfds.data_source('thumos14/acmnet', split='test[:3]', "
      f"data_dir={data_dir!r})\n"
      "print(len(s), s[0]['video_id'].decode())\n"
      "assert 'tensorflow' not in sys.modules\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True,
                       env={**os.environ, "PYTHONPATH": ""})
  assert out.stdout.split() == ["3", "video_test_0000896"]


@needs_real
def test_training_reads_the_prepared_dataset_through_the_config(prepared):
  """--config.data.layout=tfds gives training the same batches as the raw."""
  from case_jax import datasets, defaults
  raws, data_dir = prepared
  cfg = defaults.base_config()
  cfg.data.layout = "tfds"
  cfg.data.tfds_name = "thumos14/basnet"
  prepared_ds = datasets.open_split(cfg, data_dir, "train")
  raw = quiet_raw(raws["basnet"], "train", "basnet")
  a = train_batch(prepared_ds, 3, seed=1, batch_size=4, num_segments=16)
  b = train_batch(raw, 3, seed=1, batch_size=4, num_segments=16)
  for key in ("rgb", "flow", "labels", "fg_mask"):
    np.testing.assert_array_equal(a[key], b[key])


@needs_real
def test_prepared_ground_truth_is_the_release_s(prepared):
  """Each layout's prepared gt.json (W-TALC arrays converted) gives the
  evaluator the raw release's test ground truth."""
  from case_jax import defaults, evaluator
  raws, data_dir = prepared
  cfg = defaults.base_config()
  want = evaluator.load_test_ground_truth(raws["basnet"], cfg)
  cfg.data.layout = "tfds"
  for layout in LAYOUTS:
    cfg.data.tfds_name = f"thumos14/{layout}"
    got = evaluator.load_test_ground_truth(data_dir, cfg)
    assert got.video_ids == want.video_ids
    assert sorted(got.class_names) == sorted(want.class_names)
    np.testing.assert_array_equal(got.segments, want.segments)
    assert [got.class_names[i] for i in got.label] == [
        want.class_names[i] for i in want.label]


def test_prepare_takes_the_class_list_from_a_file(tmp_path):
  from case_jax.data.synthetic import class_names, write_synthetic_thumos
  write_synthetic_thumos(tmp_path / "raw", num_train=8, num_test=4,
                         num_classes=3, feature_dim=4)
  names = class_names(3)[::-1]
  (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
  assert prepare_main(["--dataset=synthetic", f"--manual_dir={tmp_path}/raw",
                       f"--data_dir={tmp_path}/tfds",
                       f"--classes={tmp_path}/classes.txt"]) == 0
  ds = tb.TFDSDataset("synthetic/basnet", "train", data_dir=str(tmp_path / "tfds"))
  assert ds.classes == names
  raw = quiet_raw(str(tmp_path / "raw"), "train", "basnet")
  # Column c of the labels is class names[c], whatever the order.
  np.testing.assert_array_equal(ds.labels(), raw.labels()[:, ::-1])


@pytest.mark.slow
def test_prepared_synthetic_data_through_the_cli(tmp_path):
  """Synthetic data, prepared, then train / evaluate / predict with
  --config.data.layout=tfds through python -m case_jax.main."""
  from case_jax.data.synthetic import write_synthetic_thumos
  from tests.test_end_to_end import concatenated_copy, run_main
  raw, data_dir = tmp_path / "raw", str(tmp_path / "tfds")
  write_synthetic_thumos(raw, num_train=16, num_test=6, num_classes=4,
                         feature_dim=8, max_snippets=120)
  assert prepare_main(["--dataset=synthetic", f"--manual_dir={raw}",
                       f"--data_dir={data_dir}"]) == 0
  work = str(tmp_path / "run")
  common = ["--config=configs/synthetic.py", f"--workdir={work}",
            # data.layout=auto finds the prepared dataset and its name
            f"--config.data.root={data_dir}", "--config.num_steps=6",
            "--config.eval_every=6", "--config.checkpoint_every=6",
            "--config.log_every=3", "--config.data.num_segments=32",
            "--config.model.embed_dim=16"]
  out = run_main(*common)
  assert "Detection mAP of the final checkpoint (step 6)" in out
  # The final evaluation read the ground truth stored with the prepared data.
  logged = json.load(open(os.path.join(work, "eval", "metrics.json")))
  assert logged["step"] == 6 and 0.0 <= logged["average_map"] <= 1.0
  feats = concatenated_copy(raw / "features" / "test", tmp_path / "joint")
  run_main(*common, "--mode=predict", f"--features={feats}")
  pred = json.load(open(os.path.join(work, "predict", "detections.json")))
  assert set(pred["results"]) <= {n[:-4] for n in os.listdir(feats)}


def test_an_unprepared_dataset_is_refused_in_one_line(tmp_path):
  """Not prepared (or at an older version), or no such name: the refusal
  names data.root / data.tfds_name and the prepare command, and nothing
  is built behind the user's back."""
  from tests.cli_check import assert_clean_refusal, run_module
  common = ["--config=configs/synthetic.py", f"--workdir={tmp_path}/run",
            "--config.data.dataset=thumos14", "--config.data.layout=tfds",
            f"--config.data.root={tmp_path}", "--config.num_steps=2"]
  proc = run_module("case_jax.main", *common,
                    "--config.data.tfds_name=synthetic/basnet")
  assert_clean_refusal(proc, "not prepared", "case_jax.data.prepare",
                       "--dataset=synthetic")
  assert not os.path.exists(tmp_path / "downloads")
  proc = run_module("case_jax.main", *common,
                    "--config.data.tfds_name=thumos/basnet")
  assert_clean_refusal(proc, "data.tfds_name='thumos/basnet'", "thumos14/basnet")
