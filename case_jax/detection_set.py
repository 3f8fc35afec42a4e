"""The detections an evaluation scores: a flat, input-ordered container and its
readers (arrays, a parsed ActivityNet result json, a result file).

Not to be confused with case_jax/detection.py, which *produces* detections
from snippet scores; this module only holds and parses them for
case_jax/evaluation.py.  Units: segments in seconds, ``[start, end]``;
N detections.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Mapping, Optional, Sequence

import numpy as np

from case_jax.errors import MissingFile, UserError


class BadDetections(UserError, ValueError):
  """Detections (a result file or arrays) that cannot be evaluated: the
  message names the file, the video and the fix."""


@dataclasses.dataclass(frozen=True)
class Detections:
  """Detections in input order (the order matters for ties).

  video_ids: (N,) str; labels: (N,) str class names; scores: (N,) float64;
  segments: (N, 2) float64 ``[start, end]`` seconds; source: for messages.
  """
  video_ids: np.ndarray
  labels: np.ndarray
  scores: np.ndarray
  segments: np.ndarray
  source: str = "<arrays>"

  def __post_init__(self):
    n = len(self.scores)
    if not (len(self.video_ids) == len(self.labels) == n
            and self.segments.shape == (n, 2)):
      raise BadDetections(f"{self.source}: detections need video_ids, labels, "
                       f"scores of shape (N,) and segments (N, 2); got "
                       f"{len(self.video_ids)}, {len(self.labels)}, {n}, "
                       f"{self.segments.shape}")
    bad = np.flatnonzero(np.isnan(self.scores) | np.isnan(self.segments).any(1))
    if bad.size:
      # The official code would rank NaN scores arbitrarily and count a NaN
      # tIoU as a match; reject instead.
      raise BadDetections(f"{self.source}: {bad.size} detection(s) with a NaN score "
                       f"or segment (first: video {self.video_ids[bad[0]]!r}); "
                       "drop or fix them before evaluating")

  def __len__(self) -> int:
    return len(self.scores)


def checked_segment(segment, where: str) -> tuple[float, float]:
  """``[s, e]`` (numbers or numeric strings, as in BaS-Net's copy) -> floats.

  The ground-truth readers apply the same rule to GT segments.
  """
  try:
    start, end = (float(x) for x in segment)
  except (TypeError, ValueError) as err:
    raise BadDetections(f"{where}: segment must be [start, end] in seconds, got "
                     f"{segment!r}") from err
  if math.isnan(start) or math.isnan(end):
    raise BadDetections(f"{where}: NaN in segment {segment!r}")
  return start, end


def detections_from_arrays(video_ids, labels, scores, segments, *,
                           class_names: Optional[Sequence[str]] = None,
                           source: str = "<arrays>") -> Detections:
  """Detections from in-memory arrays.

  video_ids: (N,) str; labels: (N,) class names, or int indices into
  ``class_names`` (required then: the GT class order is first-appearance,
  not the dataset's class list); scores: (N,); segments: (N, 2) seconds.
  """
  labels = np.asarray(labels)
  if labels.size and np.issubdtype(labels.dtype, np.integer):
    if class_names is None:
      raise ValueError(f"{source}: integer labels need class_names= to map them "
                       "to class names")
    labels = np.asarray(class_names, dtype=object)[labels]
  return Detections(
      video_ids=np.asarray(video_ids, dtype=object).reshape(-1),
      labels=np.asarray(labels, dtype=object).reshape(-1),
      scores=np.asarray(scores, np.float64).reshape(-1),
      segments=np.asarray(segments, np.float64).reshape(-1, 2),
      source=source)


def detections_from_results(data: Mapping, source: str = "<dict>") -> Detections:
  """Detections from a parsed ActivityNet result json.

  ``{"version", "results": {vid: [{"label", "score", "segment": [s, e]}]},
  "external_data"}``; only ``results`` is read (CASE's evaluator copy does not
  require ``external_data`` either).  Order: videos, then detections, as in
  the file.
  """
  if not isinstance(data, Mapping) or "results" not in data:
    raise BadDetections(f"{source}: not an ActivityNet result json (no 'results' "
                        "key); expected {'results': {vid: [{'label', 'score', "
                        "'segment'}]}}")
  if not isinstance(data["results"], Mapping):
    raise BadDetections(f"{source}: 'results' must map each video id to its list "
                        f"of detections, got a {type(data['results']).__name__}")
  vids, labels, scores, segs = [], [], [], []
  for vid, dets in data["results"].items():
    if not isinstance(dets, (list, tuple)):
      raise BadDetections(f"{source}: video {vid!r}: expected a list of "
                          f"detections, got {dets!r:.80}")
    # Fast path (ActivityNet validation results hold ~5e5 detections): the
    # fields are gathered here and converted by numpy in one go; whatever
    # fails is re-read by _checked_video, whose message names the detection.
    try:
      labels += [d["label"] for d in dets]
      scores += [d["score"] for d in dets]
      segs += [d["segment"] for d in dets]
    except (KeyError, TypeError, IndexError):
      _raise_first_bad(data["results"], source)
    vids += [vid] * len(dets)
  try:
    score_arr = np.asarray(scores, np.float64).reshape(-1)
    seg_arr = np.asarray(segs, np.float64) if segs else np.zeros((0, 2))
  except (TypeError, ValueError):
    _raise_first_bad(data["results"], source)
  if seg_arr.shape != (len(vids), 2) or score_arr.shape != (len(vids),):
    _raise_first_bad(data["results"], source)
  # numpy reads None as NaN: re-read that video so a missing value is named
  # as such (a real NaN score is then refused by Detections).
  nan = np.flatnonzero(np.isnan(seg_arr).any(1) | np.isnan(score_arr))
  if nan.size:
    _checked_video(vids[nan[0]], data["results"][vids[nan[0]]], source)
  return detections_from_arrays(vids, np.array(labels, dtype=object),
                                score_arr, seg_arr.reshape(-1, 2),
                                source=source)


def _raise_first_bad(results: Mapping, source: str):
  for vid, dets in results.items():
    _checked_video(vid, dets, source)
  raise BadDetections(f"{source}: detections that cannot be read as numbers")


def _checked_video(vid, dets, source: str) -> None:
  """Reads one video's detections one by one; raises BadDetections naming
  the first bad one."""
  for i, det in enumerate(dets):
    try:
      det["label"]
      float(det["score"])
      checked_segment(det["segment"], f"{source}: video {vid!r} detection {i}")
    except (KeyError, TypeError, ValueError) as err:
      if isinstance(err, UserError):
        raise
      raise BadDetections(f"{source}: video {vid!r} detection {i} needs 'label', "
                          f"'score' (a number) and 'segment', got {det!r:.200}"
                          ) from err


def load_detections(path: str) -> Detections:
  """Detections from an ActivityNet result json file (CASE's *_result.json).

  A missing file or malformed JSON is a user error naming the file (and
  the line and column of the JSON problem)."""
  if not os.path.isfile(path):
    raise MissingFile(f"{path}: no such detections file; pass a result json "
                      "{'results': {vid: [...]}} (e.g. <workdir>/eval/detections.json)")
  with open(path) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise BadDetections(f"{path}: not valid JSON at line {e.lineno} column "
                          f"{e.colno}: {e.msg}; fix or regenerate the file") from None
    except UnicodeDecodeError as e:
      raise BadDetections(f"{path}: not a UTF-8 text file ({e.reason}); pass the "
                          "result json") from None
  return detections_from_results(data, source=str(path))
