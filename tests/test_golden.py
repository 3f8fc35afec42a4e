"""Golden results of short fixed runs, recorded before the run layer was
refactored (issue #11) and required to stay the same after it.

Everything goes through the command line (``python -m case_jax.main``), the
one interface the refactor must not change, and the checkpoints are read
with Orbax directly, so the test does not depend on how the run layer is
organised.  Recorded on the 2-core CI VM from commit daa6074 (before the
refactor); the tolerances only absorb a different CPU's float rounding.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The data and config before issue #14 (configs/synthetic.py:context_cheat):
# the recorded values stay those of that setting.
COMMON = ["--config=configs/synthetic.py:context_cheat", "--config.num_steps=80",
          "--config.eval_every=40", "--config.checkpoint_every=40",
          "--config.log_every=10", "--config.eval.plots=False",
          "--config.data.synthetic.num_train=32",
          "--config.data.synthetic.num_test=12",
          "--config.data.synthetic.feature_dim=16",
          "--config.data.num_segments=64"]

# Recorded values (see the module docstring): python tests/test_golden.py DIR
GOLDEN_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "golden_runs.json")


def _main(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)  # one device
  proc = subprocess.run([sys.executable, "-m", "case_jax.main", *COMMON, *args],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout


def _checkpoint(workdir):
  """Parameter checksums and Q^R of the latest checkpoint, read with Orbax."""
  import orbax.checkpoint as ocp
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  path = os.path.join(ckpt_dir, str(steps[-1]), "state")
  tree = ocp.StandardCheckpointer().restore(path)
  leaves = [np.asarray(x, np.float64)
            for x in __import__("jax").tree.leaves(tree["params"])]
  return {"step": int(np.asarray(tree["step"])),
          "param_sum": float(sum(x.sum() for x in leaves)),
          "param_abs": float(sum(np.abs(x).sum() for x in leaves)),
          "param_sq": float(sum((x * x).sum() for x in leaves)),
          "q_r": np.asarray(tree["q_r"], np.float64).tolist()}


def _eval_metrics(eval_dir):
  m = json.load(open(os.path.join(eval_dir, "metrics.json")))
  return {"step": m["step"], "average_map": m["average_map"], "map": m["map"],
          "test_fb_acc": m["test_fb_acc"], "test_H_pc": m["test_H_pc"]}


def _last_loss(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r["loss"] for r in rows if "loss" in r]


def measure(tmp):
  out = {}
  single = os.path.join(tmp, "single")
  _main(f"--workdir={single}")
  out["single"] = {**_checkpoint(single), "eval": _eval_metrics(
      os.path.join(single, "eval")), "loss": _last_loss(single)}
  os.rename(os.path.join(single, "eval"), os.path.join(single, "eval_train"))
  _main(f"--workdir={single}", "--mode=evaluate")
  out["evaluate"] = _eval_metrics(os.path.join(single, "eval"))
  seeds = os.path.join(tmp, "seeds")
  _main(f"--workdir={seeds}", "--config.seeds=0,1", "--config.seeds_mode=vmap",
        f"--config.data.root={os.path.join(single, 'synthetic_data')}")
  for s in (0, 1):
    d = os.path.join(seeds, f"seed_{s}")
    out[f"seed_{s}"] = {**_checkpoint(d), "eval": _eval_metrics(
        os.path.join(d, "eval")), "loss": _last_loss(d)}
  out["seeds_json"] = json.load(open(os.path.join(seeds, "seeds.json")))["summary"]
  return out


def _close(a, b, path=""):
  if isinstance(a, dict):
    assert set(a) == set(b), path
    for k in a:
      _close(a[k], b[k], f"{path}.{k}")
  elif isinstance(a, (list, tuple)):
    assert len(a) == len(b), path
    for i, (x, y) in enumerate(zip(a, b)):
      _close(x, y, f"{path}[{i}]")
  elif isinstance(a, float):
    assert b == pytest.approx(a, rel=1e-5, abs=1e-7), path
  else:
    assert a == b, path


@pytest.mark.slow
def test_golden_runs_are_unchanged(tmp_path):
  golden = json.load(open(GOLDEN_PATH))
  got = json.loads(json.dumps(measure(str(tmp_path))))  # tuples -> lists
  _close(golden, got)
  # The re-evaluation of the final checkpoint equals training's own.
  _close(got["single"]["eval"], got["evaluate"])


if __name__ == "__main__":  # python tests/test_golden.py DIR: print the values
  print(json.dumps(measure(sys.argv[1]), indent=1))
