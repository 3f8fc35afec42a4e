"""Reader for the W-TALC / CO2-Net / DELU layout (THUMOS14, ActivityNet 1.2).

The files (``NAME-I3D-JOINTFeatures.npy`` plus the index-aligned
``NAME-Annotations/`` arrays) and how they are read without running pickled
code are described in ``wtalc_files``; this module turns them into one split
of ``VideoRecord``s (``WtalcDataset``).  Columns ``[:D]`` of a feature array
are RGB, ``[D:]`` flow.  THUMOS14 subsets are ``validation`` (= train, 200)
and ``test`` (212); ActivityNet 1.2 uses ``training`` (= train) and
``validation`` (= test).
"""
from __future__ import annotations

import glob
import os
import warnings
from typing import Optional, Sequence

import numpy as np

from case_jax.data.generic import SourceDataset, VideoSource
from case_jax.data.records import (FEATURE_FPS, SNIPPET_FRAMES, LayoutError,
                                   LayoutWarning, NoSplit, name_some)
from case_jax.data.wtalc_files import (AMBIGUOUS_FILE, JOINT_FEATURE_FILES,
                                       JOINT_SUFFIX, layout_hint,
                                       read_ambiguous, read_annotations,
                                       read_joint_features)

SPLITS = ("train", "test")


def find_name(root: str | os.PathLike) -> str:
  """The release NAME of a W-TALC root (from its joint feature file)."""
  root = os.fspath(root)
  found = sorted(os.path.basename(p)[:-len(JOINT_SUFFIX)]
                 for p in glob.glob(os.path.join(root, "*" + JOINT_SUFFIX)))
  if len(found) != 1:
    raise LayoutError(f"{root}: found {len(found)} joint feature files "
                      f"{found}; {layout_hint(root)}. Pass name= to choose one")
  return found[0]


def split_subsets(subsets: Sequence[str]) -> dict[str, tuple[str, ...]]:
  """Subset names of each split: ActivityNet (training/validation),
  train/val, or THUMOS14 (validation/test)."""
  if "training" in set(subsets):
    return {"train": ("training",), "test": ("validation",)}
  if "val" in set(subsets):
    return {"train": ("train",), "test": ("val",)}
  return {"train": ("validation", "train"), "test": ("test",)}


def _joint_source(vid, gt, joint, i, path) -> VideoSource:
  def get():
    a = joint[i]
    if not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype.kind != "f" \
        or a.shape[1] % 2:
      desc = (f"{type(a).__name__} {getattr(a, 'dtype', '')} "
              f"{getattr(a, 'shape', '')}")
      raise LayoutError(f"{path}: entry {i} (video '{vid}') is {desc}; each "
                        "entry must be a float ndarray (n, 2D), rgb columns "
                        "first; regenerate this video's features")
    return a
  def probe():
    a = get()
    d = a.shape[1] // 2
    return (a.shape[0], d), (a.shape[0], d)
  def load():
    a = get()
    d = a.shape[1] // 2
    return a[:, :d], a[:, d:]
  return VideoSource(video_id=vid, gt=gt, file=f"{path}[{i}]", probe=probe,
                     load=load)


class WtalcDataset(SourceDataset):
  """One split of a W-TALC root, as a sequence of ``VideoRecord``s.

  Args:
    root: folder holding NAME-I3D-JOINTFeatures.npy and NAME-Annotations/.
    split: "train" or "test".
    classes: class order; None = classlist.npy (the release order).
    feature_dim: expected D per stream (1024); None = inferred.
    eager: check every video's values now (default: they are in memory
      anyway, the joint file being one pickle).
    on_error: "raise" or "skip" (``generic.SourceDataset``).
    name: the release NAME; None = the one joint feature file in root.
    subsets: subset names of this split; None = ``split_subsets``.
    fps, snippet_frames: the features' time base (config data.fps /
      data.snippet_frames), carried by every record.

  Attributes (beyond SourceDataset's): name, ambiguous {vid: ((s, e), ...)}.
  """

  def __init__(self, root: str | os.PathLike, split: str, *,
               classes: Optional[Sequence[str]] = None,
               feature_dim: Optional[int] = None, eager: bool = True,
               on_error: str = "raise", name: Optional[str] = None,
               subsets: Optional[Sequence[str]] = None,
               fps: float = FEATURE_FPS, snippet_frames: int = SNIPPET_FRAMES,
               check_values: bool = False, verified=None):
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    self.root, self.split = os.fspath(root), split
    self.name = name or find_name(root)
    if self.name + JOINT_SUFFIX not in JOINT_FEATURE_FILES:
      raise LayoutError(f"{os.path.join(self.root, self.name + JOINT_SUFFIX)}"
                        ": refusing to unpickle a feature file not named "
                        f"one of {list(JOINT_FEATURE_FILES)} (the W-TALC "
                        "releases); rename it only if it is one of them")
    ann_dir = os.path.join(self.root, self.name + "-Annotations")
    ann = read_annotations(ann_dir)
    joint_path = os.path.join(self.root, self.name + JOINT_SUFFIX)
    if not os.path.isfile(joint_path):
      raise LayoutError(f"{joint_path}: joint feature file not found; "
                        f"{layout_hint(self.root)}")
    joint = read_joint_features(joint_path)
    if len(joint) != len(ann["videoname"]):
      raise LayoutError(f"{joint_path}: {len(joint)} videos but "
                        f"{ann_dir}/videoname.npy lists "
                        f"{len(ann['videoname'])}; features and annotations "
                        "must be aligned by index (same release?)")
    wanted = tuple(subsets or split_subsets(ann["subset"])[split])
    index = [i for i, s in enumerate(ann["subset"]) if s in wanted]
    if not index:
      # NoSplit: the release has no such split (training goes on without
      # evaluation when it is the test split).
      raise NoSplit(f"{ann_dir}/subset.npy: no video has subset "
                        f"{list(wanted)} (found {sorted(set(ann['subset']))}); "
                        "pass subsets= for this release")
    self.ambiguous = read_ambiguous(os.path.join(ann_dir, AMBIGUOUS_FILE))
    stray = sorted(set(self.ambiguous) - set(ann["gt"]))
    if stray:
      # The THUMOS14 release lists video_test_0001292, absent from its
      # videoname.npy: harmless (an evaluator only looks up listed videos).
      warnings.warn(f"{ann_dir}/{AMBIGUOUS_FILE}: videos {name_some(stray)} "
                    "are not in videoname.npy; their ambiguous intervals are "
                    "unused", LayoutWarning, stacklevel=2)
    names = ann["videoname"]
    sources = [_joint_source(names[i], ann["gt"][names[i]], joint, i,
                             joint_path) for i in index]
    super().__init__(sources, ann["classlist"] if classes is None else classes,
                     feature_dim=feature_dim, eager=eager, on_error=on_error,
                     origin=f"{self.root} ({self.name}, {split})", fps=fps,
                     snippet_frames=snippet_frames, check_values=check_values,
                     verified=verified, gt_file=ann_dir)
    found = [ann["subset"][i] for i in index]
    self.gt_subset = max(wanted, key=found.count)   # this split's, as found
