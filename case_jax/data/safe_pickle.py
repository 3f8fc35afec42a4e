"""Reading pickled .npy object arrays without running the file's code.

numpy can store ragged data (per-video feature arrays of different lengths,
per-video lists of segments or labels) only as an object array, which
``np.save`` writes as a pickle after the ordinary .npy header.  The W-TALC /
CO2-Net release ships its joint feature file and ``segments.npy``,
``labels.npy`` and ``labels_all.npy`` that way.  ``np.load(...,
allow_pickle=True)`` unpickles with the stock unpickler, which imports and
calls whatever the file names (``os.system`` included).

``load_object_npy`` instead

* parses the header itself with ``numpy.lib.format.read_magic`` and
  ``read_array_header_1_0`` / ``read_array_header_2_0`` (pure header
  parsing, no unpickling), accepting versions 1.0, 2.0 and 3.0;
* reads a non-object array as ``np.load(..., allow_pickle=False)`` does;
* unpickles an object array (descr ``|O``) with ``RestrictedUnpickler``, whose
  ``find_class`` resolves only the handful of globals that numpy's own pickles
  of object arrays of numeric arrays, numbers, strings, bytes and (nested)
  lists use -- under their numpy 1.x and 2.x module names, and as Python 2 /
  numpy 1.x wrote them (protocol 2) and as Python 3 writes them (``np.save``
  uses protocol 3; 4 and 5 are accepted too).  Any other global raises
  ``UnsafePickleError`` naming the file and the global, before anything is
  called;
* checks that the result is an object ndarray of the header's shape.

Allowed globals (``ALLOWED_GLOBALS``): ``_reconstruct`` (only to create a
plain ``numpy.ndarray``), ``numpy.ndarray``, ``numpy.dtype``, numpy's
``scalar`` (numpy scalars such as np.float64 inside lists), numpy's
``_frombuffer`` (protocol 5 arrays), and, for Python 3 protocol-2 pickles of
bytes, ``_codecs.encode`` (only ``(str, 'latin1')``) and ``bytes`` (only
``bytes()``).  Plain lists, tuples, dicts, str, bytes, ints and floats are
pickle opcodes and need no global.

What remains trusted is numpy's own C code for ``ndarray.__setstate__`` /
``dtype.__setstate__`` (the same code ``np.load`` runs on every pickled
array): a hostile file can still make the reader fail or allocate memory, but
it cannot name a function to call.
"""
from __future__ import annotations

import io
import os
import pickle
from typing import Any, Callable

import numpy as np
from numpy.lib import format as npy_format

ENCODINGS = ("ASCII", "latin1", "bytes")


class UnsafePickleError(pickle.UnpicklingError):
  """A pickle in a .npy file names a global outside the allow-list."""


class NpyFormatError(ValueError):
  """A .npy file's header or payload is not what an object array needs."""


try:  # numpy >= 2
  from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
  from numpy.core import multiarray as _multiarray  # type: ignore
try:
  from numpy._core.numeric import _frombuffer as _np_frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
  try:
    from numpy.core.numeric import _frombuffer as _np_frombuffer  # type: ignore
  except ImportError:
    _np_frombuffer = None

_np_reconstruct = _multiarray._reconstruct
_np_scalar = _multiarray.scalar


def _reconstruct(subtype, shape, dtype):
  """numpy's ``_reconstruct``, for plain ndarrays only (no subclasses)."""
  if subtype is not np.ndarray:
    raise UnsafePickleError(f"_reconstruct of {subtype!r}; only numpy.ndarray "
                            "is allowed")
  return _np_reconstruct(subtype, shape, dtype)


def _scalar(dtype, *args):
  if not isinstance(dtype, np.dtype):
    raise UnsafePickleError(f"numpy scalar of {type(dtype).__name__}, "
                            "expected a numpy.dtype")
  return _np_scalar(dtype, *args)


def _frombuffer(buf, dtype, shape, order):
  if _np_frombuffer is None:  # pragma: no cover
    raise UnsafePickleError("this numpy has no _frombuffer")
  if not isinstance(dtype, np.dtype) or dtype.hasobject:
    raise UnsafePickleError(f"_frombuffer with dtype {dtype!r}; only plain "
                            "(non-object) dtypes are allowed")
  return _np_frombuffer(buf, dtype, shape, order)


def _codecs_encode(text, encoding="utf-8", errors="strict"):
  """How Python 3 pickles bytes at protocol < 3: encode(str, 'latin1')."""
  if (not isinstance(text, str) or encoding not in ("latin1", "latin-1")
      or errors != "strict"):
    raise UnsafePickleError(f"_codecs.encode with ({type(text).__name__}, "
                            f"{encoding!r}); only (str, 'latin1') is allowed")
  return text.encode("latin1")


def _empty_bytes(*args):
  """How Python 3 pickles b'' at protocol < 3: bytes()."""
  if args:
    raise UnsafePickleError("bytes() with arguments; only bytes() is allowed")
  return b""


def _allowed() -> dict[tuple[str, str], Any]:
  out: dict[tuple[str, str], Any] = {}
  for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    out[(mod, "_reconstruct")] = _reconstruct
    out[(mod, "scalar")] = _scalar
  for mod in ("numpy.core.numeric", "numpy._core.numeric"):
    out[(mod, "_frombuffer")] = _frombuffer
  out[("numpy", "ndarray")] = np.ndarray
  out[("numpy", "dtype")] = np.dtype
  out[("_codecs", "encode")] = _codecs_encode
  for mod in ("builtins", "__builtin__"):
    out[(mod, "bytes")] = _empty_bytes
  return out


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = _allowed()


