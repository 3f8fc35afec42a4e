"""Evaluation runs: a model state -> detections -> mAP -> files on disk.

``evaluate_state`` is what training calls every ``eval_every`` steps and at
the end, and what ``--mode=evaluate`` calls on a checkpoint; the two therefore
give identical numbers.  ``write_outputs`` writes ``<dir>/detections.json``
(ActivityNet result format), ``detections.csv``, ``detections_thumos14.txt``
(THUMOS14 toolkit lines) and ``metrics.json``; the figures (per-video
timelines, embeddings, mAP-vs-tIoU) go to ``<workdir>/plots/``, written by
case_jax/visualize.py at the end of training or by ``--mode=plots``.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from case_jax import detection, evaluation, export, fileio, inference


def load_test_ground_truth(root: str, cfg) -> evaluation.GroundTruth:
  """gt.json in ``root`` or, for the W-TALC layout, its annotation arrays."""
  path = os.path.join(root, "gt.json")
  if os.path.exists(path):
    return evaluation.load_gt_json(path, subset=cfg.eval.gt_subset)
  if cfg.data.layout == "wtalc":
    dirs = sorted(d for d in os.listdir(root) if d.endswith("-Annotations"))
    if dirs:
      return evaluation.load_wtalc_annotations(os.path.join(root, dirs[0]),
                                               subset=cfg.eval.gt_subset)
  raise FileNotFoundError(f"{path} is missing: evaluation needs the ground "
                          "truth (gt.json, or the W-TALC *-Annotations folder).")


def evaluate_state(test_set, model, params, q_r, cfg, gt, *,
                   keep_scores: bool = False) -> dict:
  """Detects on ``test_set`` and evaluates against ``gt``.

  Returns {"result": evaluate_detections output, "detections": by video
  (labels as class names), "fg": foreground scores by video (if kept),
  "stats": F&B accuracy and clustering entropies of the same pass}.
  """
  dets, fg, stats = inference.detect_dataset(test_set, model, params, q_r, cfg,
                                      keep_scores=keep_scores)
  names = list(test_set.classes)
  named = {vid: [dict(d, label=names[d["label"]]) for d in ds]
           for vid, ds in dets.items()}
  # The official evaluator rejects labels absent from the GT subset; a small
  # test split can lack a class the model still predicts.  Those detections
  # cannot change the mAP (it averages over GT classes), so they are left
  # out of scoring here (they stay in the written detections).
  scored = set(gt.class_names)
  results = detection.to_result_json(
      {vid: [d for d in ds if names[d["label"]] in scored] for vid, ds in dets.items()},
      names)
  found = evaluation.detections_from_results(results, source="<model detections>")
  result = evaluation.evaluate_detections(
      gt, found, np.asarray(cfg.eval.tiou_thresholds, np.float64),
      tie_order=cfg.eval.tie_order)
  return {"result": result, "detections": named, "raw": dets, "fg": fg,
          "stats": stats,
          "class_names": names}


def scalar_metrics(result: dict, prefix: str = "") -> dict:
  """mAP per threshold and the summaries as flat floats (for metrics.jsonl)."""
  out = {f"{prefix}mAP": float(result["average_map"])}
  for t, v in zip(result["tiou_thresholds"], result["map"]):
    out[f"{prefix}mAP@{float(t):.2f}"] = float(v)
  for name, v in result["summary"].items():
    out[f"{prefix}{name}"] = float(v)
  return out


def write_outputs(out_dir: str, evaluated: dict, test_set=None, cfg=None,
                  extra: Optional[dict] = None) -> dict:
  """Writes detections.json/.csv/_thumos14.txt and metrics.json.

  ``test_set`` and ``cfg`` are no longer used (the timelines moved to
  ``<workdir>/plots/``, case_jax/visualize.py); kept so callers still work.
  """
  del test_set, cfg
  os.makedirs(out_dir, exist_ok=True)
  results = detection.write_results(os.path.join(out_dir, "detections.json"),
                                    os.path.join(out_dir, "detections.csv"),
                                    evaluated["raw"], evaluated["class_names"])
  export.write_thumos14(os.path.join(out_dir, "detections_thumos14.txt"), results,
                        evaluated["class_names"])
  metrics = evaluation.result_to_json(evaluated["result"]) if evaluated.get("result") else {}
  if extra:
    metrics.update(extra)
  fileio.write_json(os.path.join(out_dir, "metrics.json"), metrics)
  return {"detections": os.path.join(out_dir, "detections.json"),
          "metrics": os.path.join(out_dir, "metrics.json")}
