"""Which feature files were already found finite and readable, so the
value pass before training reads each file once, not once per run.

A video counts as verified while every file it was read from keeps the
same (absolute path, size, mtime_ns); any change re-checks it.  The record
is a small JSON file:

  * ``ROOT/.case_jax_verified.json`` in the dataset root when it is
    writable (shared by every user of that copy);
  * else ``$XDG_CACHE_HOME/case_jax/verified/<sha256(root)[:16]>.json``
    (``~/.cache`` without XDG_CACHE_HOME), for read-only roots.

A record that cannot be read (corrupt, another version) counts as empty, and
one that cannot be written is only a lost speed-up: neither is an error.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Optional, Sequence

ROOT_FILE = ".case_jax_verified.json"
VERSION = 1


def user_cache_file(root: str) -> str:
  """The per-user record of a dataset root (used when the root is read-only)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  digest = hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:16]
  return os.path.join(base, "case_jax", "verified", digest + ".json")


def _read(path: str) -> set:
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError):
    return set()
  if not isinstance(data, dict) or data.get("version") != VERSION:
    return set()
  return {k for k in data.get("verified", ()) if isinstance(k, str)}


def _write(path: str, keys: set) -> bool:
  """Atomic write (tmp + rename: concurrent processes never see half a
  file); False when the folder is not writable."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".verified.")
    with os.fdopen(fd, "w") as f:
      json.dump({"version": VERSION, "verified": sorted(keys)}, f)
    os.replace(tmp, path)
    return True
  except OSError:
    return False


class VerifiedFiles:
  """The record of one dataset root.

  Args:
    root: the dataset root.
    path: the record file; None = ROOT_FILE in root, falling back to
      ``user_cache_file(root)`` when the root cannot be written.
  Attributes:
    location: where the record was last written (None before ``save``, or
      when nothing could be written).
  """

  def __init__(self, root: str, path: Optional[str] = None):
    self.root = os.fspath(root)
    self._paths = ([path] if path else
                   [os.path.join(self.root, ROOT_FILE),
                    user_cache_file(self.root)])
    self._keys = set().union(*(_read(p) for p in self._paths))
    self._new = False
    self.location: Optional[str] = None

  @staticmethod
  def key(video_id: str, files: Sequence[str]) -> Optional[str]:
    """The video's files as they are now; None when one cannot be stat'ed
    (then it is checked, never trusted)."""
    parts = [video_id]
    for f in files:
      try:
        st = os.stat(f)
      except OSError:
        return None
      parts.append(f"{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}")
    return "\n".join(parts)

  def __contains__(self, key: Optional[str]) -> bool:
    return key is not None and key in self._keys

  def add(self, key: Optional[str]) -> None:
    if key is not None and key not in self._keys:
      self._keys.add(key)
      self._new = True

  def save(self) -> Optional[str]:
    """Writes the record if it grew; returns where (or None)."""
    if not self._new:
      return self.location
    for p in self._paths:
      if _write(p, self._keys):
        self.location, self._new = p, False
        return p
    return None


def from_setting(setting: str, root: str) -> Optional[VerifiedFiles]:
  """The record that config data.verified_cache names: "auto" (the root,
  else the user cache dir), "off" (None: check every time) or a file."""
  if setting in (None, "", "off"):
    return None
  return VerifiedFiles(root, None if setting == "auto" else setting)
