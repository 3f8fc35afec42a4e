"""Reader for the ACM-Net layout (THUMOS14, ActivityNet 1.3).

Layout under a dataset root::

  ROOT/
    gt.json                           # ActivityNet-style, with "duration"
    split_train.txt, split_test.txt   # one video id per line
    <train dir>/<video_id>.npy        # (n, 2 * D): rgb columns, then flow
    <test dir>/<video_id>.npy

The feature folders are looked up in order: ``features/<split>``, ``<split>``
and, for the test split, ``features/validation`` and ``validation`` (the
ActivityNet 1.3 releases name the evaluation folder after its subset); pass
``feature_dir=`` to name one.  ActivityNet 1.3 ids carry the ``v_`` prefix
in gt.json, the split files and the file names alike; a gt.json without the
prefix is matched when ``strip_prefix`` finds every id that way (reported in a
``LayoutWarning``).  Subsets: THUMOS14 ``validation`` (= train) / ``test``;
ActivityNet ``training`` (= train) / ``validation`` (= test).
"""
from __future__ import annotations

import os
import warnings
from typing import Optional, Sequence

import numpy as np

from case_jax.data.generic import SourceDataset, VideoSource
from case_jax.data.gt_json import (DEFAULT_GT_SUBSETS, check_split_vs_gt,
                                   classes_from_gt, read_gt, read_split)
from case_jax.data.records import (FEATURE_FPS, SNIPPET_FRAMES, GtVideo,
                                   LayoutError, LayoutWarning)
from case_jax.data.thumos_layout import gt_path, split_path

SPLITS = ("train", "test")
ANET_PREFIX = "v_"


def feature_dir_candidates(root: str, split: str) -> list[str]:
  names = [split] + (["validation"] if split == "test" else [])
  return [os.path.join(root, *parts) for n in names
          for parts in (("features", n), (n,))]


def find_feature_dir(root: str | os.PathLike, split: str) -> str:
  """The first existing folder of ``feature_dir_candidates``."""
  root = os.fspath(root)
  for d in feature_dir_candidates(root, split):
    if os.path.isdir(d):
      return d
  raise LayoutError(f"{root}: no feature folder for split '{split}' (looked "
                    f"for {feature_dir_candidates(root, split)}); put the "
                    "per-video (n, 2D) .npy files there or pass feature_dir=")


def gt_subsets(gt: dict[str, GtVideo]) -> dict[str, tuple[str, ...]]:
  """Subset names of each split: ActivityNet if any video is 'training'."""
  if any(v.subset == "training" for v in gt.values()):
    return {"train": ("training",), "test": ("validation",)}
  return dict(DEFAULT_GT_SUBSETS)


def _match_prefix(ids: Sequence[str], gt: dict[str, GtVideo], gt_file: str
                  ) -> dict[str, GtVideo]:
  """gt re-keyed with 'v_' when the split ids have it and gt.json has not."""
  if not ids or all(v in gt for v in ids):
    return gt
  if all(v.startswith(ANET_PREFIX) and v[len(ANET_PREFIX):] in gt
         for v in ids):
    warnings.warn(f"{gt_file}: ids lack the '{ANET_PREFIX}' prefix that the "
                  "split file and feature files have; matched them by adding "
                  "it", LayoutWarning, stacklevel=4)
    return {ANET_PREFIX + k: v for k, v in gt.items()}
  return gt


def _npy_source(vid: str, gt: GtVideo, path: str) -> VideoSource:
  def probe():
    if not os.path.isfile(path):
      raise LayoutError(f"{path}: feature file of video '{vid}' not found; "
                        "add the (n, 2D) .npy file (rgb columns first) or "
                        "remove the id from the split file")
    try:
      arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
      raise LayoutError(f"{path}: cannot read it as a .npy array ({e}); the "
                        "file is truncated or damaged: copy or re-extract "
                        "it again") from None
    if arr.ndim != 2 or arr.shape[1] % 2 or arr.dtype.kind not in "fiu":
      raise LayoutError(f"{path}: video '{vid}' has {arr.dtype} features of "
                        f"shape {arr.shape}; expected (n, 2D) numbers, rgb "
                        "columns [:D] and flow [D:] (for separate rgb/flow "
                        "files use layout='basnet')")
    d = arr.shape[1] // 2
    return (arr.shape[0], d), (arr.shape[0], d)

  def load():
    arr = np.load(path, allow_pickle=False)
    d = arr.shape[1] // 2
    return arr[:, :d], arr[:, d:]

  return VideoSource(video_id=vid, gt=gt, file=path, probe=probe, load=load,
                     paths=(path,))


class AcmnetDataset(SourceDataset):
  """One split of an ACM-Net root, as a sequence of ``VideoRecord``s.

  Args:
    root: dataset root.
    split: "train" or "test" (split_<split>.txt).
    classes: class order; None = sorted labels of this split's videos.
    feature_dim: expected D per stream (1024); None = inferred.
    eager: read and check every video's features now.
    on_error: "raise" or "skip" (``generic.SourceDataset``).
    feature_dir: the folder of this split's .npy files; None = found.
    subsets: gt.json subsets of this split; None = ``gt_subsets``.
    fps, snippet_frames: the features' time base (config data.fps /
      data.snippet_frames), carried by every record.
    check_values, verified: read every video now, remembering verified
      files (``generic.SourceDataset``).
  """

  def __init__(self, root: str | os.PathLike, split: str, *,
               classes: Optional[Sequence[str]] = None,
               feature_dim: Optional[int] = None, eager: bool = False,
               on_error: str = "raise", feature_dir: Optional[str] = None,
               subsets: Optional[Sequence[str]] = None,
               fps: float = FEATURE_FPS, snippet_frames: int = SNIPPET_FRAMES,
               check_values: bool = False, verified=None):
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    self.root, self.split = os.fspath(root), split
    gt_file, split_file = gt_path(root), split_path(root, split)
    ids = read_split(split_file)
    if not ids:
      raise LayoutError(f"{split_file}: no video ids; list one id per line")
    gt = _match_prefix(ids, read_gt(gt_file), gt_file)
    wanted = tuple(subsets or gt_subsets(gt)[split])
    rejected, found = check_split_vs_gt(ids, gt, wanted, split_file,
                                        gt_file, skip=on_error == "skip")
    ids = [v for v in ids if v in gt]
    self.feature_dir = feature_dir or find_feature_dir(root, split)
    sources = [_npy_source(v, gt[v], os.path.join(self.feature_dir, v + ".npy"))
               for v in ids]
    super().__init__(sources,
                     classes_from_gt(gt, ids) if classes is None else classes,
                     feature_dim=feature_dim, eager=eager, on_error=on_error,
                     origin=f"{self.root} (acmnet, {split})", fps=fps,
                     snippet_frames=snippet_frames, check_values=check_values,
                     verified=verified, gt_file=gt_file, rejected=rejected)
    self.gt_subset = found   # the gt.json subset of this split, as found
