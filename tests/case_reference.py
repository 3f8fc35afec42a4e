"""Independent float64 numpy oracles for the CASE losses and pseudo-labels.

Written from the description of the released PyTorch code
(shared/reference/official_code_notes.md §2.2 (a)-(i)) and the paper
(§3.1-3.2, appendix E.1-E.2, Eq. 1-24), NOT from case_jax: explicit loops
over videos, snippets and classes where that is the clearer form.

Streams are dicts {"rgb": ..., "flow": ...} of numpy arrays.
"""
import math

import numpy as np

from tests.sinkhorn_reference import released_ot_numpy

STREAMS = ("rgb", "flow")


# ---------------------------------------------------------------------------
# Elementary pieces.
# ---------------------------------------------------------------------------
def f64(x):
  return np.asarray(x, np.float64)


def log_softmax(x):
  """Row-wise log-softmax over the last axis, one row at a time."""
  x = f64(x)
  out = np.empty_like(x)
  for idx in np.ndindex(x.shape[:-1]):
    row = x[idx]
    m = row.max()
    out[idx] = row - m - math.log(sum(math.exp(v - m) for v in row))
  return out


def softmax(x):
  return np.exp(log_softmax(x))


def l2_normalize_rows(x, eps=1e-12):
  """torch.nn.functional.normalize(x, dim=-1): x / max(||x||, eps)."""
  x = f64(x)
  out = np.empty_like(x)
  for i in range(x.shape[0]):
    out[i] = x[i] / max(math.sqrt(float(np.sum(x[i] ** 2))), eps)
  return out


def one_hot_argmax(q):
  q = f64(q)
  out = np.zeros_like(q)
  for n in range(q.shape[0]):
    out[n, int(np.argmax(q[n]))] = 1.0
  return out


def entropy(p):
  """Mean over rows of -sum_k p log p (0 log 0 = 0)."""
  p = f64(p)
  total = 0.0
  for n in range(p.shape[0]):
    total += -sum(v * math.log(v) for v in p[n] if v > 0)
  return total / p.shape[0]


# ---------------------------------------------------------------------------
# Losses (notes §2.2 (b), (d), (f), (h); paper Eq. 1, 2, 3, 11).
# ---------------------------------------------------------------------------
def video_ce(logits, labels):
  """-mean_b sum_c yhat_bc log_softmax(v)_bc, yhat = y / sum(y) + 1e-10."""
  logits, labels = f64(logits), f64(labels)
  b_size, c_size = logits.shape
  total = 0.0
  for b in range(b_size):
    lsm = log_softmax(logits[b])
    norm = sum(labels[b])
    for c in range(c_size):
      total -= (labels[b, c] / norm + 1e-10) * lsm[c]
  return total / b_size


def gce(att, q, gamma=0.7):
  """ASL's balanced generalized BCE, notes §2.2(d), one video at a time."""
  att, q = f64(att), f64(q)
  b_size, t_size = att.shape
  pos_mean = neg_mean = 0.0
  for b in range(b_size):
    pos = neg = npos = nneg = 0.0
    for t in range(t_size):
      a = att[b, t]
      pos += q[b, t] * (1.0 - (a + 1e-7) ** gamma) / gamma
      neg += (1.0 - q[b, t]) * (1.0 - (1.0 - a + 1e-7) ** gamma) / gamma
      npos += q[b, t]
      nneg += 1.0 - q[b, t]
    pos_mean += pos / (npos + 1e-7) / b_size
    neg_mean += neg / (nneg + 1e-7) / b_size
  return pos_mean + neg_mean


def balanced_bce(att, q):
  """The gamma -> 0 limit of ``gce``: -log replaces (1 - x^g) / g."""
  att, q = f64(att), f64(q)
  b_size, t_size = att.shape
  total = 0.0
  for b in range(b_size):
    pos = neg = npos = nneg = 0.0
    for t in range(t_size):
      pos += -q[b, t] * math.log(att[b, t] + 1e-7)
      neg += -(1.0 - q[b, t]) * math.log(1.0 - att[b, t] + 1e-7)
      npos += q[b, t]
      nneg += 1.0 - q[b, t]
    total += (pos / (npos + 1e-7) + neg / (nneg + 1e-7)) / b_size
  return total


