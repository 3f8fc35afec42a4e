"""Reference points for a detection mAP: chance and an upper bound (host numpy).

Both are scored with the same evaluator as the model's detections
(``evaluation.evaluate_detections``, the config's tIoU thresholds and tie
order), on the same test split and ground truth:

- **chance**: in every test video with ground truth, as many detections as
  the model made there, each a random segment (``random_segments``: two
  uniform points of the video's duration, sorted) labelled with one of the
  video's TRUE classes (uniformly) and a uniform random score.  The mean over
  ``CHANCE_DRAWS`` seeded draws, with the sample std of the average mAP.  It
  knows the video labels and the detection budget, so a model must localize
  to beat it.
- **upper bound**: detections cut from the ground-truth snippet mask (per
  class, 1 where a snippet's centre lies in an instance of that class, at the
  snippets the test batches sample) with the true labels as video scores,
  through the same post-processing (``inference.detect_scores``: proposals,
  OIC scores, NMS).  What the pipeline reaches with perfect snippet scores at
  the model's temporal resolution.

``standing_text`` says in a few lines where a model's mAP lies between them,
and its F&B accuracy against the all-background rate.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import numpy as np

from case_jax import detection_set, evaluation, inference
from case_jax.data.batching import snippet_fg_mask, test_indices
from case_jax.data.ground_truth import GroundTruth

CHANCE_DRAWS = 5


def random_segments(rng: np.random.Generator, duration: float, n: int) -> np.ndarray:
  """(n, 2) segments [start, end] in seconds: two uniform points in
  [0, duration], sorted."""
  return np.sort(rng.uniform(0.0, duration, size=(n, 2)), axis=1)


def video_classes(gt: GroundTruth) -> dict:
  """{video id: sorted class names annotated in it} (videos with GT only)."""
  out = {}
  for v, c in zip(gt.video.tolist(), gt.label.tolist()):
    out.setdefault(gt.video_ids[v], set()).add(gt.class_names[c])
  return {vid: sorted(names) for vid, names in out.items()}


def chance_detections(gt: GroundTruth, counts: Mapping[str, int],
                      durations: Mapping[str, float],
                      rng: np.random.Generator) -> detection_set.Detections:
  """One draw: ``counts[vid]`` random segments in each video with GT, each
  labelled with one of its true classes, uniform random scores."""
  ids, labels, scores, segments = [], [], [], []
  for vid, names in sorted(video_classes(gt).items()):
    n = int(counts.get(vid, 0))
    if n <= 0:
      continue
    ids += [vid] * n
    labels += [names[i] for i in rng.integers(len(names), size=n)]
    scores.append(rng.uniform(size=n))
    segments.append(random_segments(rng, float(durations[vid]), n))
  return detection_set.detections_from_arrays(
      ids, np.asarray(labels, dtype=object),
      np.concatenate(scores) if scores else np.zeros(0),
      np.concatenate(segments) if segments else np.zeros((0, 2)),
      source="<chance>")


def chance_map(gt: GroundTruth, counts: Mapping[str, int],
               durations: Mapping[str, float], tiou_thresholds, *,
               draws: int = CHANCE_DRAWS, seed: int = 0,
               tie_order: str = "numpy") -> dict:
  """mAP of ``draws`` chance draws (draw i seeded by (seed, i)).

  Returns {"map": (K,) mean over draws, "average_map": mean of the draws'
  average mAP, "average_map_std": its sample std (ddof=1; 0 for one draw),
  "draws"}."""
  maps = []
  for i in range(draws):
    rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
    dets = chance_detections(gt, counts, durations, rng)
    maps.append(evaluation.evaluate_detections(
        gt, dets, np.asarray(tiou_thresholds, np.float64),
        tie_order=tie_order)["map"])
  maps = np.asarray(maps)
  avg = maps.mean(1)
  return {"map": maps.mean(0).tolist(), "average_map": float(avg.mean()),
          "average_map_std": float(avg.std(ddof=1)) if draws > 1 else 0.0,
          "draws": int(draws)}


def class_masks(record, indices: np.ndarray) -> np.ndarray:
  """(T', C) float32: per class, the ground-truth mask of the sampled
  snippets ``indices`` (``snippet_fg_mask`` of that class's instances)."""
  return np.stack([snippet_fg_mask(dataclasses.replace(
      record, segments=tuple(s for s in record.segments if s.class_index == c)),
      indices) for c in range(len(record.labels))], axis=1)


def upper_bound_detections(test_set, cfg) -> dict:
  """{video id: detections} cut from the ground-truth masks (module doc)."""
  out = {}
  for rec in test_set:
    idx = test_indices(rec.num_snippets, cfg.data.num_segments,
                       cfg.data.get("test_sampling", "resample"))
    out[rec.video_id] = inference.detect_scores(
        class_masks(rec, idx), np.asarray(rec.labels, np.float64),
        rec.num_snippets, test_set, cfg.inference)
  return out


def upper_bound_map(gt: GroundTruth, test_set, cfg) -> dict:
  """{"map": (K,), "average_map"} of ``upper_bound_detections``."""
  result = evaluation.evaluate_indexed(
      gt, upper_bound_detections(test_set, cfg), list(test_set.classes),
      cfg.eval.tiou_thresholds, tie_order=cfg.eval.tie_order)
  return {"map": np.asarray(result["map"]).tolist(),
          "average_map": float(result["average_map"])}


def reference_points(gt: GroundTruth, test_set, detections: Mapping[str, list],
                     cfg, *, draws: int = CHANCE_DRAWS) -> dict:
  """{"chance": chance_map, "upper_bound": upper_bound_map} for a model's
  ``detections`` {video id: [...]} (only their count per video is used)."""
  counts = {vid: len(ds) for vid, ds in detections.items()}
  durations = {rec.video_id: float(rec.duration) for rec in test_set}
  return {"chance": chance_map(gt, counts, durations, cfg.eval.tiou_thresholds,
                               draws=draws, seed=int(cfg.seed),
                               tie_order=cfg.eval.tie_order),
          "upper_bound": upper_bound_map(gt, test_set, cfg)}


def standing_text(average_map: float, refs: Mapping, fb_acc: Optional[float] = None,
                  bg_rate: Optional[float] = None) -> str:
  """Where the model stands, for the terminal: its average mAP beside chance
  and the upper bound (and the share of the gap it closes), its F&B
  accuracy beside the all-background rate."""
  lo, hi = refs["chance"]["average_map"], refs["upper_bound"]["average_map"]
  share = (average_map - lo) / (hi - lo) if hi > lo else float("nan")
  lines = [f"Average mAP {100 * average_map:.2f}: chance {100 * lo:.2f} "
           f"(± {100 * refs['chance']['average_map_std']:.2f} over "
           f"{refs['chance']['draws']} draws), upper bound {100 * hi:.2f} "
           f"-> {100 * share:.0f}% of the way from chance to the upper bound."]
  if fb_acc is not None and bg_rate is not None:
    verdict = "above" if fb_acc > bg_rate else "NOT above"
    lines.append(f"F&B snippet accuracy {100 * fb_acc:.2f}%, {verdict} the "
                 f"{100 * bg_rate:.2f}% of calling every snippet background.")
  return "\n".join(lines) + "\n"
