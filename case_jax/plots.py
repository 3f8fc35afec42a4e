"""Plots as PNG files, rendered with matplotlib's object API (no pyplot).

Every function takes plain arrays / dicts and writes one PNG atomically
(temporary name, then ``os.replace``), returning its path:

* ``training_curves``: loss terms, F&B accuracy and mAP over steps.
* ``entropy_curves``: H(Q^C) and H(Q^R) over training (paper Fig. 3).
* ``fg_range_curves``: max / mean / min of P^A and of the clusters'
  foreground labels Q^R[:, 0] per step (paper appendix Fig. 4, there "Q^C").
* ``video_timeline``: one test video: P^A, P-hat^A, P-ddot^A over seconds,
  the ground truth and the top detections (paper appendix Fig. 7).
* ``embedding_scatter``: per stream a 2-D map of snippet embeddings,
  foreground / background coloured, with the cluster prototypes (Fig. 6).
* ``map_tiou``: detection mAP against the tIoU threshold.

``metric_series`` extracts what the curves plot from metrics.jsonl rows, so
the values can be tested without rendering.  Rendering uses the Agg canvas
directly: no global pyplot state, safe in threads and without a display.
"""
from __future__ import annotations

import functools
import json
import math
import os
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

DPI = 110
_LABELS = {
    "loss": "total loss (Eq. 16)", "L_V": "$L_V$ video classification",
    "L_A": "$L_A$ attention", "L_C": "$L_C$ snippet clustering",
    "L_R": "$L_R$ cluster classification", "fb_acc": "F&B accuracy (train batch)",
    "mAP": "test mAP (avg over tIoU)", "test_fb_acc": "F&B accuracy (test)",
}
# Fig. 7 curves: colours as matplotlib's default cycle, names as the paper.
SCORE_STYLE = (
    ("p_a", "$P^A$ (attention)", "tab:blue"),
    ("p_hat", r"$\hat{P}^A$ (clusters, Eq. 17)", "tab:orange"),
    ("p_ddot", r"$\ddot{P}^A = (P^A + \hat{P}^A)/2$", "tab:green"),
)


# =============================================================================
# Data extraction (no rendering).
# =============================================================================
def read_metrics(path: str) -> list[dict]:
  """The rows of a metrics.jsonl file (train-step and evaluation lines).
  A last line cut short (a run killed mid-write, or still writing) is
  skipped; a bad line elsewhere is an error naming the file and line."""
  with open(path) as f:
    lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
  rows = []
  for k, (i, line) in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      if k == len(lines) - 1:
        break
      raise ValueError(f"{path}:{i}: not a JSON line ({e})") from None
  return rows


def metric_series(rows: Iterable[Mapping], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps (n,), values (n,)) of the rows holding a finite ``key``.

  A resumed run can log a step twice; the last value of a step wins, and
  steps come out sorted.
  """
  by_step = {}
  for r in rows:
    v = r.get(key)
    if isinstance(v, (int, float)) and math.isfinite(v) and "step" in r:
      by_step[int(r["step"])] = float(v)
  steps = np.array(sorted(by_step), np.int64)
  return steps, np.array([by_step[s] for s in steps.tolist()], np.float64)


def map_by_step(rows: Iterable[Mapping]) -> list[tuple[int, np.ndarray, np.ndarray]]:
  """[(step, tIoU thresholds (n,), mAP (n,))] of the evaluation rows
  ("mAP@0.10", ... keys), sorted by step; the last row of a step wins."""
  by_step = {}
  for r in rows:
    cols = sorted((float(k[4:]), float(v)) for k, v in r.items()
                  if k.startswith("mAP@") and isinstance(v, (int, float)))
    if cols and "step" in r:
      by_step[int(r["step"])] = cols
  return [(s, np.array([c[0] for c in by_step[s]]), np.array([c[1] for c in by_step[s]]))
          for s in sorted(by_step)]


# =============================================================================
# Rendering helpers.
# =============================================================================
def _figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _save(fig: Figure, path: str) -> str:
  """Writes ``fig`` to ``path`` as PNG via a temporary file (atomic)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")
  os.replace(tmp, path)
  return path


def _empty(ax, text: str) -> None:
  ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
          color="0.4")
  ax.set_xticks([])
  ax.set_yticks([])


def _step_axis(ax, steps=()) -> None:
  """x: whole training steps; y: plain values (no "+1.12e1" offset)."""
  ax.set_xlabel("step")
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  if len(set(np.asarray(steps).tolist())) == 1:  # one evaluation: a readable range
    ax.set_xlim(steps[0] - 1, steps[0] + 1)
  ax.ticklabel_format(axis="y", useOffset=False)


