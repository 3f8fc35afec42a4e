"""The CASE training objective, Eq. 16: L = L_V + l_A L_A + l_C L_C + l_R L_R.

Assembles the model outputs, the pseudo-labels (labeling.py) and the loss
terms (losses.py) under the switches of ``config.labeling`` / ``config.loss``.
Every ablation row of the paper's Tables 2-5, 9 and 10 is a setting here
(see configs/ablations.py).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from case_jax import collectives as coll
from case_jax import labeling as lab
from case_jax import losses
from case_jax.sinkhorn import Solver
from case_jax.model import StreamOutputs


class ObjectiveOutput(NamedTuple):
  grad_loss: jax.Array    # what this device differentiates (see ``case_objective``)
  q_r: jax.Array          # (K, 2) Q^R of this step (the running state)
  metrics: dict           # scalars, already averaged over the global batch


@dataclasses.dataclass(frozen=True)
class ObjectiveSettings:
  """What ``case_objective`` reads from ``config.labeling`` and ``config.loss``
  (field names are the config keys; see defaults.py for their meaning),
  built once by ``from_config``.  Frozen and hashable."""
  solver: Solver             # the OT solves of Q^C and Q^R
  # MIL top-k, F&B labels and the attention loss (Eq. 2, 18-19, 24; Table 9).
  topk_divisor: int
  mil_omega: float
  use_attention: bool
  colabel_topk: bool
  attention: str             # loss.attention: "gce" | "bce"
  gce_q: float
  # Snippet clustering and cluster classification (Eq. 3-15, 20-22).
  snippet_clustering: bool
  cluster_classification: bool
  dcl: bool
  hard: bool
  ddcl: bool
  sigma: float
  rank: str
  eps_on: str
  proto_temp: float
  beta_r: str
  colabel_clusters: bool
  colabel_cluster_cls: bool
  colabel_fuse: str
  # Eq. 16's weights and the stream reduction.
  lambda_a: float
  lambda_c: float
  lambda_r: float
  stream_reduce: str

  @classmethod
  def from_config(cls, cfg) -> "ObjectiveSettings":
    """From the full config (its ``labeling`` and ``loss`` sections)."""
    kw = {}
    for f in dataclasses.fields(cls)[1:]:
      section = cfg.loss if f.name in cfg.loss else cfg.labeling
      kw[f.name] = section[f.name]
    return cls(solver=Solver.from_config(cfg.labeling), **kw)


def _metric_max(x, axis_name):
  # A metric only; pmax has no differentiation rule, so cut the tangent.
  return coll.pmax(lax.stop_gradient(x), axis_name)


def _stream_sum(values, how):
  """Released: L_A, L_C, L_R summed over the two streams; "mean" averages."""
  total = sum(values)
  return total if how == "released" else total / len(values)


def case_objective(out: dict[str, StreamOutputs], labels: jax.Array,
                   q_r_prev: jax.Array, settings: ObjectiveSettings, *, fg_mask: Optional[jax.Array] = None,
                   axis_name: Optional[str] = None,
                   num_devices: int = 1) -> ObjectiveOutput:
  """Pseudo-labels and losses for one (local) batch.

  Args:
    out: per-stream model outputs on the local batch (B, T, ...).
    labels: (B, C) multi-hot video labels.
    q_r_prev: (K, 2) Q^R of the previous step (DDCL prior, as released).
    settings: ``ObjectiveSettings.from_config(cfg)``.
    fg_mask: optional (B, T) ground-truth foreground (1), background (0) or
      unknown (-1) per sampled snippet, for the F&B accuracy metric.
    axis_name / num_devices: the mapped batch axis and its size.

  Returns ObjectiveOutput.  ``grad_loss`` = (local terms) / num_devices +
  (global terms): summing its gradient over devices gives the gradient of
  Eq. 16 on the global batch, without differentiating any collective.
  """
  st = settings
  # The model's streams (model.streams); with one, there is nothing to
  # co-label: each co-labeling switch falls back to its per-stream path,
  # and every fusion is that stream's own value.
  streams = tuple(out)
  pair = len(streams) == 2
  b, t, _ = out[streams[0]].cas.shape
  n = b * t
  k = max(1, t // st.topk_divisor)
  metrics = {}

  # --- MIL top-k and F&B pseudo-labels (Eq. 18-19, 24) -----------------------
  cal = {s: lab.calibrated_cas(out[s].cas, out[s].att, st.mil_omega, st.use_attention)
         for s in streams}
  if st.colabel_topk and pair:
    shared = lab.topk_indices(lab.fuse(cal["rgb"], cal["flow"]), k)
    idx = {s: shared for s in streams}
  else:
    idx = {s: lab.topk_indices(cal[s], k) for s in streams}
  l_v = lab.fuse_streams([losses.video_ce(lab.video_logits(out[s].cas, idx[s]), labels)
                          for s in streams])
  q_a = {s: lab.foreground_labels(idx[s], labels, t) for s in streams}

  # --- Attention loss (Eq. 2; Table 9) ----------------------------------------
  if st.use_attention:
    att_fn = {"gce": lambda a, q: losses.generalized_bce(a, q, st.gce_q),
              "bce": losses.balanced_bce}[st.attention]
    l_a = _stream_sum([att_fn(out[s].att, q_a[s]) for s in streams],
                      st.stream_reduce)
  else:
    l_a = jnp.zeros(())

  p_a = lab.fuse_streams([out[s].att.reshape(n) for s in streams])
  q_a_flat = {s: q_a[s].reshape(n) for s in streams}
  local = l_v + st.lambda_a * l_a
  global_terms = jnp.zeros(())
  q_r = q_r_prev
  l_c = l_r = jnp.zeros(())

  # --- Snippet clustering (Eq. 3-7, 13-15, 20) --------------------------------
  if st.snippet_clustering or st.cluster_classification:
    clu = {s: out[s].clu.reshape(n, -1) for s in streams}
    temp = st.proto_temp  # released: OT() divides by --temp, not the head's 10
    log_prior = None
    if st.ddcl and st.dcl:
      log_prior = lab.ddcl_log_prior(p_a, q_r_prev[:, 0], st.sigma, st.rank,
                                     axis_name)
    if st.colabel_clusters and pair:
      log_p = lab.fused_log_p(clu["rgb"], clu["flow"], temp, st.eps_on,
                              st.colabel_fuse)
      q, info = lab.cluster_labels(
          log_p, lab.fuse(clu["rgb"], clu["flow"]), st.solver, dcl=st.dcl,
          hard=st.hard, log_prior=log_prior, axis_name=axis_name)
      q_c = {s: q for s in streams}
    else:
      q_c, info = {}, None
      for s in streams:
        q_c[s], info = lab.cluster_labels(
            lab.ot_log_p(clu[s], temp, st.eps_on), clu[s], st.solver, dcl=st.dcl,
            hard=st.hard, log_prior=log_prior, axis_name=axis_name)
    if st.snippet_clustering:
      l_c = _stream_sum([losses.soft_ce(q_c[s], clu[s]) for s in streams],
                        st.stream_reduce)
      local = local + st.lambda_c * l_c
    metrics["H_qc"] = coll.pmean(lab.entropy(q_c[streams[0]]), axis_name)
    if info is not None:
      metrics["qc_col_error"] = info.col_error

    # --- Cluster classification (Eq. 8-12, 22) --------------------------------
    if st.cluster_classification:
      emb = {s: out[s].emb.reshape(n, -1) for s in streams}
      cls = {s: lab.cluster_cls_logits(q_c[s], q_a_flat[s], emb[s], st.proto_temp,
                                       axis_name) for s in streams}
      beta = lab.beta_r(lab.fuse_streams([q_a_flat[s] for s in streams]), st.beta_r,
                        axis_name)
      if st.colabel_cluster_cls and pair:
        log_p_r = lab.fused_log_p(lax.stop_gradient(cls["rgb"]),
                                  lax.stop_gradient(cls["flow"]),
                                  st.proto_temp, st.eps_on, st.colabel_fuse)
        q_r, _ = lab.cluster_cls_labels(log_p_r, beta, st.solver)
        targets = {s: q_r for s in streams}
      else:
        targets = {s: lab.cluster_cls_labels(
            lab.ot_log_p(lax.stop_gradient(cls[s]), st.proto_temp, st.eps_on),
            beta, st.solver)[0] for s in streams}
        q_r = lab.fuse_streams([targets[s] for s in streams])
      l_r = _stream_sum([losses.soft_ce(targets[s], cls[s]) for s in streams],
                        st.stream_reduce)
      global_terms = global_terms + st.lambda_r * l_r
      metrics["H_qr"] = lab.entropy(q_r)
      metrics["beta_fg"] = beta[0]
      # Fig. 4 (appendix F.2): the clusters' foreground pseudo-labels
      # Q^R[:, 0], the values R (or P^A) is compared with in Eq. 13.
      metrics.update(qr_fg_max=jnp.max(q_r[:, 0]), qr_fg_mean=jnp.mean(q_r[:, 0]),
                     qr_fg_min=jnp.min(q_r[:, 0]))

  # --- Totals and metrics -------------------------------------------------------
  grad_loss = local / num_devices + global_terms
  l_v_m, l_a_m, l_c_m = (coll.pmean(x, axis_name) for x in (l_v, l_a, l_c))
  metrics.update(
      loss=l_v_m + st.lambda_a * l_a_m + st.lambda_c * l_c_m
      + st.lambda_r * l_r,
      L_V=l_v_m, L_A=l_a_m, L_C=l_c_m, L_R=l_r,
      mean_att=coll.pmean(jnp.mean(p_a), axis_name),
      # Fig. 4: the range of P^A over the global batch.
      pa_max=_metric_max(jnp.max(p_a), axis_name),
      pa_min=-_metric_max(-jnp.min(p_a), axis_name),
      pseudo_fg=coll.pmean(jnp.mean(q_a_flat[streams[0]]), axis_name))
  if fg_mask is not None:
    known = (fg_mask >= 0).reshape(n)
    hit = ((p_a > 0.5) == (fg_mask.reshape(n) > 0)) & known
    num = coll.pmean(jnp.sum(hit.astype(jnp.float32)), axis_name)
    den = coll.pmean(jnp.sum(known.astype(jnp.float32)), axis_name)
    metrics["fb_acc"] = num / jnp.maximum(den, 1.0)
  return ObjectiveOutput(grad_loss, lax.stop_gradient(q_r), metrics)
