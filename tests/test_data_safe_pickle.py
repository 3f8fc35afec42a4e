"""safe_pickle: object .npy files read without the stock unpickler.

Round trips against np.load(allow_pickle=True) for what numpy writes (np.save:
protocol 3; protocol 2 after a hand-written header; Python 2 / numpy 1.x
style, as the W-TALC release was written), the real W-TALC annotation files
(../shared/data; skipped when absent), and malicious pickles that must be
refused without running anything.
"""
import io
import os
import pickle
import warnings

import numpy as np
import pytest
from numpy.lib import format as npy_format

from case_jax.data import safe_pickle, wtalc_files
from case_jax.data.safe_pickle import (NpyFormatError, UnsafePickleError,
                                       load_object_npy)
from case_jax.data.records import LayoutError
from tests.conftest import SHARED_DATA

REAL_WTALC = os.path.join(SHARED_DATA, "thumos14_wtalc_annotations")


def obj(items):
  a = np.empty(len(items), object)
  for i, x in enumerate(items):
    a[i] = x
  return a


def cases():
  rng = np.random.default_rng(0)
  return {
      "float_arrays": obj([rng.standard_normal((5, 4)).astype(np.float32),
                           rng.standard_normal((0, 4)),
                           rng.standard_normal((3, 2)).astype(">f8"),
                           np.asfortranarray(rng.standard_normal((3, 6)))]),
      "nested_float_lists": obj([[[1.5, 2.25], [3.0, 4.0]], [],
                                 [[np.float64(0.5), np.float32(1.5)]],
                                 [[1, 2]]]),
      "strings": obj([["BaseballPitch", "Diving"], [], ["é"]]),
      "bytes": obj([[b"CliffDiving", b""], [b"\x00\xff"], []]),
      "mixed": obj([np.arange(4), [1, 2 ** 70], "x", b"y", None, 1.5,
                    (1, 2), {"k": [1.0]}]),
      "two_dims": obj([[1.0], [2.0, 3.0], [], [4.0]]).reshape(2, 2),
  }


def assert_same(a, b, byteorder=True):
  """Same types, dtypes, shapes, values; byteorder=False: a '>f8' array may
  come back native (pickling does that, np.load included)."""
  assert type(a) is type(b), (a, b)
  if isinstance(a, np.ndarray):
    assert a.shape == b.shape
    assert (a.dtype == b.dtype if byteorder else
            a.dtype.newbyteorder("=") == b.dtype.newbyteorder("="))
    if a.dtype == object:
      for x, y in zip(a.reshape(-1), b.reshape(-1)):
        assert_same(x, y, byteorder)
    else:
      np.testing.assert_array_equal(a, b)
  elif isinstance(a, (list, tuple)):
    assert len(a) == len(b)
    for x, y in zip(a, b):
      assert_same(x, y, byteorder)
  elif isinstance(a, dict):
    assert a.keys() == b.keys()
    for k in a:
      assert_same(a[k], b[k], byteorder)
  else:
    assert a == b


def write_npy(path, arr, payload, version=(1, 0)):
  """A .npy file: numpy's header for ``arr``, then ``payload`` (a pickle)."""
  header = {"descr": "|O", "fortran_order": False, "shape": arr.shape}
  buf = io.BytesIO()
  if version == (1, 0):
    npy_format.write_array_header_1_0(buf, header)
  else:
    npy_format.write_array_header_2_0(buf, header)
  data = bytearray(buf.getvalue())
  if version == (3, 0):
    data[6] = 3          # 3.0 = 2.0 with a utf-8 header; ours is ASCII
  with open(path, "wb") as f:
    f.write(bytes(data) + payload)
  return path


class _Py2Pickler(pickle._Pickler):
  """Protocol 2 as Python 2 wrote it: str and bytes both as (SHORT_)BINSTRING,
  numpy globals under numpy 1.x's module name."""
  dispatch = dict(pickle._Pickler.dispatch)

  def save_binstring(self, obj):
    raw = obj.encode("latin1") if isinstance(obj, str) else obj
    n = len(raw)
    if n < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([n]) + raw)
    else:
      self.write(pickle.BINSTRING + n.to_bytes(4, "little") + raw)
    self.memoize(obj)

  dispatch[bytes] = save_binstring
  dispatch[str] = save_binstring


