"""Which feature layout a dataset root is in, from its contents alone.

``detect_layout(root) -> (layout, why)`` backs ``data.layout = "auto"``
(``datasets.open_split``): each layout is recognised by the files its
reader needs first, and ``why`` names what was seen (printed once by the
run).  Nothing matching, or several layouts matching, is a ``LayoutError``
listing what each layout would need.  A prepared TFDS data_dir is only
recognised here (``<name>/<config>/<version>/dataset_info.json``); its
reader is ``tfds_builders``.
"""
from __future__ import annotations

import glob
import os
from typing import Optional

import numpy as np

from case_jax.data.acmnet_layout import feature_dir_candidates
from case_jax.data.records import LayoutError
from case_jax.data.wtalc_files import JOINT_SUFFIX

# What each layout needs, as the refusal lists it.
NEEDS = {
    "basnet": "gt.json, split_train.txt and features/train/{rgb,flow}/<vid>.npy "
              "(n, D) each",
    "acmnet": "gt.json, split_train.txt and features/train/<vid>.npy (or "
              "train/<vid>.npy) (n, 2D), rgb columns first",
    "wtalc": f"<NAME>{JOINT_SUFFIX} and <NAME>-Annotations/ (videoname.npy, "
             "subset.npy, ...)",
    "tfds": "<name>/<config>/<version>/dataset_info.json (a TFDS data_dir "
            "from python -m case_jax.data.prepare)",
}


def _first_npy(folder: str) -> Optional[str]:
  names = sorted(n for n in os.listdir(folder) if n.endswith(".npy"))
  return os.path.join(folder, names[0]) if names else None


def _shape(path: str) -> str:
  try:
    return str(tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape))
  except (ValueError, EOFError, OSError):
    return "(unreadable)"


def _basnet(root: str) -> Optional[str]:
  folder = os.path.join(root, "features", "train", "rgb")
  if not (os.path.isfile(os.path.join(root, "gt.json"))
          and os.path.isdir(folder)
          and os.path.isdir(os.path.join(root, "features", "train", "flow"))):
    return None
  first = _first_npy(folder)
  return first and f"features/train/rgb/<vid>.npy {_shape(first)} and flow/"


def _acmnet(root: str) -> Optional[str]:
  if not os.path.isfile(os.path.join(root, "gt.json")):
    return None
  for folder in feature_dir_candidates(root, "train"):
    first = os.path.isdir(folder) and _first_npy(folder)
    if first:
      return f"{os.path.relpath(folder, root)}/<vid>.npy {_shape(first)}"
  return None


def _wtalc(root: str) -> Optional[str]:
  joint = sorted(glob.glob(os.path.join(root, "*" + JOINT_SUFFIX)))
  names = [os.path.basename(p)[:-len(JOINT_SUFFIX)] for p in joint]
  names = [n for n in names
           if os.path.isdir(os.path.join(root, n + "-Annotations"))]
  return names and (f"{names[0]}{JOINT_SUFFIX} and {names[0]}-Annotations/")


def tfds_names(root: str) -> list[str]:
  """"<name>/<config>" of every prepared TFDS dataset in a data_dir."""
  found = glob.glob(os.path.join(root, "*", "*", "*", "dataset_info.json"))
  return sorted({"/".join(os.path.relpath(p, root).split(os.sep)[:2])
                 for p in found})


def _tfds(root: str) -> Optional[str]:
  names = tfds_names(root)
  return names and f"a TFDS data_dir with {', '.join(names)}"


_PROBES = (("basnet", _basnet), ("acmnet", _acmnet), ("wtalc", _wtalc),
           ("tfds", _tfds))


def detect_layout(root: str | os.PathLike) -> tuple[str, str]:
  """(layout, why) of a dataset root; LayoutError when no layout or more
  than one matches (set data.layout then)."""
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise LayoutError(f"data.root {root!r} is not a directory")
  found = [(name, why) for name, probe in _PROBES for why in [probe(root)]
           if why]
  needs = "; ".join(f"{k}: {v}" for k, v in NEEDS.items())
  if not found:
    raise LayoutError(f"data.layout=auto: {root} matches no feature layout. "
                      f"Each needs -- {needs}. Put the files there or set "
                      "--config.data.layout")
  if len(found) > 1:
    raise LayoutError(f"data.layout=auto: {root} matches several layouts ("
                      + "; ".join(f"{n}: {w}" for n, w in found) + "); set "
                      f"--config.data.layout to one of {[n for n, _ in found]}")
  return found[0]


def tfds_name(root: str, configured: str) -> str:
  """The builder to read from an auto-detected TFDS data_dir: the
  configured ``data.tfds_name`` when it is prepared there, else the only
  prepared dataset; several and none of them configured is refused."""
  names = tfds_names(root)
  if configured in names:
    return configured
  if len(names) == 1:
    return names[0]
  raise LayoutError(f"data.layout=auto: {root} holds the prepared datasets "
                    f"{names}, and data.tfds_name={configured!r} is none of "
                    "them; set --config.data.tfds_name to one")
