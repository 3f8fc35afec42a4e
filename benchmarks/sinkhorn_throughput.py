#!/usr/bin/env python
"""Side-by-side Sinkhorn throughput: case_jax vs ott-jax vs POT (vs PyTorch).

Every solver gets the same problems and runs the same fixed number of
iterations (50, column update then row update):

* case_jax ``sinkhorn.solve`` in each mode: ``auto``, ``scaling``, ``log`` and
  ``released`` (the released code's routine; 50 of its passes);
* ott-jax ``linear.solve`` (log-domain, jitted), cost ``C = -log_p``,
  ``epsilon = 1/eps``, probability marginals; its plan times N is our Q;
* POT ``ot.bregman.sinkhorn_log`` in numpy (float32 and float64 rows; the sweep
  uses float32), ``M = -log_p``, ``reg = 1/eps``;
* a PyTorch log-domain loop (``torch.logsumexp``) when ``import torch`` works.

Problems are CASE-like: ``log_p = log_softmax(10 * cos(x_n, c_k))`` of seeded
random unit feature vectors x (``--dim``) against K random unit prototypes,
``eps = 20`` as in the paper, default marginals (rows sum to 1, columns N/K).

Reported per solver: median ms per solve (compile excluded: warm-up call, then
repeats with ``block_until_ready``, interleaved round-robin across solvers so
machine noise hits all of them alike), million cell-updates per second
(N*K*iterations / time / 1e6), time relative to case_jax ``auto`` (>1 means
case_jax auto is faster), the relative L1 column-marginal error of the returned
Q (float64 check; rows are exact for every solver) and answer checks:
``max|dQ|`` against case_jax ``log`` after the same 50 iterations,
``same-init`` the same for peers restarted from case_jax's initial potentials
(f = -rowmax(eps*log_p)), and ``vs conv`` against the converged (tol 1e-6) Q.

Also: a convergence run (to 1e-6 relative L1 column error), a parameter sweep
over N and K, and a memory-bandwidth bound for the scaling iteration.

Usage (from the repository root):
  python benchmarks/sinkhorn_throughput.py            # full run, ~5-10 min on 2 cores
  python benchmarks/sinkhorn_throughput.py --quick    # THUMOS + ActivityNet only, < 60 s
  python benchmarks/sinkhorn_throughput.py --json out.json
The full run writes benchmarks/results/sinkhorn_<hostname>.json, ``--quick``
benchmarks/results/sinkhorn_<hostname>_quick.json, unless ``--json`` is given.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import math
import os
import platform
import socket
import subprocess
import sys
import time
import warnings
from typing import Any, Callable, Optional

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
  sys.path.insert(0, _REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from benchmarks import harness  # noqa: E402
from case_jax import sinkhorn  # noqa: E402

try:
  with warnings.catch_warnings():
    # ott imports jaxopt, which raises a DeprecationWarning on import.
    warnings.simplefilter("ignore", DeprecationWarning)
    import ott
    from ott.geometry import geometry as ott_geometry
    from ott.problems.linear import linear_problem as ott_linear_problem
    from ott.solvers import linear as ott_linear
    from ott.solvers.linear import sinkhorn as ott_sinkhorn
except ImportError:  # pragma: no cover - optional peer
  ott = None

try:
  import ot  # POT
except ImportError:  # pragma: no cover - optional peer
  ot = None

# PyTorch's OpenMP threads busy-wait by default; next to XLA's thread pool on a
# small machine that slows its small ops by 10-100x. Passive waiting is as
# fast when torch runs alone.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
try:
  import torch
except ImportError:
  torch = None

EPS = 20.0            # sharpness of the kernel P^eps (paper: 20)
ITERS = 50            # fixed iteration count of the throughput runs
TOL = 1e-6            # convergence run: relative L1 column error
CONV_MAX_ITERS = 5000
SIM_SCALE = 10.0      # log_p = log_softmax(SIM_SCALE * cosine similarity)
MODES = ("auto", "scaling", "log", "released")
SLOW_S = 3.0          # a solve slower than this is timed once
POT_LIMIT_S = 20.0    # sweep: POT runs whose 50 iterations would take longer
                      # are extrapolated from a 10-iteration run


# ---------------------------------------------------------------------------
# Problems.
# ---------------------------------------------------------------------------
def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_log_p(n: int, k: int, dim: int, seed) -> np.ndarray:
  """(n, k) float32 log_softmax(10 * cos) of random unit vectors vs prototypes."""
  rng = np.random.default_rng(seed)
  protos = _unit(rng.standard_normal((k, dim), dtype=np.float32))
  out = np.empty((n, k), np.float32)
  chunk = 1 << 16
  for s in range(0, n, chunk):
    x = _unit(rng.standard_normal((min(chunk, n - s), dim), dtype=np.float32))
    logits = SIM_SCALE * (x @ protos.T)
    m = logits.max(axis=1, keepdims=True)
    out[s:s + len(x)] = logits - m - np.log(
        np.exp(logits - m).sum(axis=1, keepdims=True))
  return out


@dataclasses.dataclass
class Problem:
  name: str
  n: int
  k: int
  batch: int            # 0: a single problem; B: a vmapped batch of B
  desc: str
  log_p: np.ndarray = None   # (n, k) or (batch, n, k) float32

  @property
  def cells_per_iter(self):
    return self.n * self.k * max(self.batch, 1)

  def build(self, dim, seed):
    if self.batch:
      self.log_p = np.stack([make_log_p(self.n, self.k, dim, [seed, self.n, self.k, i])
                             for i in range(self.batch)])
    else:
      self.log_p = make_log_p(self.n, self.k, dim, [seed, self.n, self.k, 0])
    return self


def main_problems(quick):
  probs = [
      Problem("THUMOS", 16 * 750, 16, 0, "16 videos x 750 snippets, K=16"),
      Problem("ActivityNet", 16 * 50, 64, 0, "16 videos x 50 snippets, K=64"),
  ]
  if not quick:
    probs += [
        Problem("cluster-cls 16x2", 16, 2, 0, "cluster classification, 16 clusters"),
        Problem("cluster-cls 64x2", 64, 2, 0, "cluster classification, 64 clusters"),
        Problem("THUMOS x8 (vmap)", 16 * 750, 16, 8,
                "8 THUMOS problems: jax.vmap for JAX, a python loop for POT/torch"),
    ]
  return probs


# ---------------------------------------------------------------------------
# Solvers. Each returns Q (N, K) (or (B, N, K)) scaled so that rows sum to 1.
# ---------------------------------------------------------------------------
def _rowmax_init(log_p):
  """case_jax's initial row potential f0 = -rowmax(eps * log_p)."""
  return -EPS * np.max(log_p, axis=-1)


