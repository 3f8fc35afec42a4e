"""A layout-independent dataset over per-video sources, checked on load.

Each layout reader (``thumos_layout``, ``wtalc_layout``, ``acmnet_layout``)
turns its files into ``VideoSource``s (ids, ground truth, how to read the
features) and hands them to ``SourceDataset``, which runs the checks every
layout shares and returns the same ``VideoRecord``s:

  * both streams present with one row per snippet each, at least one snippet;
  * the expected per-stream feature width (or one width shared by all videos);
  * readable, finite values (at construction when ``eager`` or
    ``check_values``, else on each read; ``check_values`` remembers the
    verified files in a ``verified.VerifiedFiles`` record so that unchanged
    files are read once, not once per run);
  * labels in the class list (the label, the video and the annotation file
    named);
  * segments inside the video (a ``LayoutWarning``: real THUMOS14 has some
    that end after the video; they are kept).

Problems are collected per video.  ``on_error="raise"`` (default) raises one
``LayoutError`` naming every bad video, its file and the fix;
``on_error="skip"`` drops those videos, keeps the list in ``.skipped`` and
says so in a ``LayoutWarning`` -- nothing is dropped silently.
"""
from __future__ import annotations

import collections
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from case_jax.data.records import (FEATURE_FPS, SNIPPET_FRAMES, GtVideo,
                                   LayoutError, LayoutWarning, Segment,
                                   VideoRecord, name_some, repeated)

