"""case_jax.tools.import_torch: torch-free reading of torch.save files, key
mapping, forward equivalence with a numpy forward, and the workdir it writes."""
import io
import json
import os
import pickle
import struct
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from case_jax import model as model_lib
from case_jax import defaults
from case_jax.tools import import_torch as it
from case_jax.tools import torch_file as tf

E, D_RGB, D_FLOW, C, K = 16, 12, 10, 5, 4


# ---------------------------------------------------------------------------
# A torch-free writer of the torch.save zip format (pickle protocol 2 opcodes
# written by hand, so no torch module is needed to produce the globals).
# ---------------------------------------------------------------------------
class _Tensor:
  """A tensor to write: a storage array plus a view (offset, size, stride)."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

  @classmethod
  def of(cls, a):
    a = np.ascontiguousarray(a, np.float32)
    strides = tuple(s // 4 for s in a.strides)
    return cls(a.reshape(-1), 0, a.shape, strides)


def _uni(s):
  b = s.encode()
  return b"X" + struct.pack("<I", len(b)) + b


def _int(i):
  return b"J" + struct.pack("<i", i)


def _tuple(items):
  return b"(" + b"".join(_int(i) for i in items) + b"t"


def write_torch_zip(path, tensors, prefix="archive", wrap=None):
  """{key: np.ndarray | _Tensor} -> a file in torch.save's zip layout."""
  storages = []
  body = b"\x80\x02}("  # PROTO 2, EMPTY_DICT, MARK
  for name, t in tensors.items():
    t = t if isinstance(t, _Tensor) else _Tensor.of(t)
    key = str(len(storages))
    storages.append((key, np.asarray(t.storage, "<f4")))
    pid = (b"(" + _uni("storage") + b"ctorch\nFloatStorage\n" + _uni(key) + _uni("cpu")
           + _int(t.storage.size) + b"tQ")  # TUPLE, BINPERSID
    body += (_uni(name) + b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + _int(t.offset)
             + _tuple(t.size) + _tuple(t.stride) + b"\x89"          # NEWFALSE
             + b"ccollections\nOrderedDict\n)R" + b"tR")            # hooks; args; REDUCE
  body += b"u"  # SETITEMS
  if wrap:  # {wrap: state_dict}
    body = b"\x80\x02}" + _uni(wrap) + body[2:] + b"s"
  body += b"."
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
    zf.writestr(f"{prefix}/data.pkl", body)
    zf.writestr(f"{prefix}/byteorder", "little")
    for key, arr in storages:
      zf.writestr(f"{prefix}/data/{key}", arr.tobytes())
    zf.writestr(f"{prefix}/version", "3\n")


def released_state_dict(seed=0, d_rgb=D_RGB, d_flow=D_FLOW, e=E, c=C, k=K):
  rng = np.random.default_rng(seed)
  sd = {}
  for s, d in (("rgb", d_rgb), ("flow", d_flow)):
    sd[f"cas_module_{s}.0.weight"] = rng.normal(size=(e, d, 1)).astype(np.float32) * 0.3
    sd[f"cas_module_{s}.0.bias"] = rng.normal(size=(e,)).astype(np.float32) * 0.1
    sd[f"cas_module_{s}.2.weight"] = rng.normal(size=(c, e, 1)).astype(np.float32) * 0.3
    sd[f"cas_module_{s}.2.bias"] = rng.normal(size=(c,)).astype(np.float32) * 0.1
    sd[f"base_module_{s}.0.weight"] = rng.normal(size=(e, d, 1)).astype(np.float32) * 0.3
    sd[f"base_module_{s}.0.bias"] = rng.normal(size=(e,)).astype(np.float32) * 0.1
    sd[f"att_module_{s}.weight"] = rng.normal(size=(1, e, 1)).astype(np.float32) * 0.3
    sd[f"att_module_{s}.bias"] = rng.normal(size=(1,)).astype(np.float32) * 0.1
    sd[f"clu_head_{s}.prototypes.weight"] = rng.normal(size=(k, e)).astype(np.float32)
  return sd


