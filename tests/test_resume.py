"""Safe resume and checkpoint repair (issue #12 §4, §5).

A resume with another trained config is refused before any restore (the key,
both values and the flag that allows it); an allowed change is recorded in
config_history.jsonl; a damaged checkpoint is moved aside and its step trained
and saved again; an error exit commits the save in flight; the logs of a
resumed run hold each step once; --mode=evaluate reads the workdir's config.
"""
import glob
import json
import os
import subprocess
import sys
import warnings

import jax
import pytest

from case_jax import (checkpoint as ckpt_lib, defaults, errors,
                      runs, train, workdir)
from cli_check import REPO, assert_clean_refusal, run_module

SMALL = {"data.synthetic.num_train": 16, "data.synthetic.num_test": 6,
         "data.synthetic.num_classes": 4, "data.synthetic.feature_dim": 8,
         "data.num_segments": 16, "model.embed_dim": 16, "model.num_clusters": 4,
         "batch_size": 8, "log_every": 1, "checkpoint_every": 2, "eval_every": 0,
         "eval.plots": False, "num_steps": 4}


def small_config(root, **over):
  cfg = defaults.load_config("synthetic")
  return defaults.set_dotted(cfg, {**SMALL, "data.root": root, **over})


def cli_flags(root, **over):
  return ["--config=configs/synthetic.py",
          *(f"--config.{k}={v}" for k, v in {**SMALL, "data.root": root,
                                              **over}.items())]


