"""Bad input is refused before training (issue #12 §2, §3): each case builds
a tiny synthetic dataset, damages it, and checks that opening it as a run
does (train split, then the evaluator's test split) refuses with the file /
video / label named and the fix -- or, for a dataset without a test split,
trains without evaluation.  A few cases go through ``python -m
case_jax.main`` as a user would (tests/cli_check.py)."""
import json
import os

import numpy as np
import pytest

from case_jax import datasets, defaults, errors
from case_jax import evaluator as evaluator_lib
from case_jax.data import (LayoutError, NoSplit, config_classes,
                           write_synthetic_thumos)
from case_jax.data.thumos_layout import feature_path, gt_path, split_path
from tests.cli_check import assert_clean_refusal, run_module
from tests.conftest import SHARED_DATA

TINY = dict(num_train=6, num_test=3, num_classes=3, feature_dim=8, seed=0)
FLAGS = ["--config=configs/synthetic.py", "--config.num_steps=2",
         "--config.eval_every=2", "--config.checkpoint_every=2",
         "--config.log_every=1", "--config.eval.plots=False",
         "--config.data.num_segments=16", "--config.batch_size=4"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
  root = tmp_path_factory.mktemp("pristine") / "data"
  write_synthetic_thumos(root, **TINY)
  return root


@pytest.fixture
def root(pristine, tmp_path):
  import shutil
  dst = tmp_path / "data"
  shutil.copytree(pristine, dst)
  return dst


def ids(root, split):
  return open(split_path(root, split)).read().split()


def config(root, **data):
  cfg = defaults.load_config("synthetic")
  cfg.data.root = str(root)
  for k, v in data.items():
    cfg.data[k] = v
  return cfg


def start(cfg, root, stream=None):
  """What training does before its first step: open the train split, then
  the test split through the evaluator (required=False)."""
  import io
  stream = stream or io.StringIO()
  train = datasets.open_split(cfg, str(root), "train", stream=stream)
  ev = evaluator_lib.Evaluator.from_config(cfg, str(root), train.classes,
                                           stream=stream, required=False)
  return train, ev, stream


# --- the damage: each returns the names the refusal must hold -------------
def _edit_array(root, split, stream, k, fn):
  vid = ids(root, split)[k]
  path = feature_path(root, split, stream, vid)
  np.save(path, fn(np.load(path)))
  return vid, path


def nan_train(root):
  vid, path = _edit_array(root, "train", "rgb", 1,
                          lambda x: np.where(np.arange(len(x))[:, None] == 2,
                                             np.nan, x).astype(np.float32))
  return [path, "NaN", vid, "data.on_error=skip"]


def inf_test(root):
  vid, path = _edit_array(root, "test", "flow", 0,
                          lambda x: np.full_like(x, np.inf))
  return [path, "NaN or inf", vid]


def truncated_npy(root):
  path = feature_path(root, "train", "flow", ids(root, "train")[2])
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])
  return [path, "truncated", "re-extract"]


def zero_byte_npy(root):
  path = feature_path(root, "test", "rgb", ids(root, "test")[1])
  open(path, "wb").close()
  return [path, "truncated"]


def empty_video(root):
  vid, path = _edit_array(root, "train", "rgb", 0, lambda x: x[:0])
  _edit_array(root, "train", "flow", 0, lambda x: x[:0])
  return [path, "n_snippets >= 1"]


def odd_width(root):
  vid, path = _edit_array(root, "train", "rgb", 3,
                          lambda x: np.concatenate([x, x[:, :1]], 1))
  return [path, f"odd videos: {vid}", "regenerate"]


def length_mismatch(root):
  vid, _ = _edit_array(root, "train", "flow", 4, lambda x: x[:-1])
  return [vid, "rgb and flow", "one row per snippet"]


def gt_syntax(root):
  path = gt_path(root)
  text = open(path).read()
  open(path, "w").write(text.replace('"database": {', '"database": {,', 1))
  return [f"{path}:1:", "line 1, column", "not valid JSON"]