# ---------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------
def test_hand_written_zip_round_trips(tmp_path):
  base = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
  tensors = {
      "plain": base,
      # a transposed (non-contiguous) view of the same values
      "transposed": _Tensor(base.reshape(-1), 0, (5, 4, 3), (1, 5, 20)),
      # a view with a storage offset: base[1, 2:]
      "offset": _Tensor(base.reshape(-1), 30, (2, 5), (5, 1)),
      "scalar": _Tensor(np.array([7.5], np.float32), 0, (), ()),
  }
  path = tmp_path / "m.pkl"
  write_torch_zip(path, tensors, prefix="best_model")
  out = tf.load_torch_file(str(path))
  assert list(out) == list(tensors)
  np.testing.assert_array_equal(out["plain"], base)
  np.testing.assert_array_equal(out["transposed"], base.transpose(2, 1, 0))
  np.testing.assert_array_equal(out["offset"], base[1, 2:])
  assert out["scalar"].shape == () and float(out["scalar"]) == 7.5
  assert all(v.dtype == np.float32 for v in out.values())


@pytest.mark.parametrize("wrap", [None, "model", "state_dict"])
def test_find_state_dict(tmp_path, wrap):
  sd = released_state_dict()
  write_torch_zip(tmp_path / "m.pkl", sd, wrap=wrap)
  got = tf.find_state_dict(tf.load_torch_file(str(tmp_path / "m.pkl")))
  assert set(got) == set(sd)
  for k in sd:
    np.testing.assert_array_equal(got[k], sd[k])


def test_torch_saved_files_round_trip(tmp_path):
  torch = pytest.importorskip("torch")
  a = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
  sd = {"a": a, "t": a.transpose(0, 2), "s": a[1, 1:], "h": a.half(),
        "b": a.bfloat16(), "l": torch.arange(5), "p": torch.nn.Parameter(torch.ones(3))}
  torch.save(sd, tmp_path / "zip.pkl")
  torch.save({"state_dict": sd}, tmp_path / "legacy.pkl",
             _use_new_zipfile_serialization=False)
  for name in ("zip.pkl", "legacy.pkl"):
    got = tf.find_state_dict(tf.load_torch_file(str(tmp_path / name)))
    for k, v in sd.items():
      ref = v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
      assert got[k].shape == ref.shape, (name, k)
      np.testing.assert_array_equal(got[k].astype(ref.dtype), ref)


def test_torch_saved_released_model_matches_hand_written(tmp_path):
  torch = pytest.importorskip("torch")
  sd = released_state_dict()
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "t.pkl")
  write_torch_zip(tmp_path / "h.pkl", sd)
  a = it.state_dict_to_params(tf.find_state_dict(tf.load_torch_file(str(tmp_path / "t.pkl"))))
  b = it.state_dict_to_params(tf.find_state_dict(tf.load_torch_file(str(tmp_path / "h.pkl"))))
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_restricted_unpickler_rejects_other_globals(tmp_path):
  evil = pickle.dumps(os.system)  # a global that is not a tensor rebuild
  with pytest.raises(tf.UnsafeCheckpointError, match="system"):
    tf.RestrictedUnpickler(io.BytesIO(evil), None).load()
  call = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00hi\x85R."  # os.system('hi')
  path = tmp_path / "evil.pkl"
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", call)
  with pytest.raises(tf.UnsafeCheckpointError, match="refusing"):
    tf.load_torch_file(str(path))
  with pytest.raises(tf.UnsafeCheckpointError):
    tf.RestrictedUnpickler(io.BytesIO(b"\x80\x02cbuiltins\neval\n."), None).load()


def test_not_a_torch_file(tmp_path):
  path = tmp_path / "x.pkl"
  path.write_bytes(b"definitely not a pickle")
  with pytest.raises(ValueError, match="torch"):
    tf.load_torch_file(str(path))


