"""Statistics and consistency report of a dataset root, in any layout.

  python -m case_jax.data.inspect --root DIR --layout basnet|wtalc|acmnet \
      [--splits train test] [--feature_dim 1024] [--check_values] \
      [--classes FILE] [--json]
  python -m case_jax.main --config=configs/X.py --mode=inspect  # the config's
                      # data.root, layout and classes; values always checked

Per split: videos, classes, instances, multi-label videos, foreground
fraction (snippets whose centre lies in an annotated segment, as in
``snippet_fg_mask``), snippet-length distribution, and every inconsistency
found on load (the LayoutWarnings, the videos skipped, or the LayoutError
that stops a split from opening).  Annotations and lengths come from the
file headers; ``--check_values`` also reads every feature for NaN/inf and
truncated files (files verified before are not read again, ``verified``).
The test split is read in the training split's class list, so a test label
the training split lacks is a bad video, as in training.
Exit status 1 when a split cannot be opened or has bad videos; a dataset
without a test split at all is only noted (training runs without
evaluation).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Optional, Sequence

import numpy as np

from case_jax.data import verified as verified_lib
from case_jax.data.classes import config_classes, read_class_file
from case_jax.data.detect import detect_layout
from case_jax.data.layouts import LAYOUTS, open_dataset
from case_jax.data.records import LayoutError, LayoutWarning, NoSplit
from case_jax.errors import ConfigError, run_reporting, wants_verbose

SPLITS = ("train", "test")


def _annotations(ds, i: int):
  """(duration_s, ((start_s, end_s, label), ...)) of video i, no features."""
  return ds.duration(i), ds.gt[ds.video_ids[i]].annotations


def foreground_fraction(length: int, annotations, seconds_per_snippet: float
                        ) -> float:
  """Share of a video's n snippets whose centre is inside a segment."""
  centre = (np.arange(length) + 0.5) * seconds_per_snippet
  fg = np.zeros(length, bool)
  for start, end, _ in annotations:
    fg |= (centre >= start) & (centre <= end)
  return float(fg.mean()) if length else 0.0


def split_stats(ds) -> dict:
  """Statistics of one opened split (see module docstring)."""
  spp = ds.snippet_frames / ds.fps
  anns = [_annotations(ds, i) for i in range(len(ds))]
  lengths = np.asarray(ds.lengths)
  labels = ds.labels()
  fg = [foreground_fraction(int(n), a, spp) for n, (_, a) in zip(lengths,
                                                                  anns)]
  per_class = {c: int(sum(1 for _, a in anns for x in a if x[2] == c))
               for c in ds.classes}
  q = lambda p: float(np.percentile(lengths, p))
  return {
      "videos": len(ds), "classes": len(ds.classes),
      "class_names": list(ds.classes),
      "instances": int(sum(len(a) for _, a in anns)),
      "instances_per_class": per_class,
      "videos_without_instances": int(sum(1 for _, a in anns if not a)),
      "multi_label_videos": int((labels.sum(1) > 1).sum()),
      "foreground_fraction_mean": float(np.mean(fg)),
      "snippets": {"min": int(lengths.min()), "p10": q(10), "median": q(50),
                   "mean": float(lengths.mean()), "p90": q(90),
                   "max": int(lengths.max()), "total": int(lengths.sum())},
      "duration_s": {"min": float(min(d for d, _ in anns)),
                     "max": float(max(d for d, _ in anns))},
      "feature_dim": {"rgb": int(ds.rgb_dim), "flow": int(ds.flow_dim)},
  }


def inspect_split(root: str, split: str, layout: str, *,
                  feature_dim: Optional[int] = None,
                  check_values: bool = False, classes=None,
                  verified=None) -> dict:
  """Opens a split with on_error="skip" and reports stats and problems.

  classes: the class list (None: the split's own labels); verified: a
  ``verified.VerifiedFiles`` record for the value pass.
  Returns the report; "absent" instead of statistics when the dataset has
  no such split, "error" when it cannot be opened.
  """
  report = {"split": split, "issues": [], "skipped": []}
  options = {"feature_dim": feature_dim, "check_values": check_values,
             "verified": verified}
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", LayoutWarning)
    try:
      ds = open_dataset(root, split, layout, classes, on_error="skip",
                        **options)
    except NoSplit as e:
      # Only the test split may be absent (training without evaluation).
      report["absent" if split == "test" else "error"] = str(e)
      return report
    except LayoutError as e:
      report["error"] = str(e)
      return report
  report["issues"] = [str(w.message) for w in caught
                      if issubclass(w.category, LayoutWarning)
                      and "skipped" not in str(w.message)]
  report["skipped"] = [list(x) for x in getattr(ds, "skipped", ())]
  report.update(split_stats(ds))
  return report


