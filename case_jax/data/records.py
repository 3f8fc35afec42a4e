"""What every feature layout reads into: records, errors, the time base and
the ``VideoDataset`` interface they all implement.

The time base of the released features lives here only: snippets of
``SNIPPET_FRAMES`` = 16 frames at ``FEATURE_FPS`` = 25 fps (0.64 s each).
Each ``VideoRecord`` carries its own ``fps`` / ``snippet_frames``, so code
after the reader converts snippet positions to seconds from the record.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import (Iterator, NamedTuple, Optional, Protocol, Sequence,
                    runtime_checkable)

import numpy as np

from case_jax.errors import MissingFile, UserError

FEATURE_FPS = 25.0
SNIPPET_FRAMES = 16
MAX_NAMED = 10   # ids named in one message before "and N more"


class LayoutError(UserError, ValueError):
  """A dataset root does not follow the expected layout or holds bad data."""


class NoSplit(LayoutError, MissingFile):
  """The dataset has no such split at all (e.g. no split_test.txt, no video
  of the test subset): training goes on without evaluation, whereas a
  split that exists but is broken is a ``LayoutError``."""


class LayoutWarning(UserWarning):
  """A dataset root is usable but inconsistent (e.g. split vs gt.json)."""


class Segment(NamedTuple):
  """One annotated action instance, in seconds."""
  start_s: float
  end_s: float
  class_index: int


class GtVideo(NamedTuple):
  """One video's annotations. ``annotations``: ((start_s, end_s, label), ...)."""
  subset: str
  duration: Optional[float]
  annotations: tuple[tuple[float, float, str], ...]


@dataclass(frozen=True, eq=False)
class VideoRecord:
  """One video of a split, features and annotations.

  Attributes:
    video_id: file stem / gt.json key.
    rgb: (n, D_rgb) float32, read-only.
    flow: (n, D_flow) float32, read-only.
    labels: (C,) float32 multi-hot over the dataset's class list.
    segments: annotated instances, (start_s, end_s, class_index) each.
    duration: seconds (annotated duration, else n * seconds_per_snippet).
    fps, snippet_frames: the feature time base (0.64 s per snippet).
  """
  video_id: str
  rgb: np.ndarray
  flow: np.ndarray
  labels: np.ndarray
  segments: tuple[Segment, ...]
  duration: float
  fps: float = FEATURE_FPS
  snippet_frames: int = SNIPPET_FRAMES

  @property
  def num_snippets(self) -> int:
    return int(self.rgb.shape[0])

  @property
  def seconds_per_snippet(self) -> float:
    return self.snippet_frames / self.fps


@runtime_checkable
class VideoDataset(Protocol):
  """One split of any layout: a sequence of ``VideoRecord``.

  Attributes:
    classes: (C,) class names in label order.
    video_ids: (N,) ids in dataset order.
    lengths: (N,) int64 snippet counts (without reading features).
    rgb_dim, flow_dim: per-stream feature width D.
    fps, snippet_frames: the time base of every record.
    skipped: ((video_id, reason), ...) left out by on_error="skip".
  """
  classes: tuple[str, ...]
  video_ids: tuple[str, ...]
  lengths: np.ndarray
  rgb_dim: int
  flow_dim: int
  fps: float
  snippet_frames: int
  skipped: tuple[tuple[str, str], ...]

  @property
  def num_classes(self) -> int: ...

  def __len__(self) -> int: ...

  def __getitem__(self, i: int) -> VideoRecord: ...

  def __iter__(self) -> Iterator[VideoRecord]: ...

  def labels(self) -> np.ndarray:
    """(N, C) float32 multi-hot labels, without reading features."""
    ...


def repeated(items) -> list:
  """The items that occur again, at each repeat, in order (a class listed
  twice, a video listed twice in a split): [] when all are distinct."""
  seen, again = set(), []
  for item in items:
    if item in seen:
      again.append(item)
    seen.add(item)
  return again


def name_some(items: Sequence[str]) -> str:
  """The first ``MAX_NAMED`` items, comma-separated, then "and N more"."""
  items = list(items)
  shown = ", ".join(items[:MAX_NAMED])
  rest = len(items) - MAX_NAMED
  return shown + (f" and {rest} more" if rest > 0 else "")
