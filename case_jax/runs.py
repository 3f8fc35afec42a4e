"""--mode=evaluate, --mode=predict and --mode=plots: a trained workdir ->
detections, metrics and figures.

All three rebuild the model from ``<workdir>/run.json`` (classes, feature
dims, written by training) and restore the latest Orbax checkpoint; the
test split is scored by the one evaluator (case_jax/evaluator.py).
"""
from __future__ import annotations

import copy
import os
import sys
import warnings

import numpy as np

from case_jax import errors
from case_jax import data as data_lib
from case_jax import (datasets, defaults, evaluator as evaluator_lib, inference,
                      model as model_lib, train, visualize,
                      workdir as workdir_lib)


def load_trained(cfg, workdir: str):
  """(model, state, run info) of the latest checkpoint in ``workdir``."""
  info = workdir_lib.read_run_info(workdir)
  diff = workdir_lib.trained_diff(workdir, cfg)
  if diff:
    warnings.warn(f"{workdir} was trained with another config "
                  f"({workdir_lib.describe_diff(diff)}); pass the config it was "
                  "trained with (its config.json) or labels and scores may be wrong.",
                  UserWarning, stacklevel=2)
  model = model_lib.from_config(cfg.model, len(info["classes"]))
  tx = train.make_optimizer(cfg.optim)
  template = train.create_train_state(cfg, model, tx, rgb_dim=info["rgb_dim"],
                                      flow_dim=info["flow_dim"])
  manager = workdir_lib.checkpointer(cfg, workdir)
  if manager.latest_step() is None:
    raise errors.MissingFile(f"no checkpoint in {manager.directory}")
  state, _ = manager.restore_latest(template)
  return model, state, info


def evaluate(cfg, workdir: str, *, out_name: str = "eval", overrides=None,
             evaluator=None, stream=None) -> dict:
  """Latest checkpoint -> ``<workdir>/<out_name>/`` {detections.json, .csv,
  _thumos14.txt, metrics.json}; returns the metrics as ``read_eval_metrics``
  gives them.  ``overrides``: dotted config keys to evaluate with (e.g.
  another inference.fg_score; Table 5); a result already there for the
  final step and the same overrides is reused.  ``evaluator``: one built
  before (several workdirs on the same test split)."""
  stream = stream or sys.stdout
  workdir = workdir_lib.local_workdir(workdir)
  if overrides:
    cfg = defaults.set_dotted(copy.deepcopy(cfg), dict(overrides))
    done = evaluator_lib.read_eval_metrics(os.path.join(workdir, out_name),
                                           cfg.num_steps)
    if done is not None:
      return done
  model, state, info = load_trained(cfg, workdir)
  if evaluator is None:
    evaluator = evaluator_lib.Evaluator.from_config(
        cfg, datasets.resolve_data_root(cfg, workdir), info["classes"], stream=stream)
  elif overrides:
    evaluator = evaluator_lib.Evaluator(cfg, evaluator.test_set, evaluator.gt)
  ev = evaluator.run(model, state, references=True)
  out_dir = os.path.join(workdir, out_name)
  paths = evaluator.write(out_dir, ev, {"step": int(state.step),
                                        **({"overrides": dict(overrides)} if overrides else {})})
  stream.write(evaluator.summary_text(ev, f"checkpoint step {int(state.step)}") +
               f"Wrote {paths['detections']}, detections.csv, "
               "detections_thumos14.txt and metrics.json\n"
               + evaluator.standing_text(ev))
  return evaluator_lib.read_eval_metrics(out_dir)


def plots(cfg, workdir: str, *, projection: str = "pca", stream=None) -> list:
  """--mode=plots: the figures of ``workdir``'s run and latest checkpoint."""
  stream = stream or sys.stdout
  workdir = workdir_lib.local_workdir(workdir)
  visualize.check_projection(projection)  # before any work
  if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    raise errors.MissingFile(
        f"{os.path.join(workdir, 'metrics.jsonl')} is missing: --mode=plots needs "
        f"a training workdir; train first (python -m case_jax.main --mode=train "
        f"--workdir={workdir}).")
  try:
    model, state, info = load_trained(cfg, workdir)
  except FileNotFoundError as e:
    raise errors.MissingFile(
        f"{e}. --mode=plots draws the latest checkpoint: train into this "
        f"workdir first (python -m case_jax.main --mode=train --workdir={workdir}).") from e
  ev, evaluated = None, None
  try:
    ev = evaluator_lib.Evaluator.from_config(
        cfg, datasets.resolve_data_root(cfg, workdir), info["classes"], stream=stream)
    if not len(ev.test_set):
      raise errors.ConfigError("the test split has no videos")
    evaluated = ev.run(model, state, references=True)
  except (FileNotFoundError, ValueError, data_lib.LayoutError) as e:
    stream.write(f"No usable test split ({e}): only the training curves are "
                 "plotted.\n")
    ev = None
  return visualize.write_plots(cfg, workdir, model=model, state=state,
                               test_set=ev.test_set if ev else None,
                               evaluated=evaluated, projection=projection,
                               stream=stream)


