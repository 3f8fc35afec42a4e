"""Reader of the BaS-Net/CASE layout: round trip, real gt.json, bad input."""
import dataclasses
import json
import os
import warnings

import numpy as np
import pytest

from case_jax.data import (THUMOS14_CLASSES, LayoutError, LayoutWarning,
                           BasnetDataset, Segment, read_gt, read_split,
                           write_synthetic_thumos)
from case_jax.data.synthetic import class_names
from case_jax.data.gt_json import classes_from_gt

from tests.conftest import SHARED_DATA
REAL_GT = os.path.join(SHARED_DATA, "thumos14_acmnet_gt", "gt.json")
needs_real_gt = pytest.mark.skipif(not os.path.isfile(REAL_GT),
                                   reason="real THUMOS14 gt.json not present")


def write_layout(root, videos, *, train_subset="validation"):
  """videos: {vid: dict(split, n, anns=[(s, e, label)], dim=4, ...)}."""
  database, splits = {}, {"train": [], "test": []}
  rng = np.random.default_rng(0)
  for vid, v in videos.items():
    split = v["split"]
    splits[split].append(vid)
    entry = {"subset": train_subset if split == "train" else "test",
             "annotations": [{"segment": [s, e], "label": lab}
                             for s, e, lab in v.get("anns", [])]}
    if "duration" in v:
      entry["duration"] = v["duration"]
    database[vid] = entry
    for stream in ("rgb", "flow"):
      n = v.get(f"n_{stream}", v["n"])
      d = v.get(f"dim_{stream}", v.get("dim", 4))
      folder = os.path.join(root, "features", split, stream)
      os.makedirs(folder, exist_ok=True)
      np.save(os.path.join(folder, vid + ".npy"),
              rng.standard_normal((n, d)).astype(np.float32))
  for split, ids in splits.items():
    with open(os.path.join(root, f"split_{split}.txt"), "w") as f:
      f.write("".join(i + "\n" for i in ids))
  with open(os.path.join(root, "gt.json"), "w") as f:
    json.dump({"version": "test", "database": database}, f)


def small_videos():
  return {
      "a": {"split": "train", "n": 10, "anns": [(0.5, 2.0, "Jump"),
                                               (3.0, 4.1, "Run")]},
      "b": {"split": "train", "n": 7, "anns": [(1.0, 3.2, "Run")]},
      "c": {"split": "test", "n": 12, "anns": [(2.0, 5.0, "Jump")],
            "duration": 7.7},
  }


# ---------------------------------------------------------------------------
# Round trip.
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("synthetic")
  write_synthetic_thumos(root, num_train=10, num_test=6, num_classes=3,
                         feature_dim=8, seed=4, max_snippets=120)
  return root


def test_synthetic_round_trip(synthetic_root):
  with open(os.path.join(synthetic_root, "gt.json")) as f:
    database = json.load(f)["database"]
  for split, count in (("train", 10), ("test", 6)):
    ds = BasnetDataset(synthetic_root, split, eager=True)
    assert len(ds) == count and ds.classes == class_names(3)
    assert ds.rgb_dim == ds.flow_dim == 8
    assert ds.labels().shape == (count, 3)
    for i, rec in enumerate(ds):
      entry = database[rec.video_id]
      assert rec.rgb.dtype == rec.flow.dtype == np.float32
      assert rec.rgb.shape == rec.flow.shape == (ds.lengths[i], 8)
      np.testing.assert_array_equal(rec.rgb, np.load(os.path.join(
          synthetic_root, "features", split, "rgb", rec.video_id + ".npy")))
      assert rec.duration == entry["duration"]
      assert rec.seconds_per_snippet == pytest.approx(0.64)
      assert [(s.start_s, s.end_s, ds.classes[s.class_index])
              for s in rec.segments] == [
                  (a["segment"][0], a["segment"][1], a["label"])
                  for a in entry["annotations"]]
      expected = np.zeros(3, np.float32)
      expected[[s.class_index for s in rec.segments]] = 1
      np.testing.assert_array_equal(rec.labels, expected)


def test_lazy_equals_eager(synthetic_root):
  lazy = BasnetDataset(synthetic_root, "test")
  eager = BasnetDataset(synthetic_root, "test", eager=True)
  assert lazy.video_ids == eager.video_ids
  for a, b in zip(lazy, eager):
    np.testing.assert_array_equal(a.flow, b.flow)
    assert a.segments == b.segments