def gt_not_utf8(root):
  path = gt_path(root)
  open(path, "ab").write(b"\xff\xfe")
  return [path, "UTF-8"]


def split_id_absent_from_gt(root):
  path = split_path(root, "train")
  open(path, "a").write("video_validation_9999\n")
  return [path, gt_path(root), "video_validation_9999", "remove the lines"]


def _relabel(root, split, k, new):
  path = gt_path(root)
  gt = json.load(open(path))
  vid = ids(root, split)[k]
  for a in gt["database"][vid]["annotations"]:
    a["label"] = new
  json.dump(gt, open(path, "w"))
  return vid, path


def unknown_test_label(root):
  vid, path = _relabel(root, "test", 1, "Action99")
  return ["'Action99'", vid, path, "not in the class list", "fix the label"]


def typo_label(root):
  vid, path = _relabel(root, "train", 2, "Action 01")
  return ["'Action 01'", vid, path, "fix the label"]


def missing_test_feature(root):
  path = feature_path(root, "test", "flow", ids(root, "test")[2])
  os.remove(path)
  return [path, "remove the ids"]


def empty_test_split(root):
  path = split_path(root, "test")
  open(path, "w").close()
  return [path, "no video ids"]


CASES = [nan_train, inf_test, truncated_npy, zero_byte_npy, empty_video,
         odd_width, length_mismatch, gt_syntax, gt_not_utf8,
         split_id_absent_from_gt, unknown_test_label, typo_label,
         missing_test_feature, empty_test_split]


