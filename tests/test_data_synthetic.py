"""Synthetic WTAL generator: format, determinism, statistics, signal model."""
import filecmp
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from case_jax.data import BasnetDataset, write_synthetic_thumos
from case_jax.data import synthetic
from case_jax.data import synthetic_generator as generator

from tests.conftest import SHARED_DATA
REAL_GT = os.path.join(SHARED_DATA, "thumos14_acmnet_gt", "gt.json")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  """Enough videos for statistics, tiny D for speed."""
  path = tmp_path_factory.mktemp("syn")
  write_synthetic_thumos(path, num_train=100, num_test=50,
                         num_classes=NUM_CLASSES, feature_dim=16, seed=7)
  return path


@pytest.fixture(scope="module")
def datasets(root):
  return {s: BasnetDataset(root, s, eager=True) for s in ("train", "test")}


def _masks(rec, margin_s=0.0):
  """(n,) bool: snippet centres inside an instance (widened by margin_s)."""
  t = (np.arange(rec.num_snippets) + 0.5) * rec.seconds_per_snippet
  mask = np.zeros(rec.num_snippets, bool)
  for seg in rec.segments:
    mask |= (t >= seg.start_s - margin_s) & (t <= seg.end_s + margin_s)
  return mask


def _files(path):
  return sorted(os.path.relpath(os.path.join(d, f), path)
                for d, _, fs in os.walk(path) for f in fs)


# ---------------------------------------------------------------------------
# Format.
# ---------------------------------------------------------------------------
def test_gt_json_has_the_real_format(root):
  with open(os.path.join(root, "gt.json")) as f:
    gt = json.load(f)
  assert set(gt) == {"version", "taxonomy", "database"}
  db = gt["database"]
  subsets = [v["subset"] for v in db.values()]
  assert subsets.count("validation") == 100 and subsets.count("test") == 50
  for vid, entry in db.items():
    assert set(entry) == {"subset", "duration", "frames", "annotations"}
    assert vid.startswith({"validation": "video_validation_",
                           "test": "video_test_"}[entry["subset"]])
    assert entry["frames"] == round(entry["duration"] * 25)
    assert entry["annotations"], vid
    for ann in entry["annotations"]:
      start, end = ann["segment"]
      assert isinstance(start, float) and isinstance(end, float)
      assert 0 <= start < end <= entry["duration"]
      assert ann["label"] in synthetic.class_names(NUM_CLASSES)
  for split, subset in (("train", "validation"), ("test", "test")):
    with open(os.path.join(root, f"split_{split}.txt")) as f:
      ids = f.read().split()
    assert ids == [v for v, e in db.items() if e["subset"] == subset]


def test_lengths_respect_options(datasets):
  lengths = np.concatenate([d.lengths for d in datasets.values()])
  assert lengths.min() >= generator.MIN_SNIPPETS
  assert lengths.max() <= 400
  # Real median durations 150 s / 161 s, time_scale 0.5, 0.64 s snippets.
  assert 70 < np.median(lengths) < 190


def test_every_class_in_both_splits(datasets):
  for ds in datasets.values():
    assert np.all(ds.labels().sum(0) >= 5)


# ---------------------------------------------------------------------------
# Determinism.
# ---------------------------------------------------------------------------
def test_same_seed_same_files_other_seed_differs(tmp_path):
  kw = dict(num_train=4, num_test=3, num_classes=3, feature_dim=8,
            max_snippets=60)
  for name, seed in (("a", 1), ("b", 1), ("c", 2)):
    write_synthetic_thumos(tmp_path / name, seed=seed, **kw)
  files = _files(tmp_path / "a")
  assert files == _files(tmp_path / "b")
  match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b",
                                             files, shallow=False)
  assert not mismatch and not errors
  assert not filecmp.cmp(tmp_path / "a" / "gt.json",
                         tmp_path / "c" / "gt.json", shallow=False)


def test_more_videos_leave_earlier_ones_unchanged(tmp_path):
  kw = dict(num_classes=3, feature_dim=8, seed=3, max_snippets=60)
  write_synthetic_thumos(tmp_path / "small", num_train=4, num_test=2, **kw)
  write_synthetic_thumos(tmp_path / "big", num_train=7, num_test=3, **kw)
  small = BasnetDataset(tmp_path / "small", "train", eager=True)
  big = BasnetDataset(tmp_path / "big", "train", eager=True)
  for a, b in zip(small, big):
    assert a.video_id == b.video_id and a.segments == b.segments
    np.testing.assert_array_equal(a.rgb, b.rgb)