def soft_ce(targets, logits):
  """-mean_n sum_k Q_nk log_softmax(logits)_nk (released: a mean over n)."""
  targets = f64(targets)
  lsm = log_softmax(logits)
  n_size, k_size = targets.shape
  total = 0.0
  for n in range(n_size):
    for k in range(k_size):
      total -= targets[n, k] * lsm[n, k]
  return total / n_size


# ---------------------------------------------------------------------------
# MIL (notes §2.2 (a), (c); paper E.1 Eq. 18-19, E.2 Eq. 24).
# ---------------------------------------------------------------------------
def released_selection_score(cas, att):
  """(0.5 sm(cas_flow) + 0.5 sm(cas_rgb) + att_flow + att_rgb) / 3, (B,T,C)."""
  sm_f, sm_r = softmax(cas["flow"]), softmax(cas["rgb"])
  att_f, att_r = f64(att["flow"]), f64(att["rgb"])
  b_size, t_size, c_size = sm_f.shape
  out = np.empty((b_size, t_size, c_size))
  for b in range(b_size):
    for t in range(t_size):
      for c in range(c_size):
        out[b, t, c] = (0.5 * sm_f[b, t, c] + 0.5 * sm_r[b, t, c]
                        + att_f[b, t] + att_r[b, t]) / 3.0
  return out


def topk_sorted(scores, k):
  """(B, k, C): per video and class, the k snippets of highest score, best
  first (Python's sorted, so independent of numpy/lax selection)."""
  scores = f64(scores)
  b_size, t_size, c_size = scores.shape
  idx = np.zeros((b_size, k, c_size), np.int64)
  for b in range(b_size):
    for c in range(c_size):
      order = sorted(range(t_size), key=lambda t: -scores[b, t, c])
      idx[b, :, c] = order[:k]
  return idx


def topk_margin(scores, k):
  """Smallest gap between the k-th and (k+1)-th score over (b, c): the
  selection is well-posed in float32 only when this is not tiny."""
  s = -np.sort(-f64(scores), axis=1)
  return float(np.min(s[:, k - 1, :] - s[:, k, :]))


def video_logits(cas, idx):
  """v_bc = mean over the selected snippets of cas[b, t, c]."""
  cas = f64(cas)
  b_size, k, c_size = idx.shape
  out = np.zeros((b_size, c_size))
  for b in range(b_size):
    for c in range(c_size):
      out[b, c] = sum(cas[b, int(idx[b, j, c]), c] for j in range(k)) / k
  return out


def pseudo_fg(idx, labels, t_size):
  """Q^A: for each GT class c of video b, Q^A[b, idx[b, :, c]] = 1."""
  b_size, k, c_size = idx.shape
  q = np.zeros((b_size, t_size))
  for b in range(b_size):
    for c in range(c_size):
      if labels[b, c] > 0:
        for j in range(k):
          q[b, int(idx[b, j, c])] = 1.0
  return q