def case_jax_runner(mode, log_p, batch, *, num_iters=ITERS, tol=None,
                    max_iters=CONV_MAX_ITERS):
  kw = dict(eps=EPS, mode=mode)
  if tol is None:
    kw["num_iters"] = num_iters
  else:
    kw.update(tol=tol, max_iters=max_iters)
  if batch:
    fn = jax.jit(jax.vmap(functools.partial(sinkhorn.solve, **kw)))
    return lambda: fn(log_p)
  return lambda: sinkhorn.solve(log_p, **kw)   # already jitted


def _ott_plan(log_p, init_f, *, iters, threshold, inner, min_iters):
  n, k = log_p.shape
  geom = ott_geometry.Geometry(cost_matrix=-log_p, epsilon=1.0 / EPS)
  a = jnp.full((n,), 1.0 / n, log_p.dtype)
  b = jnp.full((k,), 1.0 / k, log_p.dtype)
  kw = dict(min_iterations=min_iters, max_iterations=iters,
            threshold=threshold, inner_iterations=inner)
  if init_f is None:
    out = ott_linear.solve(geom, a=a, b=b, **kw)
  else:
    # Same solver as linear.solve, started from the given potentials. ott's
    # plan is exp((f + g - C) / epsilon), so f_ott = f_case / eps.
    prob = ott_linear_problem.LinearProblem(geom, a=a, b=b)
    out = ott_sinkhorn.Sinkhorn(**kw)(prob, init=(init_f, jnp.zeros((k,), log_p.dtype)))
  return out.matrix * n, out.n_iters, out.converged


def ott_runner(log_p, batch, *, same_init=False, iters=ITERS, threshold=-1.0,
               inner=1, min_iters=None):
  min_iters = iters if min_iters is None else min_iters
  fn = functools.partial(_ott_plan, iters=iters, threshold=threshold,
                         inner=inner, min_iters=min_iters)
  init_f = jnp.asarray(_rowmax_init(np.asarray(log_p)) / EPS) if same_init else None
  if batch:
    fn = jax.vmap(fn, in_axes=(0, 0 if same_init else None))
  fn = jax.jit(fn)
  return lambda: fn(log_p, init_f)


def pot_runner(log_p_np, batch, dtype, *, same_init=False, iters=ITERS):
  m_all = (-log_p_np).astype(dtype)            # POT's cost matrix
  warm_all = _rowmax_init(log_p_np).astype(dtype) if same_init else None

  def one(m, warm):
    n, k = m.shape
    a = np.full((n,), 1.0 / n, dtype)
    b = np.full((k,), 1.0 / k, dtype)
    ws = None if warm is None else (warm, np.zeros((k,), dtype))
    plan = ot.bregman.sinkhorn_log(a, b, m, 1.0 / EPS, numItermax=iters,
                                   stopThr=0.0, warn=False, warmstart=ws)
    return plan * n

  def run():
    if batch:
      return np.stack([one(m_all[i], None if warm_all is None else warm_all[i])
                       for i in range(batch)])
    return one(m_all, warm_all)
  return run


