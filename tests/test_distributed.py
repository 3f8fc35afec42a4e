"""A real multi-process run (issue 6, section 2): two processes on loopback,
``jax.distributed.initialize`` with CPU (gloo) collectives, each feeding only
its own rows of every global batch, match the single-process result.

The worker is this file run as a script (``python tests/test_distributed.py
--worker OUT``), started through launch/local_multiprocess.py.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 3
LOCAL_DEVICES = 2     # per process: 2 processes x 2 = 4 global devices


def tiny_config():
  from case_jax import defaults
  c = defaults.base_config()
  c.data.dataset = "synthetic"
  c.data.num_segments = 16
  c.model.embed_dim = 16
  c.model.num_clusters = 6
  c.batch_size = 8
  return c


def random_batches(n, b=8, t=16, d=12, c=5, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    labels = np.zeros((b, c), np.float32)
    labels[np.arange(b), rng.integers(0, c, b)] = 1
    labels[0, (np.argmax(labels[0]) + 1) % c] = 1
    out.append({"rgb": rng.normal(size=(b, t, d)).astype(np.float32),
                "flow": rng.normal(size=(b, t, d)).astype(np.float32),
                "labels": labels,
                "fg_mask": (rng.uniform(size=(b, t)) < 0.3).astype(np.float32)})
  return out


def setup(cfg, d=12, c=5):
  from case_jax import model as model_lib, train
  model = model_lib.from_config(cfg.model, c)
  tx = train.make_optimizer(cfg.optim)
  return model, tx, train.create_train_state(cfg, model, tx, rgb_dim=d, flow_dim=d)


def flat(tree):
  import jax
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def worker(out_path, how):
  """One process of the multi-process run (the env carries CASE_* settings)."""
  from case_jax import distributed as dist
  assert dist.maybe_initialize(), "CASE_* distributed settings missing"
  import jax
  from case_jax import placement, train
  assert jax.process_count() == 2
  cfg = tiny_config()
  model, tx, state = setup(cfg)
  devices = jax.devices()                      # global, process-major
  step = train.parallel_step(cfg, devices, how)
  rstate = placement.replicate_global(state, devices)
  losses = []
  for batch in random_batches(NUM_STEPS):      # same global batches everywhere
    rstate, metrics = step(rstate, placement.shard_global_batch(batch, devices))
    losses.append(float(placement.first_replica(metrics)["loss"]))  # sync each step
  final = placement.first_replica(rstate)
  if jax.process_index() == 0:
    np.savez(out_path, losses=np.array(losses), **flat(final))
  print(f"process {jax.process_index()} done: losses {losses}", flush=True)


def single_process(devices, how):
  from case_jax import placement, train
  cfg = tiny_config()
  model, tx, state = setup(cfg)
  step = train.parallel_step(cfg, devices, how)
  rstate = placement.replicate(state, devices)
  losses = []
  for batch in random_batches(NUM_STEPS):
    rstate, metrics = step(rstate, placement.shard_batch(batch, devices))
    losses.append(float(np.asarray(metrics["loss"])[0]))
  return np.array(losses), flat(placement.unreplicate(rstate))


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["shard_map", "pmap"])
def test_two_processes_match_single_process(tmp_path, how):
  import jax
  out = str(tmp_path / "multi.npz")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={LOCAL_DEVICES}",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  cmd = [sys.executable, os.path.join(REPO, "launch", "local_multiprocess.py"),
         "--num-processes=2", f"--port={_free_port()}", "--timeout=150", "--",
         sys.executable, os.path.abspath(__file__), "--worker", out, how]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=200)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  assert "process 1 done" in proc.stdout + proc.stderr
  multi = dict(np.load(out))

  devices = jax.local_devices()[:2 * LOCAL_DEVICES]
  if len(devices) < 2 * LOCAL_DEVICES:
    devices = jax.local_devices()[:1]
  losses, params = single_process(devices, how)
  one_losses, _ = single_process(jax.local_devices()[:1], how)
  np.testing.assert_allclose(multi.pop("losses"), losses, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(losses, one_losses, atol=1e-5, rtol=1e-5)
  assert sorted(multi) == sorted(params)
  for k in params:
    np.testing.assert_allclose(multi[k], params[k], atol=1e-5, rtol=1e-5,
                               err_msg=k)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
  sys.path.insert(0, REPO)
  worker(sys.argv[2], sys.argv[3])


# =============================================================================
# The training loop itself, two processes (train.train_and_evaluate multi-process path).
# =============================================================================
TRAIN_FLAGS = ["--config=configs/synthetic.py",
               "--config.data.synthetic.num_train=16",
               "--config.data.synthetic.num_test=16",
               "--config.data.synthetic.feature_dim=8",
               "--config.data.num_segments=16", "--config.model.embed_dim=16",
               "--config.batch_size=8", "--config.num_steps=6",
               "--config.log_every=1", "--config.checkpoint_every=3",
               "--config.eval_every=0"]


def _final_state(workdir):
  from case_jax import defaults, runs
  cfg = defaults.load_config("synthetic")
  cfg.data.num_segments = 16
  cfg.model.embed_dim = 16
  return runs.load_trained(cfg, workdir)[1]


@pytest.mark.slow
def test_two_process_preemption_resumes_the_identical_trajectory(tmp_path):
  """A full training run over 2 processes x 2 devices (each host reading only
  its rows): SIGTERM to the launcher reaches both processes; they agree on
  one step, checkpoint it and exit 75; relaunching resumes and ends where an
  uninterrupted single-process run on 4 devices ends (one run proves both
  the resume and the multi-process = single-process equality)."""
  import signal
  import time
  import jax
  from case_jax import checkpoint as ckpt_lib
  steps = 30
  flags = [f for f in TRAIN_FLAGS if not f.startswith(("--config.num_steps",
                                                       "--config.checkpoint_every"))]
  flags += [f"--config.num_steps={steps}", "--config.checkpoint_every=100000"]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={LOCAL_DEVICES}",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))

  def launch(workdir):
    return [sys.executable, os.path.join(REPO, "launch", "local_multiprocess.py"),
            "--num-processes=2", f"--port={_free_port()}", "--timeout=200", "--",
            sys.executable, "-m", "case_jax.main", *flags,
            f"--workdir={workdir}"]

  a, b = str(tmp_path / "preempted"), str(tmp_path / "single")
  log = os.path.join(a, "metrics.jsonl")
  proc = subprocess.Popen(launch(a), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  try:
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not (
        os.path.exists(log) and sum(1 for _ in open(log)) >= 5):
      time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be signalled"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == ckpt_lib.PREEMPTED_EXIT_CODE, out[-5000:]
  assert out.count("Preempted at step") == 2, out[-5000:]
  saved = ckpt_lib.Checkpointer(os.path.join(a, "checkpoints")).all_steps()
  assert len(saved) == 1 and 5 <= saved[0] < steps, saved
  assert f"[0] Preempted at step {saved[0]}" in out and \
      f"[1] Preempted at step {saved[0]}" in out

  done = subprocess.run(launch(a), cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=260)
  assert done.returncode == 0, done.stdout[-5000:]
  assert "Rank 1 is connected" in done.stdout  # really two gloo-connected processes
  env1 = dict(env, XLA_FLAGS=f"--xla_force_host_platform_device_count={2 * LOCAL_DEVICES}")
  single = subprocess.run([sys.executable, "-m", "case_jax.main", *flags,
                           f"--workdir={b}"], cwd=REPO, env=env1,
                          capture_output=True, text=True, timeout=260)
  assert single.returncode == 0, single.stderr[-3000:]
  sa, sb = _final_state(a), _final_state(b)
  assert int(sa.step) == int(sb.step) == steps
  for x, y in zip(jax.tree.leaves((sa.params, sa.opt_state, sa.q_r)),
                  jax.tree.leaves((sb.params, sb.opt_state, sb.q_r))):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=1e-5)
  # One metrics log (process 0), each step once across the preemption.
  steps_logged = [json.loads(l)["step"] for l in open(log) if '"loss"' in l]
  assert steps_logged == list(range(1, steps + 1))