@pytest.mark.parametrize("damage", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_refused_before_training(root, damage):
  names = damage(root)
  with pytest.raises(LayoutError) as info:
    start(config(root), root)
  message = str(info.value)
  for name in names:
    assert str(name) in message, (name, message)
  assert not isinstance(info.value, NoSplit)    # broken, not absent


def test_a_dataset_without_test_split_trains_without_evaluation(root):
  os.remove(split_path(root, "test"))
  train, ev, out = start(config(root), root)
  assert ev is None and len(train) == TINY["num_train"]
  assert "split_test.txt" in out.getvalue()
  assert "training without evaluation" in out.getvalue()
  with pytest.raises(NoSplit):                  # --mode=evaluate needs it
    evaluator_lib.Evaluator.from_config(config(root), str(root), train.classes)


# --- class lists ---------------------------------------------------------
def test_class_list_file_and_refusals(root, tmp_path):
  names = ("Action00", "Action01", "Action02")
  listed = tmp_path / "classes.txt"
  listed.write_text("\n".join(reversed(names)) + "\n\n")
  train, ev, _ = start(config(root, classes=str(listed)), root)
  assert train.classes == ev.test_set.classes == tuple(reversed(names))
  with pytest.raises(errors.MissingFile, match="data.classes=.*nope.txt"):
    start(config(root, classes=str(tmp_path / "nope.txt")), root)
  listed.write_text("Action00\nAction00\n")
  with pytest.raises(errors.ConfigError, match="'Action00' is listed twice"):
    start(config(root, classes=str(listed)), root)
  # A list without a class the data use: the label, video and file named.
  with pytest.raises(LayoutError, match="'Action02' of video .*gt.json"):
    start(config(root, classes=names[:2]), root)


def test_class_rules(root, tmp_path):
  assert config_classes(None, "synthetic", str(root)) == (
      "Action00", "Action01", "Action02")          # the generator's list
  assert config_classes("", "anet13", str(root)) is None  # training labels
  assert config_classes(["a", "b"], "thumos14", str(root)) == ("a", "b")
  with pytest.raises(errors.MissingFile, match="synthetic.json"):
    config_classes(None, "synthetic", str(tmp_path))
  with pytest.raises(errors.ConfigError, match="data.classes"):
    config_classes(3, "anet12", str(root))


def test_derived_classes_come_from_the_training_split(root):
  """ActivityNet rule: a label only the test split has is refused, not
  made into a class without training data."""
  cfg = config(root)
  cfg.data.dataset = "anet13"
  vid, _ = _relabel(root, "test", 0, "OnlyInTest")
  train = datasets.open_split(cfg, str(root), "train")
  assert "OnlyInTest" not in train.classes
  with pytest.raises(LayoutError, match=f"'OnlyInTest' of video {vid}"):
    evaluator_lib.Evaluator.from_config(cfg, str(root), train.classes)


# --- the skip path ---------------------------------------------------------
def test_skip_leaves_out_exactly_the_bad_videos_and_lists_them(root):
  train_ids, test_ids = ids(root, "train"), ids(root, "test")
  nan_train(root)            # train video 1
  truncated_npy(root)        # train video 2
  typo_label(root)           # train video 2 as well
  length_mismatch(root)      # train video 4
  split_id_absent_from_gt(root)
  inf_test(root)             # test video 0
  with pytest.warns(Warning):
    train, ev, out = start(config(root, on_error="skip"), root)
  bad_train = [train_ids[1], train_ids[2], train_ids[4], "video_validation_9999"]
  assert sorted(v for v, _ in train.skipped) == sorted(bad_train)
  assert train.video_ids == tuple(v for v in train_ids if v not in bad_train)
  assert [v for v, _ in ev.test_set.skipped] == [test_ids[0]]
  assert ev.test_set.video_ids == tuple(test_ids[1:])
  for vid in bad_train:
    assert f"skipped train video {vid}:" in out.getvalue()
  assert f"skipped test video {test_ids[0]}: " in out.getvalue()
  for record in train:       # nothing bad is left for the batches
    assert np.isfinite(record.rgb).all() and np.isfinite(record.flow).all()


# --- the verified-file record ---------------------------------------------
def test_verified_files_are_remembered_and_a_changed_file_rechecked(root):
  cfg = config(root)
  start(cfg, root)
  record = root / ".case_jax_verified.json"
  entries = json.load(open(record))["verified"]
  assert len(entries) == TINY["num_train"] + TINY["num_test"]
  # Same size, new values and a new mtime: checked again, and refused.
  vid = ids(root, "train")[0]
  path = feature_path(root, "train", "rgb", vid)
  x = np.load(path)
  x[0, 0] = np.nan
  np.save(path, x)
  st = os.stat(path)
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  with pytest.raises(LayoutError, match=f"{vid}.npy: NaN"):
    start(cfg, root)


def test_verified_record_falls_back_to_the_user_cache(root, tmp_path,
                                                      monkeypatch):
  from case_jax.data import VerifiedFiles
  from case_jax.data.verified import user_cache_file
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  (root / ".case_jax_verified.json").mkdir()    # unwritable in the root
  start(config(root), root)
  fallback = user_cache_file(str(root))
  assert fallback.startswith(str(tmp_path / "cache"))
  assert len(json.load(open(fallback))["verified"]) == 9
  assert VerifiedFiles(str(root)).key("v", ["/no/such/file"]) is None
  # A corrupt record is an empty one, not an error.
  open(fallback, "w").write("{not json")
  start(config(root), root)


# --- as a user runs it ----------------------------------------------------
def test_cli_refuses_nan_before_training(root, tmp_path):
  names = nan_train(root)
  work = tmp_path / "work"
  proc = run_module("case_jax.main", *FLAGS, f"--config.data.root={root}",
                    f"--workdir={work}")
  assert_clean_refusal(proc, names[0], "data.on_error=skip")
  assert not (work / "checkpoints").exists()


def test_cli_refuses_a_broken_test_split(root, tmp_path):
  names = missing_test_feature(root)
  proc = run_module("case_jax.main", *FLAGS, f"--config.data.root={root}",
                    f"--workdir={tmp_path / 'work'}")
  assert_clean_refusal(proc, names[0], "remove the ids")


def test_cli_refuses_a_class_file_that_does_not_exist(root, tmp_path):
  proc = run_module("case_jax.main", *FLAGS, f"--config.data.root={root}",
                    f"--config.data.classes={tmp_path}/classes.txt",
                    f"--workdir={tmp_path / 'work'}")
  assert_clean_refusal(proc, f"{tmp_path}/classes.txt", "one class name per line")


def test_cli_inspect_finds_nan_and_exits_non_zero(root):
  vid = ids(root, "test")[0]
  names = inf_test(root)
  proc = run_module("case_jax.main", "--config=configs/synthetic.py",
                    "--mode=inspect", f"--config.data.root={root}")
  assert proc.returncode == 1, proc.stdout + proc.stderr
  assert "Traceback" not in proc.stdout + proc.stderr
  assert f"bad video {vid}: {names[0]}: NaN or inf" in proc.stdout


def test_cli_without_test_split_trains_and_says_so(root, tmp_path):
  os.remove(split_path(root, "test"))
  work = tmp_path / "work"
  proc = run_module("case_jax.main", *FLAGS, f"--config.data.root={root}",
                    f"--workdir={work}")
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert "training without evaluation" in proc.stdout
  assert not (work / "eval").exists()


# --- THUMOS14: the 20 classes are fixed by its config ----------------------
REAL_GT = os.path.join(SHARED_DATA, "thumos14_acmnet_gt", "gt.json")


def _real_thumos_root(tmp_path, typo=None):
  """Real THUMOS14 annotations, a few videos, tiny random features."""
  gt = json.load(open(REAL_GT))
  db = gt["database"]
  dunk = [v for v, e in sorted(db.items()) if e["subset"] == "validation"
          and any(a["label"] == "BasketballDunk" for a in e["annotations"])]
  train = dunk[:2] + [v for v in sorted(db) if db[v]["subset"] == "validation"
                      and v not in dunk][:2]
  test = [v for v in sorted(db) if db[v]["subset"] == "test"][:2]
  if typo:
    for a in db[dunk[1]]["annotations"]:
      a["label"] = a["label"].replace("BasketballDunk", typo)
  root = tmp_path / "thumos"
  rng = np.random.default_rng(0)
  for split, vids in (("train", train), ("test", test)):
    for v in vids:
      n = int(np.ceil(db[v]["duration"] / 0.64))
      for stream in ("rgb", "flow"):
        path = feature_path(root, split, stream, v)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, rng.normal(size=(n, 8)).astype(np.float32))
    open(split_path(root, split), "w").write("\n".join(vids) + "\n")
  json.dump(gt, open(gt_path(root), "w"))
  return root, dunk[1]


