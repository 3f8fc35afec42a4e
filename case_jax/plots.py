"""Plots as standalone SVG files (no plotting dependency).

* ``training_curves``: loss terms and F&B accuracy over steps (metrics.jsonl).
* ``video_timeline``: one test video: foreground score over time, the
  ground-truth segments and the top detections.
"""
from __future__ import annotations

import html
import json
import os
from typing import Iterable, Sequence

import numpy as np

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
           "#e377c2", "#17becf")


def _atomic_write(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def _polyline(xs, ys, color, width=1.5):
  pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
  return (f'<polyline fill="none" stroke="{color}" stroke-width="{width}" '
          f'points="{pts}"/>')


def _text(x, y, s, size=12, anchor="start", color="#333"):
  return (f'<text x="{x:.1f}" y="{y:.1f}" font-family="sans-serif" '
          f'font-size="{size}" text-anchor="{anchor}" fill="{color}">'
          f'{html.escape(str(s))}</text>')


def training_curves(metrics_jsonl: str, out_svg: str,
                    keys: Sequence[str] = ("loss", "L_V", "L_A", "L_C", "L_R",
                                           "fb_acc", "mAP")) -> str:
  """One panel per metric present in ``metrics.jsonl``; returns the path."""
  rows = [json.loads(line) for line in open(metrics_jsonl) if line.strip()]
  keys = [k for k in keys if any(k in r for r in rows)]
  w, panel_h, pad = 720, 120, 40
  parts = []
  for i, key in enumerate(keys):
    pts = [(r["step"], r[key]) for r in rows if key in r and np.isfinite(r[key])]
    if not pts:
      continue
    x, y = np.array(pts, np.float64).T
    top = pad + i * (panel_h + pad)
    x0, x1 = x.min(), max(x.max(), x.min() + 1)
    y0, y1 = y.min(), max(y.max(), y.min() + 1e-9)
    sx = pad + (x - x0) / (x1 - x0) * (w - 2 * pad)
    sy = top + panel_h - (y - y0) / (y1 - y0) * panel_h
    parts.append(f'<rect x="{pad}" y="{top}" width="{w - 2 * pad}" '
                 f'height="{panel_h}" fill="none" stroke="#ccc"/>')
    parts.append(_polyline(sx, sy, _COLORS[i % len(_COLORS)]))
    parts.append(_text(pad, top - 6, f"{key}  (last {y[-1]:.4g})"))
    parts.append(_text(w - pad, top + panel_h + 14, f"step {int(x1)}", 10, "end"))
    parts.append(_text(pad - 4, top + 10, f"{y1:.3g}", 10, "end"))
    parts.append(_text(pad - 4, top + panel_h, f"{y0:.3g}", 10, "end"))
  h = pad + len(keys) * (panel_h + pad)
  svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">'
         f'<rect width="100%" height="100%" fill="white"/>{"".join(parts)}</svg>')
  _atomic_write(out_svg, svg)
  return out_svg


def video_timeline(out_svg: str, video_id: str, fg_scores: np.ndarray,
                   seconds_per_score: float, gt: Iterable[tuple],
                   detections: Iterable[dict], class_names: Sequence[str],
                   max_detections: int = 10) -> str:
  """Foreground score (T,) over time with GT segments (start, end, class
  index) and the highest-scoring detections ({label, score, segment})."""
  fg = np.asarray(fg_scores, np.float64)
  duration = max(len(fg) * seconds_per_score, 1e-6)
  w, pad, plot_h = 900, 50, 160
  sx = lambda t: pad + t / duration * (w - 2 * pad)  # noqa: E731
  t = (np.arange(len(fg)) + 0.5) * seconds_per_score
  parts = [f'<rect x="{pad}" y="{pad}" width="{w - 2 * pad}" height="{plot_h}" '
           f'fill="none" stroke="#ccc"/>',
           _polyline(sx(t), pad + plot_h - np.clip(fg, 0, 1) * plot_h, _COLORS[0]),
           _text(pad, pad - 8, f"{video_id}: foreground score, ground truth "
                 "(green), top detections (red)")]
  y = pad + plot_h + 14
  for start, end, cls in gt:
    parts.append(f'<rect x="{sx(start):.1f}" y="{y}" width="{max(sx(end) - sx(start), 1):.1f}" '
                 f'height="10" fill="#2ca02c" opacity="0.7"/>')
  parts.append(_text(pad - 4, y + 9, "GT", 10, "end"))
  dets = sorted(detections, key=lambda d: -d["score"])[:max_detections]
  for i, d in enumerate(dets):
    yy = y + 16 + 12 * i
    s, e = d["segment"]
    parts.append(f'<rect x="{sx(s):.1f}" y="{yy}" width="{max(sx(e) - sx(s), 1):.1f}" '
                 f'height="9" fill="#d62728" opacity="{0.3 + 0.7 * min(d["score"], 1):.2f}"/>')
    parts.append(_text(w - pad + 4, yy + 8, f'{d["label"]} {d["score"]:.2f}', 9))
  h = y + 16 + 12 * len(dets) + 30
  parts.append(_text(w - pad, h - 10, f"{duration:.1f} s", 10, "end"))
  svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w + 120}" height="{h}">'
         f'<rect width="100%" height="100%" fill="white"/>{"".join(parts)}</svg>')
  _atomic_write(out_svg, svg)
  return out_svg