def torch_runner(log_p_np, batch, *, iters=ITERS):
  """Log-domain Sinkhorn in PyTorch, same order and init as case_jax log."""
  lp_all = torch.from_numpy(np.ascontiguousarray(log_p_np))

  def one(lp):
    with torch.no_grad():
      lk = EPS * lp
      n, k = lk.shape
      log_b = math.log(n / k)
      f = -lk.max(dim=1).values
      g = torch.zeros(k, dtype=lk.dtype)
      for _ in range(iters):
        g = log_b - torch.logsumexp(lk + f[:, None], dim=0)
        f = -torch.logsumexp(lk + g[None, :], dim=1)        # log alpha = 0
      return torch.exp(lk + f[:, None] + g[None, :])

  def run():
    if batch:
      return torch.stack([one(lp_all[i]) for i in range(batch)])
    return one(lp_all)
  return run


def pick_torch_threads(run):
  """Uses whichever of torch's default thread count and 1 thread is faster.

  On a small, busy machine torch's OpenMP barriers (one per small op) can cost
  a scheduler time slice each when a thread is descheduled; one thread then
  wins by 10-100x. Returns the chosen count.
  """
  default = torch.get_num_threads()
  best = None
  for threads in sorted({default, 1}, reverse=True):
    torch.set_num_threads(threads)
    run()
    t0 = time.perf_counter()
    run()
    dt = time.perf_counter() - t0
    if best is None or dt < best[0]:
      best = (dt, threads)
  torch.set_num_threads(best[1])
  return best[1]


# ---------------------------------------------------------------------------
# Timing and answer checks.
# ---------------------------------------------------------------------------
def _block(out):
  for leaf in jax.tree_util.tree_leaves(out):
    if hasattr(leaf, "block_until_ready"):
      leaf.block_until_ready()
  return out


def _first(out):
  return out[0] if isinstance(out, (tuple, list)) else out


def _to_np(x):
  if torch is not None and isinstance(x, torch.Tensor):
    return x.numpy()
  return np.asarray(x)


def max_abs_diff(q, ref):
  q = q.reshape(-1, q.shape[-1])
  ref = ref.reshape(-1, ref.shape[-1])
  out, step = 0.0, 1 << 16
  for s in range(0, q.shape[0], step):
    d = np.abs(q[s:s + step].astype(np.float64) - ref[s:s + step].astype(np.float64))
    out = max(out, float(d.max()))
  return out


def col_error(q):
  """Max over the batch of ||Q^T 1 - N/K||_1 / N, in float64."""
  q = q.reshape((-1,) + q.shape[-2:])
  n, k = q.shape[-2:]
  errs = [np.abs(qi.sum(axis=0, dtype=np.float64) - n / k).sum() / n for qi in q]
  return float(max(errs))


@dataclasses.dataclass
class Case:
  name: str
  family: str
  run: Callable[[], Any]
  cells: float                       # cell updates per solve (N*K*iters*batch)
  jit: bool = True                   # the first call compiles: untimed
  same_init: Optional[Callable[[], Any]] = None
  time_scale: float = 1.0            # > 1: extrapolated from a shorter run
  compare: bool = True               # the answer is comparable (not extrapolated)
  note: str = ""
  extra: Optional[Callable[[Any], dict]] = None   # more fields from the output
  samples: list = dataclasses.field(default_factory=list)
  row: dict = dataclasses.field(default_factory=dict)


def _timed(case):
  t0 = time.perf_counter()
  out = _block(case.run())
  return time.perf_counter() - t0, out