class FeatureFolder:
  """Unlabelled videos for --mode=predict, from either folder shape:

  * ``<dir>/rgb/<vid>.npy`` and ``<dir>/flow/<vid>.npy``, (n, D) each;
  * ``<dir>/<vid>.npy`` of shape (n, rgb_dim + flow_dim), rgb columns first
    (the ACM-Net release), split at the trained model's ``rgb_dim``.

  Video ids are the file names without .npy, whatever their form (v_ ids).
  A one-stream model (``streams``) needs only its stream's folder; the other
  stream is then an (n, 0) array.  ``durations``: {video id: seconds} of
  the original videos (else n snippets' worth).  ``video_ids``: read only
  these videos' files (None: every one in the folder).
  """

  def __init__(self, directory: str, classes, rgb_dim: int, flow_dim: int, *,
               fps: float, snippet_frames: int, streams=model_lib.STREAMS,
               durations=None, video_ids=None):
    rgb_dir, flow_dir = os.path.join(directory, "rgb"), os.path.join(directory, "flow")
    self.classes = list(classes)
    self.fps, self.snippet_frames = fps, snippet_frames   # the time base
    durations = durations or {}
    if tuple(streams) != model_lib.STREAMS:
      only = streams[0]
      folder = os.path.join(directory, only)
      ids = _npy_files(folder, video_ids)
      if not ids:
        raise errors.MissingFile(f"no .npy feature files in {folder}: this {only}-only "
                                 f"model reads {only}/<video>.npy files, (n, D) each.")
      dim = rgb_dim if only == "rgb" else flow_dim
      pairs = []
      for vid in ids:
        x = _load(os.path.join(folder, vid + ".npy"), dim)
        none = np.zeros((len(x), 0), np.float32)
        pairs.append((vid, x, none) if only == "rgb" else (vid, none, x))
    elif os.path.isdir(rgb_dir) or os.path.isdir(flow_dir) or not _npy_files(directory):
      pairs = self._stream_folders(rgb_dir, flow_dir, rgb_dim, flow_dim, video_ids)
    else:
      width = f"(n, {rgb_dim + flow_dim}): rgb ({rgb_dim}) then flow ({flow_dim}) columns"
      pairs = []
      for vid in _npy_files(directory, video_ids):
        x = _load(os.path.join(directory, vid + ".npy"), rgb_dim + flow_dim, width)
        pairs.append((vid, x[:, :rgb_dim], x[:, rgb_dim:]))
    self.records = [data_lib.VideoRecord(
        video_id=vid, rgb=rgb, flow=flow,
        labels=np.zeros(len(self.classes), np.float32), segments=(),
        duration=durations.get(vid, len(rgb) * snippet_frames / fps), fps=fps,
        snippet_frames=snippet_frames) for vid, rgb, flow in pairs]

  @staticmethod
  def _stream_folders(rgb_dir, flow_dir, rgb_dim, flow_dim, video_ids=None):
    for d in (rgb_dir, flow_dir):
      if not os.path.isdir(d):
        raise errors.MissingFile(
            f"{d} is missing: --features must hold rgb/ and flow/ folders of "
            "<video>.npy files, (n, D) each, or <video>.npy files of shape "
            f"(n, {rgb_dim} + {flow_dim}) (rgb columns first).")
    ids = _npy_files(rgb_dir, video_ids)
    if not ids:
      raise errors.MissingFile(f"no .npy feature files in {rgb_dir}")
    pairs = []
    for vid in ids:
      rgb = _load(os.path.join(rgb_dir, vid + ".npy"), rgb_dim)
      flow = _load(os.path.join(flow_dir, vid + ".npy"), flow_dim)
      if len(rgb) != len(flow):
        raise errors.ConfigError(f"{vid}: rgb has {len(rgb)} snippets but flow has "
                                 f"{len(flow)}; both streams must have the same length.")
      pairs.append((vid, rgb, flow))
    return pairs

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i]


