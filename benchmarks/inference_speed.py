"""Detection + evaluation time for a THUMOS-size test set (issue #4 goal:
210 videos, T = 750, two 1024-d streams, 20 classes, under 10 s on 2 cores).

    python -m benchmarks.inference_speed [--videos 210] [--json PATH]

Random features and an untrained model (the post-processing cost depends on
how many proposals the scores produce; an untrained model produces many).
Writes benchmarks/results/inference_speed_<hostname>.json.
"""
import argparse
import os
import socket
import time

import jax
import numpy as np

from benchmarks import harness
from case_jax import defaults, evaluator as evaluator_lib, model as model_lib, train
from case_jax.data import (FEATURE_FPS, SNIPPET_FRAMES, Segment, VideoRecord,
                           ground_truth)


class _Videos:
  fps, snippet_frames = FEATURE_FPS, SNIPPET_FRAMES

  def __init__(self, n, t, d, c, seed=0):
    rng = np.random.default_rng(seed)
    self.classes = [f"C{i:02d}" for i in range(c)]
    self.records = []
    for i in range(n):
      length = int(rng.integers(300, 3000))
      labels = np.zeros(c, np.float32)
      labels[rng.integers(0, c)] = 1
      segs = tuple(Segment(float(s), float(s) + 5.0, int(np.argmax(labels)))
                   for s in rng.uniform(0, length * 0.64 - 6, size=5))
      self.records.append(VideoRecord(
          video_id=f"v{i:04d}", rgb=rng.normal(size=(length, d)).astype(np.float32),
          flow=rng.normal(size=(length, d)).astype(np.float32), labels=labels,
          segments=segs, duration=length * 0.64))

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i]


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--videos", type=int, default=210)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  cfg = defaults.base_config()
  videos = _Videos(args.videos, 750, 1024, 20)
  gt = ground_truth.ground_truth_from_dict({"database": {
      r.video_id: {"subset": "test", "duration": r.duration,
                   "annotations": [{"segment": [s.start_s, s.end_s],
                                    "label": videos.classes[s.class_index]}
                                   for s in r.segments]}
      for r in videos.records}}, subset="test")
  model = model_lib.from_config(cfg.model, 20)
  tx = train.make_optimizer(cfg.optim)
  state = train.create_train_state(cfg, model, tx, rgb_dim=1024, flow_dim=1024)
  small = _Videos(2, 750, 1024, 20, seed=1)
  small.classes = videos.classes
  evaluator_lib.Evaluator(cfg, small, gt).run(model, state)  # compile
  t0 = time.perf_counter()
  out = evaluator_lib.Evaluator(cfg, videos, gt).run(model, state)
  total = time.perf_counter() - t0
  n_det = sum(len(v) for v in out["raw"].values())
  row = {"videos": args.videos, "seconds_detect_and_evaluate": total,
         "detections": n_det, "goal_seconds": 10.0, "host": socket.gethostname(),
         "load_avg": os.getloadavg(), "jax": jax.__version__,
         "date": time.strftime("%Y-%m-%d %H:%M:%S")}
  print(f"{args.videos} THUMOS-size videos: detect + evaluate {total:.2f} s "
        f"({n_det} detections; goal < 10 s; load {os.getloadavg()[0]:.2f})")
  harness.write_json(harness.results_path("inference_speed", args.json), row, indent=2)


if __name__ == "__main__":
  main()