def bench(cases, *, ref=None, conv_ref=None, ref_name="case_jax log",
          budget_s=1.0, min_rep=5, max_rep=40):
  """Warm-up, answer checks, then interleaved repeats. Returns result rows.

  The reference for max|dQ| is ``ref`` or else the answer of the case named
  ``ref_name`` (which must come first).
  """
  for c in cases:
    if c.samples:                          # timed by the caller (extrapolated)
      c.row = dict(solver=c.name, family=c.family, note=c.note)
      continue
    if c.jit:
      _, out = _timed(c)                   # compile + run
      dt, _ = _timed(c)
    else:
      dt, out = _timed(c)
    c.samples.append(dt)
    q = _to_np(_first(out))
    if c.name == ref_name and ref is None:
      ref = q
    c.row = dict(solver=c.name, family=c.family, note=c.note)
    if c.compare:
      c.row["col_err"] = col_error(q)
      c.row["max_dq"] = max_abs_diff(q, ref) if ref is not None else None
      c.row["max_dq_conv"] = max_abs_diff(q, conv_ref) if conv_ref is not None else None
    if c.extra is not None:
      c.row.update(c.extra(out))
    del out, q
    if c.same_init is not None:
      q = _to_np(_first(_block(c.same_init())))
      c.row["max_dq_same_init"] = max_abs_diff(q, ref)
      del q

  targets = []
  for c in cases:
    t = c.samples[0]
    if t > SLOW_S:
      targets.append(1)
    elif t > 1.0:
      targets.append(3)
    else:
      targets.append(int(min(max_rep, max(min_rep, math.ceil(budget_s / max(t, 1e-6))))))
  for r in range(1, max(targets)):
    for c, target in zip(cases, targets):
      if r < target:
        c.samples.append(_timed(c)[0])

  rows = []
  auto_ms = None
  for c in cases:
    ms = float(np.median(c.samples)) * 1e3 * c.time_scale
    c.row.update(ms=ms, ms_min=float(np.min(c.samples)) * 1e3 * c.time_scale,
                 repeats=len(c.samples),
                 mcells_per_s=c.cells / (ms * 1e-3) / 1e6)
    if c.name == "case_jax auto":
      auto_ms = ms
    rows.append(c.row)
  for row in rows:
    row["ratio_vs_auto"] = row["ms"] / auto_ms if auto_ms else None
  return rows


# ---------------------------------------------------------------------------
# Printing.
# ---------------------------------------------------------------------------
def _g(x, fmt="{:.1e}", none="-"):
  return none if x is None else fmt.format(x)


def _ms(x):
  if x is None:
    return "-"
  return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def print_rows(rows, title, conv=False):
  print(f"\n== {title} ==")
  if conv:
    head = (f"{'solver':<26}{'iters':>7}{'conv':>6}{'ms/solve':>10}{'(min)':>9}"
            f"{'reps':>5}{'t/t_auto':>9}{'col err':>9}{'max|dQ|':>9}")
  else:
    head = (f"{'solver':<26}{'ms/solve':>10}{'(min)':>9}{'reps':>5}{'Mcell/s':>9}"
            f"{'t/t_auto':>9}{'col err':>9}{'max|dQ|':>9}{'same-init':>10}{'vs conv':>9}")
  print(head)
  for r in rows:
    name = r["solver"] + ("*" if r.get("note") else "")
    if conv:
      print(f"{name:<26}{r.get('iters', '-'):>7}{str(r.get('converged', '-'))[:5]:>6}"
            f"{_ms(r['ms']):>10}{_ms(r['ms_min']):>9}{r['repeats']:>5}"
            f"{_g(r['ratio_vs_auto'], '{:.2f}'):>9}{_g(r.get('col_err')):>9}"
            f"{_g(r.get('max_dq')):>9}")
    else:
      print(f"{name:<26}{_ms(r['ms']):>10}{_ms(r['ms_min']):>9}{r['repeats']:>5}"
            f"{r['mcells_per_s']:>9.0f}{_g(r['ratio_vs_auto'], '{:.2f}'):>9}"
            f"{_g(r.get('col_err')):>9}{_g(r.get('max_dq')):>9}"
            f"{_g(r.get('max_dq_same_init')):>10}{_g(r.get('max_dq_conv')):>9}")
  for r in rows:
    if r.get("note"):
      print(f"  * {r['solver']}: {r['note']}")


# ---------------------------------------------------------------------------
# Suites.
# ---------------------------------------------------------------------------
def throughput_cases(prob, log_p_dev, *, pot_dtypes, with_same_init, sweep=False):
  b = prob.batch
  cells = prob.cells_per_iter * ITERS
  cases = [Case(f"case_jax {m}", "case_jax", case_jax_runner(m, log_p_dev, b), cells)
           for m in ("log", "auto", "scaling", "released")]
  if b:
    # For comparison with vmap: the same problems solved one after another.
    singles = [case_jax_runner("auto", log_p_dev[i], 0) for i in range(b)]
    cases.append(Case(f"case_jax auto, loop of {b}", "case_jax-loop",
                      lambda: jnp.stack([_first(r()) for r in singles]), cells,
                      note="python loop over single solves instead of jax.vmap"))
  if ott is not None:
    cases.append(Case(
        "ott-jax (log, jit)", "ott-jax", ott_runner(log_p_dev, b), cells,
        same_init=ott_runner(log_p_dev, b, same_init=True) if with_same_init else None))
  if ot is not None:
    for dt in pot_dtypes:
      name = f"POT sinkhorn_log {np.dtype(dt).name}"
      runner = pot_runner(prob.log_p, b, dt)
      if sweep:
        # Probe with 10 iterations (1 of its 5 error checks, as in 50): if 50
        # would be too slow, report 5 x the 10-iteration time.
        probe = pot_runner(prob.log_p, b, dt, iters=10)
        t0 = time.perf_counter()
        probe()
        t10 = time.perf_counter() - t0
        if 5 * t10 > POT_LIMIT_S:
          cases.append(Case(name, "POT", probe, cells, jit=False, time_scale=5.0,
                            compare=False, samples=[t10],
                            note="extrapolated: 5 x a 10-iteration run, timed once"))
          continue
      cases.append(Case(
          name, "POT", runner, cells, jit=False,
          same_init=pot_runner(prob.log_p, b, dt, same_init=True) if with_same_init else None))
  if torch is not None:
    runner = torch_runner(prob.log_p, b)
    threads = pick_torch_threads(runner)
    cases.append(Case("torch logsumexp loop", "torch", runner, cells, jit=False,
                      note=("log-domain loop, same init/order as case_jax log, "
                            f"float32, CPU, {threads} thread(s) (faster of default and 1)")))
  return cases