def py2_pickle(arr):
  f = io.BytesIO()
  _Py2Pickler(f, protocol=2).dump(arr)
  return f.getvalue().replace(b"cnumpy._core.multiarray\n",
                              b"cnumpy.core.multiarray\n")


def np_load(path, **kw):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core names
    return np.load(path, allow_pickle=True, **kw)


@pytest.mark.parametrize("name", list(cases()))
def test_np_save_round_trip(tmp_path, name):
  arr = cases()[name]
  path = tmp_path / "a.npy"
  np.save(path, arr, allow_pickle=True)          # pickle protocol 3
  got = load_object_npy(path)
  assert_same(got, np_load(path))
  assert_same(got, arr, byteorder=False)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("name", list(cases()))
def test_protocols_and_header_versions(tmp_path, name, protocol, version):
  arr = cases()[name]
  path = write_npy(tmp_path / "a.npy", arr,
                   pickle.dumps(arr, protocol=protocol), version)
  got = load_object_npy(path)
  assert_same(got, np_load(path))
  assert_same(got, arr, byteorder=False)


@pytest.mark.parametrize("encoding", ["bytes", "latin1"])
@pytest.mark.parametrize("name", ["float_arrays", "nested_float_lists",
                                  "bytes", "two_dims"])
def test_python2_style_pickle(tmp_path, name, encoding):
  arr = cases()[name]
  payload = py2_pickle(arr)
  assert b"cnumpy.core.multiarray\n_reconstruct" in payload
  assert b"X" not in payload[:40] and b"_codecs" not in payload
  path = write_npy(tmp_path / "a.npy", arr, payload)
  got = load_object_npy(path, encoding=encoding)
  assert_same(got, np_load(path, encoding=encoding))
  if name != "bytes" or encoding == "bytes":
    assert_same(got, arr, byteorder=False)


def test_plain_array_passes_through(tmp_path):
  path = tmp_path / "d.npy"
  np.save(path, np.arange(6.0).reshape(3, 2))
  np.testing.assert_array_equal(load_object_npy(path),
                                np.arange(6.0).reshape(3, 2))


REAL_FILES = ["segments.npy", "labels.npy", "labels_all.npy", "videoname.npy",
              "subset.npy", "classlist.npy", "duration.npy"]


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_wtalc_annotation_files(name):
  path = os.path.join(REAL_WTALC, name)
  if not os.path.isfile(path):
    pytest.skip(f"{path} absent")
  got = load_object_npy(path, encoding="bytes")   # as wtalc_files reads them
  assert_same(got, np_load(path, encoding="bytes"))
  if name in wtalc_files.PICKLED_ANNOTATIONS:
    assert got.dtype == object and got.ndim == 1


# ---------------------------------------------------------------------------
# Malicious pickles: refused, nothing run.
# ---------------------------------------------------------------------------
class _Call:
  """Pickles as a call of fn(*args); building the pickle calls nothing."""

  def __init__(self, fn, *args):
    self.fn, self.args = fn, args

  def __reduce__(self):
    return self.fn, self.args


def _evil_arrays(marker):
  import subprocess
  cmd = f"echo pwned > {marker}"
  return {
      "os.system": obj([np.zeros((2, 2)), _Call(os.system, cmd)]),
      "subprocess": obj([_Call(subprocess.call, ["sh", "-c", cmd])]),
      "eval": obj([_Call(eval, f"open({str(marker)!r}, 'w')")]),
      "np.load": obj([_Call(np.load, str(marker))]),
      "top_level": _Call(os.system, cmd),
  }


@pytest.mark.parametrize("protocol", [2, 3, 5])
@pytest.mark.parametrize("kind", list(_evil_arrays("m")))
def test_malicious_pickle_is_refused(tmp_path, kind, protocol):
  marker = tmp_path / "pwned"
  evil = _evil_arrays(marker)[kind]
  path = write_npy(tmp_path / "segments.npy", np.empty(2, object),
                   pickle.dumps(evil, protocol=protocol))
  with pytest.raises(UnsafePickleError, match=r"segments\.npy: refusing to "
                     r"unpickle global '[\w.]+\.(system|call|eval|load)'"):
    load_object_npy(path, encoding="bytes")
  assert not marker.exists()


