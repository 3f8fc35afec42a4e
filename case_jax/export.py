"""Detections as THUMOS14 evaluation-toolkit text.

One detection per line, space-separated, as the THUMOS14 detection task asks
(``[video_name] [starting_time] [ending_time] [class_label] [confidence_score]``):

    video_test_0000004 12.3200 17.6000 7 0.91234

Class ids (the ``class_ids`` argument):

- ``None`` (default): the 1-based index of the label in ``class_names``
  (the model's class order; for THUMOS14, ``THUMOS14_CLASSES`` gives 1..20).
- ``"thumos14"``: the official THUMOS14 detection ids, i.e. the classes'
  indices in UCF101 (``THUMOS14_DETECTION_CLASS_IDS``: BaseballPitch 7,
  BasketballDunk 9, ..., VolleyballSpiking 97), which the official toolkit's
  ground truth uses.
- a mapping ``{class name: id}``.

Input: the ActivityNet-format result dict that ``detection.to_result_json``
/ ``write_results`` produce (``{"results": {video: [{"label", "segment",
"score"}]}}``), or its inner ``results`` mapping.  Videos are written in sorted
order, each video's detections by decreasing score (stable).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

from case_jax import fileio

THUMOS14_DETECTION_CLASS_IDS = {
    "BaseballPitch": 7, "BasketballDunk": 9, "Billiards": 12, "CleanAndJerk": 21,
    "CliffDiving": 22, "CricketBowling": 23, "CricketShot": 24, "Diving": 26,
    "FrisbeeCatch": 31, "GolfSwing": 33, "HammerThrow": 36, "HighJump": 40,
    "JavelinThrow": 45, "LongJump": 51, "PoleVault": 68, "Shotput": 79,
    "SoccerPenalty": 85, "TennisSwing": 92, "ThrowDiscus": 93,
    "VolleyballSpiking": 97,
}

ClassIds = Union[None, str, Mapping[str, int]]


def _id_map(class_names: Optional[Sequence[str]], class_ids: ClassIds) -> dict:
  if class_ids is None:
    if class_names is None:
      raise ValueError("give class_names (the model's class order) or class_ids")
    if len(set(class_names)) != len(class_names):
      raise ValueError("class_names has repeated names")
    return {name: i + 1 for i, name in enumerate(class_names)}
  if isinstance(class_ids, str):
    if class_ids.lower() != "thumos14":
      raise ValueError(f"class_ids must be None, 'thumos14' or a mapping, got {class_ids!r}")
    return dict(THUMOS14_DETECTION_CLASS_IDS)
  return {str(k): int(v) for k, v in class_ids.items()}


def thumos14_lines(result: Mapping, class_names: Optional[Sequence[str]] = None,
                   class_ids: ClassIds = None) -> list:
  """The toolkit lines (without newlines) of an ActivityNet result dict."""
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