def converged_reference(prob, log_p_dev):
  run = case_jax_runner("log", log_p_dev, prob.batch, tol=TOL)
  return _to_np(_first(_block(run())))


def run_main(probs, budget, min_rep, max_rep, dim, seed):
  results = []
  for prob in probs:
    prob.build(dim, seed)
    lp = jnp.asarray(prob.log_p)
    conv_ref = converged_reference(prob, lp)
    cases = throughput_cases(prob, lp, pot_dtypes=(np.float32, np.float64),
                             with_same_init=True)
    rows = bench(cases, conv_ref=conv_ref, budget_s=budget, min_rep=min_rep,
                 max_rep=max_rep)
    title = (f"{prob.name}: N={prob.n} K={prob.k}"
             + (f" x{prob.batch}" if prob.batch else "") + f" ({prob.desc}), "
             f"{ITERS} iterations")
    print_rows(rows, title)
    results.append(dict(name=prob.name, n=prob.n, k=prob.k, batch=prob.batch,
                        desc=prob.desc, iters=ITERS, rows=rows))
  return results


def run_convergence(probs, budget, min_rep, max_rep, dim, seed):
  results = []
  for prob in probs:
    if prob.batch:
      continue
    if prob.log_p is None:
      prob.build(dim, seed)
    lp = jnp.asarray(prob.log_p)
    cells_per_iter = prob.n * prob.k

    def case_extra(out):
      info = out[1]
      return dict(iters=int(info.num_iters), converged=bool(info.converged),
                  reported_col_err=float(info.col_error))

    def ott_extra(out):
      return dict(iters=int(out[1]), converged=bool(out[2]))

    cases = []
    for m in ("log", "auto", "scaling"):
      cases.append(Case(f"case_jax {m}", "case_jax",
                        case_jax_runner(m, lp, 0, tol=TOL), 0.0, extra=case_extra))
    if ott is not None:
      for inner in (10, 1):
        cases.append(Case(
            f"ott-jax (inner={inner})", "ott-jax",
            ott_runner(lp, 0, iters=CONV_MAX_ITERS, threshold=TOL, inner=inner,
                       min_iters=0), 0.0, extra=ott_extra,
            note=("error checked every 10 iterations (ott default): iteration "
                  "count is a multiple of 10" if inner == 10 else
                  "error checked every iteration")))
    rows = bench(cases, budget_s=budget, min_rep=min_rep, max_rep=max_rep)
    for r in rows:
      r["mcells_per_s"] = cells_per_iter * r["iters"] / (r["ms"] * 1e-3) / 1e6
    print_rows(rows, f"Convergence to {TOL:g} relative L1 column error, {prob.name}: "
               f"N={prob.n} K={prob.k} (max|dQ| vs case_jax log converged)", conv=True)
    results.append(dict(name=prob.name, n=prob.n, k=prob.k, tol=TOL, rows=rows))
  return results


# ---------------------------------------------------------------------------
# Memory-bandwidth bound.
# ---------------------------------------------------------------------------
# Read kernels: every trip reads x once and depends on the previous trip, so
# nothing can be hoisted out of the loop. XLA's fused reductions run on one
# thread; the mat-vecs go to Eigen and can use every core, so the bandwidth
# used for the bound is the best of them.
@functools.partial(jax.jit, static_argnums=1)
def _read_sum_loop(x, reps):
  def body(_, c):                              # x.sum()-like (c stays -1)
    return -1.0 - jnp.sum(jnp.maximum(x, c)) * 1e-30
  return lax.fori_loop(0, reps, body, jnp.asarray(-1.0, x.dtype))


