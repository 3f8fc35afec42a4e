"""Every result file and text an evaluation writes, in one place.

Files of an evaluation directory (``write_eval_outputs``):

- ``detections.json``: the ActivityNet result format (notes §3 step 9),
  ``{"version": "VERSION 1.3", "results": {vid: [{"label", "score",
  "segment"}]}, "external_data": {}}``;
- ``detections.csv``: header video,label,start,end,score, one row per
  detection, numbers as Python's repr (full precision);
- ``detections_thumos14.txt``: THUMOS14 evaluation-toolkit lines;
- ``metrics.json``: the evaluate_detections result (``result_to_json``) plus
  the caller's extra scalars.

The THUMOS14 toolkit text has one detection per line, space-separated
(``[video_name] [starting_time] [ending_time] [class_label]
[confidence_score]``), e.g. ``video_test_0000004 12.3200 17.6000 7 0.91234``.
Class ids (``class_ids``): None (default) picks them from ``class_names``
(``thumos14_class_ids``): the official THUMOS14 detection ids, the classes'
indices in UCF101 (``THUMOS14_DETECTION_CLASS_IDS``, which the official
toolkit's ground truth uses), when the names are exactly THUMOS14's 20
classes in any order, else the 1-based index in ``class_names`` (the model's
class order); ``"thumos14"`` forces the official ids; or a mapping
``{class name: id}``.  The toolkit format has no room for a header, so the
mapping used is recorded in metrics.json (``thumos14_class_ids``: one of
``ID_MAPPINGS``).
Videos are written in sorted order, each video's detections by decreasing
score (stable).

Every file is written atomically (case_jax/fileio.py).
"""
from __future__ import annotations

import csv
import json
import os
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from case_jax import fileio

DETECTIONS_JSON = "detections.json"
DETECTIONS_CSV = "detections.csv"
DETECTIONS_THUMOS14 = "detections_thumos14.txt"
METRICS_JSON = "metrics.json"

THUMOS14_DETECTION_CLASS_IDS = {
    "BaseballPitch": 7, "BasketballDunk": 9, "Billiards": 12, "CleanAndJerk": 21,
    "CliffDiving": 22, "CricketBowling": 23, "CricketShot": 24, "Diving": 26,
    "FrisbeeCatch": 31, "GolfSwing": 33, "HammerThrow": 36, "HighJump": 40,
    "JavelinThrow": 45, "LongJump": 51, "PoleVault": 68, "Shotput": 79,
    "SoccerPenalty": 85, "TennisSwing": 92, "ThrowDiscus": 93,
    "VolleyballSpiking": 97,
}

OFFICIAL_IDS = "official UCF101"
MODEL_ORDER_IDS = "1..C in model order"
ID_MAPPINGS = (OFFICIAL_IDS, MODEL_ORDER_IDS)

ClassIds = Union[None, str, Mapping[str, int]]


# ---------------------------------------------------------------------------
# Detections: ActivityNet result json and CSV.

def _label_name(label, class_names: Sequence[str]) -> str:
  if isinstance(label, str):
    return label
  if not 0 <= int(label) < len(class_names):
    raise ValueError(f"label index {label} out of range for {len(class_names)} class names")
  return class_names[int(label)]


def to_result_json(detections_by_video: Mapping[str, Sequence[dict]],
                   class_names: Sequence[str]) -> dict:
  """ActivityNet result format (notes §3 step 9).

  detections_by_video: {video id: detection.detect_video output}, labels
  as class indices or names.  Returns {"version": "VERSION 1.3", "results":
  {vid: [{"label": class name, "score", "segment"}]}, "external_data": {}};
  videos without detections are absent, as released.
  """
  results = {}
  for vid, dets in detections_by_video.items():
    if len(dets):
      results[vid] = [{"label": _label_name(d["label"], class_names), "score": float(d["score"]),
                       "segment": [float(d["segment"][0]), float(d["segment"][1])]}
                      for d in dets]
  return {"version": "VERSION 1.3", "results": results, "external_data": {}}


