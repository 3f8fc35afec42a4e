"""Writers of the three feature layouts, from one layout-neutral description.

Used by the tests (fixture datasets in every layout around the same
annotations), the input-pipeline benchmark, and to convert a release from one
layout to another (e.g. a W-TALC pickle to plain per-video .npy files)::

  videos = videos_from_dataset(open_dataset(src, "train", "wtalc"), "train")
  videos += videos_from_dataset(open_dataset(src, "test", "wtalc"), "test")
  write_layout("acmnet", dst, videos)

A ``VideoSpec`` is one video: id, split ("train"/"test"), the annotation
subset name, duration in seconds (or None), annotations ((start_s, end_s,
label), ...), and rgb / flow features (n, D) each.
"""
from __future__ import annotations

import json
import os
from typing import NamedTuple, Optional, Sequence

import numpy as np

from case_jax.data.thumos_layout import (THUMOS14_CLASSES, feature_path,
                                         gt_path, split_path)
from case_jax.data.wtalc_files import JOINT_SUFFIX

LAYOUTS = ("basnet", "wtalc", "acmnet")
THUMOS_SUBSETS = {"train": "validation", "test": "test"}


class VideoSpec(NamedTuple):
  video_id: str
  split: str
  subset: str
  duration: Optional[float]
  annotations: tuple[tuple[float, float, str], ...]
  rgb: np.ndarray
  flow: np.ndarray


def videos_from_dataset(dataset, split: str,
                        subset: Optional[str] = None) -> list[VideoSpec]:
  """VideoSpecs of every video of a dataset (any layout's reader).

  ``subset`` defaults to the THUMOS14 names (validation / test).
  """
  out = []
  for rec in dataset:
    anns = tuple((s.start_s, s.end_s, dataset.classes[s.class_index])
                 for s in rec.segments)
    out.append(VideoSpec(rec.video_id, split, subset or THUMOS_SUBSETS[split],
                         rec.duration, anns, np.asarray(rec.rgb),
                         np.asarray(rec.flow)))
  return out


def _gt_json(videos: Sequence[VideoSpec]) -> dict:
  database = {}
  for v in videos:
    entry = {"subset": v.subset,
             "annotations": [{"segment": [s, e], "label": lab}
                             for s, e, lab in v.annotations]}
    if v.duration is not None:
      entry["duration"] = v.duration
    database[v.video_id] = entry
  return {"version": "case_jax writers", "database": database}


def _write_common(root: str, videos: Sequence[VideoSpec]) -> None:
  os.makedirs(root, exist_ok=True)
  with open(gt_path(root), "w") as f:
    json.dump(_gt_json(videos), f)
  for split in ("train", "test"):
    with open(split_path(root, split), "w") as f:
      f.write("".join(v.video_id + "\n" for v in videos if v.split == split))


def write_basnet(root: str | os.PathLike, videos: Sequence[VideoSpec]) -> None:
  """gt.json, split files, features/<split>/{rgb,flow}/<vid>.npy."""
  root = os.fspath(root)
  _write_common(root, videos)
  for v in videos:
    for stream, arr in (("rgb", v.rgb), ("flow", v.flow)):
      path = feature_path(root, v.split, stream, v.video_id)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      np.save(path, np.asarray(arr, np.float32))


def write_acmnet(root: str | os.PathLike, videos: Sequence[VideoSpec], *,
                 folders: Optional[dict[str, str]] = None) -> None:
  """gt.json, split files, <folder>/<vid>.npy of (n, 2D) [rgb | flow].

  folders: {split: path relative to root}; default features/<split>.
  """
  root = os.fspath(root)
  folders = folders or {s: os.path.join("features", s) for s in ("train",
                                                                  "test")}
  _write_common(root, videos)
  for v in videos:
    folder = os.path.join(root, folders[v.split])
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, v.video_id + ".npy"),
            np.concatenate([v.rgb, v.flow], axis=1).astype(np.float32))


def _object_array(items) -> np.ndarray:
  out = np.empty(len(items), object)
  for i, x in enumerate(items):
    out[i] = x
  return out


def write_wtalc(root: str | os.PathLike, videos: Sequence[VideoSpec], *,
                classes: Sequence[str] = THUMOS14_CLASSES,
                name: str = "Thumos14reduced",
                ambiguous: Sequence[tuple[str, float, float]] = ()) -> None:
  """NAME-I3D-JOINTFeatures.npy and NAME-Annotations/ (index-aligned)."""
  root = os.fspath(root)
  ann = os.path.join(root, name + "-Annotations")
  os.makedirs(ann, exist_ok=True)
  save = lambda f, a, **kw: np.save(os.path.join(ann, f), a, **kw)
  save("videoname.npy", np.array([v.video_id.encode() for v in videos]))
  save("subset.npy", np.array([v.subset.encode() for v in videos]))
  save("classlist.npy", np.array([c.encode() for c in classes]))
  save("duration.npy", np.array([[np.nan if v.duration is None
                                  else v.duration] for v in videos]))
  save("segments.npy", _object_array([[[s, e] for s, e, _ in v.annotations]
                                      for v in videos]), allow_pickle=True)
  save("labels.npy", _object_array([[lab for _, _, lab in v.annotations]
                                    for v in videos]), allow_pickle=True)
  save("labels_all.npy", _object_array(
      [sorted({lab for _, _, lab in v.annotations}) for v in videos]),
       allow_pickle=True)
  with open(os.path.join(ann, "Ambiguous_test.txt"), "w") as f:
    f.write("".join(f"{vid}  {s} {e}\n" for vid, s, e in ambiguous))
  joint = _object_array([np.concatenate([v.rgb, v.flow], 1).astype(np.float32)
                         for v in videos])
  np.save(os.path.join(root, name + JOINT_SUFFIX), joint, allow_pickle=True)


def write_layout(layout: str, root: str | os.PathLike,
                 videos: Sequence[VideoSpec], **kwargs) -> None:
  """Dispatches to write_<layout>."""
  writers = {"basnet": write_basnet, "wtalc": write_wtalc,
             "acmnet": write_acmnet}
  if layout not in writers:
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
  writers[layout](root, videos, **kwargs)