def fit(cfg, work):
  return train.train_and_evaluate(cfg, work, devices=jax.devices()[:1],
                                  stream=open(os.devnull, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 4-step run (checkpoints at 2 and 4) and its data root."""
  base = tmp_path_factory.mktemp("resume")
  root, work = str(base / "data"), str(base / "run")
  fit(small_config(root), work)
  return root, work


def copy_run(src, dst):
  import shutil
  shutil.copytree(src, dst)
  return str(dst)


def logged_steps(work, key):
  lines = [json.loads(l) for l in open(os.path.join(work, "metrics.jsonl"))]
  return [l["step"] for l in lines if key in l]


def board_steps(work, tag):
  """The steps of ``tag`` as TensorBoard itself reads the event files
  (its purge of re-run steps applied)."""
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(os.path.join(work, "tensorboard"))
  acc.Reload()
  return [e.step for e in acc.Scalars(tag)]


# =============================================================================
# Refusals, through the command line (exit 2, one message).
# =============================================================================
@pytest.mark.slow
def test_resume_with_another_learning_rate_is_refused(trained, tmp_path):
  root, work = trained
  proc = run_module("case_jax.main", *cli_flags(root, num_steps=6),
                    "--config.optim.learning_rate=0.001", f"--workdir={work}")
  assert_clean_refusal(proc, "optim.learning_rate", "0.0001", "0.001",
                       "--config.allow_config_change=optim.learning_rate")
  assert "Resumed" not in proc.stdout


@pytest.mark.slow
def test_resume_with_another_embed_dim_names_the_config_not_damage(trained):
  root, work = trained
  proc = run_module("case_jax.main", *cli_flags(root, num_steps=6),
                    "--config.model.embed_dim=32", f"--workdir={work}")
  assert_clean_refusal(proc, "model.embed_dim", "16", "32",
                       "--config.allow_config_change=model.embed_dim")
  assert "damaged" not in proc.stderr and "could not be restored" not in proc.stderr
  assert not glob.glob(os.path.join(work, "checkpoints", "*.damaged-*"))


def test_an_allowed_shape_change_is_still_refused_before_restoring(trained, tmp_path):
  root, work = trained
  work = copy_run(work, tmp_path / "run")
  cfg = small_config(root, num_steps=6, **{"model.embed_dim": 32,
                                            "allow_config_change": "model"})
  with pytest.raises(ckpt_lib.IncompatibleCheckpoint, match=r"params\..*checkpoint"):
    fit(cfg, work)
  assert sorted(os.listdir(os.path.join(work, "checkpoints"))) == ["2", "4"]


def test_an_allowed_change_is_appended_to_the_history(trained, tmp_path):
  root, work = trained
  work = copy_run(work, tmp_path / "run")
  cfg = small_config(root, num_steps=6, **{"optim.learning_rate": 1e-3,
                                            "allow_config_change": "optim.learning_rate"})
  with pytest.raises(errors.ConfigError, match="loss.lambda_r"):  # not allowed
    fit(small_config(root, num_steps=6, **{"optim.learning_rate": 1e-3,
                                            "loss.lambda_r": 0.5,
                                            "allow_config_change": "optim"}), work)
  assert int(fit(cfg, work)["state"].step) == 6
  history = [json.loads(l) for l in open(os.path.join(work, "config_history.jsonl"))]
  assert len(history) == 1 and history[0]["step"] == 4
  assert history[0]["changed"]["optim.learning_rate"] == {"from": 1e-4, "to": 1e-3}
  assert history[0]["config"]["optim"]["learning_rate"] == 1e-4
  assert workdir.saved_config(work)["optim"]["learning_rate"] == 1e-3
  # Resuming again with the new config is not refused; the history keeps
  # every earlier config.json, also one that differed in run keys alone.
  fit(small_config(root, num_steps=6, **{"optim.learning_rate": 1e-3}), work)
  history = [json.loads(l) for l in open(os.path.join(work, "config_history.jsonl"))]
  assert len(history) == 2 and list(history[1]["changed"]) == ["allow_config_change"]


# =============================================================================
# Repair, no lost save, each step logged once.
# =============================================================================
def test_a_damaged_checkpoint_is_moved_aside_and_its_step_saved_again(trained, tmp_path):
  root, work = trained
  work = copy_run(work, tmp_path / "run")
  ckpt = os.path.join(work, "checkpoints")
  for path in glob.glob(os.path.join(ckpt, "4", "state", "**", "*"), recursive=True):
    if os.path.isfile(path):
      with open(path, "wb") as f:
        f.write(b"garbage")
  with pytest.warns(RuntimeWarning, match=r"moved aside to .*4\.damaged-"):
    summary = fit(small_config(root), work)
  assert int(summary["state"].step) == 4
  assert ckpt_lib.Checkpointer(ckpt).all_steps() == [2, 4]
  assert len(glob.glob(os.path.join(ckpt, "4.damaged-*"))) == 1
  # The re-run steps 3, 4 replace the logged ones: each step once.
  assert logged_steps(work, "loss") == [1, 2, 3, 4]
  assert board_steps(work, "loss") == [1, 2, 3, 4]
  with warnings.catch_warnings():
    warnings.simplefilter("error", RuntimeWarning)   # nothing damaged now
    m = runs.evaluate(small_config(root), work, stream=open(os.devnull, "w"))
  assert m["step"] == 4


BROKEN_EVALUATION = """
import sys
from case_jax import evaluator, train
from case_jax.data import synthetic
from tests import test_resume
def broken(self, model, state):
  raise RuntimeError("evaluation failed")
evaluator.Evaluator.run = broken
train.train_and_evaluate(test_resume.small_config(sys.argv[1], eval_every=2), sys.argv[2])
"""


@pytest.mark.slow
def test_an_error_exit_commits_the_save_in_flight(trained, tmp_path):
  """The first evaluation (step 2, right after its save started) raises and
  the process ends: the checkpoint of step 2 is committed all the same."""
  root, _ = trained
  work = str(tmp_path / "run")
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.path.join(REPO, "tests"),
             JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-c", BROKEN_EVALUATION, root, work],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1 and "evaluation failed" in proc.stderr, proc.stderr[-2000:]
  assert os.path.exists(os.path.join(work, "checkpoints", "2", "commit_success.txt"))


def test_resumed_logs_hold_each_step_once(trained, tmp_path):
  """A run that logged past its last checkpoint (steps 5, 6 after the save
  at 4) and is resumed from it: metrics.jsonl and TensorBoard keep 1..8 once."""
  from case_jax import tracking
  root, work = trained
  work = copy_run(work, tmp_path / "run")
  with open(os.path.join(work, "metrics.jsonl"), "a") as f:
    f.write('{"step": 5, "loss": 1.0}\n{"step": 6, "loss": 1.0}\n{"step": 7, "lo')
  with tracking.ScalarWriter(os.path.join(work, "tensorboard")) as board:
    for step in (5, 6):
      board.write(step, {"loss": 1.0})
  fit(small_config(root, num_steps=8), work)
  assert logged_steps(work, "loss") == list(range(1, 9))
  assert board_steps(work, "loss") == list(range(1, 9))
  assert logged_steps(work, "mAP") == [4, 8]


# =============================================================================
# --mode=evaluate/predict/plots: the workdir's config.
# =============================================================================
def test_evaluation_config_is_the_workdirs_with_evaluation_overrides(trained):
  root, work = trained
  cfg = workdir.evaluation_config(work)
  assert cfg.model.embed_dim == 16 and cfg.data.synthetic.num_train == 16
  assert cfg.inference.omega is None and isinstance(cfg.eval.tiou_thresholds, tuple)
  cfg.inference.omega = 0.3          # a typed None field round-trips
  given = small_config(root, **{"inference.omega": 0.25, "num_steps": 9})
  cfg = workdir.evaluation_config(work, given, {"inference.omega": 0.25,
                                                "num_steps": 9})
  assert cfg.inference.omega == 0.25 and cfg.num_steps == 9
  with pytest.raises(errors.ConfigError, match=r"labeling\.ddcl: trained True"):
    workdir.evaluation_config(work, small_config(root, **{"labeling.ddcl": False}),
                              {"labeling.ddcl": False})


@pytest.mark.slow
def test_evaluate_without_config_reports_the_final_step(trained):
  root, work = trained
  proc = run_module("case_jax.main", "--mode=evaluate", f"--workdir={work}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "checkpoint step 4" in proc.stdout
  assert json.load(open(os.path.join(work, "eval", "metrics.json")))["step"] == 4