ON_ERROR = ("raise", "skip")
# (rgb (n, D), flow (n, D)) shapes of one video, read without the values.
Shapes = tuple[tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class VideoSource:
  """Where one video's features and annotations come from.

  Attributes:
    video_id: the id used in annotations and results.
    gt: its ground truth (subset, duration or None, annotations in seconds).
    file: the feature file(s), for messages.
    probe: () -> Shapes, reading as little as possible; raises LayoutError
      (missing / unreadable file) with the file named.
    load: () -> (rgb (n, D), flow (n, D)) arrays of any float dtype.
    paths: the files ``load`` reads, for the verified-file record (empty:
      never remembered, checked every time).
  """
  video_id: str
  gt: GtVideo
  file: str
  probe: Callable[[], Shapes]
  load: Callable[[], tuple[np.ndarray, np.ndarray]]
  paths: tuple[str, ...] = ()


def nonfinite_rows(arr: np.ndarray) -> np.ndarray:
  """Row indices of a (n, D) array holding NaN or inf. Returns (k,) int."""
  return np.unique(np.nonzero(~np.isfinite(arr))[0])


def _as_features(arr: np.ndarray, file: str, stream: str,
                 video_id: str) -> np.ndarray:
  """(n, D) float32 read-only copy/view; raises on NaN/inf naming the rows."""
  out = np.asarray(arr).astype(np.float32, copy=False)
  # isfinite().all() runs ~10x faster than locating the rows (nonzero,
  # unique): the rows are only looked for in a file that has some.
  if not np.isfinite(out).all():
    rows = nonfinite_rows(out)
    raise LayoutError(f"{file}: NaN or inf in snippets "
                      f"{name_some([str(r) for r in rows])} (video "
                      f"'{video_id}', {stream} features); regenerate the "
                      "features of this video (or set data.on_error=skip to "
                      "leave it out)")
  out = out.view()   # read-only view; the caller's array stays as it was
  out.setflags(write=False)
  return out


def _shape_problem(shapes: Shapes) -> Optional[str]:
  (n_rgb, _), (n_flow, _) = shapes
  if n_rgb != n_flow:
    return (f"rgb has {n_rgb} snippets and flow {n_flow}; both streams need "
            "one row per snippet (re-extract, or trim both to the shorter)")
  if n_rgb < 1:
    return ("no snippets (empty video); re-extract its features or remove it "
            "from the split")
  return None


def unknown_label_message(labels: Sequence[str], videos: Sequence[str],
                          gt_file: str, classes: Sequence[str]) -> str:
  """The refusal of labels outside the class list (one home for its words)."""
  return (f"{gt_file}: label {name_some([repr(x) for x in labels])} of video "
          f"{name_some(list(videos))} is not in the class list "
          f"({len(classes)} classes: {name_some(list(classes))}); fix the "
          f"label in {gt_file}, or set data.classes to the right class list")


def _label_problem(gt: GtVideo, video_id: str, known: Sequence[str],
                   gt_file: str) -> Optional[str]:
  unknown = sorted({a[2] for a in gt.annotations} - set(known))
  if unknown:
    return unknown_label_message(unknown, [video_id], gt_file, known)
  return None


class SourceDataset:
  """One split as a sequence of ``VideoRecord``s (a ``VideoDataset``).

  Args:
    sources: the split's videos, in dataset order.
    classes: class names in label order.
    feature_dim: expected D of each stream (1024 for I3D); None = the width
      most videos have (all must agree unless on_error="skip").
    eager: read (and check) every video's features now and keep them.
    on_error: "raise" or "skip" (see module docstring).
    origin: the dataset root / description used in messages.
    fps, snippet_frames: the feature time base, carried by every record.
    check_values: read every video now (NaN/inf, truncated files) unless
      ``verified`` says its files are unchanged since they were checked.
    verified: a ``verified.VerifiedFiles`` record (None: check everything).
    gt_file: the annotation file, named when a label is unknown.
    rejected: ((video_id, reason), ...) the layout already found bad (e.g.
      split ids absent from gt.json), refused or skipped with the others.

  Attributes:
    video_ids (N,), lengths (N,) int64, classes (C,), rgb_dim, flow_dim,
    skipped: ((video_id, reason), ...) videos left out by on_error="skip",
    gt: {video_id: GtVideo} of the kept videos.
  """

  def __init__(self, sources: Sequence[VideoSource], classes: Sequence[str],
               *, feature_dim: Optional[int] = None, eager: bool = False,
               on_error: str = "raise", origin: str = "",
               fps: float = FEATURE_FPS, snippet_frames: int = SNIPPET_FRAMES,
               check_values: bool = False, verified=None, gt_file: str = "",
               rejected: Sequence[tuple[str, str]] = ()):
    if on_error not in ON_ERROR:
      raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    self.origin, self.fps, self.snippet_frames = origin, fps, snippet_frames
    self.classes = tuple(classes)
    self._class_index = {c: i for i, c in enumerate(self.classes)}
    self._gt_file = gt_file or "the annotations"
    problems: dict[str, str] = dict(rejected)
    order = [v for v, _ in rejected] + [s.video_id for s in sources]
    self._files = {s.video_id: s.file for s in sources}
    shapes = self._probe_all(sources, problems)
    dims = self._expected_dims(shapes, feature_dim, problems)
    records = {}
    if eager or check_values:
      records = self._read_all(sources, problems, eager, verified)
    self._report(order, problems, on_error)
    kept = [s for s in sources if s.video_id not in problems]
    if not kept:
      raise LayoutError(f"{origin}: no usable videos in this split")
    self._sources = tuple(kept)
    self.video_ids = tuple(s.video_id for s in kept)
    self.lengths = np.array([shapes[s.video_id][0][0] for s in kept], np.int64)
    self.rgb_dim, self.flow_dim = dims
    self.gt = {s.video_id: s.gt for s in kept}
    self.skipped = tuple((v, problems[v]) for v in order if v in problems)
    self._records = [records[v] for v in self.video_ids] if eager else None
    self._warn_late_segments()

  # -- sequence API (records.VideoDataset) ---------------------------------
  @property
  def num_classes(self) -> int:
    return len(self.classes)

  def __len__(self) -> int:
    return len(self._sources)

  def __getitem__(self, i: int) -> VideoRecord:
    if self._records is not None:
      return self._records[i]
    record = self._make_record(self._sources[i])
    if record.num_snippets != self.lengths[i]:
      raise LayoutError(f"{self._sources[i].file}: features of "
                        f"'{self.video_ids[i]}' changed since the dataset was "
                        "opened; reopen it")
    return record

  def __iter__(self):
    return (self[i] for i in range(len(self)))

  def labels(self) -> np.ndarray:
    """(N, C) float32 multi-hot labels, without reading features."""
    return np.stack([self._labels(s.gt) for s in self._sources])

  def duration(self, i: int) -> float:
    """Seconds of video i (annotation duration, else n snippets' time)."""
    return self._duration(self._sources[i].gt, int(self.lengths[i]))

  # -- internals -------------------------------------------------------------
  def _read_all(self, sources, problems, keep: bool, verified) -> dict:
    """Reads (and checks) every video not yet found bad; {video_id: record}
    when ``keep``.  Videos that ``verified`` knows unchanged are not read
    unless kept; the newly verified ones are added to it and saved."""
    records = {}
    for s in sources:
      if s.video_id in problems:
        continue
      # Stat before reading: a file changed while it is read stays unverified.
      key = verified.key(s.video_id, s.paths) if (
          verified is not None and s.paths) else None
      if not keep and verified is not None and key in verified:
        continue
      try:
        record = self._make_record(s)
      except LayoutError as e:
        problems[s.video_id] = str(e)
        continue
      if keep:
        records[s.video_id] = record
      if key is not None:
        verified.add(key)
    if verified is not None:
      verified.save()
    return records

  def _probe_all(self, sources, problems) -> dict[str, Shapes]:
    twice = repeated(s.video_id for s in sources)
    if twice:
      raise LayoutError(f"{self.origin}: video '{twice[0]}' is listed "
                        "twice in this split; list each video once")
    shapes = {}
    for s in sources:
      try:
        shapes[s.video_id] = s.probe()
      except LayoutError as e:
        problems[s.video_id] = str(e)
        continue
      problem = _shape_problem(shapes[s.video_id])
      if problem is None:
        label = _label_problem(s.gt, s.video_id, self.classes, self._gt_file)
        if label:
          problems[s.video_id] = label
        continue
      if problem:
        problems[s.video_id] = f"{s.file}: video '{s.video_id}': {problem}"
    return shapes

  def _expected_dims(self, shapes, feature_dim, problems):
    dims = {v: (sh[0][1], sh[1][1]) for v, sh in shapes.items()
            if v not in problems}
    if feature_dim is not None:
      want = (int(feature_dim), int(feature_dim))
    else:
      counts = collections.Counter(dims.values())
      if not counts:
        return (0, 0)
      want = counts.most_common(1)[0][0]
    how = ("pass the right feature_dim or regenerate these files"
           if feature_dim is not None else
           f"{want} is the width most videos have; all videos must share it")
    for v, d in dims.items():
      if d != want:
        problems[v] = (f"{self._file_of(v)}: video '{v}': feature width "
                       f"rgb {d[0]} / flow {d[1]} per stream, expected "
                       f"{want[0]} / {want[1]}; {how}")
    return want

  def _file_of(self, video_id: str) -> str:
    return self._files[video_id]

  def _report(self, order, problems, on_error) -> None:
    if not problems:
      return
    bad = [v for v in order if v in problems]
    lines = [problems[v] for v in bad[:10]]
    more = f"\n  ... and {len(bad) - 10} more videos" if len(bad) > 10 else ""
    if on_error == "raise":
      raise LayoutError(f"{self.origin}: {len(bad)} bad videos "
                        "(on_error='skip' leaves them out and reports them):"
                        "\n  " + "\n  ".join(lines) + more)
    warnings.warn(f"{self.origin}: skipped {len(bad)} of {len(order)} "
                  f"videos (on_error='skip'):\n  " + "\n  ".join(lines) + more,
                  LayoutWarning, stacklevel=4)

  def _duration(self, gt: GtVideo, n: int) -> float:
    if gt.duration is not None:
      return float(gt.duration)
    return n * self.snippet_frames / self.fps

  def _labels(self, gt: GtVideo) -> np.ndarray:
    labels = np.zeros(self.num_classes, np.float32)
    for _, _, name in gt.annotations:
      labels[self._class_index[name]] = 1.0
    return labels

  def _make_record(self, s: VideoSource) -> VideoRecord:
    try:
      rgb, flow = s.load()
    except LayoutError:
      raise
    except (ValueError, EOFError, OSError) as e:
      # A truncated or damaged file (np.load's own errors), named.
      raise LayoutError(f"{s.file}: video '{s.video_id}': cannot read its "
                        f"features ({e}); the file is truncated or damaged: "
                        "copy or re-extract it again") from None
    # One file per stream (basnet): name the one that holds the bad values.
    files = s.paths if len(s.paths) == 2 else (s.file, s.file)
    rgb = _as_features(rgb, files[0], "rgb", s.video_id)
    flow = _as_features(flow, files[1], "flow", s.video_id)
    labels = self._labels(s.gt)
    labels.setflags(write=False)
    segments = tuple(Segment(a, b, self._class_index[name])
                     for a, b, name in s.gt.annotations)
    return VideoRecord(video_id=s.video_id, rgb=rgb, flow=flow, labels=labels,
                       segments=segments,
                       duration=self._duration(s.gt, rgb.shape[0]),
                       fps=self.fps, snippet_frames=self.snippet_frames)

  def _warn_late_segments(self) -> None:
    late = [v for i, v in enumerate(self.video_ids)
            if any(a[1] > self.duration(i) + 1e-6
                   for a in self.gt[v].annotations)]
    if late:
      # Real THUMOS14 has such entries (e.g. video_test_0000950): kept as is.
      warnings.warn(f"{self.origin}: videos {name_some(late)} have "
                    "annotations ending after the video (annotated duration, "
                    "else the feature length); they are kept unchanged",
                    LayoutWarning, stacklevel=4)
