"""The configured data: ``data.root`` resolved, and a split opened as
``cfg.data`` says (layout, on_error, TFDS name).

The run layer opens data only through these two functions (training, the
evaluator, --mode=plots, seeds and ablation tables).
"""
from __future__ import annotations

import os
import sys

import jax

from case_jax import errors
from case_jax import data as data_lib
from case_jax.data import detect as detect_layout_lib
from case_jax.data import verified as verified_lib


def open_split(cfg, root: str, split: str, classes=None, stream=None):
  """One split in ``cfg.data.layout``, validated before any work: files,
  widths, lengths, labels and (data.check_values) every value, remembered
  per file (data.verified_cache).  ``classes``: the list to read it in
  (the test split gets the training split's); None = data.classes.
  Skipped videos (data.on_error="skip") are reported, never dropped
  silently.  The records carry the config's time base (data.fps,
  data.snippet_frames): detections, masks and plots all read it from there.
  Raises data.NoSplit when the dataset has no such split at all."""
  time_base = dict(fps=cfg.data.fps, snippet_frames=cfg.data.snippet_frames)
  layout, tfds_name = resolve_layout(cfg, root, stream)
  if layout == "tfds":
    # A prepared dataset (python -m case_jax.data.prepare): data.root is the
    # TFDS data_dir, data.tfds_name the builder (e.g. "thumos14/basnet").
    from case_jax.data.tfds_builders import TFDSDataset  # optional extra
    return TFDSDataset(tfds_name, split, data_dir=root, **time_base)
  if classes is None:
    classes = data_lib.config_classes(cfg.data.get("classes"),
                                      cfg.data.dataset, root)
  check = bool(cfg.data.get("check_values", False))
  ds = data_lib.open_dataset(
      root, split, layout, classes, on_error=cfg.data.on_error,
      check_values=check, verified=verified_lib.from_setting(
          cfg.data.get("verified_cache", "auto"), root) if check else None,
      **time_base)
  for vid, why in getattr(ds, "skipped", ()):
    (stream or sys.stdout).write(f"skipped {split} video {vid}: {why}\n")
  return ds


_ANNOUNCED = set()   # (root, layout) already printed in this process


def resolve_layout(cfg, root: str, stream=None) -> tuple[str, str]:
  """(layout, tfds_name) to read ``root`` with: ``data.layout`` as set, or
  for "auto" what ``data.detect_layout`` recognises (printed once per root
  and process on ``stream``)."""
  layout, name = cfg.data.layout, cfg.data.get("tfds_name", "")
  if layout != "auto":
    return layout, name
  layout, why = detect_layout_lib.detect_layout(root)
  if layout == "tfds":
    name = detect_layout_lib.tfds_name(root, name)
  if (root, layout) not in _ANNOUNCED:
    _ANNOUNCED.add((root, layout))
    (stream or sys.stdout).write(
        f"data.layout=auto: {root} looks like the {layout} layout ({why})\n")
  return layout, name


def resolve_data_root(cfg, workdir: str) -> str:
  """``data.root``, or for the synthetic dataset a generated copy in workdir."""
  root = cfg.data.root
  if cfg.data.dataset == "synthetic":
    from case_jax.data.synthetic import write_synthetic_thumos
    root = root or synthetic_root(workdir)
    # A prepared (TFDS) copy of synthetic data is read as it is, never
    # generated into.
    prepared = cfg.data.layout == "tfds" or (
        cfg.data.layout == "auto" and detect_layout_lib.tfds_names(root))
    if not prepared and not os.path.exists(os.path.join(root, "gt.json")):
      try:
        write_synthetic_thumos(root, **dict(cfg.data.synthetic))
      except ValueError as e:  # a refused generator setting
        raise errors.ConfigError(f"data.synthetic: {e}") from None
    return root
  if not root:
    raise errors.ConfigError(
        f"data.root is not set: pass --config.data.root=/path/to/{cfg.data.dataset} "
        "(the folder holding gt.json, split_train.txt, split_test.txt and "
        "features/{train,test}/{rgb,flow}/<video>.npy).")
  if not os.path.isdir(root):
    raise errors.MissingFile(f"data.root {root!r} is not a directory.")
  return root


def synthetic_root(workdir: str) -> str:
  return os.path.join(workdir, "synthetic_data")


def shared_data_root(cfg, workdir: str) -> str:
  """data.root for every seed (and ablation row) under ``workdir``: one
  copy of generated (synthetic) data.  With several processes it is only
  named here; the training's primary process generates it behind a barrier."""
  if jax.process_count() == 1:
    return resolve_data_root(cfg, workdir)
  if cfg.data.dataset == "synthetic" and not cfg.data.root:
    return synthetic_root(workdir)
  return cfg.data.root