def _line(ax, x, y, **kw):
  # A single logged point would be invisible as a line.
  return ax.plot(x, y, marker="o" if len(x) < 3 else None, markersize=4, **kw)


# =============================================================================
# Training curves (metrics.jsonl).
# =============================================================================
def training_curves(rows: Sequence[Mapping], out_png: str,
                    keys: Sequence[str] = ("loss", "L_V", "L_A", "L_C", "L_R",
                                           "fb_acc", "mAP", "test_fb_acc")) -> str:
  """One panel per metric present in ``rows`` (metrics.jsonl lines)."""
  series = [(k, *metric_series(rows, k)) for k in keys]
  series = [s for s in series if len(s[1])]
  ncols = 2 if len(series) > 1 else 1
  nrows = max(1, math.ceil(len(series) / ncols))
  fig = _figure(5.0 * ncols, 2.3 * nrows)
  axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
  if not series:
    _empty(axes[0], "metrics.jsonl has no curves yet")
  for i, (key, x, y) in enumerate(series):
    ax = axes[i]
    _line(ax, x, y, color=f"C{i % 10}")
    ax.set_title(f"{_LABELS.get(key, key)}   last {y[-1]:.4g}", fontsize=10)
    _step_axis(ax, x)
    ax.grid(alpha=0.3)
  for ax in axes[max(1, len(series)):]:
    ax.set_visible(False)
  return _save(fig, out_png)


def entropy_curves(rows: Sequence[Mapping], out_png: str,
                   num_clusters: Optional[int] = None, note: str = "") -> str:
  """H(Q^C) and H(Q^R) (nats, mean per-row entropy) over steps (Fig. 3).

  num_clusters (K^C) adds the uniform-assignment maxima log K^C and log 2,
  the level a trivial (uncertain) assignment would sit at.  ``note`` goes
  into H(Q^C)'s label (e.g. whether DDCL was on: Fig. 3 compares both).
  """
  fig = _figure(9.0, 4.0)
  ax = fig.subplots()
  drawn = False
  for key, label, color, k in (("H_qc", f"$H(Q^C)$ snippet→cluster{note}",
                                "tab:blue", num_clusters),
                               ("H_qr", "$H(Q^R)$ cluster→F/B", "tab:red", 2)):
    x, y = metric_series(rows, key)
    if len(x):
      _line(ax, x, y, color=color, label=label)
      drawn = True
      if k:
        ax.axhline(math.log(k), color=color, ls=":", lw=1,
                   label=f"uniform: log {k} = {math.log(k):.2f}")
  if not drawn:
    _empty(ax, "no H_qc / H_qr in metrics.jsonl")
  else:
    _step_axis(ax)
    ax.set_ylabel("entropy (nats)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  ax.set_title("Entropy of the pseudo-labels during training (paper Fig. 3)",
               fontsize=10)
  return _save(fig, out_png)


FG_RANGE_KEYS = {"P^A": ("pa_max", "mean_att", "pa_min"),
                 "Q^R[:,0]": ("qr_fg_max", "qr_fg_mean", "qr_fg_min")}


def fg_range_series(rows: Sequence[Mapping]) -> dict:
  """{"P^A" / "Q^R[:,0]": (steps, max, mean, min)} of Fig. 4, over the steps
  that logged all three (a run resumed across a version that added pa_max /
  pa_min has the mean alone on its older rows); names without data left out."""
  out = {}
  for name, keys in FG_RANGE_KEYS.items():
    series = [metric_series(rows, k) for k in keys]
    x = functools.reduce(np.intersect1d, [s for s, _ in series])
    if len(x):
      out[name] = (x, *(v[np.isin(s, x)] for s, v in series))
  return out


