"""The one reader of the W-TALC release files (annotation arrays, ambiguous
intervals, the joint feature file), for the W-TALC layout and evaluation
(``ground_truth.load_wtalc_annotations``).

Layout under a dataset root (``NAME`` = ``Thumos14reduced`` or
``ActivityNet1.2``)::

  ROOT/
    NAME-I3D-JOINTFeatures.npy      # object array of N arrays (n_i, 2 * D)
    NAME-Annotations/               # N entries, aligned by index
      videoname.npy  (N,) bytes     subset.npy   (N,) bytes
      classlist.npy  (C,) bytes     duration.npy (N, 1) or (N,) seconds
      segments.npy   object (N,): per video [[start_s, end_s], ...]
      labels.npy     object (N,): per video [name, ...] aligned with segments
      Ambiguous_test.txt            # optional: "vid  start end" per line

Columns ``[:D]`` of a feature array are RGB, ``[D:]`` flow.  THUMOS14 subsets
are ``validation`` (= train, 200) and ``test`` (212); ActivityNet 1.2 uses
``training`` (= train) and ``validation`` (= test).

Pickle.  ``segments.npy``, ``labels.npy`` and ``labels_all.npy`` hold ragged
lists and the joint feature file holds ragged (n_i, 2D) arrays: numpy can
only store those as pickled object arrays, so that is how the release ships
them and they cannot be read without unpickling.  The stock unpickler
(``np.load(..., allow_pickle=True)``) runs code chosen by the file's author,
so it is never used: those exact file names only (``PICKLED_ANNOTATIONS`` and
``JOINT_FEATURE_FILES``) are read with ``safe_pickle.load_object_npy``,
whose unpickler resolves nothing but numpy's own array / dtype / scalar
constructors and raises ``safe_pickle.UnsafePickleError`` on any other
global (``os.system``, ...) before calling it.  Every unpickled element is
then checked to be what the format says (lists of pairs of numbers /
strings; float ndarrays of shape (n, 2D), never arrays of Python objects).
Every other file is read with ``allow_pickle=False``.  To avoid unpickling
altogether, convert once (``case_jax.data.writers``) to the BaS-Net or
ACM-Net layout, whose files are plain arrays.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from case_jax.data.records import GtVideo, LayoutError
from case_jax.data.safe_pickle import (NpyFormatError, UnsafePickleError,
                                       check_float_arrays, load_object_npy)

JOINT_SUFFIX = "-I3D-JOINTFeatures.npy"
KNOWN_NAMES = ("Thumos14reduced", "ActivityNet1.2")
JOINT_FEATURE_FILES = tuple(n + JOINT_SUFFIX for n in KNOWN_NAMES)
PICKLED_ANNOTATIONS = ("segments.npy", "labels.npy", "labels_all.npy")
AMBIGUOUS_FILE = "Ambiguous_test.txt"


def layout_hint(root: str) -> str:
  return (f"expected {root}/<NAME>{JOINT_SUFFIX} and {root}/<NAME>-Annotations/"
          "{videoname,subset,classlist,duration,segments,labels}.npy with NAME "
          f"one of {list(KNOWN_NAMES)} (the W-TALC release)")


def _load_plain(path: str) -> np.ndarray:
  if not os.path.isfile(path):
    raise LayoutError(f"{path}: annotation file not found; "
                      f"{layout_hint(os.path.dirname(os.path.dirname(path)))}")
  try:
    return np.load(path, allow_pickle=False)
  except ValueError as e:
    raise LayoutError(f"{path}: not a plain array ({e}); only "
                      f"{list(PICKLED_ANNOTATIONS)} may be object arrays") \
        from None


def _load_pickled(path: str, allowed: Sequence[str]) -> np.ndarray:
  """The known ragged files of the format only, unpickled with the
  restricted unpickler of ``safe_pickle`` (UnsafePickleError on any global
  beyond numpy's array constructors)."""
  if os.path.basename(path) not in allowed:
    raise LayoutError(f"{path}: refusing to unpickle a file that is not one "
                      f"of {list(allowed)}")
  if not os.path.isfile(path):
    raise LayoutError(f"{path}: file not found; "
                      f"{layout_hint(os.path.dirname(os.path.dirname(path)))}")
  try:
    arr = load_object_npy(path, encoding="bytes")
  except UnsafePickleError:
    raise
  except NpyFormatError as e:
    raise LayoutError(str(e)) from None
  if arr.ndim != 1:
    raise LayoutError(f"{path}: shape {arr.shape}, expected one entry per "
                      "video (1-D object array)")
  return arr


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _strings(path: str) -> list[str]:
  arr = _load_plain(path)
  if arr.ndim != 1 or arr.dtype.kind not in "SU":
    raise LayoutError(f"{path}: dtype {arr.dtype} shape {arr.shape}; expected "
                      "a 1-D array of strings")
  return [_text(v) for v in arr]


def _segments(value, path: str, vid: str) -> list[tuple[float, float]]:
  out = []
  for seg in list(value):
    try:
      start, end = (float(x) for x in seg)
    except (TypeError, ValueError):
      raise LayoutError(f"{path}: video '{vid}' has segment {seg!r}; each "
                        "must be [start_s, end_s] in seconds") from None
    if not (np.isfinite(start) and np.isfinite(end)) or end < start:
      raise LayoutError(f"{path}: video '{vid}' has segment [{start}, {end}]; "
                        "bounds must be finite with end >= start")
    out.append((start, end))
  return out


def read_annotations(folder: str | os.PathLike, *,
                     need_duration: bool = True) -> dict:
  """Reads a ``NAME-Annotations`` folder.

  need_duration: False reads no duration.npy (evaluation does not use it):
    every duration is then NaN, and GtVideo.duration None.
  Returns {"videoname": [N], "subset": [N], "classlist": (C,),
  "duration": (N,) float64, "gt": {video_id: GtVideo}} in index order.
  """
  folder = os.fspath(folder)
  f = lambda name: os.path.join(folder, name)
  names = _strings(f("videoname.npy"))
  subsets = _strings(f("subset.npy"))
  classlist = tuple(_strings(f("classlist.npy")))
  duration = (_load_plain(f("duration.npy")).astype(np.float64).reshape(-1)
              if need_duration else np.full(len(names), np.nan))
  segments = _load_pickled(f("segments.npy"), PICKLED_ANNOTATIONS)
  labels = _load_pickled(f("labels.npy"), PICKLED_ANNOTATIONS)
  n = len(names)
  for file, arr in ((f("subset.npy"), subsets), (f("duration.npy"), duration),
                    (f("segments.npy"), segments), (f("labels.npy"), labels)):
    if len(arr) != n:
      raise LayoutError(f"{file}: {len(arr)} entries but videoname.npy has "
                        f"{n}; the annotation arrays must be aligned by index")
  gt = {}
  for i, vid in enumerate(names):
    if vid in gt:
      raise LayoutError(f"{f('videoname.npy')}: video '{vid}' appears twice")
    segs = _segments(segments[i], f("segments.npy"), vid)
    labs = [_text(x) for x in list(labels[i])]
    if len(labs) != len(segs):
      raise LayoutError(f"{f('labels.npy')}: video '{vid}' has {len(labs)} "
                        f"labels for {len(segs)} segments in segments.npy; "
                        "they must be aligned")
    d = float(duration[i])
    gt[vid] = GtVideo(subset=subsets[i], duration=d if np.isfinite(d) else None,
                      annotations=tuple((s, e, lab) for (s, e), lab
                                        in zip(segs, labs)))
  return {"videoname": names, "subset": subsets, "classlist": classlist,
          "duration": duration, "gt": gt}


def read_ambiguous(path: str | os.PathLike) -> dict[str, tuple]:
  """Ambiguous_test.txt -> {video_id: ((start_s, end_s), ...)}.

  Fields are split on any whitespace (the release has double spaces).
  """
  path = os.fspath(path)
  out: dict[str, list] = {}
  if not os.path.isfile(path):
    return {}
  with open(path) as fh:
    for k, line in enumerate(fh, 1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) != 3:
        raise LayoutError(f"{path}: line {k} {line.strip()!r}; expected "
                          "'video_id start_s end_s'")
      out.setdefault(parts[0], []).append((float(parts[1]), float(parts[2])))
  return {v: tuple(x) for v, x in out.items()}


def read_joint_features(path: str | os.PathLike) -> np.ndarray:
  """The joint feature file: (N,) object array of (n_i, 2D) float arrays."""
  path = os.fspath(path)
  arr = _load_pickled(path, JOINT_FEATURE_FILES)
  # Arrays of Python objects inside are refused now; other bad entries
  # (a string, a 1-D array) are reported per video when read, so that
  # on_error="skip" can drop just that video.
  try:
    check_float_arrays(arr, path, ndim=2, on_bad=lambda i, a: None)
  except NpyFormatError as e:
    raise LayoutError(str(e)) from None
  return arr

