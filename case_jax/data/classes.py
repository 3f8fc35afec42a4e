"""The class list of a dataset: explicit, never whatever labels a file holds.

``data.classes`` (config) is one of

  * a list/tuple of names, set by the dataset's config (THUMOS14: the 20
    names of ``thumos_layout.THUMOS14_CLASSES``);
  * a path to a text file, one class per line (any dataset);
  * empty (None or ""): the dataset's rule -- the synthetic data take the
    generator's list (ROOT/synthetic.json), every other dataset
    (ActivityNet 1.2/1.3) the sorted labels of its training split.

The test split is always read in the training split's class order, and a
label outside the list is refused with the label, the video and the file
(``generic`` / ``thumos_layout``), so a typo in gt.json can neither add a
class nor drop one.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from case_jax.data.records import repeated
from case_jax.errors import ConfigError, MissingFile

KEY = "data.classes"
SYNTHETIC_META = "synthetic.json"


def check_names(names: Sequence, source: str) -> tuple[str, ...]:
  """``names`` as a tuple of non-empty, distinct strings; ``source`` says
  where they came from (the key or the file) in refusals."""
  names = tuple(names)
  bad = [repr(n) for n in names if not isinstance(n, str) or not n.strip()]
  if bad:
    raise ConfigError(f"{source}: class names must be non-empty strings, got "
                      f"{', '.join(bad[:5])}; fix the class list")
  dups = repeated(names)
  if dups:
    raise ConfigError(f"{source}: class {dups[0]!r} is listed twice; list "
                      "each class once")
  if not names:
    raise ConfigError(f"{source}: the class list is empty; name one class "
                      f"per line, or leave {KEY} empty to derive it")
  return names


def read_class_file(path: str) -> tuple[str, ...]:
  """Class names of a text file, one per line (blank lines ignored)."""
  if not os.path.isfile(path):
    raise MissingFile(f"{KEY}={path}: no such class-list file; give a text "
                      "file with one class name per line, or leave "
                      f"{KEY} empty to derive the list")
  try:
    with open(path, encoding="utf-8") as f:
      lines = [line.strip() for line in f]
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError(f"{KEY}={path}: cannot read the class list ({e}); give "
                      "a UTF-8 text file, one class name per line") from None
  return check_names([n for n in lines if n], f"{KEY}={path}")


def synthetic_classes(root: str) -> tuple[str, ...]:
  """The generator's class list, recorded in ROOT/synthetic.json."""
  path = os.path.join(root, SYNTHETIC_META)
  try:
    with open(path) as f:
      names = json.load(f)["classes"]
  except FileNotFoundError:
    raise MissingFile(f"{path}: not found, so the synthetic class list is "
                      "unknown; regenerate the data (python -m "
                      "case_jax.data.synthetic) or set data.classes") from None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"{path}: no readable \"classes\" list ({e}); "
                      "regenerate the data or set data.classes") from None
  return check_names(names, path)


def config_classes(spec, dataset: str, root: str) -> Optional[tuple[str, ...]]:
  """The class list ``data.classes`` = ``spec`` names for ``dataset`` at
  ``root``; None = the reader derives it from the training split."""
  if spec is None or (isinstance(spec, str) and not spec.strip()):
    return synthetic_classes(root) if dataset == "synthetic" else None
  if isinstance(spec, str):
    return read_class_file(spec)
  if isinstance(spec, (list, tuple)):
    return check_names(spec, KEY)
  raise ConfigError(f"{KEY} is {type(spec).__name__} {spec!r}; give a list "
                    "of names, a class-list file, or leave it empty")