# ---------------------------------------------------------------------------
# Mapping and the forward pass.
# ---------------------------------------------------------------------------
def _numpy_forward(sd, s, x):
  """The released stream forward in numpy (k=1 convs are matmuls)."""
  relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
  conv = lambda v, name: v @ sd[name + ".weight"][:, :, 0].T + sd[name + ".bias"]  # noqa
  h = relu(conv(x, f"cas_module_{s}.0"))
  cas = conv(h, f"cas_module_{s}.2")
  base = relu(conv(x, f"base_module_{s}.0"))
  att = 1.0 / (1.0 + np.exp(-conv(base, f"att_module_{s}")[..., 0]))
  w = sd[f"clu_head_{s}.prototypes.weight"]
  w = w / np.linalg.norm(w, axis=1, keepdims=True)
  emb = base / np.maximum(np.linalg.norm(base, axis=-1, keepdims=True), 1e-12)
  clu = 10.0 * emb @ w.T
  return cas, att, clu


def test_forward_equals_numpy_forward(tmp_path):
  sd = released_state_dict(seed=3)
  write_torch_zip(tmp_path / "m.pkl", sd)
  params = it.state_dict_to_params(tf.find_state_dict(tf.load_torch_file(str(tmp_path / "m.pkl"))))
  assert params["rgb"]["cas_encoder"]["kernel"].shape == (D_RGB, E)
  np.testing.assert_array_equal(params["flow"]["classifier"]["kernel"],
                                sd["cas_module_flow.2.weight"][:, :, 0].T)
  np.testing.assert_array_equal(params["rgb"]["prototypes"], sd["clu_head_rgb.prototypes.weight"])
  model = model_lib.CASEModel(num_classes=C, embed_dim=E, num_clusters=K)
  rng = np.random.default_rng(0)
  x = {"rgb": rng.normal(size=(2, 7, D_RGB)).astype(np.float64),
       "flow": rng.normal(size=(2, 7, D_FLOW)).astype(np.float64)}
  p = model_lib.normalize_prototypes(jax.tree.map(jnp.asarray, params))
  out = model.apply({"params": p}, jnp.asarray(x["rgb"], jnp.float32),
                    jnp.asarray(x["flow"], jnp.float32))
  sd64 = {k: v.astype(np.float64) for k, v in sd.items()}
  for s in ("rgb", "flow"):
    cas, att, clu = _numpy_forward(sd64, s, x[s])
    np.testing.assert_allclose(out[s].cas, cas, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[s].att, att, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[s].clu, clu, rtol=1e-4, atol=1e-4)