# ---------------------------------------------------------------------------
# DDCL prior (notes §2.2(e); paper Eq. 13).
# ---------------------------------------------------------------------------
def ddcl_prior(a, q_fg, sigma, mode="argsort"):
  """T (N, K) normalised to sum 1.

  argsort: r = argsort(-a) (the released sort permutation), D = |(r+1)/N - (1-q)|.
  rank:    r[j] = number of snippets with a larger a (the true descending rank).
  prob:    D = |a - q|.
  """
  a, q_fg = f64(a), f64(q_fg)
  n_size, k_size = a.shape[0], q_fg.shape[0]
  if mode == "argsort":
    r = sorted(range(n_size), key=lambda j: -a[j])           # r[j]: j-th best
  elif mode == "rank":
    r = [sum(1 for i in range(n_size) if a[i] > a[j]) for j in range(n_size)]
  elif mode != "prob":
    raise ValueError(mode)
  prior = np.zeros((n_size, k_size))
  for j in range(n_size):
    for k in range(k_size):
      if mode == "prob":
        d = abs(a[j] - q_fg[k])
      else:
        d = abs((r[j] + 1.0) / n_size - (1.0 - q_fg[k]))
      prior[j, k] = math.exp(-d * d / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
  return prior / prior.sum()


# ---------------------------------------------------------------------------
# Cluster classification (notes §2.2 (g); paper Eq. 8-10).
# ---------------------------------------------------------------------------
def prototypes(weights, base):
  """normalize(weights^T base): weighted sums of embeddings, unit rows."""
  weights, base = f64(weights), f64(base)
  n_size, m_size = weights.shape
  sums = np.zeros((m_size, base.shape[1]))
  for m in range(m_size):
    for n in range(n_size):
      sums[m] += weights[n, m] * base[n]
  return l2_normalize_rows(sums)


def cluster_cls_logits(q_c, q_a_flat, base, temp=10.0):
  """temp * Zc Zf^T with Zf rows [foreground, background]: (K, 2)."""
  z_c = prototypes(q_c, base)
  fb = np.stack([f64(q_a_flat), 1.0 - f64(q_a_flat)], axis=1)
  z_f = prototypes(fb, base)
  out = np.zeros((z_c.shape[0], 2))
  for k in range(z_c.shape[0]):
    for j in range(2):
      out[k, j] = temp * float(np.dot(z_c[k], z_f[j]))
  return out


# ---------------------------------------------------------------------------
# The whole per-iteration computation (notes §2.2 (a)-(i)).
# ---------------------------------------------------------------------------
def released_objective(cas, att, clu, base, labels, cls_gt, *, sigma=10.0,
                       eps=20.0, clu_temp=10.0, temp=10.0, gce_q=0.7,
                       w_clu=1.0, w_cls=0.3, iters=3, topk_divisor=8,
                       rank="argsort", use_attention=True,
                       snippet_clustering=True, cluster_classification=True,
                       ddcl=True, qc_mode="dcl", hard=False, attention="gce",
                       per_stream_topk_omega=None, colabel_clusters=True,
                       colabel_cluster_cls=True):
  """Returns a dict with L_V, L_A, L_C, L_R, loss, q_r, q_a, q_c, beta.

  Defaults are the released code.  Variants:
    use_attention=False: selection on 0.5 sm_f + 0.5 sm_r, no L_A (Table 9).
    per_stream_topk_omega=w: no top-k co-labeling; stream s selects on
      w sm(cas_s) + (1 - w) att_s (paper E.1) and gets its own Q^A.
    qc_mode="pl": Q^C = softmax of the fused logits, no constraint (Table 4).
    hard: Q^C one-hot (argmax) (Table 4).
    colabel_clusters=False: Q^C_s from stream s's logits alone.
    colabel_cluster_cls=False: Q^R_s from stream s's cls logits alone.
  """
  cas = {s: f64(cas[s]) for s in STREAMS}
  att = {s: f64(att[s]) for s in STREAMS}
  labels, cls_gt = f64(labels), f64(cls_gt)
  b_size, t_size, _ = cas["rgb"].shape
  n_size = b_size * t_size
  k = t_size // topk_divisor

  # (a) selection, (b) L_V, (c) Q^A.
  if per_stream_topk_omega is not None:
    w = per_stream_topk_omega
    idx = {s: topk_sorted(w * softmax(cas[s]) + (1 - w) * att[s][..., None], k)
           for s in STREAMS}
  else:
    if use_attention:
      score = released_selection_score(cas, att)
    else:
      score = 0.5 * softmax(cas["flow"]) + 0.5 * softmax(cas["rgb"])
    shared = topk_sorted(score, k)
    idx = {s: shared for s in STREAMS}
  l_v = sum(0.5 * video_ce(video_logits(cas[s], idx[s]), labels) for s in STREAMS)
  q_a = {s: pseudo_fg(idx[s], labels, t_size) for s in STREAMS}

  # (d) L_A, summed over streams.
  if not use_attention:
    l_a = 0.0
  elif attention == "gce":
    l_a = gce(att["flow"], q_a["flow"], gce_q) + gce(att["rgb"], q_a["rgb"], gce_q)
  else:
    l_a = balanced_bce(att["flow"], q_a["flow"]) + balanced_bce(att["rgb"], q_a["rgb"])

  res = dict(L_V=l_v, L_A=l_a, L_C=0.0, L_R=0.0, q_r=cls_gt, q_a=q_a,
             idx=idx, q_c=None, beta=None)
  if not (snippet_clustering or cluster_classification):
    res["loss"] = l_v + l_a
    return res

  # (e) prior from the fused attention and the previous Q^R.
  a = (0.5 * att["rgb"] + 0.5 * att["flow"]).reshape(n_size)
  prior = ddcl_prior(a, cls_gt[:, 0], sigma, rank) if (ddcl and qc_mode == "dcl") else 1.0

  # (f) Q^C and L_C.
  flat = {s: f64(clu[s]).reshape(n_size, -1) for s in STREAMS}

  def label(logits):
    if qc_mode == "dcl":
      q = released_ot_numpy(logits, prior=prior, eps=eps, temp=clu_temp, iters=iters)
    else:
      q = softmax(logits)
    return one_hot_argmax(q) if hard else q

  if colabel_clusters:
    shared = label(0.5 * flat["rgb"] + 0.5 * flat["flow"])
    q_c = {s: shared for s in STREAMS}
  else:
    q_c = {s: label(flat[s]) for s in STREAMS}
  res["q_c"] = q_c
  if snippet_clustering:
    res["L_C"] = soft_ce(q_c["rgb"], flat["rgb"]) + soft_ce(q_c["flow"], flat["flow"])

  # (g) prototypes and cluster-classification logits, (h) Q^R and L_R.
  if cluster_classification:
    base_flat = {s: f64(base[s]).reshape(n_size, -1) for s in STREAMS}
    cls = {s: cluster_cls_logits(q_c[s], q_a[s].reshape(n_size), base_flat[s], temp)
           for s in STREAMS}
    fg = 0.5 * (q_a["rgb"] + q_a["flow"]).reshape(n_size)
    beta = np.array([fg.mean(), 1.0 - fg.mean()])
    if colabel_cluster_cls:
      q_r = released_ot_numpy(0.5 * cls["flow"] + 0.5 * cls["rgb"], beta=beta,
                              eps=eps, temp=temp, iters=iters)
      target = {s: q_r for s in STREAMS}
    else:
      target = {s: released_ot_numpy(cls[s], beta=beta, eps=eps, temp=temp,
                                     iters=iters) for s in STREAMS}
      q_r = 0.5 * (target["rgb"] + target["flow"])
    res["L_R"] = soft_ce(target["rgb"], cls["rgb"]) + soft_ce(target["flow"], cls["flow"])
    res["q_r"] = q_r
    res["beta"] = beta
    res["cls"] = cls

  # (i) total.
  res["loss"] = l_v + l_a + w_clu * res["L_C"] + w_cls * res["L_R"]
  return res


# ---------------------------------------------------------------------------
# Random model outputs shaped like CASE's.
# ---------------------------------------------------------------------------
def random_outputs(rng, b_size=3, t_size=24, c_size=5, k_size=6, e_size=8,
                   cos_scale=10.0):
  """float32 per-stream arrays: cas (B,T,C), att (B,T), clu = 10 cos (B,T,K),
  emb = post-ReLU (B,T,E) (a few all-zero rows included)."""
  out = {}
  for s in STREAMS:
    cas = 2.0 * rng.normal(size=(b_size, t_size, c_size))
    att = rng.uniform(0.02, 0.98, size=(b_size, t_size))
    x = rng.normal(size=(b_size * t_size, 16))
    w = rng.normal(size=(k_size, 16))
    cos = l2_normalize_rows(x) @ l2_normalize_rows(w).T
    clu = cos_scale * cos.reshape(b_size, t_size, k_size)
    emb = np.maximum(rng.normal(size=(b_size, t_size, e_size)), 0.0)
    out[s] = dict(cas=cas.astype(np.float32), att=att.astype(np.float32),
                  clu=clu.astype(np.float32), emb=emb.astype(np.float32))
  return out


def random_labels(rng, b_size=3, c_size=5):
  """Multi-hot labels with 1 or 2 classes per video."""
  y = np.zeros((b_size, c_size), np.float32)
  for b in range(b_size):
    n_cls = 1 + int(rng.integers(0, 2))
    y[b, rng.choice(c_size, n_cls, replace=False)] = 1.0
  return y
