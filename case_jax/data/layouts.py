"""One entry point for every feature layout: ``open_dataset``.

  open_dataset(root, split, layout, classes=None, **options) -> VideoDataset

``layout`` is "basnet" (``thumos_layout.BasnetDataset``: gt.json, split
files, separate rgb/flow .npy), "wtalc" (``wtalc_layout.WtalcDataset``: one
joint pickled feature file plus index-aligned annotation arrays) or "acmnet"
(``acmnet_layout.AcmnetDataset``: per-video concatenated (n, 2D) .npy), or
"auto" (``detect.detect_layout``: recognised from the root's files).  All
are ``records.VideoDataset``s: sequences of ``VideoRecord`` with ``classes``,
``video_ids``, ``lengths``, ``skipped`` and ``labels()``, so
``train_batch`` / ``eval_batches`` take any.

Options: ``feature_dim`` (per-stream D), ``eager``, ``on_error`` ("raise" or
"skip": leave bad videos out, listed in ``.skipped`` and a warning), ``fps``
and ``snippet_frames`` (the time base the records carry: config data.fps /
data.snippet_frames); layout specific ones pass through (``gt_subsets`` for
basnet, ``name`` / ``subsets`` for wtalc, ``feature_dir`` / ``subsets`` for
acmnet).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

from case_jax.data.acmnet_layout import AcmnetDataset
from case_jax.data.detect import detect_layout
from case_jax.data.records import LayoutError, VideoDataset
from case_jax.data.thumos_layout import BasnetDataset
from case_jax.data.wtalc_layout import WtalcDataset

LAYOUTS = ("basnet", "wtalc", "acmnet")
_READERS = {"basnet": BasnetDataset, "wtalc": WtalcDataset,
            "acmnet": AcmnetDataset}


def open_dataset(root: str | os.PathLike, split: str, layout: str = "basnet",
                 classes: Optional[Sequence[str]] = None, *,
                 on_error: str = "raise", **options) -> VideoDataset:
  """One split ("train" / "test") of a dataset root in the given layout
  ("auto": as ``detect_layout`` recognises it)."""
  if layout == "auto":
    layout, _ = detect_layout(root)
    if layout == "tfds":
      raise LayoutError(f"{root} is a prepared TFDS data_dir: open it with "
                        "datasets.open_split (data.layout 'tfds' or 'auto')")
  if layout not in LAYOUTS:
    raise ValueError(f"layout must be one of {LAYOUTS} or 'auto', got "
                     f"{layout!r}")
  return _READERS[layout](root, split, classes=classes, on_error=on_error,
                          **options)
