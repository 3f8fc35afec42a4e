"""Seeded ActivityNet 1.3-shaped workloads for benchmarks/activitynet_scale.py
and benchmarks/activitynet_memory.py.

Shape (ActivityNet 1.3: 200 classes; validation 4,926 videos, about 1.5
instances per video, nearly always one class per video, durations around
two minutes, long instances): durations log-normal with median 100 s (mean
about 120 s) clipped to [10, 600] s; 1 class (2 with probability 0.1);
1 + Poisson(0.5) instances, at most 6, each filling 30-95% of its share of
the video; snippet counts n = round(duration * 25 / 16) (features at 25 fps,
16-frame snippets: case_jax.data FEATURE_FPS / SNIPPET_FRAMES).
"""
from __future__ import annotations

import numpy as np

from case_jax.data import FEATURE_FPS, SNIPPET_FRAMES

VALIDATION_VIDEOS = 4926
NUM_CLASSES = 200
CLASSES = tuple(f"Activity{c:03d}" for c in range(NUM_CLASSES))


def anet_videos(num: int, seed: int, prefix: str = "v_val") -> list[dict]:
  """[{video_id, duration, snippets, classes (indices), annotations ((s, e,
  class index), ...)}] for ``num`` seeded videos."""
  rng = np.random.default_rng(seed)
  out = []
  for v in range(num):
    duration = float(np.clip(rng.lognormal(np.log(100.0), 0.6), 10.0, 600.0))
    own = rng.choice(NUM_CLASSES, size=1 + int(rng.random() < 0.1), replace=False)
    k = min(6, 1 + int(rng.poisson(0.5)))
    share = duration / k
    anns = []
    for i in range(k):
      length = share * rng.uniform(0.3, 0.95)
      start = i * share + rng.uniform(0, share - length)
      anns.append((round(start, 2), round(start + length, 2), int(rng.choice(own))))
    out.append({"video_id": f"{prefix}_{v:06d}", "duration": round(duration, 2),
                "snippets": max(1, int(round(duration * FEATURE_FPS / SNIPPET_FRAMES))),
                "classes": sorted({a[2] for a in anns}), "annotations": tuple(anns)})
  return out


def gt_json(videos: list[dict], subset: str = "validation") -> dict:
  """The ActivityNet gt.json dict of ``videos`` (all in ``subset``)."""
  return {"version": "VERSION 1.3 (synthetic)", "database": {
      v["video_id"]: {"subset": subset, "duration": v["duration"],
                      "annotations": [{"segment": [s, e], "label": CLASSES[c]}
                                      for s, e, c in v["annotations"]]}
      for v in videos}}


def result_json(videos: list[dict], per_video: int, seed: int) -> dict:
  """A result json of ``per_video`` detections per video: about 70% of
  the video's own classes, the rest of one or two confusers (classes of the GT); half jittered
  GT segments, half random ones; scores rounded to 3 decimals (ties)."""
  rng = np.random.default_rng(seed)
  # Confusers among the GT's classes: the official code refuses other labels.
  present = np.array(sorted({c for v in videos for c in v["classes"]}))
  results = {}
  for v in videos:
    confusers = rng.choice(present, size=1 + int(rng.random() < 0.5))
    dur = v["duration"]
    gt = np.array([a[:2] for a in v["annotations"]])
    gt_class = np.array([a[2] for a in v["annotations"]])
    pick = rng.integers(len(gt), size=per_video)
    sd = 0.2 * (gt[pick, 1] - gt[pick, 0])
    jit_s = gt[pick, 0] + rng.normal(0, 1, per_video) * sd
    jit_e = gt[pick, 1] + rng.normal(0, 1, per_video) * sd
    rnd_s = rng.uniform(0, 0.9 * dur, per_video)
    rnd_e = rnd_s + rng.uniform(0.05, 1.0, per_video) * (dur - rnd_s)
    jittered = rng.random(per_video) < 0.5
    s = np.where(jittered, np.minimum(jit_s, jit_e), rnd_s).clip(0, dur)
    e = np.where(jittered, np.maximum(jit_s, jit_e), rnd_e).clip(0, dur)
    e = np.maximum(e, s + 0.1)
    c = np.where(jittered, gt_class[pick], rng.choice(v["classes"], per_video))
    c = np.where(rng.random(per_video) < 0.7, c, rng.choice(confusers, per_video))
    score = np.round(rng.random(per_video), 3)
    dets = [{"label": CLASSES[ci], "score": sc, "segment": [si, ei]}
            for ci, sc, si, ei in zip(c.tolist(), score.tolist(), s.tolist(),
                                      e.tolist())]
    results[v["video_id"]] = dets
  return {"version": "VERSION 1.3", "results": results, "external_data": {}}


def snippet_scores(video: dict, num_segments: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
  """((T', C) fused snippet scores, (C,) video scores) as a trained model
  might give them: T' = min(T, n) (ActivityNet tests short videos at their
  length); the video's classes score 0.4-0.95 with a bump over each of
  their instances, a confuser 0.1-0.3 half the time, the rest below 0.05."""
  n = video["snippets"]
  t = min(num_segments, n)
  scores = rng.uniform(0, 0.08, (t, NUM_CLASSES)).astype(np.float32)
  video_scores = rng.uniform(0, 0.05, NUM_CLASSES).astype(np.float32)
  where = (np.arange(t) + 0.5) * video["duration"] / t        # seconds
  for s, e, c in video["annotations"]:
    inside = (where >= s) & (where <= e)
    scores[inside, c] += rng.uniform(0.4, 0.9) + rng.normal(0, 0.15, inside.sum())
  for c in video["classes"]:
    video_scores[c] = rng.uniform(0.4, 0.95)
  if rng.random() < 0.5:
    confuser = int(rng.integers(NUM_CLASSES))
    video_scores[confuser] = max(video_scores[confuser], rng.uniform(0.1, 0.3))
    scores[:, confuser] += rng.uniform(0, 0.5, t) * (rng.random(t) < 0.3)
  return np.clip(scores, 0, 1), video_scores
