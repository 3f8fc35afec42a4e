"""One entry point for every feature layout: ``open_dataset``.

  open_dataset(root, split, layout, classes=None, **options) -> dataset

``layout`` is "basnet" (``thumos_layout.WTALDataset``: gt.json, split files,
separate rgb/flow .npy), "wtalc" (``wtalc_layout.WTALCDataset``: one joint
pickled feature file plus index-aligned annotation arrays) or "acmnet"
(``acmnet_layout.ACMNetDataset``: per-video concatenated (n, 2D) .npy).  All
return a sequence of ``VideoRecord`` with ``classes``, ``video_ids``,
``lengths`` and ``labels()``, so ``train_batch`` / ``eval_batches`` take any.

Options: ``feature_dim`` (per-stream D), ``eager``, ``on_error`` ("raise" or
"skip": leave bad videos out, listed in ``.skipped`` and a warning); layout
specific ones pass through (``gt_subsets`` for basnet, ``name`` / ``subsets``
for wtalc, ``feature_dir`` / ``subsets`` for acmnet).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

from case_jax.data.acmnet_layout import ACMNetDataset
from case_jax.data.generic import SourceDataset, VideoSource
from case_jax.data.thumos_layout import (DEFAULT_GT_SUBSETS, LayoutError,
                                         WTALDataset, _check_split_vs_gt,
                                         _feature_shape, _load_features,
                                         classes_from_gt, feature_path,
                                         gt_path, read_gt, read_split,
                                         split_path)
from case_jax.data.wtalc_layout import WTALCDataset

LAYOUTS = ("basnet", "wtalc", "acmnet")


def _basnet_source(root: str, split: str, vid: str, gt) -> VideoSource:
  paths = [feature_path(root, split, s, vid) for s in ("rgb", "flow")]
  return VideoSource(
      video_id=vid, gt=gt, file=" and ".join(paths),
      probe=lambda: tuple(_feature_shape(p, split) for p in paths),
      load=lambda: tuple(_load_features(p) for p in paths))


def open_basnet_skipping(root: str | os.PathLike, split: str, *,
                         classes: Optional[Sequence[str]] = None,
                         feature_dim: Optional[int] = None,
                         eager: bool = False,
                         gt_subsets: Optional[Sequence[str]] = None
                         ) -> SourceDataset:
  """The BaS-Net layout read with on_error="skip" (WTALDataset raises)."""
  root = os.fspath(root)
  gt_file, split_file = gt_path(root), split_path(root, split)
  gt, ids = read_gt(gt_file), read_split(split_file)
  if not ids:
    raise LayoutError(f"{split_file}: no video ids; list one id per line")
  _check_split_vs_gt(ids, gt, tuple(gt_subsets or DEFAULT_GT_SUBSETS[split]),
                     split_file, gt_file)
  sources = [_basnet_source(root, split, v, gt[v]) for v in ids]
  return SourceDataset(sources, classes_from_gt(gt) if classes is None
                       else classes, feature_dim=feature_dim, eager=eager,
                       on_error="skip", origin=f"{root} (basnet, {split})")


def open_dataset(root: str | os.PathLike, split: str, layout: str = "basnet",
                 classes: Optional[Sequence[str]] = None, *,
                 on_error: str = "raise", **options):
  """One split ("train" / "test") of a dataset root in the given layout."""
  if layout not in LAYOUTS:
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
  if layout == "basnet":
    if on_error == "skip":
      return open_basnet_skipping(root, split, classes=classes, **options)
    if on_error != "raise":
      raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return WTALDataset(root, split, classes=classes, **options)
  cls = WTALCDataset if layout == "wtalc" else ACMNetDataset
  return cls(root, split, classes=classes, on_error=on_error, **options)
