"""Inference: from a trained state to snippet and video scores (paper §3.3,
Eq. 17, appendix E.3; released pipeline: notes §3).

The device part (this module, jit over padded batches of test videos):

* ``foreground_scores``: P^A, P-hat^A = P^C Q^R[:, 0] or P-ddot^A.
* ``snippet_class_scores``: the score the proposals are cut from,
      S = w * mean_s softmax(cas_s) + (1 - w) * foreground
  The released 5-term fusion (sm_f/2 + sm_r/2 + att_f + att_r + PT_f + PT_r)/5
  is exactly w = 1/5 with the fused P-ddot^A; without CAT the released
  ASL-style 3-term fusion is w = 1/3 with P^A.
* ``video_scores``: top-k on S per class, then each stream's softmax of its
  mean top-k logits, averaged.

Proposals, OIC scoring and NMS run on the host (case_jax/detection.py).
"""
from __future__ import annotations

import functools

import jax
import numpy as np

from case_jax import data as data_lib
from case_jax import detection, labeling
from case_jax.snippet_metrics import clustering_entropies, fb_accuracy
from case_jax import model as model_lib

FG_SCORES = ("attention", "cluster", "fused")


def foreground_scores(out, q_r, how: str = "fused"):
  """Snippet foreground probability (Table 5 columns).

  attention: P^A = mean of the streams' attention;
  cluster:   P-hat^A = P^C Q^R[:, 0] (Eq. 17), P^C the streams' mean softmax;
  fused:     P-ddot^A = 0.5 P^A + 0.5 P-hat^A (the paper's CAT).
  out: per-stream outputs (B, T, ...); q_r: (K, 2).  Returns (B, T).
  """
  p_a = labeling.fuse_streams([o.att for o in out.values()])
  if how == "attention":
    return p_a
  p_hat = fused_cluster_probs(out) @ q_r[:, 0]
  if how == "cluster":
    return p_hat
  if how == "fused":
    return 0.5 * p_a + 0.5 * p_hat
  raise ValueError(f"inference.fg_score must be one of {FG_SCORES}, got {how!r}")


@functools.partial(jax.jit, static_argnums=(0,))
def forward(model, params, rgb, flow):
  """Model outputs with the prototypes normalised first, as released."""
  return model.apply({"params": model_lib.normalize_prototypes(params)}, rgb, flow)


def fused_cluster_probs(out):
  """P^C (B, T, K): the streams' cluster softmax, averaged (Eq. 20)."""
  return labeling.fuse_streams([jax.nn.softmax(o.clu, -1) for o in out.values()])


class SnippetStats:
  """Accumulates snippet diagnostics batch by batch over a dataset.

  fb_acc: F&B accuracy of the foreground scores at 0.5 (Table 2 "ACC");
  bg_rate: the share of background snippets (the accuracy of calling every
  snippet background); H_pc, H_mean_pc: H(P^C) and H(mean P^C) of the fused P^C (Table 4).
  """

  def __init__(self):
    self.hits = self.total = self.background = 0.0
    self.p_cs = []

  def add(self, fg, p_c, batch) -> None:
    """fg (B, T), p_c (B, T, K) of one padded eval batch."""
    n = float(((batch["fg_mask"] >= 0) & batch["valid"][:, None]).sum())
    self.hits += fb_accuracy(fg, batch["fg_mask"], batch["valid"]) * n
    self.total += n
    self.background += float(((batch["fg_mask"] == 0) & batch["valid"][:, None]).sum())
    # Kept as the valid rows only: batches may differ in T (short test
    # videos at their own length, data.test_sampling="no_upsample").
    p_c = np.asarray(p_c)
    self.p_cs.append(p_c[np.broadcast_to(batch["valid"][:, None], p_c.shape[:2])])

  def result(self) -> dict:
    h_pc, h_mean = clustering_entropies(np.concatenate(self.p_cs))
    return {"fb_acc": self.hits / max(self.total, 1.0), "H_pc": h_pc,
            "H_mean_pc": h_mean,
            "bg_rate": self.background / max(self.total, 1.0)}


def dataset_snippet_stats(dataset, model, params, q_r, *, num_segments: int,
                          how: str = "fused", batch_size: int = 32,
                          test_sampling: str = "resample") -> dict:
  """``SnippetStats`` of ``how``-scores over a dataset (uniform sampling to
  T; ``test_sampling`` as data.test_sampling)."""
  stats = SnippetStats()
  for batch in data_lib.eval_batches(dataset, num_segments=num_segments,
                                     batch_size=batch_size, pad_last=True,
                                     test_sampling=test_sampling):
    out = forward(model, params, batch["rgb"], batch["flow"])
    stats.add(foreground_scores(out, q_r, how), fused_cluster_probs(out), batch)
  return stats.result()


