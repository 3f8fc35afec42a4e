"""Bad input at every entry point (issue #12 §8): a refusal in a few lines
that names the file / video / key / class and the fix, exit status 2 (1 where
absl's UsageError answers), never a traceback; and every --help exits 0 and
mentions each flag.

Entry points that take ``main(argv)`` run in-process (a subprocess that
imports JAX costs ~3 s here); ``python -m case_jax.main`` and one evaluator
run go through a real subprocess (tests/cli_check.py).
"""
import importlib.util
import json
import os
import re
import subprocess

import numpy as np
import pytest

from case_jax import ablations, evaluation
from case_jax.data import prepare, synthetic
from case_jax import extract as extract_cli
from case_jax.tools import ablate, import_torch
from tests.cli_check import REPO, assert_clean_refusal, run_module
from tests.conftest import SHARED_DATA

GT_JSON = os.path.join(SHARED_DATA, "thumos14_acmnet_gt", "gt.json")
TEST_VIDEO = "video_test_0000004"   # in the real gt.json's 'test' subset


def _launcher(name):
  spec = importlib.util.spec_from_file_location(
      f"launch_{name}", os.path.join(REPO, "launch", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


LAUNCHERS = {n: _launcher(n) for n in ("local_multiprocess", "slurm_gpu", "tpu_pod")}

# entry point -> its main(argv); import_torch and ablate take argv[0] = program.
ENTRY = {
    "evaluation": evaluation.main,
    "import_torch": lambda a: import_torch.main(["import_torch", *a]),
    "ablate": lambda a: ablate.main(["ablate", *a]),
    "ablations": ablations.main,
    "prepare": prepare.main,
    "synthetic": synthetic.main,
    "extract": extract_cli.main,
    **{n: m.main for n, m in LAUNCHERS.items()},
}


def call(entry, argv, capsys):
  """ENTRY[entry](argv) as a CompletedProcess (status from return/SystemExit)."""
  capsys.readouterr()
  try:
    rc = ENTRY[entry]([str(a) for a in argv])
  except SystemExit as e:
    rc = e.code
  out, err = capsys.readouterr()
  return subprocess.CompletedProcess(argv, rc or 0, out, err)


# ---------------------------------------------------------------------------
# Files the cases point at.
# ---------------------------------------------------------------------------
def _dets(*rows):
  """{'results': ...} of (video, label, score) rows, segment [1, 2]."""
  results = {}
  for vid, label, score in rows:
    results.setdefault(vid, []).append(
        {"label": label, "score": score, "segment": [1.0, 2.0]})
  return {"version": "VERSION 1.3", "results": results}


@pytest.fixture
def files(tmp_path):
  """name -> path of every bad (and one good) input file."""
  f = {}

  def write(name, text):
    f[name] = str(tmp_path / name)
    with open(f[name], "w") as out:
      out.write(text)
  write("good.json", json.dumps(_dets((TEST_VIDEO, "BaseballPitch", 0.9))))
  write("malformed.json", '{"results": {\n  "v": [\n    {"label": "x",, }\n')
  write("no_results.json", json.dumps({"version": "VERSION 1.3", "detections": {}}))
  write("nan.json", json.dumps(_dets((TEST_VIDEO, "BaseballPitch", float("nan")))))
  write("unknown_class.json", json.dumps(_dets((TEST_VIDEO, "Juggling", 0.5))))
  write("outside.json", json.dumps(_dets((TEST_VIDEO, "BaseballPitch", 0.9),
                                          ("video_test_9999999", "Diving", 0.4))))
  write("garbage.pkl", "definitely not a torch file")
  f["missing"] = str(tmp_path / "nope" / "missing.json")
  f["tmp"] = str(tmp_path)
  os.makedirs(tmp_path / "synthetic_root")
  write("synthetic_root/gt.json", "{}")
  f["synthetic_root"] = str(tmp_path / "synthetic_root")
  return f


MAIN_FLAGS = ["--", "--config=configs/synthetic.py"]

# (id, entry, argv (str.format'ed with the files fixture), expected status,
#  names the message must contain).
CASES = [
    ("eval-missing-gt", "evaluation", ["{missing}", "{good.json}"], 2, ["{missing}"]),
    ("eval-missing-dets", "evaluation", [GT_JSON, "{missing}"], 2, ["{missing}"]),
    ("eval-malformed-json", "evaluation", [GT_JSON, "{malformed.json}"], 2,
     ["{malformed.json}", "line 3 column"]),
    ("eval-no-results-key", "evaluation", [GT_JSON, "{no_results.json}"], 2,
     ["{no_results.json}", "'results'"]),
    ("eval-nan-score", "evaluation", [GT_JSON, "{nan.json}"], 2,
     ["{nan.json}", "NaN", TEST_VIDEO]),
    ("eval-unknown-class", "evaluation", [GT_JSON, "{unknown_class.json}"], 2,
     ["{unknown_class.json}", "'Juggling'"]),
    ("eval-strict-outside", "evaluation", [GT_JSON, "{outside.json}", "--strict"], 2,
     ["{outside.json}", "video_test_9999999", "1 video(s)"]),
    ("eval-json-folder", "evaluation", [GT_JSON, "{good.json}", "--json={missing}"], 2,
     ["{missing}"]),
    ("eval-unknown-subset", "evaluation", [GT_JSON, "{good.json}", "--subset=bogus"],
     2, [GT_JSON, "'bogus'"]),
    ("eval-bad-tiou", "evaluation", [GT_JSON, "{good.json}", "--tiou=0.1:0.7"], 2,
     ["--tiou"]),
    ("extract-missing-videos", "extract", ["--videos={missing}", "--out={tmp}"], 2,
     ["{missing}", "no such video"]),
    ("extract-not-a-video", "extract", ["--videos={malformed.json}", "--out={tmp}",
                                        "--batch_size=1"], 2,
     ["{malformed.json}", "cannot be read as a video"]),
    ("import-missing-model", "import_torch", ["{missing}", "{missing}", "--out={tmp}"],
     2, ["{missing}", "best_model.pkl"]),
    ("import-not-torch", "import_torch", ["{garbage.pkl}", "{missing}", "--out={tmp}"],
     2, ["{garbage.pkl}", "torch"]),
    ("import-no-out", "import_torch", ["{garbage.pkl}", "{missing}"], 2, ["--out"]),
    ("import-unknown-key", "import_torch",
     ["{garbage.pkl}", "{missing}", "--out={tmp}", "--config.model.nokey=3"], 2,
     ["--config.model.nokey", "'model.nokey'"]),
    ("import-missing-config", "import_torch",
     ["{garbage.pkl}", "{missing}", "--out={tmp}", "--config={missing}"], 2,
     ["{missing}"]),
    ("ablate-unknown-table", "ablate", ["--config=configs/synthetic.py", "--table=7"],
     2, ["table '7'", "2, 3, 4, 5, 9, 10"]),
    ("ablate-unknown-row", "ablate",
     ["--config=configs/synthetic.py", "--table=2", "--rows=row9"], 2, ["'row9'"]),
    ("ablate-bad-seeds", "ablate",
     ["--config=configs/synthetic.py", "--table=2", "--seeds=x"], 2, ["--seeds", "'x'"]),
    ("ablate-no-config", "ablate", ["--table=2"], 2, ["--config"]),
    ("ablate-unknown-flag", "ablate",
     ["--config=configs/synthetic.py", "--table=2", "--tabel=3"], 2, ["tabel"]),
    ("ablations-unknown-table", "ablations", ["--table=7"], 2, ["table '7'"]),
    ("prepare-missing-manual-dir", "prepare",
     ["--dataset=thumos14", "--manual_dir={missing}", "--data_dir={tmp}"], 2,
     ["{missing}"]),
    ("prepare-unknown-dataset", "prepare", ["--dataset=kinetics", "--manual_dir=x"], 2,
     ["kinetics"]),
    ("synthetic-zero-classes", "synthetic", ["--root={tmp}/s", "--num-classes=0"], 2,
     ["num_classes"]),
    ("synthetic-root-exists", "synthetic", ["--root={synthetic_root}"], 2,
     ["{synthetic_root}", "--overwrite"]),
    ("synthetic-missing-stats", "synthetic", ["--root={tmp}/s", "--stats={missing}"],
     2, ["{missing}"]),
    ("local-no-command", "local_multiprocess", ["-n", "2"], 2, ["after '--'"]),
    ("local-zero-processes", "local_multiprocess", ["-n", "0", *MAIN_FLAGS], 2,
     ["--num-processes"]),
    ("slurm-workdir-after-dashes", "slurm_gpu",
     ["--workdir={tmp}", "--dry-run", *MAIN_FLAGS, "--workdir=x"], 2, ["--workdir"]),
    ("slurm-no-workdir", "slurm_gpu", ["--dry-run", *MAIN_FLAGS], 2, ["--workdir"]),
    ("tpu-workdir-after-dashes", "tpu_pod",
     ["--name=a", "--zone=z", "--bucket=b", "--run=r", "--dry-run", *MAIN_FLAGS,
      "--workdir=x"], 2, ["--bucket/--run"]),
    ("tpu-no-bucket", "tpu_pod", ["--name=a", "--zone=z", "--run=r", "--dry-run"], 2,
     ["--bucket"]),
]


def _fill(text, files):
  """'{name}' -> files[name] (names hold dots, so not str.format)."""
  return re.sub(r"\{([^{}]+)\}", lambda m: files[m.group(1)], text)


@pytest.mark.parametrize("entry,argv,code,names",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refusal(entry, argv, code, names, files, capsys):
  proc = call(entry, [_fill(a, files) for a in argv], capsys)
  assert_clean_refusal(proc, *(_fill(n, files) for n in names), code=code)


def test_at_least_twenty_refusals():
  assert len(CASES) >= 20


def test_verbose_shows_the_traceback(files, capsys):
  with pytest.raises(Exception, match="no such detections file"):
    evaluation.main([GT_JSON, files["missing"], "--verbose"])


def test_videos_outside_the_gt_are_counted_and_warned_about(files, capsys):
  result = evaluation.main([GT_JSON, files["outside.json"]])
  err = capsys.readouterr().err
  assert result["videos_not_in_gt"] == 1 and result["detections_not_in_gt"] == 1
  assert "warning" in err and "1 video(s)" in err and "video_test_9999999" in err
  # The Python API counts them as false positives, as the official code does.
  api = evaluation.evaluate_detections(GT_JSON, files["outside.json"])
  assert api["videos_not_in_gt"] == 1
  np.testing.assert_array_equal(api["ap"], result["ap"])


def test_the_evaluator_module_refuses_as_a_user_would_see_it(files):
  proc = run_module("case_jax.evaluation", GT_JSON, files["malformed.json"])
  assert_clean_refusal(proc, files["malformed.json"], "line 3 column")


# ---------------------------------------------------------------------------
# python -m case_jax.main: what the run layer already refuses.
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def imported_workdir(tmp_path_factory):
  """A small imported checkpoint (rgb 12, flow 10 features): a workdir that
  --mode=predict can load without training."""
  from test_import_torch import _small_cfg, released_state_dict, write_torch_zip
  tmp = tmp_path_factory.mktemp("imported")
  write_torch_zip(tmp / "m.pkl", released_state_dict())
  np.save(tmp / "q.npy", np.full((_small_cfg().model.num_clusters, 2), 0.5, np.float32))
  import_torch.import_checkpoint(str(tmp / "m.pkl"), str(tmp / "q.npy"),
                                 str(tmp / "work"), _small_cfg(),
                                 classes=[f"c{i}" for i in range(5)])
  cfg = _small_cfg()
  return str(tmp / "work"), [f"--config.model.embed_dim={cfg.model.embed_dim}",
                             f"--config.model.num_clusters={cfg.model.num_clusters}"]


def _main(*args):
  return run_module("case_jax.main", *args)


def test_main_refusals(tmp_path, imported_workdir):
  synthetic_cfg = "--config=configs/synthetic.py"
  thumos = "--config=configs/thumos14.py"
  assert_clean_refusal(_main(thumos, f"--workdir={tmp_path / 'w'}"),
                       "data.root", "--config.data.root")
  nope = tmp_path / "no_data"
  assert_clean_refusal(_main(thumos, f"--workdir={tmp_path / 'w'}",
                             f"--config.data.root={nope}"), str(nope))
  empty = tmp_path / "empty"
  empty.mkdir()
  assert_clean_refusal(_main(synthetic_cfg, f"--workdir={empty}", "--mode=evaluate"),
                       str(empty / "run.json"))
  # Features whose widths differ from the checkpoint's (12 rgb / 10 flow).
  workdir, sizes = imported_workdir
  feats = tmp_path / "feats"
  for stream, dim in (("rgb", 12), ("flow", 7)):
    (feats / stream).mkdir(parents=True)
    np.save(feats / stream / "v1.npy", np.zeros((6, dim), np.float32))
  assert_clean_refusal(_main(thumos, *sizes, f"--workdir={workdir}", "--mode=predict",
                             f"--features={feats}"),
                       str(feats / "flow" / "v1.npy"), "(n, 10)")


# Usage errors of case_jax.main: refused in one line (absl's UsageError would
# print the whole flag help with status 1, and ml_collections would answer an
# unknown --config key with a traceback: config_args.check_config_argv runs
# first).
MAIN_USAGE = [
    ("missing-workdir", ["--config=configs/synthetic.py"], "--workdir"),
    ("predict-without-features", ["--config=configs/synthetic.py",
                                  "--workdir={tmp}", "--mode=predict"], "--features"),
    ("unknown-config-key", ["--config=configs/synthetic.py", "--config.nokey=1",
                            "--workdir={tmp}"], "nokey"),
    ("bad-model-choice", ["--config=configs/synthetic.py:runlocal", "--workdir={tmp}",
                          "--config.model.cluster_encoder=tied",
                          "--config.data.synthetic.num_train=12",
                          "--config.data.synthetic.num_test=3"],
     "model.cluster_encoder"),
]



@pytest.mark.parametrize("args,name", [g[1:] for g in MAIN_USAGE],
                         ids=[g[0] for g in MAIN_USAGE])
def test_main_usage_errors(args, name, tmp_path):
  proc = _main(*(a.replace("{tmp}", str(tmp_path)) for a in args))
  assert_clean_refusal(proc, name)


# ---------------------------------------------------------------------------
# --help everywhere.
# ---------------------------------------------------------------------------
HELP = {
    "evaluation": ["--subset", "--tiou", "--tie-order", "--split", "--json",
                   "--per-class", "--strict", "--verbose"],
    "import_torch": ["best_model.pkl", "cls_gt.npy", "--out", "--classes", "--config",
                     "--config.KEY", "--step", "--overwrite", "--verbose"],
    "ablate": ["--config", "--config.KEY", "--table", "--seeds", "--workdir", "--rows",
               "--verbose"],
    "ablations": ["--table", "--verbose"],
    "prepare": ["--dataset", "--layout", "--manual_dir", "--data_dir", "--classes",
                "--verbose"],
    "synthetic": ["--root", "--seed", "--num-train", "--num-test", "--num-classes",
                  "--feature-dim", "--time-scale", "--max-snippets",
                  "--instance-lengths", "--signal", "--stats",
                  "--overwrite", "--verbose"],
    "extract": ["--videos", "--out", "--streams", "--flow_weights", "--spatial",
                "--batch_size", "--verbose"],
    "local_multiprocess": ["-- <case_jax.main flags>", "--num-processes", "--host",
                           "--port", "--devices-per-process", "--platform",
                           "--timeout", "--dry-run", "--verbose"],
    "slurm_gpu": ["-- <case_jax.main flags>", "--nodes", "--gpus-per-node",
                  "--cpus-per-task", "--partition", "--account", "--time", "--grace",
                  "--job-name", "--workdir", "--repo", "--setup", "--script",
                  "--dry-run", "--verbose"],
    "tpu_pod": ["-- <case_jax.main flags>", "--name", "--zone", "--project",
                "--accelerator", "--runtime-version", "--spot", "--jax-version",
                "--bucket", "--run", "--dry-run", "--verbose"],
}


@pytest.mark.parametrize("entry", sorted(HELP))
def test_help_exits_0_and_describes_every_flag(entry, capsys):
  proc = call(entry, ["--help"], capsys)
  assert proc.returncode == 0, proc.stderr
  for flag in HELP[entry]:
    assert flag in proc.stdout, (entry, flag)


def test_main_help_exits_0_and_describes_every_flag():
  proc = _main("--help")
  assert proc.returncode == 0, proc.stderr
  for flag in ("--config", "--workdir", "--mode", "--features", "--projection",
               "--[no]verbose"):
    assert flag in proc.stdout, flag