def write_results(path_json, path_csv, detections_by_video: Mapping[str, Sequence[dict]],
                  class_names: Sequence[str]) -> dict:
  """Writes the result JSON and (unless path_csv is None) a CSV with header
  video,label,start,end,score, one row per detection.  Both writes are
  atomic.  Returns the result dict."""
  result = to_result_json(detections_by_video, class_names)

  def write_json(f):
    # allow_nan=False: never write a file that JSON readers reject.
    json.dump(result, f, allow_nan=False)

  def write_csv(f):
    writer = csv.writer(f)
    writer.writerow(["video", "label", "start", "end", "score"])
    for vid, dets in result["results"].items():
      for d in dets:
        writer.writerow([vid, d["label"], repr(d["segment"][0]), repr(d["segment"][1]),
                         repr(d["score"])])

  fileio.atomic_write(path_json, write_json)
  if path_csv is not None:
    fileio.atomic_write(path_csv, write_csv)
  return result


# ---------------------------------------------------------------------------
# THUMOS14 toolkit text.

def thumos14_class_ids(class_names: Sequence[str]) -> tuple[dict, str]:
  """({class name: toolkit id}, which of ``ID_MAPPINGS``) for the model's
  class list: the official ids when it is THUMOS14's 20 classes (by name,
  any order), else 1..C in the given order."""
  names = [str(n) for n in class_names]
  if len(set(names)) != len(names):
    raise ValueError("class_names has repeated names")
  if sorted(names) == sorted(THUMOS14_DETECTION_CLASS_IDS):
    return dict(THUMOS14_DETECTION_CLASS_IDS), OFFICIAL_IDS
  return {name: i + 1 for i, name in enumerate(names)}, MODEL_ORDER_IDS


def _id_map(class_names: Optional[Sequence[str]], class_ids: ClassIds) -> dict:
  if class_ids is None:
    if class_names is None:
      raise ValueError("give class_names (the model's class order) or class_ids")
    return thumos14_class_ids(class_names)[0]
  if isinstance(class_ids, str):
    if class_ids.lower() != "thumos14":
      raise ValueError(f"class_ids must be None, 'thumos14' or a mapping, got {class_ids!r}")
    return dict(THUMOS14_DETECTION_CLASS_IDS)
  return {str(k): int(v) for k, v in class_ids.items()}


def thumos14_lines(result: Mapping, class_names: Optional[Sequence[str]] = None,
                   class_ids: ClassIds = None) -> list:
  """The toolkit lines (without newlines) of an ActivityNet result dict
  (``to_result_json``'s output, or its inner ``results`` mapping)."""
  results = result.get("results", result) if isinstance(result, Mapping) else None
  if not isinstance(results, Mapping):
    raise ValueError("expected an ActivityNet result dict {'results': {video: [...]}}")
  ids = _id_map(class_names, class_ids)
  lines = []
  for vid in sorted(results):
    if any(c.isspace() for c in vid) or not vid:
      raise ValueError(f"video id {vid!r} is empty or contains whitespace: the "
                       "toolkit format is space-separated")
    dets = sorted(results[vid], key=lambda d: -float(d["score"]))
    for d in dets:
      label = d["label"]
      if label not in ids:
        raise ValueError(f"{vid}: label {label!r} has no class id (known: "
                         f"{sorted(ids)[:5]}...); pass class_names or class_ids")
      t0, t1 = (float(x) for x in d["segment"])
      lines.append(f"{vid} {t0:.4f} {t1:.4f} {ids[label]} {float(d['score']):.8g}")
  return lines


def write_thumos14(path: str, result: Mapping,
                   class_names: Optional[Sequence[str]] = None,
                   class_ids: ClassIds = None) -> int:
  """Writes the toolkit text file atomically; returns the number of lines."""
  lines = thumos14_lines(result, class_names, class_ids)
  fileio.write_text(path, "".join(line + "\n" for line in lines))
  return len(lines)


# ---------------------------------------------------------------------------
# mAP results: text table and json.