def test_records_are_immutable(synthetic_root):
  rec = BasnetDataset(synthetic_root, "train")[0]
  with pytest.raises(ValueError):
    rec.rgb[0, 0] = 1.0
  with pytest.raises(ValueError):
    rec.labels[0] = 1.0
  with pytest.raises(dataclasses.FrozenInstanceError):
    rec.video_id = "other"


def test_hand_written_layout_and_string_segments(tmp_path):
  videos = small_videos()
  write_layout(tmp_path, videos, train_subset="train")   # BaS-Net naming
  # BaS-Net's copy stores segment bounds as strings.
  with open(tmp_path / "gt.json") as f:
    gt = json.load(f)
  gt["database"]["a"]["annotations"][0]["segment"] = ["0.5", "2.0"]
  with open(tmp_path / "gt.json", "w") as f:
    json.dump(gt, f)
  train = BasnetDataset(tmp_path, "train")
  assert train.classes == ("Jump", "Run")
  np.testing.assert_array_equal(train.lengths, [10, 7])
  a = train[0]
  assert a.segments == (Segment(0.5, 2.0, 0), Segment(3.0, 4.1, 1))
  np.testing.assert_array_equal(a.labels, [1, 1])
  assert a.duration == pytest.approx(10 * 0.64)   # no duration: n * 0.64
  test = BasnetDataset(tmp_path, "test", classes=("Run", "Jump", "Swim"))
  np.testing.assert_array_equal(test[0].labels, [0, 1, 0])
  assert test[0].duration == 7.7


# ---------------------------------------------------------------------------
# The real THUMOS14 annotations.
# ---------------------------------------------------------------------------
@needs_real_gt
def test_real_gt_classes_are_the_released_order():
  gt = read_gt(REAL_GT)
  assert len(gt) == 412
  assert sum(v.subset == "validation" for v in gt.values()) == 200
  assert classes_from_gt(gt) == THUMOS14_CLASSES
  assert list(THUMOS14_CLASSES) == sorted(THUMOS14_CLASSES)
  first = gt["video_test_0000896"]
  assert first.annotations[0] == (18.6, 24.8, "HighJump")


@needs_real_gt
def test_real_gt_with_bas_net_test_split_warns_about_unlisted_videos(
    tmp_path):
  """ACM-Net's gt.json has 212 test videos, BaS-Net/CASE's split 210."""
  gt = read_gt(REAL_GT)
  test_ids = sorted(v for v, e in gt.items() if e.subset == "test"
                    and v not in ("video_test_0000270", "video_test_0001496"))
  assert len(test_ids) == 210
  with open(REAL_GT) as f:
    (tmp_path / "gt.json").write_text(f.read())
  (tmp_path / "split_test.txt").write_text("\n".join(test_ids) + "\n")
  folder = {s: tmp_path / "features" / "test" / s for s in ("rgb", "flow")}
  for s in folder.values():
    s.mkdir(parents=True)
  for vid in test_ids:
    n = max(1, int(gt[vid].duration / 0.64))
    for s in folder.values():
      np.save(s / f"{vid}.npy", np.zeros((n, 2), np.float32))
  with pytest.warns(LayoutWarning) as caught:
    ds = BasnetDataset(tmp_path, "test", classes=THUMOS14_CLASSES)
  text = " ".join(str(w.message) for w in caught)
  assert "video_test_0000270" in text and "video_test_0001496" in text
  assert "video_test_0000950" in text    # annotations past the video's end
  assert len(ds) == 210 and ds.labels().shape == (210, 20)


# ---------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------
def test_missing_feature_file_names_path_and_layout(tmp_path):
  write_layout(tmp_path, small_videos())
  missing = tmp_path / "features" / "train" / "flow" / "b.npy"
  missing.unlink()
  with pytest.raises(LayoutError) as err:
    BasnetDataset(tmp_path, "train")
  assert str(missing) in str(err.value)
  assert "features/train/{rgb,flow}/<video_id>.npy" in str(err.value)


def test_missing_gt_and_split_files(tmp_path):
  write_layout(tmp_path, small_videos())
  (tmp_path / "split_test.txt").unlink()
  with pytest.raises(LayoutError, match="split_test.txt: split file not"):
    BasnetDataset(tmp_path, "test")
  (tmp_path / "gt.json").unlink()
  with pytest.raises(LayoutError, match="gt.json: annotation file not found"):
    BasnetDataset(tmp_path, "train")