def test_missing_extra_and_bad_shapes_are_reported():
  sd = released_state_dict()
  bad = dict(sd)
  del bad["att_module_flow.bias"]
  bad["something.else"] = np.zeros(3, np.float32)
  with pytest.raises(ValueError, match=r"missing 1 expected key.*att_module_flow\.bias.*something\.else"):
    it.state_dict_to_params(bad)
  extra = dict(sd, **{"something.else": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match="unexpected key"):
    it.state_dict_to_params(extra)
  shaped = dict(sd, **{"cas_module_rgb.2.weight": np.zeros((C, E + 1, 1), np.float32)})
  with pytest.raises(ValueError, match=r"cas_module_rgb\.2\.weight has shape"):
    it.state_dict_to_params(shaped)
  prefixed = {"module." + k: v for k, v in sd.items()}  # DataParallel
  assert it.params_summary(it.state_dict_to_params(prefixed)) == {
      "num_classes": C, "embed_dim": E, "num_clusters": K, "rgb_dim": D_RGB,
      "flow_dim": D_FLOW}


# ---------------------------------------------------------------------------
# The workdir it writes is what --mode=evaluate loads.
# ---------------------------------------------------------------------------
def _small_cfg():
  cfg = defaults.load_config("thumos14")
  cfg.model.embed_dim = E
  cfg.model.num_clusters = K
  return cfg


def test_import_writes_an_evaluable_workdir(tmp_path):
  from case_jax import runs
  sd = released_state_dict(seed=5)
  write_torch_zip(tmp_path / "best_model.pkl", sd)
  q_r = np.random.default_rng(1).dirichlet([1, 1], size=K).astype(np.float32)
  np.save(tmp_path / "cls_gt.npy", q_r)
  classes = tmp_path / "classes.txt"
  classes.write_text("\n".join(f"c{i}" for i in range(C)) + "\n")
  out = tmp_path / "work"
  rc = it.main(["import_torch", str(tmp_path / "best_model.pkl"), str(tmp_path / "cls_gt.npy"),
                f"--out={out}", f"--classes={classes}", "--step=7",
                f"--config={defaults.config_path('thumos14')}",
                f"--config.model.embed_dim={E}", f"--config.model.num_clusters={K}"])
  assert rc == 0
  info = json.load(open(out / "run.json"))
  assert info == {"classes": [f"c{i}" for i in range(C)], "rgb_dim": D_RGB,
                  "flow_dim": D_FLOW}
  model, state, _ = runs.load_trained(_small_cfg(), str(out))
  assert int(state.step) == 7
  np.testing.assert_array_equal(np.asarray(state.q_r), q_r)
  want = it.state_dict_to_params(sd)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b),
               state.params, want)
  assert model.num_classes == C
  # A second import into the same workdir needs --overwrite.
  with pytest.raises(FileExistsError, match="overwrite"):
    it.import_checkpoint(str(tmp_path / "best_model.pkl"), str(tmp_path / "cls_gt.npy"),
                         str(out), _small_cfg(), classes=info["classes"])


def test_import_checks_config_classes_and_q_r(tmp_path):
  sd = released_state_dict()
  write_torch_zip(tmp_path / "m.pkl", sd)
  np.save(tmp_path / "q.npy", np.full((K, 2), 0.5, np.float32))
  np.save(tmp_path / "q_bad.npy", np.full((K + 1, 2), 0.5, np.float32))
  cfg = _small_cfg()
  names = [f"c{i}" for i in range(C)]
  with pytest.raises(ValueError, match=r"\(5, 2\)"):
    it.import_checkpoint(str(tmp_path / "m.pkl"), str(tmp_path / "q_bad.npy"),
                         str(tmp_path / "w1"), cfg, classes=names)
  with pytest.raises(ValueError, match="class names"):
    it.import_checkpoint(str(tmp_path / "m.pkl"), str(tmp_path / "q.npy"),
                         str(tmp_path / "w2"), cfg)  # THUMOS14's 20 names
  cfg.model.embed_dim = 2 * E
  with pytest.raises(ValueError, match="embed_dim"):
    it.import_checkpoint(str(tmp_path / "m.pkl"), str(tmp_path / "q.npy"),
                         str(tmp_path / "w3"), cfg, classes=names)
  cfg.model.embed_dim, cfg.model.cluster_encoder = E, "separate"
  with pytest.raises(ValueError, match="cluster_encoder=shared"):
    it.import_checkpoint(str(tmp_path / "m.pkl"), str(tmp_path / "q.npy"),
                         str(tmp_path / "w4"), cfg, classes=names)
  assert not (tmp_path / "w4").exists()        # refused before writing


def test_reading_never_imports_torch(tmp_path):
  import subprocess
  import sys
  write_torch_zip(tmp_path / "m.pkl", released_state_dict())
  code = ("import sys; sys.modules['torch'] = None\n"  # any 'import torch' fails
          "from case_jax.tools import import_torch as it, torch_file as tf\n"
          f"sd = tf.find_state_dict(tf.load_torch_file({str(tmp_path / 'm.pkl')!r}))\n"
          "print(it.params_summary(it.state_dict_to_params(sd))['embed_dim'])\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == str(E)