def format_report(root: str, layout: str, reports: Sequence[dict]) -> str:
  lines = [f"dataset {root} (layout {layout})"]
  for r in reports:
    lines.append(f"\n[{r['split']}]")
    if "error" in r:
      lines.append(f"  cannot open: {r['error']}")
      continue
    if "absent" in r:
      lines.append(f"  no such split ({r['absent']})"
                   + ("; training runs without evaluation"
                      if r["split"] == "test" else ""))
      continue
    s = r["snippets"]
    lines += [
        f"  videos {r['videos']}, classes {r['classes']}, instances "
        f"{r['instances']} ({r['multi_label_videos']} multi-label videos, "
        f"{r['videos_without_instances']} without instances)",
        f"  foreground fraction (mean over videos) "
        f"{r['foreground_fraction_mean']:.3f}",
        f"  snippets per video: min {s['min']}, p10 {s['p10']:.0f}, median "
        f"{s['median']:.0f}, mean {s['mean']:.1f}, p90 {s['p90']:.0f}, max "
        f"{s['max']} (total {s['total']})",
        f"  feature dim rgb {r['feature_dim']['rgb']}, flow "
        f"{r['feature_dim']['flow']}",
        "  instances per class: " + ", ".join(
            f"{c} {n}" for c, n in r["instances_per_class"].items())]
    for issue in r["issues"]:
      lines.append(f"  inconsistency: {issue}")
    for vid, why in r["skipped"]:
      lines.append(f"  bad video {vid}: {why}")
    if not r["issues"] and not r["skipped"]:
      lines.append("  no inconsistency found")
  return "\n".join(lines)


def inspect_root(root: str, layout: str, splits: Sequence[str] = SPLITS, *,
                 feature_dim: Optional[int] = None, check_values: bool = False,
                 classes=None, verified=None, as_json: bool = False) -> int:
  """Prints the report of ``splits`` and returns the exit status (1 when a
  split cannot be opened or has bad videos).  The test split is read in the
  training split's class list when ``classes`` is None."""
  reports, found = [], classes
  for split in splits:
    r = inspect_split(root, split, layout, feature_dim=feature_dim,
                      check_values=check_values, classes=found,
                      verified=verified)
    if classes is None and split == "train" and "class_names" in r:
      found = tuple(r["class_names"])
    reports.append(r)
  if as_json:
    print(json.dumps({"root": root, "layout": layout, "splits": reports},
                     indent=1))
  else:
    print(format_report(root, layout, reports))
  bad = any("error" in r or r["skipped"] for r in reports)
  return 1 if bad else 0


def inspect_config(config) -> int:
  """The report of an ml_collections config's dataset: data.root,
  data.layout (default "basnet"; "auto" as detect_layout finds it), the class list data.classes names (see
  ``classes``) and every feature value read (remembered as
  data.verified_cache says); prints it and returns the exit status.  For
  ``python -m case_jax.main --mode=inspect``."""
  data = config.data
  root = data.get("root")
  if not root:
    raise ConfigError("--mode=inspect reads data.root: pass "
                      "--config.data.root=/path/to/the/dataset")
  root = str(root)
  classes = config_classes(data.get("classes"), data.get("dataset", ""), root)
  layout = str(data.get("layout", "basnet"))
  if layout == "auto":
    layout, why = detect_layout(root)
    print(f"data.layout=auto: {root} looks like the {layout} layout ({why})")
  return inspect_root(
      root, layout, classes=classes,
      check_values=True,
      verified=verified_lib.from_setting(data.get("verified_cache", "auto"),
                                         root))


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m case_jax.data.inspect", description=__doc__.split("\n")[0])
  parser.add_argument("--root", required=True)
  parser.add_argument("--layout", choices=LAYOUTS, default="basnet")
  parser.add_argument("--splits", nargs="+", default=["train", "test"])
  parser.add_argument("--feature_dim", type=int, default=None)
  parser.add_argument("--check_values", action="store_true",
                      help="read every feature file (NaN/inf, truncated)")
  parser.add_argument("--classes", default=None,
                      help="class-list file, one class per line (default: "
                      "the training split's labels)")
  parser.add_argument("--json", action="store_true", help="print JSON")
  args = parser.parse_args(argv)
  classes = read_class_file(args.classes) if args.classes else None
  return inspect_root(args.root, args.layout, args.splits,
                      feature_dim=args.feature_dim,
                      check_values=args.check_values, classes=classes,
                      verified=verified_lib.VerifiedFiles(args.root)
                      if args.check_values else None, as_json=args.json)


if __name__ == "__main__":
  sys.exit(run_reporting(main, prog="python -m case_jax.data.inspect",
                         verbose=wants_verbose(None)))