@functools.partial(jax.jit, static_argnums=1)
def _read_gemv_loop(x, reps):
  def body(_, v):                              # x @ v
    return v + (x @ v)[:v.shape[0]] * 1e-30
  return lax.fori_loop(0, reps, body, jnp.ones((x.shape[1],), x.dtype))


@functools.partial(jax.jit, static_argnums=1)
def _read_gevm_loop(x, reps):
  def body(_, u):                              # u @ x
    return u + jnp.sum(u @ x) * 1e-30
  return lax.fori_loop(0, reps, body, jnp.ones((x.shape[0],), x.dtype))


@functools.partial(jax.jit, static_argnums=1)
def _scale_loop(x, reps):
  # Reads and writes x once per trip (x * 2 style).
  return lax.fori_loop(0, reps, lambda _, y: y * 1.0000001, x)


@functools.partial(jax.jit, static_argnums=1)
def _bare_scaling_loop(kern, reps):
  # The two mat-vecs of a plain scaling iteration, without case_jax's
  # accuracy blocking, error and health checks.
  n, k = kern.shape
  a = jnp.ones((n,), kern.dtype)
  b = jnp.full((k,), n / k, kern.dtype)

  def body(_, uv):
    u, v = uv
    v = b / (u @ kern)
    u = a / (kern @ v)
    return u, v
  return lax.fori_loop(0, reps, body, (a, jnp.ones((k,), kern.dtype)))


def _median_time(fn, repeats=7):
  return float(harness.median_seconds(lambda: _block(fn()), repeats)[0])