def test_overwrite_guard(tmp_path):
  kw = dict(num_train=2, num_test=1, num_classes=2, feature_dim=4)
  write_synthetic_thumos(tmp_path, **kw)
  with pytest.raises(FileExistsError, match="overwrite"):
    write_synthetic_thumos(tmp_path, **kw)
  write_synthetic_thumos(tmp_path, overwrite=True, **kw)


def test_command_line(tmp_path):
  out = tmp_path / "cli"
  args = [sys.executable, "-m", "case_jax.data.synthetic", "--root", str(out),
          "--seed", "5", "--num-train", "3", "--num-test", "2",
          "--num-classes", "2", "--feature-dim", "4"]
  env = {**os.environ, "PYTHONPATH": REPO}
  done = subprocess.run(args, env=env, capture_output=True, text=True,
                        check=False)
  assert done.returncode == 0, done.stderr
  assert "wrote 3 train / 2 test" in done.stdout
  assert len(BasnetDataset(out, "test")) == 2
  with open(out / "synthetic.json") as f:
    assert json.load(f)["seed"] == 5
  again = subprocess.run(args, env=env, capture_output=True, text=True,
                         check=False)
  assert again.returncode == 2 and "overwrite" in again.stderr


# ---------------------------------------------------------------------------
# Annotation statistics.
# ---------------------------------------------------------------------------
def test_foreground_fraction_is_about_thirty_percent(datasets):
  fractions = [
      generator._union_length([(s.start_s, s.end_s) for s in rec.segments])
      / (rec.num_snippets * rec.seconds_per_snippet)
      for ds in datasets.values() for rec in ds]
  assert 0.22 < np.mean(fractions) < 0.38      # real THUMOS14: 0.29


def test_instance_counts_and_lengths_look_real(datasets):
  counts = [len(r.segments) for r in datasets["train"]]
  # Real validation subset: median 8 instances per video, 10% have 1-2.
  assert 4 <= np.median(counts) <= 14
  lengths = np.array([s.end_s - s.start_s for r in datasets["train"]
                      for s in r.segments])
  # Real median 2.9 s, scaled by time_scale 0.5 (long videos compressed).
  assert 0.8 < np.median(lengths) < 2.2


def test_real_instance_lengths_keep_seconds_and_foreground(tmp_path):
  """instance_lengths="real": durations follow time_scale, instances keep
  their real length (the tables' median 2.3 s train, whatever the scale),
  and the foreground fraction stays near the real 0.29."""
  kw = dict(num_train=150, num_test=1, num_classes=NUM_CLASSES,
            feature_dim=4, seed=7)
  write_synthetic_thumos(tmp_path / "a", time_scale=0.25,
                         instance_lengths="real", **kw)
  write_synthetic_thumos(tmp_path / "b", time_scale=0.5,
                         instance_lengths="real", **kw)
  for name, scale in (("a", 0.25), ("b", 0.5)):
    train = BasnetDataset(tmp_path / name, "train", eager=True)
    lengths = np.array([s.end_s - s.start_s for r in train
                        for s in r.segments])
    # Not halved or quartered as with "scaled" (test above: 0.8-2.2 s at 0.5).
    assert 1.9 < np.median(lengths) < 3.0, (name, np.median(lengths))
    durations = np.array([r.num_snippets * r.seconds_per_snippet
                          for r in train])
    # Real median duration 128 s, scaled.
    assert 0.7 < np.median(durations) / (128.4 * scale) < 1.3
    fg = [generator._union_length([(s.start_s, s.end_s) for s in r.segments])
          / (r.num_snippets * r.seconds_per_snippet) for r in train]
    assert 0.22 < np.mean(fg) < 0.38
  with pytest.raises(ValueError, match="instance_lengths"):
    write_synthetic_thumos(tmp_path / "c", instance_lengths="long", **kw)


@pytest.mark.skipif(not os.path.isfile(REAL_GT), reason="no real gt.json")
def test_builtin_stats_are_derived_from_the_real_gt():
  assert generator.annotation_stats(REAL_GT) == generator.BUILTIN_STATS


def test_stats_from_file_option(tmp_path):
  if not os.path.isfile(REAL_GT):
    pytest.skip("no real gt.json")
  meta = write_synthetic_thumos(tmp_path, num_train=2, num_test=1,
                                num_classes=2, feature_dim=4, stats=REAL_GT)
  assert meta["stats"] == REAL_GT


