"""A PyTorch re-implementation of the released CASE training iteration, used
only as a benchmark peer for ``benchmarks/train_step.py`` (never imported by
``case_jax``; torch is not a dependency of the package).

Written from the prose description in shared/reference/official_code_notes.md
§1 (model) and §2.2 (a)-(i) (one iteration), not from the released source:

* per stream (RGB = input channels 0:1024, flow = 1024:2048), kernel-1
  ``Conv1d`` layers on (B, C, T): CAS 1024->512->20 with ReLU, a separate
  attention encoder 1024->512 + ReLU, attention 512->1 + sigmoid, and a cosine
  cluster head (``Linear(512, 16, bias=False)``, temperature 10) whose
  prototype rows are L2-normalised in place under ``no_grad`` before every
  forward;
* MIL top-k (k = T // 8) on (0.5 sm(cas_f) + 0.5 sm(cas_r) + att_f + att_r)/3,
  video CE against y/sum(y) + 1e-10, top-k F&B labels Q^A, GCE (q = 0.7) per
  stream (summed), the DDCL prior with r = argsort(-att) (the sort permutation,
  as released) and sigma = 10, the 3-pass SwAV OT (exp(20 cos) kernel), L_C,
  the F&B / cluster prototypes, Q^R by OT with the empirical beta, L_R, and
  L = L_V + L_A + 1.0 L_C + 0.3 L_R;
* Adam(lr 1e-4, weight_decay 5e-4) (coupled L2, PyTorch's default).

The step keeps ``cls_gt`` (Q^R) across iterations like the released trainer.
``bf16=True`` runs the network forward under ``torch.autocast('cpu',
torch.bfloat16)``; the pseudo-labels and losses then run in float32 on the
upcast outputs (a whole-step autocast would also run the exp(20 cos) OT
kernel in bf16).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

STREAMS = ("rgb", "flow")


class ClusterHead(nn.Module):
  def __init__(self, dim: int = 512, num_clusters: int = 16, temp: float = 10.0):
    super().__init__()
    self.prototypes = nn.Linear(dim, num_clusters, bias=False)
    self.temp = temp

  def forward(self, feats):  # feats (B, T, E) post-ReLU
    with torch.no_grad():  # SwAV-style: normalise in place, no gradient through it
      w = self.prototypes.weight
      w.copy_(F.normalize(w, dim=1))
    return self.temp * self.prototypes(F.normalize(feats, dim=-1))


class ReleasedCASE(nn.Module):
  """Two streams of kernel-1 Conv1d heads; input (B, T, 2 * feat_dim)."""

  def __init__(self, feat_dim: int = 1024, num_classes: int = 20, embed: int = 512,
               num_clusters: int = 16):
    super().__init__()
    self.feat_dim = feat_dim
    for s in STREAMS:
      setattr(self, f"cas_module_{s}", nn.Sequential(
          nn.Conv1d(feat_dim, embed, 1), nn.ReLU(), nn.Conv1d(embed, num_classes, 1)))
      setattr(self, f"base_module_{s}", nn.Sequential(nn.Conv1d(feat_dim, embed, 1),
                                                      nn.ReLU()))
      setattr(self, f"att_module_{s}", nn.Conv1d(embed, 1, 1))
      setattr(self, f"clu_head_{s}", ClusterHead(embed, num_clusters))

  def forward(self, x):
    x = x.permute(0, 2, 1)  # (B, 2D, T)
    parts = {"rgb": x[:, :self.feat_dim], "flow": x[:, self.feat_dim:]}
    out = {}
    for s in STREAMS:
      cas = getattr(self, f"cas_module_{s}")(parts[s]).permute(0, 2, 1)   # (B,T,C)
      base = getattr(self, f"base_module_{s}")(parts[s])                  # (B,E,T)
      att = torch.sigmoid(getattr(self, f"att_module_{s}")(base)).permute(0, 2, 1)  # (B,T,1)
      base_t = base.permute(0, 2, 1)                                      # (B,T,E)
      clu = getattr(self, f"clu_head_{s}")(base_t)                        # (B,T,K)
      out[s] = dict(cas=cas, att=att, clu=clu, base=base_t)
    return out


# -----------------------------------------------------------------------------
# Losses and pseudo-labels (notes §2.2).
# -----------------------------------------------------------------------------
def video_ce(logits, labels):
  target = labels / labels.sum(-1, keepdim=True) + 1e-10
  return -(target * F.log_softmax(logits, -1)).sum(-1).mean()


def gce(att, q, q_val=0.7):
  """att, q: (B, T)."""
  pos = (1 - (att + 1e-7) ** q_val) / q_val
  neg = (1 - (1 - att + 1e-7) ** q_val) / q_val
  return ((q * pos).sum(-1) / (q.sum(-1) + 1e-7)).mean() + \
      (((1 - q) * neg).sum(-1) / ((1 - q).sum(-1) + 1e-7)).mean()


def soft_ce(target, logits):
  return -(target * F.log_softmax(logits, -1)).sum(-1).mean()


@torch.no_grad()
def released_ot(out, prior=1.0, beta: Optional[torch.Tensor] = None, eps=20.0,
                temp=10.0, iters=3):
  """The released 3-pass SwAV routine: out (B_, K) logits -> (B_, K)."""
  q = (torch.exp(out / temp * eps) * prior).t()    # (K, B_)
  q = q / q.sum()
  k, b_ = q.shape
  for _ in range(iters):
    q = q / q.sum(1, keepdim=True)
    q = q / k if beta is None else q * beta[:, None]
    q = q / q.sum(0, keepdim=True)
    q = q / b_
  return (q * b_).t()


class ReleasedStep:
  """One released training iteration (forward, losses, backward, Adam)."""

  def __init__(self, model: ReleasedCASE, num_clusters: int = 16, bf16: bool = False,
               lr=1e-4, weight_decay=5e-4, sigma=10.0, temp=10.0, q_val=0.7,
               w_clu=1.0, w_cls=0.3, topk_divisor=8):
    self.model = model
    self.opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    self.cls_gt = torch.full((num_clusters, 2), 1.0 / num_clusters)
    self.bf16, self.sigma, self.temp, self.q_val = bf16, sigma, temp, q_val
    self.w_clu, self.w_cls, self.topk_divisor = w_clu, w_cls, topk_divisor

  def forward(self, x):
    if not self.bf16:
      return self.model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
      out = self.model(x)
    return {s: {k: v.float() for k, v in o.items()} for s, o in out.items()}

  def losses(self, out, labels):
    r, f = out["rgb"], out["flow"]
    b, t, c = r["cas"].shape
    n = b * t
    k = t // self.topk_divisor
    # (a) MIL top-k on the fused score, shared indices.
    combined = (0.5 * F.softmax(f["cas"], -1) + 0.5 * F.softmax(r["cas"], -1)
                + f["att"] + r["att"]) / 3.0
    idx = torch.topk(combined.detach(), k, dim=1)[1]                       # (B,k,C)
    v = {s: torch.gather(out[s]["cas"], 1, idx).mean(1) for s in STREAMS}
    # (b) L_V.
    l_v = 0.5 * video_ce(v["flow"], labels) + 0.5 * video_ce(v["rgb"], labels)
    # (c) Q^A: union over GT classes of their top-k snippets.
    with torch.no_grad():
      hit = torch.zeros(b, t, c).scatter_(1, idx, 1.0)
      q_a = (hit * (labels[:, None, :] > 0)).amax(-1)                     # (B,T)
    # (d) L_A (streams summed).
    l_a = gce(f["att"][..., 0], q_a, self.q_val) + gce(r["att"][..., 0], q_a, self.q_val)
    # (e) DDCL prior from the previous Q^R.
    with torch.no_grad():
      a = (0.5 * r["att"] + 0.5 * f["att"]).reshape(n)
      rank = torch.argsort(-a).float()          # the sort permutation, as released
      p = 1.0 - self.cls_gt[:, 0]
      dist = torch.abs((rank[:, None] + 1.0) / n - p[None, :])
      prior = torch.exp(-dist ** 2 / (2 * self.sigma ** 2)) / (self.sigma * math.sqrt(2 * math.pi))
      prior = prior / prior.sum()
    # (f) Q^C and L_C.
    clu = (0.5 * r["clu"] + 0.5 * f["clu"]).reshape(n, -1).detach()
    q_c = released_ot(clu, prior, temp=self.temp)
    clu_s = {s: out[s]["clu"].reshape(n, -1) for s in STREAMS}
    l_c = soft_ce(q_c, clu_s["rgb"]) + soft_ce(q_c, clu_s["flow"])
    # (g) prototypes and cluster-classification logits.
    q_a_flat = q_a.reshape(n)
    fb = torch.stack([q_a_flat, 1.0 - q_a_flat], 1)                          # (N,2)
    cls = {}
    for s in STREAMS:
      base = out[s]["base"].reshape(n, -1)
      z_c = F.normalize(q_c.t() @ base, dim=-1)
      z_f = F.normalize(fb.t() @ base, dim=-1)
      cls[s] = self.temp * z_c @ z_f.t()                                    # (K,2)
    # (h) Q^R and L_R.
    beta = fb.mean(0)
    q_r = released_ot((0.5 * cls["flow"] + 0.5 * cls["rgb"]).detach(), beta=beta,
                      temp=self.temp)
    l_r = soft_ce(q_r, cls["rgb"]) + soft_ce(q_r, cls["flow"])
    # (i) total.
    loss = l_v + l_a + self.w_clu * l_c + self.w_cls * l_r
    return loss, q_r, dict(L_V=l_v, L_A=l_a, L_C=l_c, L_R=l_r, loss=loss)

  def __call__(self, x, labels):
    self.opt.zero_grad(set_to_none=True)
    out = self.forward(x)
    loss, q_r, terms = self.losses(out, labels)
    loss.backward()
    self.opt.step()
    self.cls_gt = q_r.detach()
    return {k: float(v.detach()) for k, v in terms.items()}


# -----------------------------------------------------------------------------
# Parameter exchange with case_jax (Flax Dense kernel (in, out) = W[:, :, 0].T).
# -----------------------------------------------------------------------------
_LAYERS = {"cas_encoder": "cas_module_{s}.0", "classifier": "cas_module_{s}.2",
           "att_encoder": "base_module_{s}.0", "attention": "att_module_{s}"}


def load_flax_params(model: ReleasedCASE, flat: dict) -> None:
  """flat: {"rgb/cas_encoder/kernel": (in, out) array, ..., "rgb/prototypes": (K, E)}."""
  sd = {}
  for s in STREAMS:
    for flax_name, torch_name in _LAYERS.items():
      key = torch_name.format(s=s)
      sd[f"{key}.weight"] = torch.from_numpy(
          np.ascontiguousarray(np.asarray(flat[f"{s}/{flax_name}/kernel"]).T[:, :, None]))
      sd[f"{key}.bias"] = torch.from_numpy(np.asarray(flat[f"{s}/{flax_name}/bias"]))
    sd[f"clu_head_{s}.prototypes.weight"] = torch.from_numpy(
        np.asarray(flat[f"{s}/prototypes"]))
  model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)


def to_input(batch: dict):
  """(B,T,2D) [RGB | flow] float32 tensor and (B,C) labels, as the released loader."""
  x = torch.from_numpy(np.concatenate([batch["rgb"], batch["flow"]], axis=-1))
  return x, torch.from_numpy(np.asarray(batch["labels"], np.float32))


def make_step(num_classes=20, feat_dim=1024, embed=512, num_clusters=16, bf16=False,
              init: Optional[dict] = None, seed=0, threads=2) -> ReleasedStep:
  torch.set_num_threads(threads)
  torch.manual_seed(seed)
  model = ReleasedCASE(feat_dim, num_classes, embed, num_clusters)
  if init is not None:
    load_flax_params(model, init)
  return ReleasedStep(model, num_clusters, bf16=bf16)