def fg_range_curves(rows: Sequence[Mapping], out_png: str) -> str:
  """Max / mean / min per step of P^A and of Q^R[:, 0] (appendix Fig. 4).

  Q^R[:, 0] are the clusters' foreground labels that Eq. 13 compares the
  snippets' rank R (or P^A) with; the paper's Fig. 4 calls them Q^C.  R's
  own range, 1/N .. 1 with mean about 0.5, is drawn for reference.
  """
  fig = _figure(9.0, 4.0)
  ax = fig.subplots()
  styles = {"P^A": ("tab:blue", "$P^A$"),
            "Q^R[:,0]": ("tab:red", "$Q^R_{:,0}$ (paper: $Q^C$)")}
  data = fg_range_series(rows)
  drawn = bool(data)
  for name, (x, hi, mid, lo) in data.items():
    color, label = styles[name]
    ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
    _line(ax, x, hi, color=color, lw=1, ls="--", label=f"{label} max / min")
    _line(ax, x, lo, color=color, lw=1, ls="--")
    _line(ax, x, mid, color=color, lw=2, label=f"{label} mean")
  if not drawn:
    _empty(ax, "no pa_* / qr_fg_* statistics in metrics.jsonl")
  else:
    for level, ls in ((0.0, ":"), (0.5, "-."), (1.0, ":")):
      ax.axhline(level, color="0.45", ls=ls, lw=1,
                 label="$R^A$ mean (0.5), max/min (1, 1/N)" if level == 0.5 else None)
    _step_axis(ax)
    ax.set_ylabel("value per training batch")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  ax.set_title("Range of $P^A$ and of the clusters' foreground labels "
               "(appendix Fig. 4)", fontsize=10)
  return _save(fig, out_png)


# =============================================================================
# Per-video timeline (Fig. 7).
# =============================================================================
def video_timeline(out_png: str, video_id: str, times: np.ndarray,
                   scores: Mapping[str, np.ndarray], gt: Iterable[tuple],
                   detections: Iterable[Mapping], class_names: Sequence[str],
                   *, duration: Optional[float] = None, max_detections: int = 8,
                   note: str = "") -> str:
  """Foreground scores of one video against its ground truth.

  times: (T,) seconds of each score (snippet centres); scores: {"p_a",
  "p_hat", "p_ddot"} -> (T,) (missing keys are skipped); gt: (start_s,
  end_s, class_index); detections: {"label" (name or index), "score",
  "segment" [start_s, end_s]}, the ``max_detections`` best are drawn.
  """
  times = np.asarray(times, np.float64)
  gt = list(gt)
  dets = sorted(detections, key=lambda d: -float(d["score"]))[:max_detections]
  end = max([duration or 0.0, float(times[-1]) if len(times) else 0.0]
            + [float(g[1]) for g in gt] + [float(d["segment"][1]) for d in dets])
  end = max(end, 1e-3)
  name = lambda c: class_names[c] if isinstance(c, (int, np.integer)) else str(c)  # noqa: E731

  fig = _figure(11.0, 4.6 + 0.22 * len(dets))
  top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={
      "height_ratios": [3.0, 1.0 + 0.3 * len(dets)]})
  for start, stop, _ in gt:  # GT shaded under the curves
    top.axvspan(start, stop, color="0.82", lw=0)
  for key, label, color in SCORE_STYLE:
    if key in scores:
      top.plot(times, np.asarray(scores[key], np.float64), color=color, lw=1.4,
               label=label)
  top.axhline(0.5, color="0.5", ls=":", lw=1)
  top.set_ylim(-0.02, 1.02)
  top.set_ylabel("foreground probability")
  handles, labels = top.get_legend_handles_labels()
  handles.append(Patch(color="0.82", label="ground truth"))
  top.legend(handles=handles, fontsize=8, loc="upper right", ncols=4,
             framealpha=0.9)
  top.set_title(f"{video_id}{'  ' + note if note else ''}", fontsize=10)
  top.grid(axis="x", alpha=0.3)

  # Rows: GT (one row) then detections, best first.
  rows = [("ground truth", [(s, e - s) for s, e, _ in gt], "0.35")]
  rows += [(f"{name(d['label'])} {float(d['score']):.2f}",
            [(d["segment"][0], d["segment"][1] - d["segment"][0])], "tab:red")
           for d in dets]
  for i, (_, spans, color) in enumerate(rows):
    bottom.broken_barh(spans, (i - 0.35, 0.7), color=color, alpha=0.85)
  for s, e, c in gt:  # class names inside the GT bars
    if e - s > 0.08 * end:  # only where the name fits
      bottom.text(0.5 * (s + e), 0, name(int(c)), ha="center", va="center",
                  fontsize=7, color="white", clip_on=True)
  bottom.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
  bottom.set_ylim(len(rows) - 0.5, -0.5)
  bottom.set_xlim(0, end)
  bottom.set_xlabel("time (s)")
  bottom.grid(axis="x", alpha=0.3)
  if not dets:
    bottom.text(0.99, 0.1, "no detections", transform=bottom.transAxes,
                ha="right", fontsize=8, color="0.4")
  return _save(fig, out_png)