# ---------------------------------------------------------------------------
# Signal model.
# ---------------------------------------------------------------------------
def _background_mean(rec, stream):
  mask = _masks(rec, margin_s=1.0)
  x = getattr(rec, stream)
  return x[~mask].mean(0) if (~mask).any() else x.mean(0)


@pytest.mark.parametrize("stream,floor", [("rgb", 0.35), ("flow", 0.25)])
def test_background_context_predicts_the_class(datasets, stream, floor):
  """A nearest-centroid classifier on background snippets only: a partial
  cheat, mostly in RGB (measured on the default preset: 0.44 in RGB, where
  the noise correlated over snippets leaves fewer independent background
  snippets to average, and above 0.25 in flow; chance 0.2)."""
  train, test = datasets["train"], datasets["test"]
  x_train = np.stack([_background_mean(r, stream) for r in train])
  y_train = train.labels().argmax(1)
  centroids = np.stack([x_train[y_train == c].mean(0)
                        for c in range(NUM_CLASSES)])
  x_test = np.stack([_background_mean(r, stream) for r in test])
  pred = np.argmin(((x_test[:, None] - centroids[None]) ** 2).sum(-1), 1)
  accuracy = np.mean(test.labels()[np.arange(len(test)), pred] > 0)
  assert accuracy > floor                      # chance: 1 / 5


def _action_differences(ds, stream):
  """Per class: mean(foreground) - mean(background), over single-class
  videos.  (C, D)."""
  out = []
  for c in range(NUM_CLASSES):
    diffs = []
    for rec in ds:
      if rec.labels[c] and rec.labels.sum() == 1:
        fg = _masks(rec)
        if fg.any() and (~fg).any():
          x = getattr(rec, stream)
          diffs.append(x[fg].mean(0) - x[~fg].mean(0))
    out.append(np.mean(diffs, 0))
  return np.stack(out)


def test_motion_is_shared_across_classes_in_flow_only(tmp_path):
  """Every class's foreground moves along the world's one motion vector in
  flow (amplitude motion_snr, less the blurred boundaries), none in RGB.
  The phases are off: at D = 16 their random directions would project onto
  the motion vector as strongly as the motion itself."""
  import dataclasses
  signal = dataclasses.replace(generator.SIGNAL_PRESETS["default"],
                               phase_snr_strong=0.0, phase_snr_weak=0.0)
  write_synthetic_thumos(tmp_path, num_train=100, num_test=1,
                         num_classes=NUM_CLASSES, feature_dim=16, seed=7,
                         signal=signal)
  world = generator.make_world(7, NUM_CLASSES, 16, signal)
  train = BasnetDataset(tmp_path, "train", eager=True)
  along = {s: _action_differences(train, s) @ world.motion
           for s in ("rgb", "flow")}
  assert np.all(along["flow"] > 0.5 * signal.motion_snr), along["flow"]
  assert np.all(np.abs(along["rgb"]) < 0.2 * signal.motion_snr), along["rgb"]


def test_streams_differ(datasets):
  rec = datasets["train"][0]
  assert abs(np.corrcoef(rec.rgb.ravel(), rec.flow.ravel())[0, 1]) < 0.5


@pytest.mark.parametrize("preset", sorted(generator.SIGNAL_PRESETS))
def test_every_phase_is_strong_in_some_stream(preset):
  signal = generator.signal_settings(preset)
  world = generator.make_world(0, 20, 8, signal)
  counts = [len(p) for p in world.phases["rgb"]]
  assert set(counts) <= set(generator.PHASES_PER_CLASS)
  strong_rgb = np.concatenate(world.phase_snr["rgb"]) == signal.phase_snr_strong
  strong_flow = np.concatenate(world.phase_snr["flow"]) == signal.phase_snr_strong
  assert np.all(strong_rgb | strong_flow)
  assert np.any(strong_rgb & ~strong_flow) and np.any(strong_flow & ~strong_rgb)


def test_phases_follow_each_other_inside_an_instance(datasets):
  """Early and late parts of long instances point in different directions."""
  cosines = []
  for rec in datasets["train"]:
    bg = _background_mean(rec, "rgb")
    for seg in rec.segments:
      t = (np.arange(rec.num_snippets) + 0.5) * rec.seconds_per_snippet
      inside = np.nonzero((t > seg.start_s) & (t < seg.end_s))[0]
      if len(inside) < 9:
        continue
      third = len(inside) // 3
      early = rec.rgb[inside[:third]].mean(0) - bg
      late = rec.rgb[inside[-third:]].mean(0) - bg
      cosines.append(early @ late
                     / (np.linalg.norm(early) * np.linalg.norm(late)))
  assert len(cosines) >= 10
  assert np.median(cosines) < 0.6


