"""--mode=evaluate and --mode=predict: a trained workdir -> detections.

Both rebuild the model from ``<workdir>/run.json`` (classes, feature dims,
written by training) and restore the latest Orbax checkpoint.
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np

from case_jax import checkpoint as ckpt_lib
from case_jax import data as data_lib
from case_jax import (defaults, fileio, outputs,
                      model as model_lib, report, train)


def load_trained(cfg, workdir: str):
  """(model, state, run info) of the latest checkpoint in ``workdir``."""
  info_path = os.path.join(workdir, "run.json")
  if not os.path.exists(info_path):
    raise FileNotFoundError(f"{info_path} is missing: is {workdir!r} a training "
                            "workdir (python -m case_jax.main --mode=train)?")
  info = fileio.read_json(info_path)
  _warn_if_trained_otherwise(cfg, workdir)
  model = model_lib.from_config(cfg.model, len(info["classes"]))
  tx = train.make_optimizer(cfg.optim)
  template = train.create_train_state(cfg, model, tx, rgb_dim=info["rgb_dim"],
                                      flow_dim=info["flow_dim"])
  manager = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                  commit=cfg.get("checkpoint_commit", "auto"))
  if manager.latest_step() is None:
    raise FileNotFoundError(f"no checkpoint in {manager.directory}")
  state, _ = manager.restore_latest(template)
  return model, state, info


# What must match the training run for its checkpoint to mean the same model
# (inference.* and eval.* may differ: evaluating another way is legitimate).
_TRAINED_WITH = ("model.", "labeling.", "loss.", "data.num_segments", "data.layout")


def _warn_if_trained_otherwise(cfg, workdir: str) -> None:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  diff = defaults.config_diff(fileio.read_json(path), cfg, only=_TRAINED_WITH)
  if diff:
    shown = ", ".join(f"{k}: trained {a!r}, given {b!r}" for k, a, b in diff[:6])
    warnings.warn(f"{workdir} was trained with another config ({shown}"
                  f"{', ...' if len(diff) > 6 else ''}); pass the config it was "
                  "trained with (its config.json) or labels and scores may be wrong.",
                  UserWarning, stacklevel=3)


def open_test(cfg, workdir: str, classes, stream=None):
  """(test split in the training's class order, its ground truth)."""
  root = train.resolve_data_root(cfg, workdir)
  return (train.open_split(cfg, root, "test", classes=classes, stream=stream),
          report.load_test_ground_truth(root, cfg))


def evaluate(cfg, workdir: str, stream=None) -> dict:
  """Latest checkpoint -> <workdir>/eval/{detections.json,.csv,metrics.json}."""
  stream = stream or sys.stdout
  workdir = train.local_workdir(workdir)
  model, state, info = load_trained(cfg, workdir)
  test_set, gt = open_test(cfg, workdir, info["classes"], stream)
  out = report.evaluate_state(test_set, model, state.params, state.q_r, cfg, gt)
  paths = report.write_outputs(os.path.join(workdir, "eval"), out, {
      "step": int(state.step), **report.snippet_scalars(out["stats"])})
  stream.write(f"Checkpoint step {int(state.step)}, {len(test_set)} test videos:\n"
               + outputs.format_map_table(out["result"]) + "\n"
               f"Wrote {paths['detections']}, detections.csv, "
               "detections_thumos14.txt and metrics.json\n")
  return out


class _FeatureFolder:
  """Unlabelled videos from <dir>/rgb/<vid>.npy and <dir>/flow/<vid>.npy."""

  def __init__(self, directory: str, classes, rgb_dim: int, flow_dim: int):
    rgb_dir, flow_dir = os.path.join(directory, "rgb"), os.path.join(directory, "flow")
    for d in (rgb_dir, flow_dir):
      if not os.path.isdir(d):
        raise FileNotFoundError(f"{d} is missing: --features must hold rgb/ and "
                                "flow/ folders of <video>.npy files, (n, D) each.")
    ids = sorted(f[:-4] for f in os.listdir(rgb_dir) if f.endswith(".npy"))
    if not ids:
      raise FileNotFoundError(f"no .npy feature files in {rgb_dir}")
    self.classes = list(classes)
    self.records = []
    for vid in ids:
      rgb = _load(os.path.join(rgb_dir, vid + ".npy"), rgb_dim)
      flow = _load(os.path.join(flow_dir, vid + ".npy"), flow_dim)
      if len(rgb) != len(flow):
        raise ValueError(f"{vid}: rgb has {len(rgb)} snippets but flow has "
                         f"{len(flow)}; both streams must have the same length.")
      self.records.append(data_lib.VideoRecord(
          video_id=vid, rgb=rgb, flow=flow,
          labels=np.zeros(len(self.classes), np.float32), segments=(),
          duration=len(rgb) * 16 / 25.0))

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i]


def _load(path: str, dim: int) -> np.ndarray:
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing (every video needs rgb and flow).")
  x = np.load(path, allow_pickle=False).astype(np.float32)
  if x.ndim != 2 or x.shape[1] != dim:
    raise ValueError(f"{path}: shape {x.shape}, expected (n, {dim}) like the "
                     "training features.")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{path}: contains NaN or inf.")
  return x


def predict(cfg, workdir: str, features: str, stream=None) -> dict:
  """Detections for a folder of unlabelled videos -> <workdir>/predict/."""
  from case_jax import inference
  stream = stream or sys.stdout
  workdir = train.local_workdir(workdir)
  model, state, info = load_trained(cfg, workdir)
  videos = _FeatureFolder(features, info["classes"], info["rgb_dim"], info["flow_dim"])
  dets, _, _ = inference.detect_dataset(videos, model, state.params, state.q_r, cfg)
  out_dir = os.path.join(workdir, "predict")
  results = outputs.write_results(os.path.join(out_dir, "detections.json"),
                                    os.path.join(out_dir, "detections.csv"), dets,
                                    info["classes"])
  outputs.write_thumos14(os.path.join(out_dir, "detections_thumos14.txt"), results,
                        info["classes"])
  n = sum(len(v) for v in dets.values())
  stream.write(f"{n} detections for {len(videos)} videos -> {out_dir}/detections.json\n")
  return dets