def dataset_fb_accuracy(dataset, model, params, q_r, *, num_segments: int,
                        how: str = "fused", batch_size: int = 32) -> float:
  """F&B snippet accuracy of ``how``-scores over a dataset (uniform sampling)."""
  return dataset_snippet_stats(dataset, model, params, q_r, num_segments=num_segments,
                               how=how, batch_size=batch_size)["fb_acc"]


def detection_fg_score(inf_cfg) -> str:
  """The foreground score detections are cut from: ``inference.fg_score``
  with CAT, the attention P^A without it."""
  return inf_cfg.fg_score if inf_cfg.cat else "attention"


def inference_omega(inf_cfg) -> float:
  """w of ``snippet_class_scores``: the configured value, else the released
  one (1/5 with CAT, 1/3 without)."""
  if inf_cfg.get("omega") is not None:
    return float(inf_cfg.omega)
  return 0.2 if inf_cfg.cat else 1.0 / 3.0


def snippet_class_scores(out, q_r, *, omega: float, fg_score: str):
  """S (B, T, C) = w * mean-stream softmax(cas) + (1 - w) * foreground."""
  probs = labeling.fuse_streams([jax.nn.softmax(o.cas, -1) for o in out.values()])
  fg = foreground_scores(out, q_r, fg_score)
  return omega * probs + (1.0 - omega) * fg[..., None]


def video_scores(out, scores, k: int):
  """Video-level class probabilities (B, C): top-k of S per class, each
  stream's logits averaged there, softmax per stream, then the mean."""
  idx = labeling.topk_indices(scores, k)
  return labeling.fuse_streams([jax.nn.softmax(labeling.video_logits(o.cas, idx), -1)
                               for o in out.values()])


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=(
    "omega", "fg_score", "k"))
def score_batch(model, params, q_r, rgb, flow, *, omega, fg_score, k):
  """One padded batch of test videos -> (S (B, T, C), video scores (B, C),
  P^C (B, T, K), foreground (B, T))."""
  out = model.apply({"params": model_lib.normalize_prototypes(params)}, rgb, flow)
  scores = snippet_class_scores(out, q_r, omega=omega, fg_score=fg_score)
  return (scores, video_scores(out, scores, k), fused_cluster_probs(out),
          foreground_scores(out, q_r, fg_score))


def detect_scores(snippet_scores, video_scores, length: int, dataset, inf_cfg,
                  *, thresholds=None) -> list:
  """``detection.detect_video`` with the config's inference settings and the
  dataset's time base: snippet_scores (T', C) of a video of ``length``
  snippets sampled to T', video_scores (C,).  ``thresholds``: the
  proposal thresholds, already parsed (None: from inf_cfg)."""
  inf = inf_cfg
  if thresholds is None:
    thresholds = detection.proposal_thresholds(inf.thresholds)
  return detection.detect_video(
      snippet_scores, video_scores, length, class_threshold=inf.class_threshold,
      scale=inf.scale, thresholds=thresholds,
      num_segments=np.shape(snippet_scores)[0],
      fps=dataset.fps, snippet_frames=dataset.snippet_frames,
      outer_ratio=inf.outer_ratio, video_weight=inf.video_weight, nms=inf.nms,
      iou_threshold=inf.nms_iou, sigma=inf.nms_sigma,
      max_detections=inf.max_detections)


def detect_dataset(dataset, model, params, q_r, cfg, *, keep_scores: bool = False):
  """Detections for every video of ``dataset`` (uniform sampling to T; a
  video shorter than T at its own length with data.test_sampling =
  "no_upsample", its seconds then mapped through that length).

  Returns (detections {video_id: [{"label": int, "score", "segment"}]},
  foreground {video_id: (T,) scores} if keep_scores else {},
  ``SnippetStats`` result of the same foreground scores, from the same pass).
  Seconds come from the dataset's time base (``dataset.fps``,
  ``dataset.snippet_frames``: the records own it), never from a second copy.
  """
  inf = cfg.inference
  thresholds = detection.proposal_thresholds(inf.thresholds)
  t = cfg.data.num_segments
  fg_score = detection_fg_score(inf)
  omega = inference_omega(inf)
  dets, fgs, stats = {}, {}, SnippetStats()
  for batch in data_lib.eval_batches(
      dataset, num_segments=t, batch_size=inf.batch_size, pad_last=True,
      test_sampling=cfg.data.get("test_sampling", "resample")):
    # T' = T, or a short video's own length (data.test_sampling).
    t_b = batch["rgb"].shape[1]
    k = max(1, t_b // inf.topk_divisor)
    s, v, p_c, fg = jax.device_get(score_batch(
        model, params, q_r, batch["rgb"], batch["flow"], omega=omega,
        fg_score=fg_score, k=k))
    stats.add(fg, p_c, batch)
    for i in np.flatnonzero(batch["valid"]):
      vid = str(batch["video_ids"][i])
      dets[vid] = detect_scores(s[i], v[i], int(batch["lengths"][i]), dataset,
                                inf, thresholds=thresholds)
      if keep_scores:
        fgs[vid] = fg[i]
  return dets, fgs, stats.result()