def test_boundaries_are_blurred():
  t = (np.arange(20) + 0.5) * 0.64
  env = generator._envelope(t, 4.0, 8.0, ramp_snippets=3)
  assert env.min() == 0 and env.max() == 1
  partial = (env > 0) & (env < 1)
  assert partial.sum() >= 4                     # ramps, not a step
  assert np.all(np.diff(env[:10]) >= 0) and np.all(np.diff(env[10:]) <= 0)
  assert generator._envelope(np.array([4.0, 8.0]), 4.0, 8.0, 2) == \
      pytest.approx([0.5, 0.5])


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_noise_is_correlated_from_snippet_to_snippet_as_asked(tmp_path, rho):
  """With every other component off, features are the noise: std 1 per
  dimension, lag-1 autocorrelation rho, lag-2 rho^2 (AR(1))."""
  import dataclasses
  quiet = dataclasses.replace(
      generator.SIGNAL_PRESETS["default"], scene_snr_rgb=0.0,
      scene_snr_flow=0.0, phase_snr_strong=0.0, phase_snr_weak=0.0,
      motion_snr=0.0, video_offset_snr=0.0, clutter_std=0.0, noise_rho=rho)
  write_synthetic_thumos(tmp_path, num_train=30, num_test=1, num_classes=3,
                         feature_dim=16, seed=2, signal=quiet)
  xs = [getattr(r, s) for r in BasnetDataset(tmp_path, "train", eager=True)
        for s in ("rgb", "flow")]
  x = np.concatenate(xs)
  assert np.std(x) == pytest.approx(1.0, abs=0.03)
  for lag in (1, 2):
    pairs = np.concatenate([np.stack([v[:-lag].ravel(), v[lag:].ravel()], 1)
                            for v in xs])
    assert np.corrcoef(pairs.T)[0, 1] == pytest.approx(rho ** lag, abs=0.03)
  assert generator.SIGNAL_PRESETS["context_cheat"].noise_rho == 0.0


@pytest.mark.parametrize("rho", [1.0, -1.0, 1.5])
def test_noise_rho_outside_the_open_unit_interval_is_refused(tmp_path, rho):
  import dataclasses
  bad = dataclasses.replace(generator.SIGNAL_PRESETS["default"], noise_rho=rho)
  with pytest.raises(ValueError, match="noise_rho"):
    write_synthetic_thumos(tmp_path, num_train=2, num_test=1, num_classes=2,
                           feature_dim=4, signal=bad)


# sha256 over the files (names and bytes, synthetic.json aside) of this small
# dataset, written by the generator before issue #14 (commit 2a5cfd1).
BEFORE_ISSUE_14 = "38103af5ee48422e91ee174dcea79d051a77987ceeca2b1fa04cb823f6b6908d"


def _tree_hash(root):
  import hashlib
  h = hashlib.sha256()
  for rel in _files(root):
    if rel != "synthetic.json":
      h.update(rel.encode())
      with open(os.path.join(root, rel), "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def test_context_cheat_preset_is_the_data_before_issue_14(tmp_path):
  kw = dict(num_train=6, num_test=3, num_classes=4, feature_dim=8, seed=11,
            max_snippets=80)
  write_synthetic_thumos(tmp_path / "old", signal="context_cheat", **kw)
  assert _tree_hash(tmp_path / "old") == BEFORE_ISSUE_14
  write_synthetic_thumos(tmp_path / "new", **kw)
  assert _tree_hash(tmp_path / "new") != BEFORE_ISSUE_14
  with pytest.raises(ValueError, match="context_cheat"):
    write_synthetic_thumos(tmp_path / "bad", signal="nope", **kw)


def test_a_workdir_from_before_the_new_keys_still_resumes(tmp_path):
  """A config.json written before data.synthetic.instance_lengths and
  model.cluster_encoder existed is the same run as context_cheat's (their
  old behaviour is their default), and not the demo's new data."""
  from case_jax import defaults, fileio, workdir
  cfg = defaults.load_config("synthetic:context_cheat")
  saved = cfg.to_dict()
  del saved["data"]["synthetic"]["instance_lengths"]
  del saved["model"]["cluster_encoder"]
  fileio.write_json(tmp_path / "config.json", saved)
  assert workdir.trained_diff(str(tmp_path), cfg) == []
  demo = defaults.load_config("synthetic")
  assert ("data.synthetic.instance_lengths", None, "real") in \
      workdir.trained_diff(str(tmp_path), demo)
