"""Synthetic weakly-supervised action localization data, THUMOS14- or
ActivityNet-shaped, in any of the three feature layouts.

TEST AND DEMO DATA ONLY.  It exercises the whole pipeline (reader, sampling,
training, inference, evaluation) on a CPU in minutes; accuracy on it says
nothing about accuracy on real videos and is no benchmark.

``write_synthetic_thumos`` writes the BaS-Net/CASE layout read by
``case_jax.data.thumos_layout`` (``gt.json`` with ``validation``/``test``
subsets in the real file's format, ``split_{train,test}.txt``,
``features/{train,test}/{rgb,flow}/<vid>.npy`` float32 (n, D)), plus
``synthetic.json`` recording the generator settings (readers ignore it).
``write_synthetic`` also writes the other shapes (``SHAPES``: ActivityNet
1.2 / 1.3 annotation statistics, class counts, ``v_`` ids and the subsets
``training`` / ``validation``) and the ACM-Net and W-TALC layouts
(``case_jax.data.writers``).

The features and annotations come from ``synthetic_generator`` (how each
snippet feature is built, the annotation statistics it follows, and how
it stays deterministic per seed).

Command line: ``python -m case_jax.data.synthetic --root DIR [--seed N ...]
[--shape anet13 --layout acmnet]``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from typing import NamedTuple, Optional, Sequence

import numpy as np

from case_jax.data.classes import SYNTHETIC_META
from case_jax.data.records import FEATURE_FPS
from case_jax.data.synthetic_generator import (ACTIVITYNET_STATS,
                                               BUILTIN_STATS, GT_SUBSET,
                                               INSTANCE_LENGTHS, MIN_SNIPPETS,
                                               SIGNAL_PRESETS,
                                               SECONDS_PER_SNIPPET, VideoPlan,
                                               SignalSettings, annotation_stats,
                                               check_instance_lengths, make_world,
                                               plan_video, render,
                                               signal_settings)
from case_jax.data.thumos_layout import (STREAMS, feature_path, gt_path,
                                         split_path)
from case_jax.data.writers import LAYOUTS, VideoSpec, write_layout

_SUBSET_TAG = {"train": 1, "test": 2}


class Shape(NamedTuple):
  """What a dataset shape fixes besides the signal: annotation statistics,
  gt subset and video-id prefix of each split, default class count, and
  the W-TALC release NAME."""
  stats: dict
  subsets: dict
  id_prefix: dict
  num_classes: int
  wtalc_name: str


_ANET_SUBSETS = {"train": "training", "test": "validation"}
_ANET_IDS = {"train": "v_train", "test": "v_valid"}
SHAPES = {
    "thumos14": Shape(BUILTIN_STATS, GT_SUBSET,
                      {"train": "video_validation_", "test": "video_test_"},
                      10, "Thumos14reduced"),
    "anet12": Shape(ACTIVITYNET_STATS, _ANET_SUBSETS, _ANET_IDS, 100,
                    "ActivityNet1.2"),
    "anet13": Shape(ACTIVITYNET_STATS, _ANET_SUBSETS, _ANET_IDS, 200,
                    "ActivityNet1.3"),
}


# ---------------------------------------------------------------------------
# Writing the layout.
# ---------------------------------------------------------------------------
def class_names(num_classes: int) -> tuple[str, ...]:
  """Action00, Action01, ...: sorting them keeps the index order."""
  width = max(2, len(str(num_classes - 1)))
  return tuple(f"Action{c:0{width}d}" for c in range(num_classes))


def _primary_class(seed: int, split: str, k: int, num_classes: int) -> int:
  """Balanced classes: each block of C videos is a permutation of them."""
  block, slot = divmod(k, num_classes)
  rng = np.random.default_rng(
      np.random.SeedSequence([seed, 10 + _SUBSET_TAG[split], block]))
  return int(rng.permutation(num_classes)[slot])


def _gt_entry(plan: VideoPlan, subset: str,
              names: Sequence[str]) -> dict:
  duration = round(plan.num_snippets * SECONDS_PER_SNIPPET, 2)
  return {"subset": subset, "duration": duration,
          "frames": int(round(duration * FEATURE_FPS)),
          "annotations": [{"segment": [i.start_s, i.end_s],
                           "label": names[i.class_index]}
                          for i in plan.instances]}


def _prepare_root(root: str, overwrite: bool, layout: str) -> None:
  for marker in (gt_path(root), os.path.join(root, SYNTHETIC_META)):
    if os.path.exists(marker) and not overwrite:
      raise FileExistsError(f"{marker} exists; pass overwrite=True "
                            f"(--overwrite) to replace the dataset in {root}")
  # Whatever an earlier run wrote (another size or layout) would linger and
  # be read (or make the layout ambiguous) otherwise.
  shutil.rmtree(os.path.join(root, "features"), ignore_errors=True)
  for path in glob.glob(os.path.join(root, "*-Annotations")):
    shutil.rmtree(path, ignore_errors=True)
  for path in glob.glob(os.path.join(root, "*-I3D-JOINTFeatures.npy")):
    os.remove(path)
  if layout == "basnet":
    for split in _SUBSET_TAG:
      for s in STREAMS:
        os.makedirs(os.path.dirname(feature_path(root, split, s, "x")),
                    exist_ok=True)
  os.makedirs(root, exist_ok=True)


@dataclass(frozen=True)
class SyntheticConfig:
  """Generator settings (recorded in ROOT/synthetic.json)."""
  num_train: int = 120
  num_test: int = 60
  num_classes: int = 10
  feature_dim: int = 64
  seed: int = 0
  time_scale: float = 0.5
  max_snippets: int = 400
  shape: str = "thumos14"
  layout: str = "basnet"
  signal: "str | SignalSettings" = "default"
  instance_lengths: str = "scaled"

  def validate(self) -> None:
    # shape first: an unknown one leaves num_classes unset (0), and the
    # message must name the shape.
    if self.shape not in SHAPES:
      raise ValueError(f"shape must be one of {sorted(SHAPES)}, got "
                       f"{self.shape!r}")
    if self.layout not in LAYOUTS:
      raise ValueError(f"layout must be one of {list(LAYOUTS)}, got "
                       f"{self.layout!r}")
    for name in ("num_train", "num_test", "num_classes", "feature_dim"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.seed < 0:
      raise ValueError(f"seed must be >= 0, got {self.seed}")
    if not self.time_scale > 0:
      raise ValueError(f"time_scale must be > 0, got {self.time_scale}")
    if self.max_snippets < MIN_SNIPPETS:
      raise ValueError(f"max_snippets must be >= {MIN_SNIPPETS}, got "
                       f"{self.max_snippets}")
    check_instance_lengths(self.instance_lengths)
    signal_settings(self.signal)


def write_synthetic_thumos(root: str | os.PathLike, *, num_train: int = 120,
                           num_test: int = 60, num_classes: int = 10,
                           feature_dim: int = 64, seed: int = 0,
                           time_scale: float = 0.5, max_snippets: int = 400,
                           signal: "str | SignalSettings" = "default",
                           instance_lengths: str = "scaled",
                           stats: Optional[str | os.PathLike] = None,
                           overwrite: bool = False) -> dict:
  """THUMOS14-shaped data in the BaS-Net/CASE layout (``write_synthetic``
  with shape="thumos14", layout="basnet"; the demo's and most tests')."""
  return write_synthetic(root, num_train=num_train, num_test=num_test,
                         num_classes=num_classes, feature_dim=feature_dim,
                         seed=seed, time_scale=time_scale,
                         max_snippets=max_snippets, signal=signal,
                         instance_lengths=instance_lengths, stats=stats,
                         overwrite=overwrite)


def write_synthetic(root: str | os.PathLike, *, shape: str = "thumos14",
                    layout: str = "basnet", num_train: int = 120,
                    num_test: int = 60, num_classes: Optional[int] = None,
                    feature_dim: int = 64, seed: int = 0,
                    time_scale: float = 0.5, max_snippets: int = 400,
                    signal: "str | SignalSettings" = "default",
                    instance_lengths: str = "scaled",
                    stats: Optional[str | os.PathLike] = None,
                    overwrite: bool = False) -> dict:
  """Writes a synthetic dataset of a ``SHAPES`` shape in a layout.

  Args:
    root: output directory (created).
    shape: "thumos14" (subsets validation / test), "anet12" or "anet13"
      (ActivityNet statistics; subsets training / validation).
    layout: "basnet", "acmnet" or "wtalc" (``case_jax.data.writers``).
    num_train, num_test: videos per split.
    num_classes: C (None: the shape's, 10 / 100 / 200); classes are named
      ``class_names(C)``.  Each block of C training videos holds every class
      once, so num_train >= C puts every class in the training split.
    feature_dim: D of each stream (real I3D: 1024).
    seed: all randomness; the same arguments give the same files.
    time_scale: multiplies every duration and instance length.
    max_snippets: longer videos are compressed to this many snippets.
    instance_lengths: "scaled" (instances follow time_scale and the
      compression with their video) or "real" (instances keep their real
      length in seconds; the foreground fraction is kept, so a scaled-down
      video holds fewer of them).
    signal: the signal model's preset (``SIGNAL_PRESETS``): "default", or
      "context_cheat" (the background scene gives the class away), or
      SignalSettings of one's own.
    stats: None = the shape's built-in tables; or a gt.json (with the
      shape's subset names) to derive the annotation statistics from.
    overwrite: replace an existing dataset at root.
  Returns:
    The settings written to ROOT/synthetic.json.
  """
  spec = SHAPES.get(shape)
  if num_classes is None and spec is not None:
    num_classes = spec.num_classes
  config = SyntheticConfig(num_train, num_test, num_classes or 0, feature_dim,
                           seed, time_scale, max_snippets, shape, layout,
                           signal, instance_lengths)
  config.validate()
  tables = (spec.stats if stats is None
            else annotation_stats(stats, spec.subsets))
  root = os.fspath(root)
  _prepare_root(root, overwrite, layout)
  world = make_world(seed, num_classes, feature_dim, signal_settings(signal))
  names = class_names(num_classes)
  database, videos = {}, []
  for split, count in (("train", num_train), ("test", num_test)):
    ids = [f"{spec.id_prefix[split]}{k + 1:07d}" for k in range(count)]
    for k, vid in enumerate(ids):
      rng = np.random.default_rng(
          np.random.SeedSequence([seed, _SUBSET_TAG[split], k]))
      plan = plan_video(rng, tables[split],
                        _primary_class(seed, split, k, num_classes),
                        num_classes, world, time_scale, max_snippets,
                        instance_lengths)
      feats = render(rng, plan, world, feature_dim)
      entry = _gt_entry(plan, spec.subsets[split], names)
      if layout == "basnet":     # written as generated: bounded memory
        for s, x in feats.items():
          np.save(feature_path(root, split, s, vid), x)
        database[vid] = entry
      else:
        videos.append(VideoSpec(
            vid, split, entry["subset"], entry["duration"],
            tuple((a["segment"][0], a["segment"][1], a["label"])
                  for a in entry["annotations"]), feats["rgb"],
            feats["flow"]))
    if layout == "basnet":
      with open(split_path(root, split), "w") as f:
        f.write("".join(v + "\n" for v in ids))
  if layout == "basnet":
    with open(gt_path(root), "w") as f:
      json.dump({"version": ("TH14-synthetic" if shape == "thumos14"
                             else f"{shape}-synthetic"), "taxonomy": [],
                 "database": database}, f)
  else:
    extra = ({"classes": names, "name": spec.wtalc_name}
             if layout == "wtalc" else {})
    write_layout(layout, root, videos, **extra)
  meta = {**asdict(config), "classes": list(names),
          "stats": "builtin" if stats is None else os.fspath(stats),
          "note": "synthetic test/demo data, not a benchmark"}
  with open(os.path.join(root, SYNTHETIC_META), "w") as f:
    json.dump(meta, f, indent=1)
  return meta


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The CLI; a refused setting or root is a short message and exit status
  2 (the traceback with --verbose)."""
  defaults = SyntheticConfig()
  parser = argparse.ArgumentParser(
      prog="python -m case_jax.data.synthetic",
      description="Write synthetic WTAL test/demo data, THUMOS14- or "
                  "ActivityNet-shaped, in the BaS-Net, ACM-Net or W-TALC "
                  "layout (not a benchmark).")
  parser.add_argument("--root", required=True, help="output directory")
  parser.add_argument("--seed", type=int, default=defaults.seed,
                      help="all randomness; the same arguments give the same files")
  parser.add_argument("--num-train", type=int, default=defaults.num_train,
                      help="train videos")
  parser.add_argument("--num-test", type=int, default=defaults.num_test,
                      help="test videos")
  parser.add_argument("--shape", default=defaults.shape, choices=sorted(SHAPES),
                      help="annotation statistics, subsets and ids of this "
                           "dataset")
  parser.add_argument("--layout", default=defaults.layout, choices=LAYOUTS,
                      help="feature layout to write")
  parser.add_argument("--num-classes", type=int, default=None,
                      help="action classes (default: the shape's, "
                           + ", ".join(f"{k} {v.num_classes}"
                                       for k, v in SHAPES.items()) + ")")
  parser.add_argument("--feature-dim", type=int, default=defaults.feature_dim,
                      help="feature width D of each stream")
  parser.add_argument("--time-scale", type=float, default=defaults.time_scale,
                      help="multiplies every duration and instance length")
  parser.add_argument("--max-snippets", type=int,
                      default=defaults.max_snippets,
                      help="longer videos are compressed to this many snippets")
  parser.add_argument("--instance-lengths", default=defaults.instance_lengths,
                      choices=INSTANCE_LENGTHS,
                      help="instances scaled with their video, or at their "
                           "real length")
  parser.add_argument("--signal", default=defaults.signal,
                      choices=sorted(SIGNAL_PRESETS),
                      help="the signal model's preset")
  parser.add_argument("--stats", default=None,
                      help="THUMOS14 gt.json to derive annotation statistics "
                           "from (default: built-in tables)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace an existing dataset at --root")
  parser.add_argument("--verbose", action="store_true",
                      help="show the traceback of a user error")
  args = parser.parse_args(argv)
  from case_jax.errors import run_reporting
  meta = run_reporting(_write, args, prog="case_jax.data.synthetic",
                       verbose=args.verbose)
  print(f"wrote {meta['num_train']} train / {meta['num_test']} test videos, "
        f"{meta['num_classes']} classes, D={meta['feature_dim']}, "
        f"{meta['shape']}-shaped, {meta['layout']} layout, to {args.root}")
  return 0


def _write(args) -> dict:
  from case_jax.errors import ConfigError, UserError
  try:
    return write_synthetic(
        args.root, shape=args.shape, layout=args.layout,
        num_train=args.num_train, num_test=args.num_test,
        num_classes=args.num_classes, feature_dim=args.feature_dim,
        seed=args.seed, time_scale=args.time_scale,
        max_snippets=args.max_snippets, signal=args.signal,
        instance_lengths=args.instance_lengths, stats=args.stats,
        overwrite=args.overwrite)
  except UserError:
    raise
  # The settings check and the root refuse with these built-ins; each
  # message names the setting or the root and the fix.
  except (FileExistsError, ValueError) as e:
    raise ConfigError(str(e)) from e


if __name__ == "__main__":
  sys.exit(main())
