"""Synthetic weakly-supervised action localization data in the THUMOS14 layout.

TEST AND DEMO DATA ONLY.  It exercises the whole pipeline (reader, sampling,
training, inference, evaluation) on a CPU in minutes; accuracy on it says
nothing about accuracy on real videos and is no benchmark.

``write_synthetic_thumos`` writes the BaS-Net/CASE layout read by
``case_jax.data.thumos_layout`` (``gt.json`` with ``validation``/``test``
subsets in the real file's format, ``split_{train,test}.txt``,
``features/{train,test}/{rgb,flow}/<vid>.npy`` float32 (n, D)), plus
``synthetic.json`` recording the generator settings (readers ignore it).

The features and annotations come from ``synthetic_generator`` (how each
snippet feature is built, the annotation statistics it follows, and how
it stays deterministic per seed).

Command line: ``python -m case_jax.data.synthetic --root DIR [--seed N ...]``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

from case_jax.data.records import FEATURE_FPS
from case_jax.data.synthetic_generator import (BUILTIN_STATS, GT_SUBSET,
                                               MIN_SNIPPETS, SIGNAL_PRESETS,
                                               SECONDS_PER_SNIPPET, VideoPlan,
                                               SignalSettings, annotation_stats, make_world,
                                               plan_video, render,
                                               signal_settings)
from case_jax.data.thumos_layout import (STREAMS, feature_path, gt_path,
                                         split_path)

_ID_PREFIX = {"train": "video_validation_", "test": "video_test_"}
_SUBSET_TAG = {"train": 1, "test": 2}


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


def _gt_entry(plan: VideoPlan, split: str,
              names: Sequence[str]) -> dict:
  duration = round(plan.num_snippets * SECONDS_PER_SNIPPET, 2)
  return {"subset": GT_SUBSET[split], "duration": duration,
          "frames": int(round(duration * FEATURE_FPS)),
          "annotations": [{"segment": [i.start_s, i.end_s],
                           "label": names[i.class_index]}
                          for i in plan.instances]}


def _prepare_root(root: str, overwrite: bool) -> None:
  if os.path.exists(gt_path(root)) and not overwrite:
    raise FileExistsError(f"{gt_path(root)} exists; pass overwrite=True "
                          f"(--overwrite) to replace the dataset in {root}")
  # Stale feature files of a larger earlier run would linger otherwise.
  shutil.rmtree(os.path.join(root, "features"), ignore_errors=True)
  for split in _ID_PREFIX:
    for s in STREAMS:
      os.makedirs(os.path.dirname(feature_path(root, split, s, "x")),
                  exist_ok=True)


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
  signal: "str | SignalSettings" = "default"

  def validate(self) -> None:
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
    signal_settings(self.signal)


def write_synthetic_thumos(root: str | os.PathLike, *, num_train: int = 120,
                           num_test: int = 60, num_classes: int = 10,
                           feature_dim: int = 64, seed: int = 0,
                           time_scale: float = 0.5, max_snippets: int = 400,
                           signal: "str | SignalSettings" = "default",
                           stats: Optional[str | os.PathLike] = None,
                           overwrite: bool = False) -> dict:
  """Writes a synthetic dataset in the BaS-Net/CASE THUMOS14 layout.

  Args:
    root: output directory (created).
    num_train, num_test: videos per split (gt subsets validation / test).
    num_classes: C; classes are named ``class_names(C)``.
    feature_dim: D of each stream (real I3D: 1024).
    seed: all randomness; the same arguments give the same files.
    time_scale: multiplies every duration and instance length.
    max_snippets: longer videos are compressed to this many snippets.
    signal: the signal model's preset (``SIGNAL_PRESETS``): "default", or
      "context_cheat" (the background scene gives the class away), or
      SignalSettings of one's own.
    stats: None = BUILTIN_STATS; or a THUMOS14-style gt.json to derive the
      annotation statistics from.
    overwrite: replace an existing dataset at root.
  Returns:
    The settings written to ROOT/synthetic.json.
  """
  config = SyntheticConfig(num_train, num_test, num_classes, feature_dim,
                           seed, time_scale, max_snippets, signal)
  config.validate()
  tables = BUILTIN_STATS if stats is None else annotation_stats(stats)
  root = os.fspath(root)
  _prepare_root(root, overwrite)
  world = make_world(seed, num_classes, feature_dim, signal_settings(signal))
  names = class_names(num_classes)
  database = {}
  for split, count in (("train", num_train), ("test", num_test)):
    ids = [f"{_ID_PREFIX[split]}{k + 1:07d}" for k in range(count)]
    for k, vid in enumerate(ids):
      rng = np.random.default_rng(
          np.random.SeedSequence([seed, _SUBSET_TAG[split], k]))
      plan = plan_video(rng, tables[split],
                         _primary_class(seed, split, k, num_classes),
                         num_classes, world, time_scale, max_snippets)
      for s, x in render(rng, plan, world, feature_dim).items():
        np.save(feature_path(root, split, s, vid), x)
      database[vid] = _gt_entry(plan, split, names)
    with open(split_path(root, split), "w") as f:
      f.write("".join(v + "\n" for v in ids))
  with open(gt_path(root), "w") as f:
    json.dump({"version": "TH14-synthetic", "taxonomy": [],
               "database": database}, f)
  meta = {**asdict(config), "classes": list(names),
          "stats": "builtin" if stats is None else os.fspath(stats),
          "note": "synthetic test/demo data, not a benchmark"}
  with open(os.path.join(root, "synthetic.json"), "w") as f:
    json.dump(meta, f, indent=1)
  return meta


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The CLI; a refused setting or root is a short message and exit status
  2 (the traceback with --verbose)."""
  defaults = SyntheticConfig()
  parser = argparse.ArgumentParser(
      prog="python -m case_jax.data.synthetic",
      description="Write synthetic WTAL test/demo data in the THUMOS14 "
                  "BaS-Net/CASE layout (not a benchmark).")
  parser.add_argument("--root", required=True, help="output directory")
  parser.add_argument("--seed", type=int, default=defaults.seed,
                      help="all randomness; the same arguments give the same files")
  parser.add_argument("--num-train", type=int, default=defaults.num_train,
                      help="train videos")
  parser.add_argument("--num-test", type=int, default=defaults.num_test,
                      help="test videos")
  parser.add_argument("--num-classes", type=int, default=defaults.num_classes,
                      help="action classes")
  parser.add_argument("--feature-dim", type=int, default=defaults.feature_dim,
                      help="feature width D of each stream")
  parser.add_argument("--time-scale", type=float, default=defaults.time_scale,
                      help="multiplies every duration and instance length")
  parser.add_argument("--max-snippets", type=int,
                      default=defaults.max_snippets,
                      help="longer videos are compressed to this many snippets")
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
        f"{meta['num_classes']} classes, D={meta['feature_dim']} to "
        f"{args.root}")
  return 0


def _write(args) -> dict:
  from case_jax.errors import ConfigError, UserError
  try:
    return write_synthetic_thumos(
        args.root, num_train=args.num_train, num_test=args.num_test,
        num_classes=args.num_classes, feature_dim=args.feature_dim,
        seed=args.seed, time_scale=args.time_scale,
        max_snippets=args.max_snippets, signal=args.signal, stats=args.stats,
        overwrite=args.overwrite)
  except UserError:
    raise
  # The settings check and the root refuse with these built-ins; each
  # message names the setting or the root and the fix.
  except (FileExistsError, ValueError) as e:
    raise ConfigError(str(e)) from e


if __name__ == "__main__":
  sys.exit(main())