def _npy_files(directory: str, only=None) -> list:
  """Sorted video ids of the .npy files in ``directory`` ([] if none);
  ``only``: keep just these ids (None: all)."""
  if not os.path.isdir(directory):
    return []
  ids = sorted(f[:-4] for f in os.listdir(directory) if f.endswith(".npy"))
  return ids if only is None else [v for v in ids if v in only]


def _load(path: str, dim: int, shape: str = "") -> np.ndarray:
  if not os.path.exists(path):
    raise errors.MissingFile(f"{path} is missing (every video needs rgb and flow).")
  x = np.load(path, allow_pickle=False).astype(np.float32)
  if x.ndim != 2 or x.shape[1] != dim:
    raise errors.ConfigError(f"{path}: shape {x.shape}, expected {shape or f'(n, {dim})'} "
                             "like the training features (run.json rgb_dim, flow_dim).")
  if not np.all(np.isfinite(x)):
    raise errors.ConfigError(f"{path}: contains NaN or inf.")
  return x


def predict(cfg, workdir: str, features: str | None = None, stream=None, *,
            videos: str | None = None, flow_weights: str | None = None) -> dict:
  """Detections for unlabelled videos -> <workdir>/predict/: from a folder of
  ``features``, or from video files (``videos``: a folder or comma-separated
  files), whose I3D features are extracted first into
  <workdir>/predict/features/ (kept: a second run reuses them).  With
  ``videos`` a timeline PNG per video goes to <workdir>/predict/plots/, and
  the seconds are those of the original video (from its first frame)."""
  stream = stream or sys.stdout
  workdir = workdir_lib.local_workdir(workdir)
  model, state, info = load_trained(cfg, workdir)
  out_dir = os.path.join(workdir, "predict")
  durations = None
  if videos is not None:
    from case_jax.video.i3d import FEATURE_DIM  # pylint: disable=import-outside-toplevel
    dims = {s: info[f"{s}_dim"] for s in model.streams}
    if any(d != FEATURE_DIM for d in dims.values()):
      raise errors.ConfigError(
          f"{workdir} was trained on features of widths {dims} (run.json); I3D "
          f"features of videos are {FEATURE_DIM}-d: use a model trained on "
          "I3D features (e.g. a THUMOS14 release, --config=configs/thumos14.py:rgb).")
    features, durations = extract_for(model.streams, videos, out_dir, flow_weights,
                                       stream)
  folder = FeatureFolder(features, info["classes"], info["rgb_dim"], info["flow_dim"],
                         fps=cfg.data.fps, snippet_frames=cfg.data.snippet_frames,
                         streams=model.streams, durations=durations,
                         video_ids=durations)   # the videos asked for, not every cached one
  dets, fgs, _ = inference.detect_dataset(folder, model, state.params, state.q_r, cfg)
  evaluator_lib.Evaluator.write(out_dir, {"raw": dets, "class_names": info["classes"]})
  n = sum(len(v) for v in dets.values())
  stream.write(f"{n} detections for {len(folder)} videos -> {out_dir}/detections.json\n")
  if videos is not None:
    snip = visualize.collect_snippets(folder, model, state.params, state.q_r, cfg,
                                      timeline_ids=[r.video_id for r in folder.records],
                                      max_points=1)
    pngs = visualize.timelines(cfg, os.path.join(out_dir, "plots"), folder.records,
                               snip["scores"], dets, info["classes"], step=int(state.step))
    stream.write(f"{len(pngs)} timelines -> {out_dir}/plots/\n")
  return dets


def extract_for(streams, videos: str, out_dir: str, flow_weights, stream):
  """I3D features of ``videos`` for a model of ``streams``, cached under
  ``out_dir``/features; returns (that folder, {video id: duration s})."""
  from case_jax.video import decode, extract  # pylint: disable=import-outside-toplevel
  if "flow" in streams and not flow_weights:
    raise errors.ConfigError(
        "this model uses the flow stream: pass --flow_weights=flow_imagenet.pt "
        "(pytorch-i3d's flow I3D) to extract it, or use an RGB-only model "
        "(trained with --config=...:rgb, model.streams=rgb).")
  feat_dir = os.path.join(out_dir, "features")
  done = extract.extract_videos(decode.list_videos(videos), feat_dir, streams=streams,
                                flow_weights=flow_weights, stream=stream)
  return feat_dir, {v: float(d["duration"]) for v, d in done.items()}
