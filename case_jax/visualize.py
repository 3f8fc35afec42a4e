"""PNG figures of a trained run in ``<workdir>/plots/`` (``--mode=plots``, end of training).

    python -m case_jax.main --config=... --workdir=DIR --mode=plots

``write_plots`` writes (see case_jax/plots.py for what each shows):

* from ``metrics.jsonl``: training_curves.png, entropy.png (Fig. 3),
  fg_range.png (appendix Fig. 4);
* from the latest checkpoint on the test split: timeline_<video>.png for the
  first ``eval.num_plots`` videos (Fig. 7), embedding.png (Fig. 6) and
  map_tiou.png.

Training calls it at the end with the final evaluation it already has, so
only one extra forward pass (no detection) is spent on the figures;
``--mode=plots`` (case_jax/runs.py) loads the checkpoint and evaluates it
first.

The 2-D maps are computed here in numpy: PCA by default (``pca_2d``), or an
exact t-SNE (``tsne_2d``, O(N^2), so at most ``TSNE_MAX_POINTS`` snippets).
Both map unit-normalised embeddings and prototypes, since the cluster head
compares them by cosine.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

import jax
import numpy as np

from case_jax import errors
from case_jax import data as data_lib
from case_jax import inference, plots
from case_jax import model as model_lib

TSNE_MAX_POINTS = 2000
PROJECTIONS = {"pca": "PCA", "tsne": "t-SNE"}   # option -> name shown


# =============================================================================
# 2-D projections (pure numpy).
# =============================================================================
def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def pca_2d(x: np.ndarray, extra: Optional[np.ndarray] = None):
  """First two principal components of ``x`` (N, E).

  Returns (x projected (N, 2), ``extra`` (K, E) projected with the same
  mean and axes (K, 2) or None, explained variance ratios (2,)).  Signs are
  fixed so each axis' largest-magnitude loading is positive (deterministic).
  """
  x = np.asarray(x, np.float64)
  mean = x.mean(0)
  _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
  axes = np.zeros((2, x.shape[1]))
  axes[:min(2, len(vt))] = vt[:2]
  rows = np.arange(2)
  axes *= np.where(axes[rows, np.abs(axes).argmax(1)] < 0, -1.0, 1.0)[:, None]
  var = np.zeros(2)
  var[:min(2, len(s))] = (s[:2] ** 2) / max(float(np.sum(s ** 2)), 1e-300)
  proj = lambda a: (np.asarray(a, np.float64) - mean) @ axes.T  # noqa: E731
  return proj(x), (None if extra is None else proj(extra)), var


def _sq_dists(x: np.ndarray) -> np.ndarray:
  sq = np.sum(x * x, 1)
  return np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)


def tsne_affinities(x: np.ndarray, perplexity: float) -> np.ndarray:
  """Symmetric t-SNE input affinities P (N, N), summing to 1.

  Each row's Gaussian precision is found by bisection (in log space, all
  rows at once) so that the row's entropy is log(perplexity).
  """
  d = _sq_dists(np.asarray(x, np.float64))
  n = len(d)
  d = d / max(float(np.mean(d)), 1e-12)  # scale-free bisection bounds
  np.fill_diagonal(d, np.inf)
  d = d - d.min(1, keepdims=True)        # shift per row: exp stays finite
  target = np.log(perplexity)
  lo, hi = np.full(n, -20.0), np.full(n, 20.0)
  for _ in range(64):
    beta = np.exp(0.5 * (lo + hi))
    p = np.exp(-d * beta[:, None])
    z = p.sum(1)
    h = np.log(z) + beta * np.sum(p * np.where(np.isinf(d), 0.0, d), 1) / z
    too_flat = h > target                # entropy too high: sharpen
    lo = np.where(too_flat, 0.5 * (lo + hi), lo)
    hi = np.where(too_flat, hi, 0.5 * (lo + hi))
  p = p / z[:, None]
  return (p + p.T) / (2.0 * n)


def tsne_2d(x: np.ndarray, *, perplexity: float = 30.0, num_steps: int = 500,
            seed: int = 0) -> np.ndarray:
  """Exact t-SNE of ``x`` (N, E) -> (N, 2) (van der Maaten & Hinton, 2008).

  Gradient descent with momentum, per-parameter gains and early
  exaggeration (12 for the first quarter of the steps); initial points from
  ``seed``.  O(N^2) time and memory per step: meant for a few thousand points.
  """
  x = np.asarray(x, np.float64)
  n = len(x)
  if n < 4:
    return np.zeros((n, 2))
  p = tsne_affinities(x, min(perplexity, (n - 1) / 3.0))
  rng = np.random.default_rng(seed)
  y = rng.normal(0.0, 1e-4, (n, 2))
  vel, gains = np.zeros_like(y), np.ones_like(y)
  lr = max(n / 12.0, 50.0)
  early = num_steps // 4
  for it in range(num_steps):
    num = 1.0 / (1.0 + _sq_dists(y))
    np.fill_diagonal(num, 0.0)
    q = np.maximum(num / num.sum(), 1e-12)
    w = ((12.0 if it < early else 1.0) * p - q) * num
    grad = 4.0 * (w.sum(1)[:, None] * y - w @ y)
    gains = np.where(np.sign(grad) != np.sign(vel), gains + 0.2, gains * 0.8)
    gains = np.maximum(gains, 0.01)
    vel = (0.5 if it < early else 0.8) * vel - lr * gains * grad
    y = y + vel
    y = y - y.mean(0)
  return y


def project(snippets: np.ndarray, protos: np.ndarray, method: str = "pca",
            seed: int = 0):
  """Unit-normalised snippets (N, E) and prototypes (K, E) -> 2-D.

  Returns (snippet points (N', 2), prototype points (K, 2), axis labels,
  number of snippets used N' (t-SNE keeps the first TSNE_MAX_POINTS)).
  """
  s, c = _unit(snippets), _unit(protos)
  if method == "pca":
    pts, cpts, var = pca_2d(s, c)
    return pts, cpts, (f"PC 1 ({100 * var[0]:.0f}% var.)",
                       f"PC 2 ({100 * var[1]:.0f}% var.)"), len(s)
  if method == "tsne":
    s = s[:TSNE_MAX_POINTS]
    # Prototypes are embedded jointly: t-SNE has no out-of-sample map.
    y = tsne_2d(np.concatenate([s, c]), seed=seed)
    return y[:len(s)], y[len(s):], ("t-SNE 1", "t-SNE 2"), len(s)
  raise errors.ConfigError(f"projection must be one of {list(PROJECTIONS)}, got {method!r}")


# =============================================================================
# One forward pass over the test split: the three foreground scores of the
# timeline videos and a seeded sample of snippet embeddings.
# =============================================================================
def collect_snippets(dataset, model, params, q_r, cfg, *,
                     timeline_ids: Sequence[str] = (), max_points: int = 5000,
                     seed: int = 0) -> dict:
  """Returns {"scores": {video_id: {"p_a", "p_hat", "p_ddot"} (T,)} for
  ``timeline_ids``, "emb": {stream: (N, E) unit embeddings}, "fg": (N,)
  snippet labels 1 / 0 / -1, "protos": {stream: (K, E) unit prototypes},
  "total": snippets seen}.

  The N <= ``max_points`` snippets are a uniform sample without replacement
  of all (video, position) pairs: each gets a key from a generator seeded
  with ``seed``, in dataset order, and the smallest keys are kept (the
  same sample for the same data and seed, whatever the batch size).
  """
  t = cfg.data.num_segments
  want = set(map(str, timeline_ids))
  rng = np.random.default_rng(seed)
  scores, total = {}, 0
  streams = model.streams
  pool = {"key": np.zeros(0), "fg": np.zeros(0), **{s: None for s in streams}}
  for batch in data_lib.eval_batches(dataset, num_segments=t,
                                     batch_size=cfg.inference.batch_size if t else 1,
                                     pad_last=True,
                                     test_sampling=_sampling_of(cfg)):
    out = inference.forward(model, params, batch["rgb"], batch["flow"])
    fg = {h: np.asarray(inference.foreground_scores(out, q_r, h))
          for h in ("attention", "cluster", "fused")}
    valid = np.flatnonzero(batch["valid"])
    for i in valid:
      vid = str(batch["video_ids"][i])
      if vid in want:
        scores[vid] = {"p_a": fg["attention"][i], "p_hat": fg["cluster"][i],
                       "p_ddot": fg["fused"][i]}
    emb = {s: np.asarray(jax.device_get(out[s].emb))[valid] for s in streams}
    labels = np.asarray(batch["fg_mask"])[valid].reshape(-1)
    keys = rng.random(labels.size)
    total += labels.size
    merged = np.concatenate([pool["key"], keys])
    keep = np.argsort(merged, kind="stable")[:max_points]
    pool["key"] = merged[keep]
    pool["fg"] = np.concatenate([pool["fg"], labels])[keep]
    for s in streams:
      new = _unit(emb[s].reshape(-1, emb[s].shape[-1])).astype(np.float32)
      pool[s] = new[keep] if pool[s] is None else np.concatenate([pool[s], new])[keep]
  unit_params = model_lib.normalize_prototypes(params)
  return {"scores": scores,
          "emb": {s: pool[s] for s in streams},
          "fg": pool["fg"].astype(np.int64),
          "protos": {s: np.asarray(unit_params[s]["prototypes"]) for s in streams},
          "total": total}


def _sampling_of(cfg) -> str:
  """data.test_sampling (configs from before it: "resample")."""
  return cfg.data.get("test_sampling", "resample")


def _snippet_times(rec, num_segments, sampling="resample") -> np.ndarray:
  """Seconds of the snippet centres behind the T test positions (T,);
  a short video at its own length with data.test_sampling="no_upsample"."""
  n = rec.num_snippets
  if sampling == "no_upsample" and num_segments is not None and n < num_segments:
    num_segments = None
  idx = np.arange(n) if num_segments is None else data_lib.sample_test_indices(n, num_segments)
  return (idx + 0.5) * rec.seconds_per_snippet


def timelines(cfg, out_dir: str, records, scores: dict, detections: dict,
              class_names, *, step: int) -> list[str]:
  """Fig. 7: one ``timeline_<video>.png`` per record with scores
  (``collect_snippets``' "scores"), its ground truth and ``detections``
  ({video_id: [{"label", "score", "segment"}]}); returns the paths."""
  used = inference.detection_fg_score(cfg.inference)
  written = []
  for rec in records:
    sc = scores.get(rec.video_id)
    if sc is None:
      continue
    written.append(plots.video_timeline(
        os.path.join(out_dir, f"timeline_{_safe(rec.video_id)}.png"), rec.video_id,
        _snippet_times(rec, cfg.data.num_segments, _sampling_of(cfg)), sc,
        [(s.start_s, s.end_s, s.class_index) for s in rec.segments],
        detections.get(rec.video_id, []), list(class_names),
        duration=getattr(rec, "duration", None),
        note=f"(step {step}; detections use the {used} score)"))
  return written


# =============================================================================
# Everything into <workdir>/plots/.
# =============================================================================
def check_projection(projection: str) -> None:
  if projection not in PROJECTIONS:
    raise errors.ConfigError(f"projection must be one of {list(PROJECTIONS)}, got "
                             f"{projection!r}")


def write_plots(cfg, workdir: str, *, model, state, test_set=None,
                evaluated: Optional[dict] = None, projection: str = "pca",
                max_points: int = 5000, seed: int = 0, stream=None) -> list[str]:
  """Writes every PNG into ``<workdir>/plots/`` and returns their paths.

  ``evaluated``: the evaluator's output for ``state`` on ``test_set``.
  Without ``test_set`` (no usable test split) only the metrics.jsonl curves
  are written.
  """
  check_projection(projection)
  stream = stream or sys.stdout
  workdir = os.path.abspath(workdir)
  log_path = os.path.join(workdir, "metrics.jsonl")
  out_dir = os.path.join(workdir, "plots")
  rows = plots.read_metrics(log_path)
  written = [
      plots.training_curves(rows, os.path.join(out_dir, "training_curves.png")),
      plots.entropy_curves(rows, os.path.join(out_dir, "entropy.png"),
                           num_clusters=cfg.model.num_clusters,
                           note=" (DDCL on)" if cfg.labeling.ddcl else " (no DDCL)"),
      plots.fg_range_curves(rows, os.path.join(out_dir, "fg_range.png"))]
  if test_set is None or evaluated is None:
    _list(stream, out_dir, written)
    return written

  step = int(state.step)
  n_plots = min(cfg.eval.num_plots, len(test_set))
  records = [test_set[i] for i in range(n_plots)]
  snip = collect_snippets(test_set, model, state.params, state.q_r, cfg,
                          timeline_ids=[r.video_id for r in records],
                          max_points=max_points, seed=seed)

  # Fig. 7: per-video timelines.
  written += timelines(cfg, out_dir, records, snip["scores"], evaluated["detections"],
                       list(test_set.classes), step=step)

  # Fig. 6: embeddings and prototypes per stream.
  fg_clusters = np.asarray(state.q_r)[:, 0] > 0.5
  panels = []
  for s in snip["emb"]:
    name = {"rgb": "RGB", "flow": "Flow"}[s]
    pts, cpts, labels, n = project(snip["emb"][s], snip["protos"][s], projection, seed)
    panels.append({"title": f"{name} stream: attention-branch embeddings",
                   "points": pts, "fg": snip["fg"][:n], "protos": cpts,
                   "proto_fg": fg_clusters, "axis_labels": labels})
  written.append(plots.embedding_scatter(
      os.path.join(out_dir, "embedding.png"), panels,
      title=f"Step {step}: {len(panels[0]['points'])} of {snip['total']} test "
            f"snippets ({PROJECTIONS[projection]}), {len(fg_clusters)} prototypes; "
            r"foreground cluster: $Q^R_{k,0} > 0.5$"))

  # mAP against tIoU, with the earlier evaluations of metrics.jsonl behind.
  result = evaluated.get("result")
  if result is not None:
    history = [(f"step {s}", t, m) for s, t, m in plots.map_by_step(rows) if s != step]
    written.append(plots.map_tiou(
        os.path.join(out_dir, "map_tiou.png"), result["tiou_thresholds"],
        result["map"], label=f"step {step}", history=history,
        references=evaluated.get("references")))
  _list(stream, out_dir, written)
  return written


def _safe(video_id: str) -> str:
  # Video ids become file names: keep them to one path component.
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(video_id))


def _list(stream, out_dir: str, written: Sequence[str]) -> None:
  stream.write(f"Wrote {len(written)} plots in {out_dir}: "
               + ", ".join(os.path.basename(p) for p in written) + "\n")
