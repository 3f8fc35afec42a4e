"""The one evaluation path: a model state -> detections -> mAP and snippet
statistics on the test split.

``Evaluator.from_config`` is the only opener of the test split and its
ground truth; training (every ``eval_every`` steps and at the end),
``--mode=evaluate``, ``--mode=plots``, several seeds and the ablation tables
all call ``run``, so they give identical numbers for the same checkpoint.
``write`` puts the results in ``<dir>/``: detections.json (ActivityNet
result format), detections.csv, detections_thumos14.txt and metrics.json.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from case_jax import data as data_lib
from case_jax import errors
from case_jax.data import ground_truth
from case_jax import (datasets, evaluation, fileio, inference, outputs,
                      reference_points)

SNIPPET_KEYS = ("test_fb_acc", "test_H_pc", "test_H_mean_pc")


def test_gt_subset(cfg, test_set=None) -> str:
  """The ground-truth subset scored: ``eval.gt_subset``, or with "auto" the
  test split's subset as its reader found it (ActivityNet 'validation',
  THUMOS14 'test', 'val', ...); "test" when the reader does not say."""
  if cfg.eval.gt_subset != "auto":
    return cfg.eval.gt_subset
  return getattr(test_set, "gt_subset", None) or "test"


def load_test_ground_truth(root: str, cfg, subset: Optional[str] = None
                           ) -> ground_truth.GroundTruth:
  """gt.json in ``root`` or, for the W-TALC layout, its annotation arrays;
  for a prepared dataset (layout "tfds", root = its data_dir) the gt.json
  stored with it.  ``subset``: None = ``test_gt_subset(cfg)``."""
  subset = subset or test_gt_subset(cfg)
  layout, tfds_name = datasets.resolve_layout(cfg, root)
  if layout == "tfds":
    from case_jax.data import tfds_builders  # optional extra
    path = tfds_builders.prepared_file(tfds_name, root, tfds_builders.GT_FILE)
    if not os.path.isfile(path):
      raise errors.MissingFile(
          f"{path} is missing: data.tfds_name={tfds_name} was prepared "
          "without its ground truth; prepare it again (python -m "
          "case_jax.data.prepare)")
    return ground_truth.load_gt_json(path, subset=subset)
  path = os.path.join(root, "gt.json")
  if os.path.exists(path):
    return ground_truth.load_gt_json(path, subset=subset)
  if cfg.data.layout in ("wtalc", "auto") and os.path.isdir(root):
    dirs = sorted(d for d in os.listdir(root) if d.endswith("-Annotations"))
    if dirs:
      return ground_truth.load_wtalc_annotations(os.path.join(root, dirs[0]),
                                                 subset=subset)
  raise FileNotFoundError(f"{path} is missing: evaluation needs the ground "
                          "truth (gt.json, or the W-TALC *-Annotations folder).")


def snippet_scalars(stats: dict) -> dict:
  """The detection pass's snippet statistics (inference.SnippetStats) under
  their metrics names: F&B accuracy, H(P^C), H(mean P^C)."""
  return dict(zip(SNIPPET_KEYS, (float(stats["fb_acc"]), float(stats["H_pc"]),
                                 float(stats["H_mean_pc"]))))


def scalar_metrics(result: dict, prefix: str = "") -> dict:
  """mAP per threshold and the summaries as flat floats (for metrics.jsonl)."""
  out = {f"{prefix}mAP": float(result["average_map"])}
  for t, v in zip(result["tiou_thresholds"], result["map"]):
    out[f"{prefix}mAP@{float(t):.2f}"] = float(v)
  for name, v in result["summary"].items():
    out[f"{prefix}{name}"] = float(v)
  return out


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


class Evaluator:
  """The test split (in the training's class order) and its ground truth."""

  def __init__(self, cfg, test_set, gt: ground_truth.GroundTruth):
    self.cfg, self.test_set, self.gt = cfg, test_set, gt

  @classmethod
  def from_config(cls, cfg, root: str, classes, *, stream=None,
                  required: bool = True) -> Optional["Evaluator"]:
    """Opens ``root``'s test split and ground truth.  ``required=False``:
    None, with a note, only when the dataset has no test split at all
    (``data.NoSplit``: training goes on without evaluation); a test split
    that exists but is broken is refused (``LayoutError``), never skipped."""
    stream = stream or sys.stdout
    try:
      test_set = datasets.open_split(cfg, root, "test", classes=classes,
                                     stream=stream)
    except data_lib.NoSplit as e:
      if required:
        raise
      stream.write(f"No test split in {root} ({e}): training without "
                   "evaluation.\n")
      return None
    subset = test_gt_subset(cfg, test_set)
    stream.write(f"evaluating on the ground truth's {subset!r} subset ("
                 + ("the test split's, as found" if cfg.eval.gt_subset == "auto"
                    else "eval.gt_subset") + ")\n")
    try:
      gt = load_test_ground_truth(root, cfg, subset)
    except errors.UserError:
      raise
    except FileNotFoundError as e:
      raise errors.MissingFile(str(e)) from None
    return cls(cfg, test_set, gt)

  def run(self, model, state, *, references: bool = False) -> dict:
    """Detects on the test split with ``state`` and scores it.

    ``references``: also the chance and upper-bound reference points
    (case_jax/reference_points.py), under "references".
    Returns {"result": evaluate_detections' output, "scalars": flat metrics
    (mAP, mAP@t, summaries, snippet statistics), "detections": by video
    with class-name labels, "raw": by video with class indices, "stats":
    the snippet statistics, "class_names"}.
    """
    cfg = self.cfg
    dets, _, stats = inference.detect_dataset(self.test_set, model, state.params,
                                              state.q_r, cfg)
    names = list(self.test_set.classes)
    named = {vid: [dict(d, label=names[d["label"]]) for d in ds]
             for vid, ds in dets.items()}
    result = evaluation.evaluate_indexed(self.gt, dets, names, cfg.eval.tiou_thresholds,
                                         tie_order=cfg.eval.tie_order)
    out = {"result": result, "scalars": {**scalar_metrics(result),
                                         **snippet_scalars(stats)},
           "detections": named, "raw": dets, "stats": stats,
           "class_names": names}
    if references:
      out["references"] = {
          **reference_points.reference_points(self.gt, self.test_set, dets, cfg),
          "bg_rate": float(stats["bg_rate"])}
    return out

  @staticmethod
  def write(out_dir: str, evaluated: dict, extra: Optional[dict] = None) -> dict:
    """The result files of ``run``'s output into ``out_dir``; ``extra`` goes
    into metrics.json beside the mAP and the snippet statistics.  Without
    "result" (unlabelled videos, --mode=predict) only the detections."""
    if evaluated.get("result") is None:
      outputs.write_detection_files(out_dir, evaluated["raw"], evaluated["class_names"])
      return {"detections": os.path.join(out_dir, outputs.DETECTIONS_JSON)}
    sc = evaluated["scalars"]
    refs = ({"reference_points": evaluated["references"]}
            if "references" in evaluated else {})
    return outputs.write_eval_outputs(out_dir, evaluated, {
        **{k: sc[k] for k in SNIPPET_KEYS}, **refs, **(extra or {})})

  def summary_text(self, evaluated: dict, what: str) -> str:
    """The mAP table and snippet statistics of ``what`` (e.g. "checkpoint
    step 40"), for the terminal."""
    sc = evaluated["scalars"]
    return (f"Detection mAP of {what}, {len(self.test_set)} test videos:\n" +
            outputs.format_map_table(evaluated["result"],
                                     references=evaluated.get("references")) +
            f"\nF&B snippet accuracy: {100 * sc['test_fb_acc']:.2f}%   H(P^C) "
            f"{sc['test_H_pc']:.3f}   H(mean P^C) {sc['test_H_mean_pc']:.3f} nats\n")

  @staticmethod
  def standing_text(evaluated: dict) -> str:
    """Where the model stands between chance and the upper bound, and its
    F&B accuracy against the all-background rate ("" without references)."""
    refs = evaluated.get("references")
    if not refs:
      return ""
    return reference_points.standing_text(
        evaluated["result"]["average_map"], refs,
        evaluated["scalars"]["test_fb_acc"], refs["bg_rate"])