def measure_bandwidth(n, k):
  """Read (and read+write) bandwidth of jitted loops over an (n, k) f32 array."""
  nbytes = n * k * 4
  reps = int(min(2000, max(4, 4e8 // nbytes)))
  x = jnp.asarray(np.random.default_rng(1).random((n, k), dtype=np.float32))
  read = {name: nbytes * reps / _median_time(lambda f=f: f(x, reps)) / 1e9
          for name, f in (("sum", _read_sum_loop), ("x@v", _read_gemv_loop),
                          ("u@x", _read_gevm_loop))}
  t_rw = _median_time(lambda: _scale_loop(x, reps))
  kern = jnp.asarray(np.exp(-np.random.default_rng(2).random((n, k), dtype=np.float32)))
  t_bare = _median_time(lambda: _bare_scaling_loop(kern, reps))
  best = max(read, key=read.get)
  return dict(n=n, k=k, array_bytes=nbytes, reps=reps, read_gbps_by_kernel=read,
              read_kernel=best, read_gbps=read[best],
              read_write_gbps=2 * nbytes * reps / t_rw / 1e9,
              bare_scaling_iter_us=t_bare / reps * 1e6)


def bound_entry(n, k, bw, per_iter_s):
  bytes_per_iter = 2 * n * k * 4          # the kernel is read twice per iteration
  bound_s = bytes_per_iter / (bw["read_gbps"] * 1e9)
  return dict(bytes_per_iter=bytes_per_iter, bound_iter_us=bound_s * 1e6,
              measured_iter_us=per_iter_s * 1e6, fraction=bound_s / per_iter_s)


def run_bound(main_results, dim, seed):
  """Memory bound at THUMOS size for the fastest case_jax mode."""
  thumos = next(p for p in main_results if p["name"] == "THUMOS")
  n, k = thumos["n"], thumos["k"]
  case_rows = [r for r in thumos["rows"] if r["family"] == "case_jax"]
  fastest = min(case_rows, key=lambda r: r["ms"])
  mode = fastest["solver"].split()[-1]
  lp = jnp.asarray(make_log_p(n, k, dim, [seed, n, k, 0]))
  t50 = _median_time(case_jax_runner(mode, lp, 0, num_iters=ITERS), 21)
  t150 = _median_time(case_jax_runner(mode, lp, 0, num_iters=3 * ITERS), 11)
  bw = measure_bandwidth(n, k)
  amort = bound_entry(n, k, bw, t50 / ITERS)
  marginal = bound_entry(n, k, bw, (t150 - t50) / (2 * ITERS))
  bare = bound_entry(n, k, bw, bw["bare_scaling_iter_us"] * 1e-6)
  out = dict(problem="THUMOS", n=n, k=k, mode=mode, bandwidth=bw,
             t50_ms=t50 * 1e3, t150_ms=t150 * 1e3,
             amortized=amort, marginal=marginal, bare_loop=bare)
  print(f"\n== Memory bound at THUMOS size (N={n}, K={k}; kernel {n*k*4/1e6:.3f} MB, "
        "cache-resident on most CPUs) ==")
  by = ", ".join(f"{name} {v:.1f}" for name, v in bw["read_gbps_by_kernel"].items())
  print(f"streaming read  : {bw['read_gbps']:.1f} GB/s, best of jitted loops over the "
        f"{n}x{k} f32 array ({by} GB/s; {bw['reps']} trips each)")
  print(f"read + write    : {bw['read_write_gbps']:.1f} GB/s   (x * c in a loop)")
  print(f"bytes per scaling iteration: 2*N*K*4 = {amort['bytes_per_iter']/1e6:.3f} MB "
        f"-> bound {amort['bound_iter_us']:.1f} us/iteration")
  print(f"fastest mode '{mode}': {t50*1e3:.3f} ms / {ITERS} it = "
        f"{amort['measured_iter_us']:.1f} us/it amortized -> {amort['fraction']:.0%} of bound; "
        f"marginal ((t150 - t50)/100) {marginal['measured_iter_us']:.1f} us/it -> "
        f"{marginal['fraction']:.0%} of bound")
  print(f"bare 2-mat-vec loop (no checks): {bare['measured_iter_us']:.1f} us/it -> "
        f"{bare['fraction']:.0%} of bound")
  return out


# ---------------------------------------------------------------------------
# Sweep.
# ---------------------------------------------------------------------------
def run_sweep(ns, ks, dim, seed):
  results = []
  print(f"\n== Sweep: {ITERS} iterations, ms/solve (Mcell/s) [t/t_auto]; POT float32 ==")
  for k in ks:
    for n in ns:
      t0 = time.time()
      prob = Problem(f"sweep N={n} K={k}", n, k, 0, "sweep").build(dim, seed)
      lp = jnp.asarray(prob.log_p)
      cases = throughput_cases(prob, lp, pot_dtypes=(np.float32,),
                               with_same_init=False, sweep=True)
      big = n * k >= 1e7
      rows = bench(cases, budget_s=0.5, min_rep=2 if big else 3, max_rep=20)
      fastest = min((r for r in rows if r["family"] == "case_jax"), key=lambda r: r["ms"])
      bw = measure_bandwidth(n, k)
      bound = bound_entry(n, k, bw, fastest["ms"] * 1e-3 / ITERS)
      bound["mode"] = fastest["solver"].split()[-1]
      cells = "  ".join(
          f"{r['solver'].replace('case_jax ', '').replace(' (log, jit)', '').replace('POT sinkhorn_log float32', 'POT')}"
          f" {_ms(r['ms'])}{'~' if r.get('note') else ''} ({r['mcells_per_s']:.0f})"
          f" [{r['ratio_vs_auto']:.2f}] dQ={_g(r.get('max_dq'))}"
          for r in rows)
      print(f"N={n:>8} K={k:>3}: {cells}")
      print(f"{'':16}bound: {bw['read_gbps']:.1f} GB/s read -> "
            f"{bound['bound_iter_us']:.1f} us/it; '{bound['mode']}' "
            f"{bound['measured_iter_us']:.1f} us/it = {bound['fraction']:.0%} "
            f"of bound   ({time.time() - t0:.0f} s)")
      results.append(dict(n=n, k=k, iters=ITERS, rows=rows, bandwidth=bw, bound=bound))
      del prob, lp, cases
  print("  ~ POT extrapolated from a 10-iteration run (x5), answer not compared")
  return results


# ---------------------------------------------------------------------------
# Goal check, machine info, main.
# ---------------------------------------------------------------------------
def goal_check(main_results):
  thumos = next(p for p in main_results if p["name"] == "THUMOS")
  rows = {r["solver"]: r for r in thumos["rows"]}
  auto = rows["case_jax auto"]
  out = dict(auto_ms=auto["ms"], checks=[])
  print("\n== Goal at THUMOS size: case_jax auto >= 3x faster than ott-jax, "
        ">= 30x faster than POT, same answers ==")
  for name, goal in (("ott-jax (log, jit)", 3.0), ("POT sinkhorn_log float32", 30.0),
                     ("POT sinkhorn_log float64", 30.0)):
    if name not in rows:
      continue
    r = rows[name]
    speedup = r["ms"] / auto["ms"]
    same = r.get("max_dq_same_init")
    ok_speed = speedup >= goal
    ok_same = same is not None and same <= 1e-4
    out["checks"].append(dict(peer=name, peer_ms=r["ms"], speedup=speedup, goal=goal,
                              speed_ok=ok_speed, max_dq=r.get("max_dq"),
                              max_dq_same_init=same, same_answer_ok=ok_same))
    print(f"{name:<26} {r['ms']:8.3f} ms vs auto {auto['ms']:.3f} ms -> {speedup:6.1f}x "
          f"(goal >= {goal:g}x: {'PASS' if ok_speed else 'FAIL'}); max|dQ| "
          f"default init {_g(r.get('max_dq'))}, same init {_g(same)} "
          f"(<= 1e-4: {'PASS' if ok_same else 'FAIL'})")
  return out


def _git_commit():
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True,
                          text=True, timeout=10).stdout.strip() or None
  except Exception:  # noqa: BLE001
    return None


def machine_info():
  dev = jax.devices()[0]
  try:
    usable = len(os.sched_getaffinity(0))
  except AttributeError:
    usable = os.cpu_count()
  return dict(
      hostname=socket.gethostname(), cpu_count=os.cpu_count(), usable_cpus=usable,
      cpu_model=harness.cpu_name(), platform=platform.platform(),
      python=platform.python_version(), numpy=np.__version__,
      jax=jax.__version__, jaxlib=__import__("jaxlib").__version__,
      device_kind=dev.device_kind, device_platform=dev.platform,
      ott_jax=getattr(ott, "__version__", None) if ott is not None else None,
      pot=getattr(ot, "__version__", None) if ot is not None else None,
      torch=torch.__version__ if torch is not None else None,
      git_commit=_git_commit(),
      load_average_at_start=list(os.getloadavg()),
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="THUMOS and ActivityNet sizes only (< 60 s)")
  parser.add_argument("--json", default=None,
                      help="output path (default benchmarks/results/"
                           "sinkhorn_<hostname>[_quick].json)")
  parser.add_argument("--dim", type=int, default=128,
                      help="feature dimension of the random unit vectors (default 128)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  t_start = time.time()
  info = machine_info()
  print(f"Sinkhorn throughput on {info['hostname']}: {info['cpu_model']}, "
        f"{info['usable_cpus']}/{info['cpu_count']} CPUs, jax {info['jax']} "
        f"({info['device_kind']}), ott-jax {info['ott_jax']}, POT {info['pot']}, "
        f"{info['date']}")
  print(f"eps={EPS:g}, {ITERS} fixed iterations, log_p = log_softmax({SIM_SCALE:g} cos) "
        f"of random unit vectors (dim {args.dim}, seed {args.seed}), float32 "
        "unless stated")
  for name, mod in (("ott-jax", ott), ("POT", ot)):
    if mod is None:
      print(f"{name}: not installed")
  if torch is None:
    print("torch: not installed")

  if args.quick:
    budget, min_rep, max_rep = 0.4, 5, 30
  else:
    budget, min_rep, max_rep = 1.0, 5, 40
  probs = main_problems(args.quick)
  main_results = run_main(probs, budget, min_rep, max_rep, args.dim, args.seed)
  goal = goal_check(main_results) if ott is not None and ot is not None else None
  bound = run_bound(main_results, args.dim, args.seed)
  conv = run_convergence([p for p in probs if p.name in ("THUMOS", "ActivityNet")],
                         budget, min_rep, max_rep, args.dim, args.seed)
  sweep = None
  if not args.quick:
    for p in probs:
      p.log_p = None
    sweep = run_sweep([10**3, 10**4, 10**5, 10**6], [16, 64], args.dim, args.seed)

  total = time.time() - t_start
  info["load_average_at_end"] = list(os.getloadavg())
  print(f"\nTotal {total:.0f} s. Load average (1, 5, 15 min) at start "
        f"{info['load_average_at_start']}, at end {info['load_average_at_end']} "
        f"({info['usable_cpus']} CPUs): other processes on the machine add noise.")
  result = dict(
      benchmark="sinkhorn_throughput", argv=sys.argv[1:] if argv is None else argv,
      quick=args.quick, machine=info,
      config=dict(eps=EPS, iters=ITERS, tol=TOL, conv_max_iters=CONV_MAX_ITERS,
                  sim_scale=SIM_SCALE, dim=args.dim, seed=args.seed, dtype="float32",
                  pot_dtypes=["float32", "float64"], sweep_pot_dtype="float32",
                  timing="median of interleaved repeats after a warm-up call, "
                         "block_until_ready; ms per solve",
                  ratio_vs_auto="peer time / case_jax auto time (>1: case_jax faster)",
                  max_dq="max |Q - Q_case_jax_log| after the same iterations, rows sum to 1",
                  max_dq_same_init="peer restarted from case_jax's f0 = -rowmax(eps log_p)",
                  max_dq_conv="vs case_jax log converged to tol 1e-6",
                  col_err="||Q^T 1 - N/K||_1 / N in float64 (max over a batch)",
                  ott_threshold="ott error = ||P^T 1 - b||_1 with b a probability "
                                "vector, after the row update: the same relative L1 "
                                "column error as case_jax's tol"),
      problems=main_results, goal=goal, bandwidth_bound=bound, convergence=conv,
      sweep=sweep, total_seconds=total)
  harness.write_json(harness.results_path("sinkhorn", args.json,
                                          suffix="_quick" if args.quick else ""),
                     result, default=float)
  return result


if __name__ == "__main__":
  main()
