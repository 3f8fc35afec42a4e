"""W-TALC and ACM-Net readers, open_dataset, checks on load, prefetch.

Fixture datasets are written in all three layouts around the real THUMOS14
annotations (../shared/data; skipped when absent) with 8-d features per
stream, and must read back identically.
"""
import os
import shutil
import warnings

import numpy as np
import pytest

from case_jax.data import (LAYOUTS, THUMOS14_CLASSES, LayoutError,
                           LayoutWarning, Prefetcher, VideoSpec, eval_batches,
                           open_dataset, read_gt, train_batch,
                           videos_from_dataset, write_layout)
from case_jax.data import wtalc_files
from tests.conftest import SHARED_DATA

REAL_GT = os.path.join(SHARED_DATA, "thumos14_acmnet_gt", "gt.json")
REAL_WTALC = os.path.join(SHARED_DATA, "thumos14_wtalc_annotations")
needs_real = pytest.mark.skipif(
    not (os.path.isfile(REAL_GT) and os.path.isdir(REAL_WTALC)),
    reason="real THUMOS14 annotations not present")
D = 8


def quiet_open(*args, **kwargs):
  """open_dataset, ignoring LayoutWarnings (real GT ends past some videos)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", LayoutWarning)
    return open_dataset(*args, **kwargs)


def real_videos(max_snippets=300):
  """VideoSpecs of the 412 real gt.json videos, random (n, D) features."""
  rng = np.random.default_rng(0)
  out = []
  for vid, v in read_gt(REAL_GT).items():
    n = int(np.clip(round(v.duration * 25 / 16), 1, max_snippets))
    split = "train" if v.subset == "validation" else "test"
    out.append(VideoSpec(vid, split, v.subset, v.duration, v.annotations,
                         rng.standard_normal((n, D)).astype(np.float32),
                         rng.standard_normal((n, D)).astype(np.float32)))
  return out


@pytest.fixture(scope="module")
def real_roots(tmp_path_factory):
  videos = real_videos()
  roots = {}
  for layout in LAYOUTS:
    roots[layout] = str(tmp_path_factory.mktemp(layout))
    write_layout(layout, roots[layout], videos)
  return roots, videos


# ---------------------------------------------------------------------------
# Same data in every layout.
# ---------------------------------------------------------------------------
@needs_real
@pytest.mark.parametrize("split,count,instances", [("train", 200, 3007),
                                                   ("test", 212, 3358)])
def test_layouts_read_back_identically(real_roots, split, count, instances):
  roots, videos = real_roots
  specs = {v.video_id: v for v in videos if v.split == split}
  sets = {l: quiet_open(roots[l], split, l, feature_dim=D) for l in LAYOUTS}
  ref = sets["basnet"]
  assert len(ref) == count and ref.classes == THUMOS14_CLASSES
  assert sum(len(r.segments) for r in ref) == instances
  for layout, ds in sets.items():
    assert ds.classes == ref.classes, layout
    assert ds.video_ids == ref.video_ids == tuple(specs), layout
    np.testing.assert_array_equal(ds.lengths, ref.lengths)
    np.testing.assert_array_equal(ds.labels(), ref.labels())
    for a, b in zip(ds, ref):
      spec = specs[a.video_id]
      np.testing.assert_array_equal(a.rgb, spec.rgb)
      np.testing.assert_array_equal(a.flow, spec.flow)
      np.testing.assert_array_equal(a.rgb, b.rgb)
      np.testing.assert_array_equal(a.flow, b.flow)
      np.testing.assert_array_equal(a.labels, b.labels)
      assert a.segments == b.segments and a.duration == b.duration
      assert a.seconds_per_snippet == b.seconds_per_snippet == 0.64


@needs_real
def test_batches_are_identical_across_layouts(real_roots):
  roots, _ = real_roots
  sets = {l: quiet_open(roots[l], "train", l) for l in LAYOUTS}
  for step in (0, 13, 25):
    batches = [train_batch(ds, step, seed=3, batch_size=8, num_segments=50)
               for ds in sets.values()]
    for b in batches[1:]:
      assert b.keys() == batches[0].keys()
      for k in b:
        np.testing.assert_array_equal(b[k], batches[0][k])
  tests = {l: quiet_open(roots[l], "test", l) for l in LAYOUTS}
  first = [next(eval_batches(ds, num_segments=40, batch_size=4))
           for ds in tests.values()]
  for b in first[1:]:
    for k in b:
      np.testing.assert_array_equal(b[k], first[0][k])


@needs_real
def test_real_segments_past_the_end_warn_in_every_layout(real_roots):
  roots, _ = real_roots
  for layout in LAYOUTS:
    with pytest.warns(LayoutWarning, match="after the video"):
      open_dataset(roots[layout], "test", layout)


@needs_real
def test_real_wtalc_annotation_files(tmp_path):
  """The release's own annotation arrays, verbatim, with fake features."""
  name = "Thumos14reduced"
  shutil.copytree(REAL_WTALC, tmp_path / f"{name}-Annotations")
  ann = wtalc_files.read_annotations(tmp_path / f"{name}-Annotations")
  rng = np.random.default_rng(1)
  joint = np.empty(len(ann["videoname"]), object)
  for i, dur in enumerate(ann["duration"]):
    joint[i] = rng.standard_normal((max(1, int(dur * 25 / 16) // 8),
                                    2 * D)).astype(np.float32)
  np.save(tmp_path / f"{name}-I3D-JOINTFeatures.npy", joint, allow_pickle=True)
  with pytest.warns(LayoutWarning) as caught:
    train = open_dataset(tmp_path, "train", "wtalc", feature_dim=D)
  messages = " ".join(str(w.message) for w in caught)
  assert "video_test_0001292 are not in videoname.npy" in messages
  assert "video_validation_0000364" in messages   # ends after its video
  test = quiet_open(tmp_path, "test", "wtalc", feature_dim=D)
  assert (len(train), len(test)) == (200, 212)
  assert train.classes == THUMOS14_CLASSES and train.name == name
  assert sum(len(r.segments) for r in train) == 3007
  assert sum(len(r.segments) for r in test) == 3358
  # Ambiguous_test.txt: 99 intervals with double-spaced fields.
  assert sum(len(v) for v in test.ambiguous.values()) == 99
  assert test.ambiguous["video_test_0000278"][0] == (0.0, 1.4)
  rec = train[0]
  np.testing.assert_array_equal(rec.rgb, joint[0][:, :D])
  np.testing.assert_array_equal(rec.flow, joint[0][:, D:])
  # Video-level labels agree with the ACM-Net gt.json release.
  gt = read_gt(REAL_GT)
  for ds in (train, test):
    for vid, labels in zip(ds.video_ids, ds.labels()):
      names = {ds.classes[c] for c in np.flatnonzero(labels)}
      assert names == {a[2] for a in gt[vid].annotations}, vid


# ---------------------------------------------------------------------------
# Small hand-made datasets for the errors.
# ---------------------------------------------------------------------------
def small(n=(6, 5, 7), dims=(D, D), anns=None):
  rng = np.random.default_rng(2)
  anns = anns or [(0.5, 1.5, "Jump"), (1.0, 2.0, "Run"), (0.0, 1.0, "Jump")]
  splits = ("train", "train", "test")
  return [VideoSpec(f"v{i}", s, "validation" if s == "train" else "test",
                    None, (a,), rng.standard_normal((k, dims[0])),
                    rng.standard_normal((k, dims[1])))
          for i, (k, s, a) in enumerate(zip(n, splits, anns))]


def write(tmp_path, layout, videos, **kw):
  root = str(tmp_path / layout)
  write_layout(layout, root,
               videos, **({"classes": ("Jump", "Run")}
                          if layout == "wtalc" else {}), **kw)
  return root


@pytest.mark.parametrize("layout", LAYOUTS)
def test_small_round_trip(tmp_path, layout):
  videos = small()
  root = write(tmp_path, layout, videos)
  ds = open_dataset(root, "train", layout, eager=True)
  assert ds.video_ids == ("v0", "v1") and ds.classes == ("Jump", "Run")
  assert ds[1].duration == pytest.approx(5 * 0.64)
  np.testing.assert_array_equal(ds[0].rgb, videos[0].rgb.astype(np.float32))
  with pytest.raises(ValueError):
    ds[0].rgb[0, 0] = 1.0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_feature(tmp_path, layout):
  videos = small()
  videos[1].flow[3, 2] = np.nan
  root = write(tmp_path, layout, videos)
  with pytest.raises(LayoutError, match=r"NaN or inf.*3.*v1.*regenerate"
                     if layout != "basnet" else r"flow.*v1\.npy.*NaN.*3"):
    ds = open_dataset(root, "train", layout, eager=True)
  # Skipping is explicit and reported.
  with pytest.warns(LayoutWarning, match="skipped 1 of 2"):
    ds = open_dataset(root, "train", layout, eager=True, on_error="skip")
  assert ds.video_ids == ("v0",) and ds.skipped[0][0] == "v1"
  assert "NaN" in ds.skipped[0][1]


@pytest.mark.parametrize("layout", ["acmnet", "basnet"])
def test_nan_found_on_lazy_read(tmp_path, layout):
  videos = small()
  videos[0].rgb[0, 0] = np.inf
  root = write(tmp_path, layout, videos)
  ds = open_dataset(root, "train", layout)
  ds[1]
  with pytest.raises(LayoutError, match="NaN or inf"):
    ds[0]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_wrong_width(tmp_path, layout):
  root = write(tmp_path, layout, small())
  with pytest.raises(LayoutError, match="expected 16|feature dim 8, expected "
                     "16"):
    open_dataset(root, "train", layout, feature_dim=16)


@pytest.mark.parametrize("layout", ["acmnet", "wtalc"])
def test_one_video_of_another_width(tmp_path, layout):
  videos = small(n=(6, 5, 7, 4)[:3])
  videos.insert(1, VideoSpec("odd", "train", "validation", None, (),
                             np.zeros((4, 5)), np.zeros((4, 5))))
  root = write(tmp_path, layout, videos)
  with pytest.raises(LayoutError, match="'odd'.*width rgb 5 / flow 5.*"
                     "expected 8 / 8"):
    open_dataset(root, "train", layout)
  with pytest.warns(LayoutWarning, match="skipped 1"):
    ds = open_dataset(root, "train", layout, on_error="skip")
  assert ds.video_ids == ("v0", "v1")


def test_missing_flow_file_basnet(tmp_path):
  root = write(tmp_path, "basnet", small())
  os.remove(os.path.join(root, "features", "train", "flow", "v1.npy"))
  with pytest.raises(LayoutError, match=r"missing feature files: .*flow.v1\.npy"):
    open_dataset(root, "train", "basnet")
  with pytest.warns(LayoutWarning, match="skipped 1 of 2"):
    ds = open_dataset(root, "train", "basnet", on_error="skip")
  assert ds.video_ids == ("v0",) and "not found" in ds.skipped[0][1]


def test_missing_feature_file_acmnet(tmp_path):
  root = write(tmp_path, "acmnet", small())
  os.remove(os.path.join(root, "features", "train", "v0.npy"))
  with pytest.raises(LayoutError, match=r"v0\.npy: feature file of video "
                     "'v0' not found.*remove the id"):
    open_dataset(root, "train", "acmnet")


def test_odd_width_means_no_flow_columns(tmp_path):
  videos = small(dims=(D, D))
  root = write(tmp_path, "acmnet", videos)
  np.save(os.path.join(root, "features", "train", "v1.npy"),
          np.zeros((5, 7), np.float32))
  with pytest.raises(LayoutError, match=r"v1.*\(5, 7\).*rgb columns"):
    open_dataset(root, "train", "acmnet")


def test_length_mismatch_basnet_skip(tmp_path):
  videos = small()
  videos[0] = videos[0]._replace(flow=videos[0].flow[:4])
  root = write(tmp_path, "basnet", videos)
  with pytest.warns(LayoutWarning, match="rgb has 6 snippets and flow 4"):
    ds = open_dataset(root, "train", "basnet", on_error="skip")
  assert ds.video_ids == ("v1",)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unknown_label(tmp_path, layout):
  root = write(tmp_path, layout, small())
  with pytest.raises(LayoutError, match="Run.*not in the class list"):
    open_dataset(root, "train", layout, classes=("Jump", "Swim"))


@pytest.mark.parametrize("layout", ["acmnet", "wtalc"])
def test_empty_video(tmp_path, layout):
  videos = small(n=(6, 0, 7))
  root = write(tmp_path, layout, videos)
  with pytest.raises(LayoutError, match="'v1'.*empty video"):
    open_dataset(root, "train", layout)


def test_empty_video_basnet(tmp_path):
  root = write(tmp_path, "basnet", small(n=(6, 0, 7)))
  with pytest.raises(LayoutError, match=r"v1\.npy.*n_snippets >= 1"):
    open_dataset(root, "train", "basnet")


def test_mismatched_split_acmnet(tmp_path):
  root = write(tmp_path, "acmnet", small())
  with open(os.path.join(root, "split_train.txt"), "a") as f:
    f.write("ghost\n")
  with pytest.raises(LayoutError, match="ghost.*not in.*gt.json"):
    open_dataset(root, "train", "acmnet")
  with open(os.path.join(root, "split_train.txt"), "w") as f:
    f.write("v0\nv1\nv2\n")      # v2 is a test video
  with pytest.warns(LayoutWarning) as caught:
    ds = open_dataset(root, "train", "acmnet", on_error="skip")
  messages = [str(w.message) for w in caught]
  assert any("v2" in m and "subset other than" in m for m in messages)
  assert any("skipped 1 of 3" in m for m in messages)   # no v2 features
  assert ds.video_ids == ("v0", "v1")


def test_mismatched_wtalc_features_and_annotations(tmp_path):
  root = write(tmp_path, "wtalc", small())
  path = os.path.join(root, "Thumos14reduced-I3D-JOINTFeatures.npy")
  joint = np.load(path, allow_pickle=True)
  np.save(path, joint[:2], allow_pickle=True)
  with pytest.raises(LayoutError, match="2 videos but.*videoname.npy lists 3"):
    open_dataset(root, "train", "wtalc")


def test_wtalc_entry_must_be_a_float_array(tmp_path):
  root = write(tmp_path, "wtalc", small())
  path = os.path.join(root, "Thumos14reduced-I3D-JOINTFeatures.npy")
  joint = np.load(path, allow_pickle=True)
  joint[1] = "not features"
  np.save(path, joint, allow_pickle=True)
  with pytest.raises(LayoutError, match=r"entry 1 \(video 'v1'\) is str"):
    open_dataset(root, "train", "wtalc")


def test_wtalc_pickle_only_for_known_files(tmp_path):
  root = write(tmp_path, "wtalc", small())
  os.rename(os.path.join(root, "Thumos14reduced-I3D-JOINTFeatures.npy"),
            os.path.join(root, "Mine-I3D-JOINTFeatures.npy"))
  with pytest.raises(LayoutError, match="refusing to unpickle"):
    open_dataset(root, "train", "wtalc")
  ann = os.path.join(root, "Thumos14reduced-Annotations")
  np.save(os.path.join(ann, "duration.npy"),
          np.array([[1.0], None, [2.0]], object), allow_pickle=True)
  with pytest.raises(LayoutError, match="duration.npy: not a plain array"):
    wtalc_files.read_annotations(ann)


def test_wtalc_activitynet_subsets(tmp_path):
  videos = [v._replace(subset="training" if v.split == "train"
                       else "validation") for v in small()]
  root = write(tmp_path, "wtalc", videos, name="ActivityNet1.2")
  assert open_dataset(root, "test", "wtalc").video_ids == ("v2",)
  assert open_dataset(root, "train", "wtalc").name == "ActivityNet1.2"


def test_acmnet_activitynet_names(tmp_path):
  """ANet 1.3: v_ ids, training/validation subsets, validation/ folder."""
  videos = [v._replace(video_id="v_" + v.video_id,
                       subset="training" if v.split == "train"
                       else "validation") for v in small()]
  root = str(tmp_path / "anet")
  write_layout("acmnet", root, videos,
               folders={"train": "train", "test": "validation"})
  with warnings.catch_warnings():
    warnings.simplefilter("error", LayoutWarning)
    test = open_dataset(root, "test", "acmnet")
  assert test.video_ids == ("v_v2",)
  assert test.feature_dir.endswith("validation")
  train = open_dataset(root, "train", "acmnet")
  assert train.video_ids == ("v_v0", "v_v1")


def test_open_dataset_rejects_unknown_layout(tmp_path):
  with pytest.raises(ValueError, match="layout must be one of"):
    open_dataset(tmp_path, "train", "tfds")


def test_converted_layout_matches(tmp_path):
  src = write(tmp_path, "wtalc", small())
  videos = (videos_from_dataset(open_dataset(src, "train", "wtalc"), "train")
            + videos_from_dataset(open_dataset(src, "test", "wtalc"), "test"))
  dst = str(tmp_path / "converted")
  write_layout("basnet", dst, videos)
  a, b = open_dataset(src, "test", "wtalc"), open_dataset(dst, "test")
  np.testing.assert_array_equal(a[0].flow, b[0].flow)
  assert a[0].segments == b[0].segments


# ---------------------------------------------------------------------------
# Prefetch.
# ---------------------------------------------------------------------------
def test_prefetcher_gives_identical_batches(tmp_path):
  root = write(tmp_path, "acmnet", small(n=(6, 5, 7)))
  ds = open_dataset(root, "train", "acmnet")
  fn = lambda s: train_batch(ds, s, seed=1, batch_size=2, num_segments=9)
  with Prefetcher(fn, range(5), depth=2) as it:
    got = list(it)
  assert len(got) == 5
  for s, b in enumerate(got):
    for k, v in fn(s).items():
      np.testing.assert_array_equal(b[k], v)


def test_prefetcher_reraises_and_closes():
  def fn(s):
    if s == 2:
      raise RuntimeError("boom at 2")
    return s
  it = Prefetcher(fn, range(10))
  assert [next(it), next(it)] == [0, 1]
  with pytest.raises(RuntimeError, match="boom at 2"):
    next(it)
  endless = Prefetcher(lambda s: s, iter(int, 1), depth=1)
  assert next(endless) == 0
  endless.close()
  assert not endless._thread.is_alive()


def test_acmnet_gt_without_v_prefix_is_matched(tmp_path):
  import json
  videos = [v._replace(video_id="v_" + v.video_id) for v in small()]
  root = str(tmp_path / "anet")
  write_layout("acmnet", root, videos)
  with open(os.path.join(root, "gt.json")) as f:
    gt = json.load(f)
  gt["database"] = {k[2:]: v for k, v in gt["database"].items()}
  with open(os.path.join(root, "gt.json"), "w") as f:
    json.dump(gt, f)
  with pytest.warns(LayoutWarning, match="lack the 'v_' prefix"):
    ds = open_dataset(root, "train", "acmnet")
  assert ds.video_ids == ("v_v0", "v_v1") and len(ds[0].segments) == 1
