"""Reading ``torch.save`` files without torch (for tools/import_torch.py).

``torch.save`` writes a zip archive holding ``<name>/data.pkl`` (a pickle
whose tensors refer, by persistent id, to storages) and ``<name>/data/<key>``
(each storage's raw bytes).  The pickle is read with a restricted unpickler
that resolves only the tensor-rebuild functions, ``collections.OrderedDict``
and the storage type names; any other global (e.g. ``os.system``) raises
``UnsafeCheckpointError`` before anything runs.  The pre-1.6 (non-zip) format
is read as well.  torch is never imported.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Mapping

import numpy as np

from case_jax.errors import MissingFile, UserError

_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("float32"), "DoubleStorage": np.dtype("float64"),
    "HalfStorage": np.dtype("float16"), "BFloat16Storage": "bfloat16",
    "LongStorage": np.dtype("int64"), "IntStorage": np.dtype("int32"),
    "ShortStorage": np.dtype("int16"), "CharStorage": np.dtype("int8"),
    "ByteStorage": np.dtype("uint8"), "BoolStorage": np.dtype("bool"),
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


class UnsafeCheckpointError(UserError, pickle.UnpicklingError):
  """The pickle names a global that is not a tensor-rebuild function."""


class BadCheckpoint(UserError, ValueError):
  """The file is not (or no longer: truncated, corrupt) a torch.save file
  holding a state dict; the message names the file and the fix."""


class _StorageType:
  """Stands for torch.<X>Storage in the pickle: only its name is kept."""

  def __init__(self, name: str):
    self.name = name

  def __repr__(self):
    return f"torch.{self.name}"


def _rebuild_tensor_v2(storage, storage_offset, size, stride,
                       requires_grad=False, backward_hooks=None, metadata=None):
  """numpy stand-in for torch._utils._rebuild_tensor_v2 (a strided view, copied)."""
  del requires_grad, backward_hooks, metadata
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  flat = np.asarray(storage)
  if not size:
    return flat[storage_offset].copy()
  if any(s == 0 for s in size):
    return np.zeros(size, flat.dtype)
  last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))
  if storage_offset < 0 or last >= flat.size or min(stride) < 0:
    raise pickle.UnpicklingError(
        f"tensor view (offset {storage_offset}, size {size}, stride {stride}) "
        f"runs outside its storage of {flat.size} elements: corrupt file?")
  contiguous = tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
  if stride == contiguous:
    return flat[storage_offset:storage_offset + int(np.prod(size))].reshape(size).copy()
  item = flat.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(
      flat[storage_offset:], shape=size, strides=tuple(s * item for s in stride),
      writeable=False)
  return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
  del requires_grad, backward_hooks, rest
  return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class RestrictedUnpickler(pickle.Unpickler):
  """Resolves only tensor rebuilds, OrderedDict and torch storage types.

  ``load_storage(storage_type_name, key, numel)`` returns the storage's 1-D
  numpy array for a persistent id ``('storage', type, key, location, numel)``.
  """

  def __init__(self, file, load_storage, rebuild_tensor=_rebuild_tensor_v2):
    super().__init__(file)
    self._load_storage = load_storage
    self._rebuild_tensor = rebuild_tensor
    self._cache = {}

  def find_class(self, module, name):
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return self._rebuild_tensor
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise UnsafeCheckpointError(
        f"refusing to load global {module}.{name}: a state-dict checkpoint holds "
        "only tensors (torch._utils._rebuild_tensor_v2), OrderedDict and "
        "torch.*Storage.  If this file pickles a whole model or other objects, "
        "re-save its state_dict() with torch.save(model.state_dict(), path).")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    stype, key, _, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
    if not isinstance(stype, _StorageType):
      raise UnsafeCheckpointError(f"persistent id names {stype!r}, not a storage type")
    if len(pid) > 5 and pid[5] is not None:
      raise pickle.UnpicklingError("storage views (legacy view_metadata) are not "
                                   "supported; re-save with a newer torch.")
    if key not in self._cache:
      self._cache[key] = self._load_storage(stype.name, key, numel)
    return self._cache[key]


def _decode(raw: bytes, type_name: str, numel: int, big_endian: bool) -> np.ndarray:
  dt = _STORAGE_DTYPES[type_name]
  if dt == "bfloat16":
    order = ">" if big_endian else "<"
    bits = np.frombuffer(raw, f"{order}u2", count=numel).astype(np.uint32) << 16
    return bits.view(np.float32)
  dt = dt.newbyteorder(">" if big_endian else "<") if dt.itemsize > 1 else dt
  if len(raw) < numel * dt.itemsize:
    raise pickle.UnpicklingError(f"storage holds {len(raw)} bytes, expected "
                                 f"{numel} x {dt.itemsize}: truncated file?")
  return np.frombuffer(raw, dt, count=numel).astype(dt.newbyteorder("="))


def _load_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
      raise BadCheckpoint(f"{path}: a torch.save zip holds one <name>/data.pkl; found "
                       f"{pkls or 'none'}")
    prefix = pkls[0][:-len("data.pkl")]
    big = False
    if prefix + "byteorder" in names:
      big = zf.read(prefix + "byteorder").decode().strip() == "big"

    def load_storage(type_name, key, numel):
      entry = f"{prefix}data/{key}"
      if entry not in names:
        raise pickle.UnpicklingError(f"{path}: storage {entry} is missing")
      return _decode(zf.read(entry), type_name, numel, big)

    return RestrictedUnpickler(io.BytesIO(zf.read(pkls[0])), load_storage).load()


def _load_legacy(path: str) -> Any:
  """The pre-1.6 format: magic, protocol, sys info, the object, storage keys,
  then each storage as int64 element count + raw bytes (little-endian)."""
  with open(path, "rb") as f:
    safe = lambda: RestrictedUnpickler(f, _no_storage).load()  # noqa: E731
    try:
      magic = safe()
    except Exception as e:
      raise BadCheckpoint(f"{path} is neither a torch.save zip archive nor a legacy "
                       f"torch file ({e}). Re-save it with a recent torch: "
                       "torch.save(torch.load(p), p2).") from e
    if magic != _LEGACY_MAGIC:
      raise BadCheckpoint(f"{path} is not a torch.save file (bad magic number).")
    safe()  # protocol version
    sys_info = safe()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
      raise BadCheckpoint(f"{path}: big-endian legacy files are not supported.")
    pending = {}

    def defer(type_name, key, numel):
      pending[key] = (type_name, numel)
      return _Deferred(key)

    obj = RestrictedUnpickler(f, defer, _deferred_rebuild).load()
    keys = safe()
    storages = {}
    for key in keys:
      type_name, _ = pending[key]
      (numel,) = struct.unpack("<q", f.read(8))
      itemsize = 2 if _STORAGE_DTYPES[type_name] == "bfloat16" else _STORAGE_DTYPES[type_name].itemsize
      storages[key] = _decode(f.read(numel * itemsize), type_name, numel, False)
  return _resolve(obj, storages)


def _no_storage(*_):
  raise pickle.UnpicklingError("unexpected storage reference in a legacy header")


class _Deferred:
  def __init__(self, key):
    self.key = key


class _DeferredTensor:
  def __init__(self, args):
    self.args = args


def _deferred_rebuild(storage, *args):
  return _DeferredTensor((storage,) + args)


def _resolve(obj, storages):
  if isinstance(obj, _DeferredTensor):
    storage, *rest = obj.args
    return _rebuild_tensor_v2(storages[storage.key], *rest)
  if isinstance(obj, dict):
    return type(obj)((k, _resolve(v, storages)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(v, storages) for v in obj)
  return obj


def load_torch_file(path: str) -> Any:
  """Loads a ``torch.save`` file's object with tensors as numpy arrays.

  A missing, truncated or corrupt file, or one pickling more than tensors,
  is a user error naming ``path``."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MissingFile(f"{path}: no such checkpoint file; pass the released "
                      "best_model.pkl (a torch.save state dict)")
  try:
    if zipfile.is_zipfile(path):
      return _load_zip(path)
    return _load_legacy(path)
  except UnsafeCheckpointError as e:
    raise UnsafeCheckpointError(f"{path}: {e}") from None
  except UserError:
    raise
  # What a truncated or corrupt archive or pickle raises while being read.
  except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError) as e:
    raise BadCheckpoint(f"{path}: cannot be read as a torch.save file ({e!r:.200}); "
                        "truncated or corrupt? Download or re-save it.") from e


def find_state_dict(obj: Any, source: str = "the checkpoint") -> dict:
  """The state dict itself, or the one under 'state_dict' / 'model'."""
  if isinstance(obj, Mapping):
    if any(isinstance(v, np.ndarray) for v in obj.values()):
      return dict(obj)
    for key in ("state_dict", "model", "model_state_dict", "net"):
      if isinstance(obj.get(key), Mapping):
        return find_state_dict(obj[key], source)
  raise BadCheckpoint(f"{source}: no state dict found: expected a dict of tensors "
                      "or a dict with a 'state_dict' or 'model' entry; got "
                      f"{type(obj).__name__}"
                      + (f" with keys {sorted(obj)[:10]}" if isinstance(obj, Mapping) else ""))
