"""The shared dataset interface (records.VideoDataset), the one BaS-Net
reader in both on_error modes, the time base carried by records, and the
ground truth that evaluation builds from the layouts' own parsers."""
import os

import numpy as np
import pytest

from case_jax.data import (LAYOUTS, AcmnetDataset, BasnetDataset, LayoutError,
                           LayoutWarning, SourceDataset, VideoDataset,
                           WtalcDataset, open_dataset, read_gt)
from case_jax.data import ground_truth
from tests.test_data_layouts_more import small, write

CLASSES = {"basnet": BasnetDataset, "wtalc": WtalcDataset,
           "acmnet": AcmnetDataset}


def _same_records(a, b):
  assert a.video_id == b.video_id
  np.testing.assert_array_equal(a.rgb, b.rgb)
  np.testing.assert_array_equal(a.flow, b.flow)
  np.testing.assert_array_equal(a.labels, b.labels)
  assert a.segments == b.segments and a.duration == b.duration
  assert (a.fps, a.snippet_frames) == (b.fps, b.snippet_frames)


def test_every_layout_is_a_video_dataset_with_equal_records(tmp_path):
  videos = small()
  sets = {}
  for layout in LAYOUTS:
    root = write(tmp_path, layout, videos)
    ds = CLASSES[layout](root, "train", eager=True)
    assert isinstance(ds, VideoDataset) and isinstance(ds, SourceDataset)
    assert type(open_dataset(root, "train", layout)) is CLASSES[layout]
    assert ds.skipped == () and ds.num_classes == 2
    sets[layout] = ds
  ref = sets["basnet"]
  for layout, ds in sets.items():
    assert ds.video_ids == ref.video_ids == ("v0", "v1"), layout
    assert ds.classes == ref.classes and (ds.rgb_dim, ds.flow_dim) == (8, 8)
    np.testing.assert_array_equal(ds.lengths, ref.lengths)
    np.testing.assert_array_equal(ds.labels(), ref.labels())
    assert len(list(ds)) == len(ds) == 2
    for a, b in zip(ds, ref):
      _same_records(a, b)


def test_a_list_is_not_a_video_dataset():
  assert not isinstance([], VideoDataset)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_records_carry_the_configured_time_base(tmp_path, layout):
  root = write(tmp_path, layout, small())
  # v1's annotation [1, 2] s ends after its 5 * 8/30 s: warned, kept.
  with pytest.warns(LayoutWarning, match="v1 have annotations ending after"):
    ds = open_dataset(root, "train", layout, fps=30.0, snippet_frames=8)
  assert (ds.fps, ds.snippet_frames) == (30.0, 8)
  rec = ds[1]          # no annotated duration: n snippets of 8 / 30 s
  assert (rec.fps, rec.snippet_frames) == (30.0, 8)
  assert rec.seconds_per_snippet == pytest.approx(8 / 30)
  assert rec.duration == pytest.approx(5 * 8 / 30)
  assert ds.duration(1) == rec.duration


# ---------------------------------------------------------------------------
# One BaS-Net reader, both on_error modes.
# ---------------------------------------------------------------------------
def test_basnet_modes_agree_on_a_good_root(tmp_path):
  root = write(tmp_path, "basnet", small())
  for eager in (False, True):
    strict = BasnetDataset(root, "train", eager=eager)
    lenient = BasnetDataset(root, "train", eager=eager, on_error="skip")
    assert strict.video_ids == lenient.video_ids and lenient.skipped == ()
    for a, b in zip(strict, lenient):
      _same_records(a, b)


def test_basnet_one_class_refuses_or_skips(tmp_path):
  root = write(tmp_path, "basnet", small())
  os.remove(os.path.join(root, "features", "train", "flow", "v1.npy"))
  with pytest.raises(LayoutError, match=r"missing feature files: .*flow.v1\.npy"
                     ".*Add the files or remove the ids"):
    BasnetDataset(root, "train")
  with pytest.warns(LayoutWarning, match="skipped 1 of 2"):
    ds = BasnetDataset(root, "train", on_error="skip")
  assert type(ds) is BasnetDataset and ds.video_ids == ("v0",)
  assert ds.skipped[0][0] == "v1" and "not found" in ds.skipped[0][1]
  with pytest.raises(ValueError, match="on_error must be one of"):
    BasnetDataset(root, "train", on_error="ignore")


