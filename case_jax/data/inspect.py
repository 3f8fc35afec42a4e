"""Statistics and consistency report of a dataset root, in any layout.

  python -m case_jax.data.inspect --root DIR --layout basnet|wtalc|acmnet \
      [--splits train test] [--feature_dim 1024] [--check_values] [--json]

Per split: videos, classes, instances, multi-label videos, foreground
fraction (snippets whose centre lies in an annotated segment, as in
``snippet_fg_mask``), snippet-length distribution, and every inconsistency
found on load (the LayoutWarnings, the videos skipped, or the LayoutError
that stops a split from opening).  Annotations and lengths come from the
file headers; ``--check_values`` also reads every feature for NaN/inf.
Exit status 1 when a split cannot be opened or has skipped videos.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Optional, Sequence

import numpy as np

from case_jax.data.layouts import LAYOUTS, open_dataset
from case_jax.data.records import LayoutError, LayoutWarning


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
                  check_values: bool = False) -> dict:
  """Opens a split with on_error="skip" and reports stats and problems."""
  report = {"split": split, "issues": [], "skipped": []}
  options = {"feature_dim": feature_dim, "eager": check_values}
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", LayoutWarning)
    try:
      ds = open_dataset(root, split, layout, on_error="skip", **options)
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


def inspect_config(config) -> int:
  """The report of an ml_collections config's dataset (config.data.root,
  config.data.layout, default "basnet"); prints it and returns the exit
  status.  For ``python -m case_jax.main --mode=inspect``."""
  data = config.data
  layout = data.get("layout", "basnet") if hasattr(data, "get") else "basnet"
  argv = ["--root", str(data.root), "--layout", str(layout)]
  return main(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m case_jax.data.inspect", description=__doc__.split("\n")[0])
  parser.add_argument("--root", required=True)
  parser.add_argument("--layout", choices=LAYOUTS, default="basnet")
  parser.add_argument("--splits", nargs="+", default=["train", "test"])
  parser.add_argument("--feature_dim", type=int, default=None)
  parser.add_argument("--check_values", action="store_true",
                      help="read every feature file (NaN/inf check)")
  parser.add_argument("--json", action="store_true", help="print JSON")
  args = parser.parse_args(argv)
  reports = [inspect_split(args.root, s, args.layout,
                           feature_dim=args.feature_dim,
                           check_values=args.check_values)
             for s in args.splits]
  if args.json:
    print(json.dumps({"root": args.root, "layout": args.layout,
                      "splits": reports}, indent=1))
  else:
    print(format_report(args.root, args.layout, reports))
  bad = any("error" in r or r["skipped"] for r in reports)
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