def test_rgb_flow_length_mismatch(tmp_path):
  videos = small_videos()
  videos["b"]["n_flow"] = 6
  write_layout(tmp_path, videos)
  with pytest.raises(LayoutError, match=r"b \(rgb 7, flow 6\)"):
    BasnetDataset(tmp_path, "train")


def test_wrong_feature_dim(tmp_path):
  write_layout(tmp_path, small_videos())
  with pytest.raises(LayoutError,
                     match=r"a\.npy: feature dim 4, expected 1024"):
    BasnetDataset(tmp_path, "train", feature_dim=1024)


def test_inconsistent_feature_dims(tmp_path):
  videos = small_videos()
  videos["b"]["dim_rgb"] = 5
  write_layout(tmp_path, videos)
  # The odd video (the minority width) is named, with its file.
  with pytest.raises(LayoutError, match=r"rgb.b\.npy: feature dim 5, "
                     r"expected 4 .*odd videos: b;"):
    BasnetDataset(tmp_path, "train")


def test_nan_is_reported_with_file_and_snippet(tmp_path):
  write_layout(tmp_path, small_videos())
  path = tmp_path / "features" / "train" / "rgb" / "b.npy"
  x = np.load(path)
  x[3, 1] = np.nan
  x[5, 0] = np.inf
  np.save(path, x)
  with pytest.raises(LayoutError, match=r"b\.npy: NaN or inf in snippets 3, 5"):
    BasnetDataset(tmp_path, "train", eager=True)
  lazy = BasnetDataset(tmp_path, "train")          # checked when read
  lazy[0]
  with pytest.raises(LayoutError, match="NaN or inf"):
    lazy[1]


def test_unknown_label(tmp_path):
  videos = small_videos()
  videos["b"]["anns"] = [(1.0, 2.0, "Ambiguous")]
  write_layout(tmp_path, videos)
  with pytest.raises(LayoutError, match=r"gt\.json: label 'Ambiguous' of video b "
                     r"is not in the class list .*fix the label"):
    BasnetDataset(tmp_path, "train", classes=("Jump", "Run"))


def test_split_video_absent_from_gt(tmp_path):
  write_layout(tmp_path, small_videos())
  with open(tmp_path / "split_train.txt", "a") as f:
    f.write("ghost\n")
  with pytest.raises(LayoutError, match="ghost are not in .*gt.json"):
    BasnetDataset(tmp_path, "train")


def test_split_and_gt_subsets_disagree(tmp_path):
  write_layout(tmp_path, small_videos())
  (tmp_path / "split_train.txt").write_text("a\n")        # b left out
  with pytest.warns(LayoutWarning, match="videos b have subset"):
    BasnetDataset(tmp_path, "train")
  (tmp_path / "split_train.txt").write_text("a\nb\nc\n")  # c is a test video
  for stream in ("rgb", "flow"):
    src = tmp_path / "features" / "test" / stream / "c.npy"
    (tmp_path / "features" / "train" / stream / "c.npy").write_bytes(
        src.read_bytes())
  with pytest.warns(LayoutWarning, match="videos c have a gt.json subset"):
    BasnetDataset(tmp_path, "train")


def test_consistent_layout_does_not_warn(tmp_path):
  write_layout(tmp_path, small_videos())
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    BasnetDataset(tmp_path, "train")
    BasnetDataset(tmp_path, "test")


def test_duplicate_split_ids(tmp_path):
  (tmp_path / "split.txt").write_text("a\nb\n\na\n")
  with pytest.raises(LayoutError, match="duplicate video ids a"):
    read_split(tmp_path / "split.txt")


def test_malformed_gt(tmp_path):
  path = tmp_path / "gt.json"
  path.write_text(json.dumps({"videos": {}}))
  with pytest.raises(LayoutError, match="top-level \"database\""):
    read_gt(path)
  path.write_text(json.dumps({"database": {"a": {
      "subset": "test", "annotations": [{"segment": [3.0, 1.0],
                                         "label": "x"}]}}}))
  with pytest.raises(LayoutError, match="'a' has segment .* ends before"):
    read_gt(path)
