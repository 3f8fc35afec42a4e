"""configs/anet12.py and configs/anet13.py end to end through the command
line, on small ActivityNet-shaped data in the layouts their public releases
use (W-TALC for 1.2, ACM-Net for 1.3): train, resume, evaluate at tIoU
0.5:0.95 on the 'validation' subset, predict on a folder of features."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from case_jax.data import open_dataset
from case_jax.data.synthetic import class_names, write_synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIOU = [round(0.5 + 0.05 * i, 2) for i in range(10)]


def run_main(*args) -> str:
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)  # one device
  proc = subprocess.run([sys.executable, "-m", "case_jax.main", *args],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout + proc.stderr


def joint_feature_folder(root, layout: str, out, classes: int) -> str:
  """The test videos as (n, D_rgb + D_flow) files, as a user extracts them."""
  os.makedirs(out)
  test = open_dataset(root, "test", layout, classes=class_names(classes))
  for rec in list(test)[:4]:
    np.save(os.path.join(out, rec.video_id + ".npy"),
            np.concatenate([rec.rgb, rec.flow], 1))
  return str(out)


@pytest.mark.slow
@pytest.mark.parametrize("config,layout,classes",
                         [("anet12", "wtalc", 100), ("anet13", "acmnet", 200)])
def test_activitynet_config_end_to_end(tmp_path, config, layout, classes):
  root, work = tmp_path / "data", str(tmp_path / "run")
  write_synthetic(root, shape=config, layout=layout, num_train=classes,
                  num_test=12, feature_dim=8, time_scale=0.25,
                  max_snippets=120)
  common = [f"--config=configs/{config}.py", f"--config.data.root={root}",
            f"--workdir={work}", "--config.eval_every=4",
            "--config.checkpoint_every=2", "--config.log_every=2",
            "--config.eval.plots=False", "--config.model.embed_dim=32"]

  # Train: the layout is recognised and the scored subset printed.
  out = run_main(*common, "--config.num_steps=4")
  assert f"looks like the {layout} layout" in out
  assert "ground truth's 'validation' subset" in out
  assert "AVG(0.5:0.95)" in out and "Detection mAP of the final checkpoint (step 4)" in out

  # Resume to 6 steps: each step logged once.
  out = run_main(*common, "--config.num_steps=6")
  assert "Resumed from step 4" in out
  rows = [json.loads(l) for l in open(os.path.join(work, "metrics.jsonl"))]
  assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]

  # Evaluate the final checkpoint: tIoU 0.5:0.05:0.95 on 'validation',
  # the same numbers as the final evaluation of training.
  logged = json.load(open(os.path.join(work, "eval", "metrics.json")))
  shutil.move(os.path.join(work, "eval"), os.path.join(work, "eval_train"))
  run_main(*common, "--config.num_steps=6", "--mode=evaluate")
  again = json.load(open(os.path.join(work, "eval", "metrics.json")))
  assert again["tiou_thresholds"] == TIOU and again["subset"] == "validation"
  assert again["step"] == 6 and again["map"] == logged["map"]
  assert len(set(again["class_names"])) == sum(n > 0 for n in again["num_gt"])

  # Predict on concatenated feature files (the ACM-Net release's own
  # folder for 1.3; per-video files cut from the W-TALC file for 1.2).
  feats = (str(root / "features" / "test") if layout == "acmnet" else
           joint_feature_folder(root, layout, tmp_path / "feats", classes))
  run_main(*common, "--config.num_steps=6", "--mode=predict",
           f"--features={feats}")
  pred = json.load(open(os.path.join(work, "predict", "detections.json")))
  ids = {n[:-4] for n in os.listdir(feats)}
  assert pred["results"] and set(pred["results"]) <= ids
  names = set(class_names(classes))
  for dets in pred["results"].values():
    assert all(d["label"] in names and d["segment"][0] < d["segment"][1]
               for d in dets)
