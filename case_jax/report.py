"""Result files of an evaluation: detections.json (ActivityNet result format),
detections.csv, detections_thumos14.txt (THUMOS14 toolkit lines) and
metrics.json.  (Temporary home: moves to case_jax/outputs.py.)
"""
from __future__ import annotations

import os
from typing import Optional

from case_jax import detection, evaluation, export, fileio


def write_outputs(out_dir: str, evaluated: dict, extra: Optional[dict] = None) -> dict:
  """Writes detections.json/.csv/_thumos14.txt and metrics.json."""
  os.makedirs(out_dir, exist_ok=True)
  results = detection.write_results(os.path.join(out_dir, "detections.json"),
                                    os.path.join(out_dir, "detections.csv"),
                                    evaluated["raw"], evaluated["class_names"])
  export.write_thumos14(os.path.join(out_dir, "detections_thumos14.txt"), results,
                        evaluated["class_names"])
  if evaluated.get("result") is None and not extra:
    return {"detections": os.path.join(out_dir, "detections.json")}  # unlabelled
  metrics = evaluation.result_to_json(evaluated["result"]) if evaluated.get("result") else {}
  if extra:
    metrics.update(extra)
  fileio.write_json(os.path.join(out_dir, "metrics.json"), metrics)
  return {"detections": os.path.join(out_dir, "detections.json"),
          "metrics": os.path.join(out_dir, "metrics.json")}