def _threshold_text(t: float) -> str:
  return f"{t:.2f}" if abs(t - round(t, 2)) < 1e-9 else f"{t:.3f}"


REFERENCE_ROWS = (("chance", "chance (%)"), ("upper_bound", "upper bound (%)"))


def format_map_table(result: Mapping, per_class: bool = False,
                     references: Optional[Mapping] = None) -> str:
  """Text table of an evaluation.evaluate_detections result, in percent.

  Rows: tIoU, mAP (%), then the summaries and the average over all
  thresholds; with ``references`` (reference_points.reference_points), the
  chance and upper-bound mAP per threshold and their averages under them;
  with per_class, one AP (%) row per class after them.
  """
  thr = result["tiou_thresholds"]
  head = "tIoU"
  refs = [(label, references[key]) for key, label in REFERENCE_ROWS
          if references and key in references]
  width = max(len(head), *(len(k) for k in result["summary"]), len("average mAP (%)"),
              *((len(c) for c in result["class_names"]) if per_class else [0]),
              *(len(label) + 5 for label, _ in refs))
  cells = [f"{_threshold_text(t):>7}" for t in thr]
  lines = [f"{head:<{width}}" + "".join(cells),
           f"{'mAP (%)':<{width}}" + "".join(f"{100 * v:7.2f}" for v in result["map"])]
  for name, value in result["summary"].items():
    lines.append(f"{name:<{width}}{100 * value:7.2f}")
  lines.append(f"{'average mAP (%)':<{width}}{100 * result['average_map']:7.2f}")
  for label, ref in refs:
    lines.append(f"{label:<{width}}" + "".join(f"{100 * v:7.2f}" for v in ref["map"]))
    lines.append(f"{'  average':<{width}}{100 * ref['average_map']:7.2f}")
  if per_class:
    lines.append("AP (%) per class:")
    ap = np.asarray(result["ap"])
    for c, name in enumerate(result["class_names"]):
      lines.append(f"{name:<{width}}" + "".join(f"{100 * v:7.2f}" for v in ap[:, c]))
  return "\n".join(lines)


def result_to_json(result: Mapping) -> dict:
  """evaluate_detections result with arrays as lists (for json.dump)."""
  return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
          for k, v in result.items()}


# ---------------------------------------------------------------------------
# A whole output directory.

def write_detection_files(out_dir: str, detections_by_video: Mapping[str, Sequence[dict]],
                          class_names: Sequence[str]) -> dict:
  """detections.json, detections.csv and detections_thumos14.txt in
  ``out_dir`` (created if needed); returns the result dict."""
  os.makedirs(out_dir, exist_ok=True)
  results = write_results(os.path.join(out_dir, DETECTIONS_JSON),
                          os.path.join(out_dir, DETECTIONS_CSV),
                          detections_by_video, class_names)
  write_thumos14(os.path.join(out_dir, DETECTIONS_THUMOS14), results, class_names)
  return results


def write_eval_outputs(out_dir: str, evaluated: dict, extra: Optional[dict] = None) -> dict:
  """The detection files and metrics.json of one evaluation.

  evaluated: Evaluator.run's dict; its "raw" detections (labels as
  class indices) and "class_names" give the detection files, its "result"
  (if any) the metrics; extra: scalars added to metrics.json (step, snippet
  statistics).  metrics.json also says which class ids
  detections_thumos14.txt uses (``thumos14_class_ids``).  Returns
  {"detections": path, "metrics": path, "thumos14_class_ids": mapping}.
  """
  write_detection_files(out_dir, evaluated["raw"], evaluated["class_names"])
  metrics = result_to_json(evaluated["result"]) if evaluated.get("result") else {}
  mapping = thumos14_class_ids(evaluated["class_names"])[1]
  metrics["thumos14_class_ids"] = mapping
  if extra:
    metrics.update(extra)
  fileio.write_json(os.path.join(out_dir, METRICS_JSON), metrics)
  return {"detections": os.path.join(out_dir, DETECTIONS_JSON),
          "metrics": os.path.join(out_dir, METRICS_JSON),
          "thumos14_class_ids": mapping}