def test_basnet_nan_in_both_modes(tmp_path):
  videos = small()
  videos[0].rgb[2, 1] = np.nan
  root = write(tmp_path, "basnet", videos)
  with pytest.raises(LayoutError, match=r"rgb.v0\.npy: NaN or inf in snippets 2"):
    BasnetDataset(root, "train", eager=True)
  lazy = BasnetDataset(root, "train")       # refused when read
  with pytest.raises(LayoutError, match=r"rgb.v0\.npy: NaN or inf in snippets 2"):
    lazy[0]
  with pytest.warns(LayoutWarning, match="skipped 1 of 2"):
    ds = BasnetDataset(root, "train", eager=True, on_error="skip")
  assert ds.video_ids == ("v1",) and "NaN" in ds.skipped[0][1]


# ---------------------------------------------------------------------------
# Evaluation's ground truth comes from the same parsers.
# ---------------------------------------------------------------------------
def test_ground_truth_matches_the_dataset_annotations(tmp_path):
  videos = small()
  for layout in ("basnet", "wtalc"):
    root = write(tmp_path, layout, videos)
    ds = open_dataset(root, "test", layout)
    if layout == "basnet":
      gt = ground_truth.load_ground_truth(os.path.join(root, "gt.json"))
    else:
      gt = ground_truth.load_ground_truth(
          os.path.join(root, f"{ds.name}-Annotations"))
    assert gt.video_ids == ds.video_ids == ("v2",) and gt.subset == "test"
    rec = ds[0]
    assert gt.class_names == tuple(ds.classes[s.class_index]
                                   for s in rec.segments)
    np.testing.assert_array_equal(
        gt.segments, [[s.start_s, s.end_s] for s in rec.segments])


def test_bad_gt_json_is_refused_the_same_way_for_evaluation(tmp_path):
  data = {"database": {"a": {"subset": "test", "annotations": [
      {"segment": [3.0, 1.0], "label": "Run"}]}}}
  with pytest.raises(LayoutError, match="'a' has segment .* ends before"):
    ground_truth.ground_truth_from_dict(data)
  data["database"]["a"]["annotations"][0]["segment"] = [1.0, 3.0]
  data["database"]["a"]["duration"] = "long"
  with pytest.raises(LayoutError, match="\"duration\" of 'a' is 'long'"):
    ground_truth.ground_truth_from_dict(data)
  path = tmp_path / "gt.json"
  path.write_text('{"database": {"a": {"subset": "test", "annotations": []}}}')
  assert read_gt(path)["a"].annotations == ()
  assert ground_truth.load_gt_json(path).video_ids == ("a",)


def test_repeated_names_each_repeat_in_order():
  from case_jax.data.records import repeated
  assert repeated([]) == [] and repeated(["a", "b"]) == []
  # "a" comes back twice, "b" once, in the order the repeats occur.
  assert repeated(["a", "b", "a", "c", "b", "a"]) == ["a", "b", "a"]
  assert repeated(x for x in "xyx") == ["x"]          # any iterable


def test_a_video_listed_twice_in_a_split_is_refused():
  import numpy as np
  from case_jax.data import LayoutError
  from case_jax.data.generic import SourceDataset, VideoSource
  from case_jax.data.records import GtVideo
  gt = GtVideo(subset="test", duration=None, annotations=())
  feats = lambda: (np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32))
  src = lambda vid: VideoSource(vid, gt, f"{vid}.npy", lambda: ((3, 2), (3, 2)), feats)
  with pytest.raises(LayoutError, match="video 'v1' is listed twice"):
    SourceDataset([src("v0"), src("v1"), src("v1")], ["a"], origin="root")