class RestrictedUnpickler(pickle.Unpickler):
  """An Unpickler that resolves only ``ALLOWED_GLOBALS``.

  Every way a pickle can name a callable (GLOBAL, STACK_GLOBAL, INST, OBJ,
  EXT*) goes through ``find_class``; persistent ids are refused by the base
  class.  ``source`` names the file in error messages.
  """

  def __init__(self, file, *, source: str = "<pickle>",
               encoding: str = "ASCII"):
    super().__init__(file, fix_imports=True, encoding=encoding)
    self.source = source

  def find_class(self, module: str, name: str):
    try:
      return ALLOWED_GLOBALS[(module, name)]
    except (KeyError, TypeError):
      pass
    raise UnsafePickleError(
        f"{self.source}: refusing to unpickle global '{module}.{name}'; an "
        "object array of numeric arrays, numbers, strings and lists only "
        "needs numpy's own globals. This file may be malicious, or is not a "
        "plain object array (open it only if you trust it and know what "
        "it holds)")

  def persistent_load(self, pid):
    raise UnsafePickleError(f"{self.source}: refusing persistent id {pid!r}")


def _read_header(fh, path: str):
  try:
    version = npy_format.read_magic(fh)
    if version == (1, 0):
      shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
      # 3.0 differs from 2.0 only by a utf-8 (not latin-1) header, which
      # matters for non-ASCII field names of structured dtypes, never '|O'.
      shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
    else:
      raise ValueError(f"unsupported .npy format version {version}")
  except ValueError as e:
    raise NpyFormatError(f"{path}: not a readable .npy file ({e})") from None
  return version, shape, fortran, dtype


def load_object_npy(path: str | os.PathLike, *,
                    encoding: str = "ASCII") -> np.ndarray:
  """Loads a .npy file like ``np.load(path, allow_pickle=True,
  encoding=encoding)``, without letting its pickle call anything but numpy's
  own array / dtype / scalar constructors.

  Args:
    path: the .npy file.
    encoding: how Python 2 ``str`` in the pickle is decoded, as for
      ``np.load``: "ASCII" (np.load's default), "latin1" or "bytes" (what
      W-TALC's Python 2 annotation files need: their strings stay bytes).

  Returns:
    the array: an object ndarray when the header's descr is ``|O``, else the
    plain array (read with ``allow_pickle=False``).

  Raises:
    UnsafePickleError: the pickle names a global outside ``ALLOWED_GLOBALS``.
    NpyFormatError: a bad header, a dtype holding objects other than ``|O``,
      a payload that is not an object ndarray of the header's shape, or a
      pickle that fails to load.
  """
  path = os.fspath(path)
  if encoding not in ENCODINGS:
    raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
  with open(path, "rb") as fh:
    _, shape, _, dtype = _read_header(fh, path)
    if not dtype.hasobject:
      fh.seek(0)
      return np.load(fh, allow_pickle=False)
    if dtype != np.dtype(object):
      raise NpyFormatError(f"{path}: dtype {dtype} mixes objects into a "
                           "structured dtype; only plain object arrays ('|O') "
                           "can be read safely")
    payload = fh.read()
  try:
    arr = RestrictedUnpickler(io.BytesIO(payload), source=path,
                              encoding=encoding).load()
  except UnsafePickleError as e:
    if path in str(e):
      raise
    raise UnsafePickleError(f"{path}: {e}") from None
  except Exception as e:  # a corrupt or truncated pickle
    raise NpyFormatError(f"{path}: the object array's pickle does not load "
                         f"({type(e).__name__}: {e})") from None
  if (not isinstance(arr, np.ndarray) or type(arr) is not np.ndarray
      or arr.dtype != np.dtype(object) or arr.shape != tuple(shape)):
    desc = (f"{type(arr).__name__} {getattr(arr, 'dtype', '')} "
            f"{getattr(arr, 'shape', '')}")
    raise NpyFormatError(f"{path}: the pickle holds {desc}; the header says "
                         f"an object array of shape {tuple(shape)}")
  return arr


def check_float_arrays(arr: np.ndarray, path: str, *, ndim: int = 2,
                       on_bad: Callable[[int, Any], None] | None = None) -> None:
  """Raises NpyFormatError if an element of object array ``arr`` is an
  ndarray holding Python objects, or (when ``on_bad`` is None) if any element
  is not a float ndarray of ``ndim`` dims.  ``on_bad(i, value)`` instead
  handles the latter case (e.g. to report it per entry later)."""
  for i, a in enumerate(arr.reshape(-1)):
    if isinstance(a, np.ndarray) and a.dtype.hasobject:
      raise NpyFormatError(f"{path}: entry {i} is an ndarray of dtype "
                           f"{a.dtype} (Python objects); entries must be "
                           f"float arrays of {ndim} dims")
    if not (isinstance(a, np.ndarray) and a.dtype.kind == "f"
            and a.ndim == ndim):
      if on_bad is None:
        desc = (f"{type(a).__name__} {getattr(a, 'dtype', '')} "
                f"{getattr(a, 'shape', '')}")
        raise NpyFormatError(f"{path}: entry {i} is {desc}; entries must be "
                             f"float arrays of {ndim} dims")
      on_bad(i, a)