@pytest.mark.skipif(not os.path.exists(REAL_GT), reason="no shared data")
def test_thumos14_classes_are_fixed_and_a_typo_refused(tmp_path):
  from case_jax.data import THUMOS14_CLASSES, read_gt
  from case_jax.data.gt_json import classes_from_gt
  gt = read_gt(REAL_GT)
  train = [v for v, e in gt.items() if e.subset == "validation"]
  assert classes_from_gt(gt, train) == THUMOS14_CLASSES
  assert defaults.load_config("thumos14").data.classes == THUMOS14_CLASSES
  root, vid = _real_thumos_root(tmp_path, typo="Basketball Dunk")
  cfg = defaults.load_config("thumos14")
  cfg.data.root = str(root)
  with pytest.raises(LayoutError, match=f"'Basketball Dunk' of video {vid}"):
    datasets.open_split(cfg, str(root), "train")
  proc = run_module("case_jax.main", "--config=configs/thumos14.py",
                    "--mode=inspect", f"--config.data.root={root}")
  assert proc.returncode == 1, proc.stdout + proc.stderr
  assert "Traceback" not in proc.stdout + proc.stderr
  assert f"bad video {vid}: {root}/gt.json: label 'Basketball Dunk'" \
      in proc.stdout
  assert "no inconsistency found" not in proc.stdout.split("[test]")[0]


def test_value_check_without_a_record(root):
  """data.verified_cache=off: every value read on every open, no record."""
  nan_train(root)
  with pytest.raises(LayoutError, match="NaN or inf"):
    start(config(root, verified_cache="off"), root)
  assert not (root / ".case_jax_verified.json").exists()
  train, _, _ = start(config(root, check_values=False), root)  # headers only
  assert len(train) == TINY["num_train"]
