"""One THUMOS-size CASE training step on this CPU: case_jax against the
released PyTorch iteration.

    python -m benchmarks.train_step [--quick] [--json PATH] [--rows a,b,...]
                                    [--wait-quiet SECONDS] [--no-probe]
                                    [--no-sanity]

Batch: B = 16 videos x T = 750 snippets, two 1024-d streams (RGB, flow),
20 classes, K^C = 16 clusters, embedding 512 (N = B*T = 12000 snippets).

Every configuration runs in its own subprocess, so that the peak resident
memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of one does not mix
with another's and each XLA flag setting starts a fresh backend.  Columns:

* compile s: case_jax: trace + lower + XLA compile of the jitted step
  (no persistent compilation cache).  torch is eager: none (its first step,
  warm-up included, is in the JSON as ``first_step_s``).
* ms/step: median over the timed steps after warm-up, each step blocked on.
* GFLOP/s: the analytic FLOP count of one step (``analytic_flops``, the same
  number for every row) divided by that median.
* peak RSS MB: the worker's ru_maxrss (XLA compiler memory included).
* vs torch f32: torch f32 median / this median.

Rows (``--rows``):
  jax_f32            case_jax, float32, released 3-pass OT (the default config)
  jax_f32_auto       case_jax, float32, ``labeling.sinkhorn_mode='auto'``
  jax_f32_2d         the f32 config with a benchmark-local Dense that flattens
                     (B, T, D) to (B*T, D) before its dot (a *proposed* change,
                     monkeypatched in this process only; see ``_dense2d_patch``)
  jax_bf16           case_jax, ``model.dtype='bfloat16'``: since this benchmark
                     found the AMX path, case_jax.model.bf16_dense (bf16 x bf16
                     -> f32 dots with a custom VJP whose fwd, dx and dW products
                     XLA sends to YNNPACK's AMX kernels) is what that option runs
  torch_f32          benchmarks/torch_released_step.py, float32, 2 threads
  torch_bf16         the same under torch.autocast('cpu', torch.bfloat16)

The torch rows are skipped (with a note) when torch is not installed; torch is
not a dependency of case_jax.

``--no-probe`` skips the matmul probe: a (12000 x 1024) @ (1024 x 512) matmul
(and the backward shapes) in f32 and bf16 under each candidate XLA CPU flag
setting, recording which library XLA picked (YNNPACK / oneDNN / its own dot).
``--no-sanity`` skips the numerical check: 20 training steps on 20 different
batches from the same initial parameters, in f32 and in bf16 (and torch f32 /
bf16 from case_jax's initial parameters copied into the torch model).
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import tempfile
import time

import numpy as np

from benchmarks import harness

B, T, D, C, K, E = 16, 750, 1024, 20, 16, 512

ROWS = {
    "jax_f32": dict(kind="jax", label="case_jax f32 (released OT)", dtype="float32",
                    sinkhorn="released"),
    "jax_f32_auto": dict(kind="jax", label="case_jax f32 (auto OT)", dtype="float32",
                         sinkhorn="auto"),
    "jax_f32_2d": dict(kind="jax", label="case_jax f32 + 2-D dense (proposed)",
                       dtype="float32", sinkhorn="released", patch="dense2d"),
    "jax_bf16": dict(kind="jax", label="case_jax bf16 (model.dtype)", dtype="bfloat16",
                     sinkhorn="released"),
    "torch_f32": dict(kind="torch", label="torch released f32", bf16=False),
    "torch_bf16": dict(kind="torch", label="torch released bf16 autocast", bf16=True),
}
BF16_FINDING = (
    "jaxlib 0.10.2's XLA:CPU sends a dot to YNNPACK (HLO fusion kind __ynn_fusion, "
    "XLA flag --xla_cpu_experimental_ynn_fusion_type, default 'individual_dot'; no "
    "flag or env needed) when its types are bf16 x bf16 -> f32 (or f32 x f32 -> f32) "
    "and its layout is canonical (LHS contracting dim minor, RHS contracting dim "
    "major, row-major result); YNNPACK then runs AMX-BF16 kernels (1.2-1.9 TFLOP/s "
    "for 12000x1024x512, above the ~0.66 TFLOP/s AVX512-BF16 peak of 2 cores). "
    "Everything else falls back: a bf16 x bf16 -> bf16 dot (what flax nn.Dense("
    "dtype=bfloat16) emits) is rewritten to an f32 dot plus converts, and autodiff's "
    "weight gradient of a 2-d (N, D) input (contracting N, a column-major LHS) runs "
    "in XLA's own dot, upcast to f32. --xla_cpu_use_onednn=true with "
    "--xla_cpu_experimental_onednn_fusion_type=dot routes f32 dots to oneDNN, but "
    "XLA upcasts bf16 dots to f32 before oneDNN sees them (ONEDNN_VERBOSE: f32 "
    "brg_matmul:avx512_core, never AMX); --xla_cpu_use_thunk_runtime is ignored "
    "('no longer supported'); the XNNPACK flags change nothing for these dots. "
    "So the fix is in the model code: bf16 x bf16 -> f32 dots (preferred_element_type"
    "=f32) with a custom VJP whose dx and dW products are canonical (see "
    "case_jax.model.bf16_dense), not a flag.")
SANITY_ROWS = ("jax_f32", "jax_bf16", "torch_f32", "torch_bf16")


# =============================================================================
# Batch and FLOP count.
# =============================================================================
def make_batch(seed: int, b: int = B, t: int = T, d: int = D, c: int = C) -> dict:
  """A deterministic THUMOS-shaped batch: non-negative features with a class
  pattern added on 1-3 foreground segments per video; 1-2 labels per video."""
  rng = np.random.default_rng(seed)
  patterns = np.abs(np.random.default_rng(12345).standard_normal((c, 2, d))).astype(np.float32)
  labels = np.zeros((b, c), np.float32)
  fg = np.zeros((b, t), np.float32)
  rgb = rng.random((b, t, d), dtype=np.float32) * 0.5
  flow = rng.random((b, t, d), dtype=np.float32) * 0.5
  for i in range(b):
    classes = rng.choice(c, 1 + int(rng.random() < 0.3), replace=False)
    labels[i, classes] = 1.0
    for _ in range(int(rng.integers(1, 4))):
      start = int(rng.integers(0, t - 20))
      end = min(t, start + int(rng.integers(20, 120)))
      cls = int(rng.choice(classes))
      fg[i, start:end] = 1.0
      rgb[i, start:end] += 0.5 * patterns[cls, 0]
      flow[i, start:end] += 0.5 * patterns[cls, 1]
  return {"rgb": rgb, "flow": flow, "labels": labels, "fg_mask": fg}


def analytic_flops(b=B, t=T, d=D, c=C, k=K, e=E) -> dict:
  """FLOPs of one step (forward + backward), 2 per multiply-add, matmuls only.

  Per stream and snippet the forward is x W for the two 1024->512 encoders,
  the 512->20 classifier, the 512->1 attention and the 512->16 cosine head.
  Backward: a layer whose input is data (the two encoders) needs only dW
  (1x its forward); the heads need dW and dx (2x).  The prototype sums
  Q^T Z (16 + 2 rows over N snippets, per stream) need one product back
  (to Z; Q is a constant).  Elementwise work, top-k, the OT and the
  optimiser are left out (< 1% of the total).
  """
  n = b * t
  enc_fwd = 2 * 2 * n * d * e                      # two encoders, per stream
  head_fwd = 2 * n * e * (c + 1 + k)
  proto_fwd = 2 * n * e * (k + 2)
  per_stream_fwd = enc_fwd + head_fwd + proto_fwd
  per_stream_bwd = enc_fwd + 2 * head_fwd + proto_fwd
  total = 2 * (per_stream_fwd + per_stream_bwd)
  with_input_grad = total + 2 * enc_fwd            # if dx of the encoders were formed
  return {"total": total, "forward": 2 * per_stream_fwd, "backward": 2 * per_stream_bwd,
          "encoders_share": 2 * 2 * enc_fwd / total,
          "if_input_grads_were_computed": with_input_grad,
          "macs_forward_per_video": 2 * per_stream_fwd / 2 / b}


# =============================================================================
# Helpers.
# =============================================================================
def have_torch() -> bool:
  import importlib.util
  return importlib.util.find_spec("torch") is not None


def run_worker(spec: dict, env_extra: dict | None = None, timeout: int = 1800) -> dict:
  """One worker of this module on the CPU (harness.run_worker)."""
  return harness.run_worker("benchmarks.train_step", spec, env_extra, timeout)


# =============================================================================
# case_jax worker.
# =============================================================================
def _dense2d_patch():
  """Monkeypatches case_jax.model._layer (this process only): the f32 Dense
  layers flatten (B, T, D) to (B*T, D) before the dot.  Autodiff's weight
  gradient is then a 2-d dot contracting dim 0, which XLA runs in its own
  (Eigen) dot directly, instead of first materialising an f32 transpose of
  the (B, T, D) input for YNNPACK (about 20 ms per 12000 x 1024 input here).
  """
  import flax.linen as nn
  from jax import lax
  from case_jax import model as model_lib

  def dot_general(x, w, dimension_numbers, precision=None, preferred_element_type=None):
    (lc, rc), (lb, rb) = dimension_numbers
    assert tuple(lc) == (x.ndim - 1,) and tuple(rc) == (0,) and not lb and not rb
    y = lax.dot_general(x.reshape(-1, x.shape[-1]), w, (((1,), (0,)), ((), ())),
                        precision=precision)
    return y.reshape(x.shape[:-1] + (w.shape[-1],))

  orig = model_lib._layer

  def patched(features, in_dim, kernel_size, init, name, dtype):
    if dtype is not None or kernel_size != 1:
      return orig(features, in_dim, kernel_size, init, name, dtype)
    fan_in = in_dim * kernel_size
    kw = ({} if init == "flax" else
          dict(kernel_init=model_lib._torch_uniform(fan_in),
               bias_init=model_lib._torch_uniform(fan_in)))
    return nn.Dense(features, name=name, dot_general=dot_general, **kw)

  model_lib._layer = patched


def _jax_build(spec):
  import jax
  from case_jax import defaults, train
  from case_jax import model as model_lib

  if spec.get("patch") == "dense2d":
    _dense2d_patch()
  cfg = defaults.base_config()
  cfg.data.num_segments = T
  cfg.model.num_clusters = K
  cfg.model.embed_dim = E
  cfg.model.dtype = spec["dtype"]
  cfg.labeling.sinkhorn_mode = spec["sinkhorn"]
  model = model_lib.from_config(cfg.model, C)
  tx = train.make_optimizer(cfg.optim)
  state = train.create_train_state(cfg, model, tx, rgb_dim=D, flow_dim=D,
                                   seed=spec.get("seed", 0))
  step = jax.jit(train.make_step_fn(cfg, axis_name=None), donate_argnums=(0,))
  return cfg, state, step


def _flat_params(params) -> dict:
  import jax
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    flat["/".join(str(getattr(p, "key", p)) for p in path)] = np.asarray(leaf)
  return flat


def _device_batch(batch):
  import jax
  return jax.device_put({k: batch[k] for k in ("rgb", "flow", "labels", "fg_mask")})


TERMS = ("loss", "L_V", "L_A", "L_C", "L_R")


def jax_worker(spec: dict) -> dict:
  import jax
  res = {"jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")}
  cfg, state, step = _jax_build(spec)
  if spec.get("export_init"):
    np.savez(spec["export_init"], **_flat_params(state.params))
    return {"exported": spec["export_init"]}
  res["rss_after_setup_mb"] = harness.current_rss_mb()

  if spec.get("mode") == "traj":
    traj = []
    for i in range(spec["steps"]):
      batch = _device_batch(make_batch(1000 + i))
      state, m = step(state, batch)
      traj.append({k: float(m[k]) for k in TERMS})
    res["trajectory"] = traj
    return res

  batch = _device_batch(make_batch(spec.get("batch_seed", 0)))
  t0 = time.perf_counter()
  lowered = step.lower(state, batch)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  res.update(trace_lower_s=t1 - t0, xla_compile_s=t2 - t1, compile_s=t2 - t0)
  try:
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    res["xla_cost_flops"] = float(ca.get("flops", float("nan")))
  except Exception as e:  # noqa: BLE001 - optional diagnostics
    res["xla_cost_flops_error"] = str(e)[:200]
  hlo = compiled.as_text()
  res["hlo_ops"] = {"ynn_fusions": hlo.count('"kind":"__ynn_fusion"'),
                    "onednn_fusions": hlo.count('"kind":"__onednn_fusion"'),
                    "xla_dots": sum(1 for line in hlo.splitlines()
                                    if " dot(" in line and "ROOT" not in line
                                    and "fused" not in line.split("=")[0])}
  t0 = time.perf_counter()
  state, m = compiled(state, batch)
  jax.block_until_ready((state, m))
  res["first_step_s"] = time.perf_counter() - t0
  res["first_step"] = {k: float(m[k]) for k in TERMS}
  for _ in range(spec["warmup"] - 1):
    state, m = compiled(state, batch)
    jax.block_until_ready((state, m))
  res["calib_gflops_before"] = harness.calib_gflops()
  res["load_at_timing"] = harness.loadavg()
  times = []
  for _ in range(spec["steps"]):
    t0 = time.perf_counter()
    state, m = compiled(state, batch)
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - t0)
  res["step_times_s"] = times
  res["calib_gflops_after"] = harness.calib_gflops()
  res["last_step"] = {k: float(m[k]) for k in TERMS}
  if "qc_col_error" in m:
    res["qc_col_error_last"] = float(m["qc_col_error"])
  res["peak_rss_mb"] = harness.peak_rss_mb()
  return res


# =============================================================================
# torch worker.
# =============================================================================
def torch_worker(spec: dict) -> dict:
  import torch
  from benchmarks import torch_released_step as trs

  init = dict(np.load(spec["init"])) if spec.get("init") else None
  step = trs.make_step(num_classes=C, feat_dim=D, embed=E, num_clusters=K,
                       bf16=spec.get("bf16", False), init=init, threads=2)
  res = {"torch": torch.__version__, "threads": torch.get_num_threads(),
         "init_from_case_jax": init is not None, "rss_after_setup_mb": harness.current_rss_mb()}
  if spec.get("mode") == "traj":
    traj = []
    for i in range(spec["steps"]):
      x, y = trs.to_input(make_batch(1000 + i))
      traj.append(step(x, y))
    res["trajectory"] = traj
    return res
  x, y = trs.to_input(make_batch(spec.get("batch_seed", 0)))
  t0 = time.perf_counter()
  res["first_step"] = step(x, y)
  res["first_step_s"] = time.perf_counter() - t0
  for _ in range(spec["warmup"] - 1):
    step(x, y)
  res["calib_gflops_before"] = harness.calib_gflops()
  res["load_at_timing"] = harness.loadavg()
  times = []
  for _ in range(spec["steps"]):
    t0 = time.perf_counter()
    last = step(x, y)
    times.append(time.perf_counter() - t0)
  res["step_times_s"] = times
  res["calib_gflops_after"] = harness.calib_gflops()
  res["last_step"] = last
  res["peak_rss_mb"] = harness.peak_rss_mb()
  return res


# =============================================================================
# Matmul probe: which library runs a dot, and how fast, per XLA flag setting.
# =============================================================================
PROBE_SETTINGS = [
    ("default", ""),
    ("thunk_runtime=false", "--xla_cpu_use_thunk_runtime=false"),
    ("use_xnnpack", "--xla_cpu_use_xnnpack=true"),
    ("xnn_fusion_type=dot", "--xla_cpu_experimental_xnn_fusion_type=dot"),
    ("use_onednn", "--xla_cpu_use_onednn=true"),
    ("use_onednn+onednn_fusion_type=dot",
     "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot"),
    ("use_onednn+onednn_custom_call",
     "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true"),
    ("ynn off (ynn_fusion_type=)", "--xla_cpu_experimental_ynn_fusion_type="),
    ("ynn_fusion_type=dot", "--xla_cpu_experimental_ynn_fusion_type=dot"),
]


def probe_worker(spec: dict) -> dict:
  import re

  import jax
  import jax.numpy as jnp
  from jax import lax

  m, k, n = 12000, 1024, 512
  rng = np.random.default_rng(0)
  a32 = jnp.asarray(rng.standard_normal((m, k), dtype=np.float32))
  w32 = jnp.asarray(rng.standard_normal((k, n), dtype=np.float32))
  g32 = jnp.asarray(rng.standard_normal((m, n), dtype=np.float32))
  a16, w16, g16 = (x.astype(jnp.bfloat16) for x in (a32, w32, g32))
  dims = lambda lc, rc: ((lc, rc), ((), ()))  # noqa: E731
  f32 = jnp.float32
  cases = {
      "f32 x@W": (lambda a, w: lax.dot_general(a, w, dims((1,), (0,))), (a32, w32)),
      "bf16->f32 x@W": (lambda a, w: lax.dot_general(a, w, dims((1,), (0,)),
                                                     preferred_element_type=f32), (a16, w16)),
      "bf16->bf16 x@W": (lambda a, w: lax.dot_general(a, w, dims((1,), (0,))), (a16, w16)),
      "f32 dW=x^T g": (lambda a, g: lax.dot_general(a, g, dims((0,), (0,))), (a32, g32)),
      "bf16->f32 dW=x^T g": (lambda a, g: lax.dot_general(a, g, dims((0,), (0,)),
                                                          preferred_element_type=f32),
                             (a16, g16)),
      "bf16->f32 dW 3-d einsum": (
          lambda a, g: jnp.einsum("btd,btj->dj", a.reshape(B, T, k), g.reshape(B, T, n),
                                  preferred_element_type=f32), (a16, g16)),
      "bf16->f32 dx=g W^T": (lambda g, w: lax.dot_general(g, w, dims((1,), (1,)),
                                                          preferred_element_type=f32),
                             (g16, w16)),
  }
  out = {}
  for name, (fn, args) in cases.items():
    try:
      jf = jax.jit(fn)
      txt = jf.lower(*args).compile().as_text()
      entry = txt.split("ENTRY")[-1]
      libs = sorted(set(re.findall(r'"kind":"__([a-z]+)_fusion"', entry)))
      if re.search(r"\} dot\(", entry):
        libs.append("xla-dot")
      jax.block_until_ready(jf(*args))
      ts = []
      for _ in range(spec["reps"]):
        t0 = time.perf_counter()
        jax.block_until_ready(jf(*args))
        ts.append(time.perf_counter() - t0)
      ms = float(np.median(ts) * 1e3)
      out[name] = {"ms": round(ms, 2), "gflops": round(2 * m * k * n / ms / 1e6, 1),
                   "gflops_best": round(2 * m * k * n / min(ts) / 1e9, 1),
                   "lib": "+".join(libs) or "?"}
    except Exception as e:  # noqa: BLE001 - a flag may break a case
      out[name] = {"error": str(e).splitlines()[0][:200]}
  return out


def torch_probe_worker(spec: dict) -> dict:
  import torch
  torch.set_num_threads(2)
  m, k, n = 12000, 1024, 512
  a, w = torch.randn(m, k), torch.randn(k, n)
  out = {}
  for name, dt in (("f32 x@W", torch.float32), ("bf16 x@W", torch.bfloat16)):
    x, y = a.to(dt), w.to(dt)
    for _ in range(3):
      x @ y
    ts = []
    for _ in range(spec["reps"]):
      t0 = time.perf_counter()
      x @ y
      ts.append(time.perf_counter() - t0)
    ms = float(np.median(ts) * 1e3)
    out[name] = {"ms": round(ms, 2), "gflops": round(2 * m * k * n / ms / 1e6, 1),
                 "gflops_best": round(2 * m * k * n / min(ts) / 1e9, 1)}
  return out


# =============================================================================
# Driver.
# =============================================================================
def _fmt(x, spec="{:.0f}"):
  return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else spec.format(x)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="fewer steps / reps")
  p.add_argument("--json", default=None, help="output path (default "
                 "benchmarks/results/train_step_<hostname>.json)")
  p.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of "
                 + ", ".join(ROWS))
  p.add_argument("--steps", type=int, default=None, help="timed steps per row")
  p.add_argument("--warmup", type=int, default=None)
  p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                 help="before each measurement wait up to this long for the "
                 "1-minute load average to drop to --quiet-load")
  p.add_argument("--quiet-load", type=float, default=1.2)
  p.add_argument("--retries", type=int, default=2, help="re-run a row whose "
                 "numpy matmul check (before/after its timed steps) fell below "
                 "--min-calib x the best seen (another process was running)")
  p.add_argument("--min-calib", type=float, default=0.8)
  p.add_argument("--no-probe", action="store_true")
  p.add_argument("--no-sanity", action="store_true")
  p.add_argument("--sanity-steps", type=int, default=20)
  harness.add_worker_args(p)
  args = p.parse_args(argv)

  if args.worker:
    return harness.serve_worker(args, {"jax": jax_worker, "torch": torch_worker,
                                       "probe": probe_worker,
                                       "torch_probe": torch_probe_worker})

  steps = args.steps or (5 if args.quick else 20)
  warmup = args.warmup or (1 if args.quick else 3)
  rows = [r.strip() for r in args.rows.split(",") if r.strip()]
  unknown = [r for r in rows if r not in ROWS]
  if unknown:
    p.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
  torch_ok = have_torch()
  flops = analytic_flops()
  report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": socket.gethostname(),
            "command": "python -m benchmarks.train_step " + " ".join(argv or sys.argv[1:]),
            "cpu": harness.cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "shape": dict(B=B, T=T, D=D, classes=C, clusters=K, embed=E, N=B * T),
            "flops": flops, "steps": steps, "warmup": warmup, "rows": {},
            "torch_available": torch_ok, "bf16_on_this_cpu": BF16_FINDING}
  print(f"Analytic FLOPs per step: {flops['total'] / 1e9:.1f} GFLOP "
        f"(forward {flops['forward'] / 1e9:.1f}, backward {flops['backward'] / 1e9:.1f}; "
        f"{flops['if_input_grads_were_computed'] / 1e9:.1f} if the encoders' input "
        "gradients were also formed)", flush=True)

  with tempfile.TemporaryDirectory() as tmp:
    init_path = os.path.join(tmp, "init_params.npz")
    if torch_ok and any(ROWS[r]["kind"] == "torch" for r in rows) or not args.no_sanity:
      got = run_worker({"kind": "jax", "dtype": "float32", "sinkhorn": "released",
                        "export_init": init_path})
      if "error" in got:
        print("could not export case_jax's initial parameters:", got["error"])
        init_path = None

    ref_calib = [harness.calib_gflops()]
    report["calib_gflops_at_start"] = ref_calib[0]
    for name in rows:
      spec = dict(ROWS[name], steps=steps, warmup=warmup)
      if spec["kind"] == "torch":
        if not torch_ok:
          report["rows"][name] = {"label": spec["label"], "skipped": "torch not installed"}
          print(f"{spec['label']:40s} skipped (torch not installed)")
          continue
        spec["init"] = init_path
      rejected = []
      for attempt in range(args.retries + 1):
        load_before = (harness.wait_quiet(args.wait_quiet, args.quiet_load) if args.wait_quiet
                       else harness.loadavg())
        res = run_worker(spec)
        res.update(label=spec["label"], load_before=load_before, load_after=harness.loadavg())
        if "error" in res:
          break
        calib = min(res["calib_gflops_before"], res["calib_gflops_after"])
        ref_calib[0] = max(ref_calib[0], res["calib_gflops_before"], res["calib_gflops_after"])
        if calib >= args.min_calib * ref_calib[0] or attempt == args.retries:
          res["contended"] = calib < args.min_calib * ref_calib[0]
          break
        rejected.append({k: res.get(k) for k in ("load_before", "load_after",
                                                 "calib_gflops_before",
                                                 "calib_gflops_after", "step_times_s")})
        print(f"{spec['label']:40s} contended (numpy matmul {calib:.0f} < "
              f"{args.min_calib:.2f} x {ref_calib[0]:.0f} GFLOP/s): again", flush=True)
      res["rejected_attempts"] = rejected
      if "step_times_s" in res:
        res["ms_per_step"] = float(np.median(res["step_times_s"]) * 1e3)
        res["ms_min"] = float(np.min(res["step_times_s"]) * 1e3)
        res["ms_max"] = float(np.max(res["step_times_s"]) * 1e3)
        res["gflops_per_s"] = flops["total"] / (res["ms_per_step"] * 1e6)
      report["rows"][name] = res
      print(f"{spec['label']:40s} " + (res.get("error", "")[:300] or
            f"{res['ms_per_step']:8.1f} ms/step  compile {_fmt(res.get('compile_s'), '{:.1f}')} s"
            f"  peak RSS {res['peak_rss_mb']:.0f} MB  (load {load_before[0]:.2f}, "
            f"numpy f32 matmul {res['calib_gflops_before']:.0f}/"
            f"{res['calib_gflops_after']:.0f} GFLOP/s before/after)"),
            flush=True)

    if not args.no_sanity:
      report["sanity"] = {}
      for name in SANITY_ROWS:
        spec = dict(ROWS[name], mode="traj", steps=args.sanity_steps)
        if spec["kind"] == "torch":
          if not torch_ok:
            continue
          spec["init"] = init_path
        res = run_worker(spec)
        report["sanity"][name] = res
      _sanity_summary(report)

    if not args.no_probe:
      reps = 5 if args.quick else 20
      report["matmul_probe"] = {}
      for label, flags in PROBE_SETTINGS:
        load_before = harness.wait_quiet(args.wait_quiet, args.quiet_load) if args.wait_quiet else harness.loadavg()
        res = run_worker({"kind": "probe", "reps": reps}, {"XLA_FLAGS": flags}, timeout=900)
        report["matmul_probe"][label] = {"XLA_FLAGS": flags, "load_before": load_before,
                                         "results": res}
      if torch_ok:
        report["matmul_probe"]["torch (oneDNN)"] = {
            "results": run_worker({"kind": "torch_probe", "reps": reps})}
      _print_probe(report["matmul_probe"])

  _faithfulness(report)
  _print_table(report)
  print()
  harness.write_json(harness.results_path("train_step", args.json), report)
  return 0


def _faithfulness(report):
  """First-step loss terms of case_jax f32 vs torch f32 from the same init."""
  rows = report["rows"]
  a, b = rows.get("jax_f32", {}), rows.get("torch_f32", {})
  if "first_step" in a and "first_step" in b and b.get("init_from_case_jax"):
    diff = {k: abs(a["first_step"][k] - b["first_step"][k]) for k in TERMS}
    report["faithfulness_first_step"] = {"case_jax": a["first_step"],
                                         "torch": b["first_step"], "abs_diff": diff}
    print("\nFirst step, same batch and same initial parameters (case_jax f32 vs torch f32):")
    for k in TERMS:
      print(f"  {k:5s} {a['first_step'][k]:.6f}  {b['first_step'][k]:.6f}  "
            f"|diff| {diff[k]:.1e}")


def _sanity_summary(report):
  s = report["sanity"]
  print(f"\nTraining sanity: {len(next(iter(s.values())).get('trajectory', []))} steps "
        "on distinct batches from the same initial parameters")
  base = s.get("jax_f32", {}).get("trajectory")
  for name, res in s.items():
    if "trajectory" not in res:
      print(f"  {name:14s} {res.get('error', '?')[:200]}")
      continue
    tr = res["trajectory"]
    line = f"  {name:14s} step1 loss {tr[0]['loss']:.5f}  last loss {tr[-1]['loss']:.5f}"
    if base and name != "jax_f32":
      rel = [abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(tr, base)]
      line += f"  max |rel diff| vs case_jax f32 {max(rel):.1e} (last {rel[-1]:.1e})"
      res["max_rel_loss_diff_vs_jax_f32"] = max(rel)
      res["last_rel_loss_diff_vs_jax_f32"] = rel[-1]
    print(line)


def _print_probe(probe):
  print("\nMatmul probe (12000x1024 @ 1024x512 and its backward shapes), GFLOP/s median/best "
        "[library that ran it]:")
  names = None
  for label, entry in probe.items():
    res = entry["results"]
    if "error" in res:
      print(f"  {label:36s} {res['error'][:200]}")
      continue
    names = names or list(res)
    cells = []
    for name, r in res.items():
      cells.append(f"{name}: " + (f"{r['gflops']:.0f}/{r['gflops_best']:.0f} "
                                  f"[{r.get('lib', 'oneDNN')}]"
                                  if "gflops" in r else "ERR " + r.get("error", "")[:80]))
    print(f"  {label:36s} " + "; ".join(cells))


def _print_table(report):
  rows = report["rows"]
  ref = rows.get("torch_f32", {}).get("ms_per_step")
  print("\n| configuration | compile s | ms/step | GFLOP/s | peak RSS MB | vs torch f32 "
        "| load 1m / numpy matmul GFLOP/s |")
  print("|---|---|---|---|---|---|---|")
  for res in rows.values():
    if "ms_per_step" not in res:
      print(f"| {res['label']} | {res.get('skipped') or res.get('error', '?')[:80]} ||||||")
      continue
    speed = f"{ref / res['ms_per_step']:.2f}x" if ref else "-"
    print(f"| {res['label']} | {_fmt(res.get('compile_s'), '{:.1f}')} | "
          f"{res['ms_per_step']:.0f} | {res['gflops_per_s']:.0f} | {res['peak_rss_mb']:.0f} | "
          f"{speed} | {res['load_before'][0]:.2f} / {res['calib_gflops_before']:.0f} |")
  f = report["flops"]
  print(f"\nGFLOP/s = {f['total'] / 1e9:.1f} GFLOP (analytic, forward + backward) / median "
        f"step time; load average before/after each row is in the JSON.")


if __name__ == "__main__":
  sys.exit(main())
