"""The whole loop on tiny synthetic data: train -> evaluate -> predict."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, cwd=REPO):
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)  # one device, like a user's laptop
  proc = subprocess.run([sys.executable, "-m", "case_jax.main", *args], cwd=cwd,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout


@pytest.mark.slow
def test_train_evaluate_predict(tmp_path):
  work = str(tmp_path / "run")
  common = ["--config=configs/synthetic.py", f"--workdir={work}",
            "--config.num_steps=40", "--config.eval_every=20",
            "--config.checkpoint_every=20", "--config.log_every=10",
            "--config.data.synthetic.num_train=32", "--config.data.synthetic.num_test=12",
            "--config.data.synthetic.feature_dim=16", "--config.data.num_segments=64"]
  out = run_main(*common)
  assert "Detection mAP of the final checkpoint (step 40)" in out
  assert "test-set model selection" in out
  eval_dir = os.path.join(work, "eval")
  for name in ("detections.json", "detections.csv", "metrics.json"):
    assert os.path.exists(os.path.join(eval_dir, name)), name
  logged = json.load(open(os.path.join(eval_dir, "metrics.json")))
  results = json.load(open(os.path.join(eval_dir, "detections.json")))
  assert results["version"] == "VERSION 1.3" and results["results"]
  assert os.path.getsize(os.path.join(eval_dir, "detections_thumos14.txt")) > 0
  figures = os.listdir(os.path.join(work, "plots"))   # tests/test_plots.py
  assert "training_curves.png" in figures and "map_tiou.png" in figures
  assert any(f.startswith("timeline_") for f in figures)

  # Re-evaluating the final checkpoint reproduces the logged mAP exactly.
  shutil.move(eval_dir, eval_dir + "_train")
  out = run_main(*common, "--mode=evaluate")
  again = json.load(open(os.path.join(eval_dir, "metrics.json")))
  assert again["average_map"] == logged["average_map"]
  assert again["map"] == logged["map"]
  for key in ("test_fb_acc", "test_H_pc", "test_H_mean_pc"):   # same snippet stats
    assert again[key] == pytest.approx(logged[key], abs=1e-9), key

  # The evaluator's CLI on the written files gives the same number too.
  env = dict(os.environ, PYTHONPATH=REPO)
  cli = subprocess.run(
      [sys.executable, "-m", "case_jax.evaluation",
       os.path.join(work, "synthetic_data", "gt.json"),
       os.path.join(eval_dir, "detections.json"), "--json", str(tmp_path / "cli.json")],
      env=env, capture_output=True, text=True, timeout=120)
  assert cli.returncode == 0, cli.stderr
  assert json.load(open(tmp_path / "cli.json"))["average_map"] == pytest.approx(
      logged["average_map"], abs=1e-12)

  # Predict on a folder of unlabelled features.
  feats = tmp_path / "feats"
  for stream in ("rgb", "flow"):
    os.makedirs(feats / stream)
    src = os.path.join(work, "synthetic_data", "features", "test", stream)
    for name in sorted(os.listdir(src))[:3]:
      shutil.copy(os.path.join(src, name), feats / stream / name)
  out = run_main(*common, "--mode=predict", f"--features={feats}")
  pred = json.load(open(os.path.join(work, "predict", "detections.json")))
  assert set(pred["results"]) <= {n[:-4] for n in os.listdir(feats / "rgb")}
  # Concatenated (n, D_rgb + D_flow) files: read as the same records by
  # test_predict_reads_concatenated_feature_files, and predicted from through
  # the CLI by tests/test_activitynet_cli.py.


def concatenated_copy(feats, out):
  """rgb/ + flow/ folders -> one folder of (n, D_rgb + D_flow) files."""
  os.makedirs(out)
  for name in os.listdir(os.path.join(feats, "rgb")):
    np.save(os.path.join(out, name), np.concatenate(
        [np.load(os.path.join(feats, s, name)) for s in ("rgb", "flow")], 1))
  return str(out)


def test_predict_rejects_a_bad_feature_folder(tmp_path):
  from case_jax import runs
  with pytest.raises(FileNotFoundError, match="rgb"):
    runs.FeatureFolder(str(tmp_path), ["a"], 4, 4, fps=25.0, snippet_frames=16)
  os.makedirs(tmp_path / "rgb")
  os.makedirs(tmp_path / "flow")
  np.save(tmp_path / "rgb" / "v.npy", np.zeros((5, 3), np.float32))
  np.save(tmp_path / "flow" / "v.npy", np.zeros((5, 4), np.float32))
  with pytest.raises(ValueError, match=r"expected \(n, 4\)"):
    runs.FeatureFolder(str(tmp_path), ["a"], 4, 4, fps=25.0, snippet_frames=16)


def test_predict_reads_concatenated_feature_files(tmp_path):
  """(n, rgb_dim + flow_dim) files (ACM-Net, v_ ids) = rgb/ + flow/ folders."""
  from case_jax import runs
  rng = np.random.default_rng(0)
  for vid, n in (("v_abc", 5), ("v_de-f", 7)):
    for stream, d in (("rgb", 4), ("flow", 3)):
      os.makedirs(tmp_path / "sep" / stream, exist_ok=True)
      np.save(tmp_path / "sep" / stream / f"{vid}.npy",
              rng.normal(size=(n, d)).astype(np.float32))
  joint = concatenated_copy(tmp_path / "sep", tmp_path / "joint")
  kw = dict(fps=25.0, snippet_frames=16)
  a = runs.FeatureFolder(str(tmp_path / "sep"), ["a"], 4, 3, **kw)
  b = runs.FeatureFolder(joint, ["a"], 4, 3, **kw)
  assert [r.video_id for r in b] == ["v_abc", "v_de-f"]
  for x, y in zip(a, b):
    assert x.video_id == y.video_id and x.duration == y.duration
    np.testing.assert_array_equal(x.rgb, y.rgb)
    np.testing.assert_array_equal(x.flow, y.flow)
  np.save(os.path.join(joint, "v_bad.npy"), np.zeros((5, 6), np.float32))
  with pytest.raises(ValueError, match=r"v_bad.npy.*\(n, 7\): rgb \(4\) then "
                     r"flow \(3\)"):
    runs.FeatureFolder(joint, ["a"], 4, 3, **kw)


def test_predict_reads_only_the_videos_asked_for(tmp_path):
  """--videos reads only its videos' cached features, not every file there
  (a broken file of another video is never opened)."""
  from case_jax import runs
  rng = np.random.default_rng(1)
  for vid in ("a", "b", "c"):
    for stream in ("rgb", "flow"):
      os.makedirs(tmp_path / "sep" / stream, exist_ok=True)
      np.save(tmp_path / "sep" / stream / f"{vid}.npy",
              rng.normal(size=(4, 3)).astype(np.float32))
  np.save(tmp_path / "sep" / "rgb" / "b.npy", np.zeros((4, 5), np.float32))
  joint = concatenated_copy(tmp_path / "sep", tmp_path / "joint")
  kw = dict(fps=25.0, snippet_frames=16, video_ids={"a": 1.0, "c": 2.0})
  for folder, streams in ((tmp_path / "sep", ("rgb", "flow")),
                          (tmp_path / "sep", ("rgb",)), (joint, ("rgb", "flow"))):
    got = runs.FeatureFolder(str(folder), ["x"], 3, 3, streams=streams, **kw)
    assert [r.video_id for r in got] == ["a", "c"]
  with pytest.raises(ValueError, match="b.npy"):
    runs.FeatureFolder(str(tmp_path / "sep"), ["x"], 3, 3, fps=25.0,
                       snippet_frames=16)
