"""Result files written atomically: a reader (or a crash) never sees half a
file.  Each write goes to a temp file in the target's directory, is synced,
then ``os.replace``-d over the target; a failed write leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, IO


def atomic_write(path, write: Callable[[IO], Any], *, binary: bool = False) -> str:
  """Calls ``write(f)`` on a temp file (text, or bytes with ``binary``), then
  moves it to ``path``; returns it."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                             suffix=".tmp")
  try:
    with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="")) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def write_text(path, text: str) -> str:
  return atomic_write(path, lambda f: f.write(text))


def write_json(path, obj: Any, indent: int = 2) -> str:
  return atomic_write(path, lambda f: json.dump(obj, f, indent=indent))


def save_npy(path, array) -> str:
  """``np.save`` to ``path``, atomically."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  return atomic_write(path, lambda f: np.save(f, array, allow_pickle=False), binary=True)


def read_json(path) -> Any:
  with open(path) as f:
    return json.load(f)