# =============================================================================
# Embeddings (Fig. 6).
# =============================================================================
_FG_COLORS = {1: ("tab:red", "foreground snippet"), 0: ("tab:blue", "background snippet"),
              -1: ("0.6", "unlabelled snippet")}


def embedding_scatter(out_png: str, panels: Sequence[Mapping], *, title: str = "") -> str:
  """One panel per stream.

  Each panel: {"title", "points" (N, 2), "fg" (N,) 1 / 0 / -1 (foreground,
  background, unknown), "protos" (K, 2), "proto_fg" (K,) bool (Q^R[k,0] >
  0.5), optional "axis_labels" (x, y)}.
  """
  fig = _figure(6.0 * max(1, len(panels)), 5.6)
  axes = np.atleast_1d(fig.subplots(1, max(1, len(panels)), squeeze=False)).ravel()
  for ax, p in zip(axes, panels):
    pts, fg = np.asarray(p["points"]), np.asarray(p["fg"]).astype(int)
    # Unknown first, foreground last: the minority class stays visible.
    for v in (-1, 0, 1):
      sel = fg == v
      if sel.any():
        color, label = _FG_COLORS[v]
        ax.scatter(pts[sel, 0], pts[sel, 1], s=7, c=color, alpha=0.45, lw=0,
                   label=f"{label} ({int(sel.sum())})", rasterized=True)
    protos, pfg = np.asarray(p["protos"]), np.asarray(p["proto_fg"], bool)
    for is_fg, color, label in ((True, "darkred", "foreground cluster"),
                                (False, "navy", "background cluster")):
      sel = pfg == is_fg
      if sel.any():
        ax.scatter(protos[sel, 0], protos[sel, 1], s=180, marker="*", c=color,
                   edgecolors="white", linewidths=1.2, zorder=5,
                   label=f"{label} ({int(sel.sum())})")
    for k, (x, y) in enumerate(protos):
      ax.annotate(str(k), (x, y), xytext=(5, 5), textcoords="offset points",
                  fontsize=7, zorder=6)
    ax.set_title(p.get("title", ""), fontsize=10)
    xl, yl = p.get("axis_labels", ("", ""))
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    leg = ax.legend(fontsize=8, loc="best", framealpha=0.85)
    for h in leg.legend_handles[:int(sum((fg == v).any() for v in (-1, 0, 1)))]:
      h.set_sizes([30])  # snippet dots readable in the legend
    ax.grid(alpha=0.2)
  if title:
    fig.suptitle(title, fontsize=11)
  return _save(fig, out_png)


# =============================================================================
# mAP against tIoU.
# =============================================================================
def map_tiou(out_png: str, thresholds: Sequence[float], maps: Sequence[float], *,
             label: str = "final", history: Sequence[tuple] = (),
             references: Optional[dict] = None) -> str:
  """mAP (%) per tIoU threshold; ``history`` = [(label, thresholds, maps)]
  (earlier evaluations) drawn faint behind the main curve; ``references``
  (reference_points.reference_points: "chance", "upper_bound", each with
  "map" per threshold) drawn as dashed lines."""
  fig = _figure(6.5, 4.2)
  ax = fig.subplots()
  for i, (lab, t, m) in enumerate(history):
    ax.plot(t, 100 * np.asarray(m), color="0.45", lw=1,
            alpha=0.2 + 0.6 * (i + 1) / len(history),
            label=(f"earlier: {history[0][0]} .. {lab} (darker = later)"
                   if i == len(history) - 1 else None))
  t, m = np.asarray(thresholds, np.float64), 100 * np.asarray(maps, np.float64)
  ax.plot(t, m, color="tab:red", marker="o", lw=2,
          label=f"{label}: avg {m.mean():.2f}" if len(m) else label)
  for x, y in zip(t, m):
    ax.annotate(f"{y:.1f}", (x, y), xytext=(0, 6), textcoords="offset points",
                ha="center", fontsize=7)
  top = float(m.max()) if len(m) else 0.0
  for key, name, color in (("upper_bound", "upper bound (GT mask)", "tab:green"),
                           ("chance", "chance (true labels)", "tab:gray")):
    if references and key in references:
      r = 100 * np.asarray(references[key]["map"], np.float64)
      ax.plot(t, r, color=color, ls="--", lw=1.5,
              label=f"{name}: avg {r.mean():.2f}")
      top = max(top, float(r.max()))
  ax.set_xlabel("tIoU threshold")
  ax.set_ylabel("mAP (%)")
  ax.set_ylim(0, max(5.0, top * 1.15))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title("Detection mAP against tIoU", fontsize=10)
  return _save(fig, out_png)