def test_os_system_refused_in_np_save_file(tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "labels.npy"
  np.save(path, obj([["Diving"], _Call(os.system, f"echo pwned > {marker}")]),
          allow_pickle=True)
  with pytest.raises(UnsafePickleError, match=r"labels\.npy.*system"):
    load_object_npy(path)
  assert not marker.exists()


def test_allowed_globals_are_guarded(tmp_path):
  # _reconstruct only builds plain ndarrays; _codecs.encode only latin1;
  # bytes() only empty.
  for evil, match in [(_Call(safe_pickle._np_reconstruct, np.dtype, (0,),
                             b"b"), "only numpy.ndarray"),
                      (_Call(__import__("_codecs").encode, "x", "zlib"),
                       "only \\(str, 'latin1'\\)")]:
    path = write_npy(tmp_path / "x.npy", np.empty(1, object),
                     pickle.dumps(obj([evil]), protocol=2))
    with pytest.raises(UnsafePickleError, match=match):
      load_object_npy(path)
  payload = (b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R.")
  path = write_npy(tmp_path / "y.npy", np.empty((), object), payload)
  with pytest.raises(UnsafePickleError, match="only bytes\\(\\)"):
    load_object_npy(path)


def test_payload_must_match_header(tmp_path):
  path = write_npy(tmp_path / "a.npy", np.empty(3, object),
                   pickle.dumps([1.0, 2.0], protocol=3))
  with pytest.raises(NpyFormatError, match="pickle holds list"):
    load_object_npy(path)
  path = write_npy(tmp_path / "b.npy", np.empty(3, object),
                   pickle.dumps(obj([1, 2]), protocol=3))
  with pytest.raises(NpyFormatError, match=r"shape \(3,\)"):
    load_object_npy(path)
  path = write_npy(tmp_path / "c.npy", np.empty(3, object), b"\x80\x03(")
  with pytest.raises(NpyFormatError, match="does not load"):
    load_object_npy(path)
  (tmp_path / "d.npy").write_bytes(b"not an npy file at all")
  with pytest.raises(NpyFormatError, match="not a readable .npy"):
    load_object_npy(tmp_path / "d.npy")
  with pytest.raises(ValueError, match="encoding"):
    load_object_npy(tmp_path / "d.npy", encoding="utf8")


# ---------------------------------------------------------------------------
# wtalc_files uses it for the joint feature file and the annotations.
# ---------------------------------------------------------------------------
def _wtalc_root(tmp_path):
  from case_jax.data.writers import VideoSpec, write_layout
  rng = np.random.default_rng(1)
  videos = [VideoSpec(f"v{i}", s, "validation" if s == "train" else "test",
                      None, ((0.5, 1.5, "Jump"),),
                      rng.standard_normal((5, 4)), rng.standard_normal((5, 4)))
            for i, s in enumerate(("train", "train", "test"))]
  root = str(tmp_path / "wtalc")
  write_layout("wtalc", root, videos, classes=("Jump", "Run"))
  return root


@pytest.mark.parametrize("target", ["Thumos14reduced-I3D-JOINTFeatures.npy",
                                    "Thumos14reduced-Annotations/segments.npy",
                                    "Thumos14reduced-Annotations/labels.npy"])
def test_wtalc_layout_refuses_malicious_files(tmp_path, target):
  from case_jax.data.layouts import open_dataset
  root = _wtalc_root(tmp_path)
  assert len(open_dataset(root, "train", "wtalc")) == 2
  marker = tmp_path / "pwned"
  path = os.path.join(root, target)
  good = np_load(path)
  good[1] = _Call(os.system, f"echo pwned > {marker}")
  np.save(path, good, allow_pickle=True)
  with pytest.raises(UnsafePickleError, match="system"):
    open_dataset(root, "train", "wtalc")
  assert not marker.exists()


def test_wtalc_joint_entries_holding_objects_are_refused(tmp_path):
  from case_jax.data.layouts import open_dataset
  root = _wtalc_root(tmp_path)
  path = os.path.join(root, "Thumos14reduced-I3D-JOINTFeatures.npy")
  joint = np_load(path)
  joint[2] = obj([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2)
  np.save(path, joint, allow_pickle=True)
  with pytest.raises(LayoutError, match=r"entry 2 is an ndarray of dtype "
                     r"object"):
    open_dataset(root, "train", "wtalc")
