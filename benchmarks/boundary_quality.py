"""How well detections fit each ground-truth instance, by instance length.

    python -m benchmarks.boundary_quality --gt demo_out/synthetic_data/gt.json \
        --detections demo_out/eval/detections.json [--subset test] [--json PATH]

For every ground-truth instance: the best tIoU of a same-class detection of
its video, and the share of the instance that detection covers; reported
per length bin (median, share of instances with a best tIoU >= 0.5).  Says
whether a model misses actions or finds them and cuts them wrong (README,
"CASE against the baseline on the synthetic data").  Host numpy only.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks import harness
from case_jax.ap_matching import segment_tiou
from case_jax.data.gt_json import read_gt
from case_jax.detection_set import load_detections

BINS_S = ((0.0, 3.0), (3.0, 10.0), (10.0, None))     # None: no upper end


def best_fits(gt, dets, subset: str) -> list[tuple[float, float, float]]:
  """[(instance length s, best tIoU, covered share)] over the subset."""
  out = []
  for vid, video in gt.items():
    if video.subset != subset:
      continue
    mine = dets.get(vid, [])
    for start, end, label in video.annotations:
      segs = np.array([(s, e) for lab, s, e in mine if lab == label],
                      np.float64).reshape(-1, 2)
      tiou = np.nan_to_num(segment_tiou(segs, np.array([[start, end]]))[:, 0])
      best, cover = 0.0, 0.0
      if len(segs) and tiou.max() > 0:
        s, e = segs[int(np.argmax(tiou))]
        best = float(tiou.max())
        cover = (min(end, e) - max(start, s)) / max(end - start, 1e-9)
      out.append((end - start, best, cover))
  return out


def by_length(fits) -> list[dict]:
  rows = []
  for lo, hi in BINS_S:
    sel = [(b, c) for length, b, c in fits
           if lo <= length and (hi is None or length < hi)]
    best = np.array([b for b, _ in sel])
    cover = np.array([c for _, c in sel])
    rows.append({"length_s": [lo, hi], "instances": len(sel),
                 "median_best_tiou": float(np.median(best)) if sel else None,
                 "share_best_tiou_ge_0.5": float(np.mean(best >= 0.5)) if sel else None,
                 "median_covered": float(np.median(cover)) if sel else None})
  return rows


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--gt", required=True)
  ap.add_argument("--detections", required=True)
  ap.add_argument("--subset", default="test")
  ap.add_argument("--json", default=None)
  args = ap.parse_args(argv)
  gt = read_gt(args.gt)
  dets = {}
  found = load_detections(args.detections)
  for vid, label, (start, end) in zip(found.video_ids, found.labels,
                                      found.segments):
    dets.setdefault(str(vid), []).append((str(label), float(start), float(end)))
  rows = by_length(best_fits(gt, dets, args.subset))
  print("| instance length | instances | median best tIoU | best tIoU >= 0.5 | median share covered |")
  print("|---|---:|---:|---:|---:|")
  cell = lambda v: "–" if v is None else f"{v:.2f}"
  for r in rows:
    lo, hi = r["length_s"]
    name = f"{lo:g}-{hi:g} s" if hi is not None else f">= {lo:g} s"
    print(f"| {name} | {r['instances']} | {cell(r['median_best_tiou'])} | "
          f"{cell(r['share_best_tiou_ge_0.5'])} | {cell(r['median_covered'])} |")
  harness.write_json(harness.results_path("boundary_quality", args.json),
                     {"rows": rows, "gt": args.gt, "detections": args.detections,
                      "subset": args.subset,
                      "command": "python -m benchmarks.boundary_quality "
                                 + " ".join(sys.argv[1:])})
  return 0


if __name__ == "__main__":
  sys.exit(main())
