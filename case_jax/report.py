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

from case_jax import detection_set, evaluation, fileio, inference, outputs


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
  results = outputs.to_result_json(
      {vid: [d for d in ds if names[d["label"]] in scored] for vid, ds in dets.items()},
      names)
  found = detection_set.detections_from_results(results, source="<model detections>")
  result = evaluation.evaluate_detections(
      gt, found, np.asarray(cfg.eval.tiou_thresholds, np.float64),
      tie_order=cfg.eval.tie_order)
  return {"result": result, "detections": named, "raw": dets, "fg": fg,
          "stats": stats,
          "class_names": names}


SNIPPET_KEYS = ("test_fb_acc", "test_H_pc", "test_H_mean_pc")


def snippet_scalars(stats: dict) -> dict:
  """The detection pass's snippet statistics (inference.SnippetStats) under
  their metrics names: F&B accuracy, H(P^C), H(mean P^C)."""
  return dict(zip(SNIPPET_KEYS, (float(stats["fb_acc"]), float(stats["H_pc"]),
                                 float(stats["H_mean_pc"]))))


def read_eval_metrics(eval_dir: str, step: Optional[int] = None) -> Optional[dict]:
  """``<eval_dir>/metrics.json`` as the flat scalars of ``scalar_metrics``
  (plus ``step`` and the snippet statistics), or None when it is missing
  or was written at another step than ``step``."""
  path = os.path.join(eval_dir, "metrics.json")
  if not os.path.exists(path):
    return None
  m = fileio.read_json(path)
  if step is not None and m.get("step") != step:
    return None
  out = {"step": m.get("step"), **scalar_metrics({
      "average_map": m["average_map"], "tiou_thresholds": m["tiou_thresholds"],
      "map": m["map"], "summary": m.get("summary", {})})}
  out.update({k: float(m[k]) for k in SNIPPET_KEYS if k in m})
  return out


def scalar_metrics(result: dict, prefix: str = "") -> dict:
  """mAP per threshold and the summaries as flat floats (for metrics.jsonl)."""
  out = {f"{prefix}mAP": float(result["average_map"])}
  for t, v in zip(result["tiou_thresholds"], result["map"]):
    out[f"{prefix}mAP@{float(t):.2f}"] = float(v)
  for name, v in result["summary"].items():
    out[f"{prefix}{name}"] = float(v)
  return out


def write_outputs(out_dir: str, evaluated: dict, extra: Optional[dict] = None) -> dict:
  """Writes detections.json/.csv/_thumos14.txt and metrics.json (figures:
  case_jax/visualize.py, into <workdir>/plots/)."""
  os.makedirs(out_dir, exist_ok=True)
  results = outputs.write_results(os.path.join(out_dir, "detections.json"),
                                    os.path.join(out_dir, "detections.csv"),
                                    evaluated["raw"], evaluated["class_names"])
  outputs.write_thumos14(os.path.join(out_dir, "detections_thumos14.txt"), results,
                        evaluated["class_names"])
  metrics = outputs.result_to_json(evaluated["result"]) if evaluated.get("result") else {}
  if extra:
    metrics.update(extra)
  fileio.write_json(os.path.join(out_dir, "metrics.json"), metrics)
  return {"detections": os.path.join(out_dir, "detections.json"),
          "metrics": os.path.join(out_dir, "metrics.json")}
