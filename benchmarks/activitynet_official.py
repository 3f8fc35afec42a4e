"""The official ActivityNet detection evaluator's algorithm, ported to Python 3
(numpy only), as the reference of benchmarks/activitynet_scale.py.

Written from the description of ``ANETdetection``,
``compute_average_precision_detection``, ``segment_iou`` and
``interpolated_prec_rec`` (official_code_notes.md §5), keeping the original's
structure: per class, one plain Python loop over the predictions in rank
order, each walking its video's GTs threshold by threshold.  Its speed is the
point of comparison, so nothing is vectorized that the original loops over.

What the pandas tables of the original become here: a table is a dict of
equal-length numpy columns ('video-id', 't-start', 't-end', 'label' and, for
predictions, 'score'); ``groupby(...).get_group(key)`` (rows in table order)
is a dict from key to row indices; ``reset_index(drop=True)`` is taking those
rows in that order.  Differences from the original, none of which changes an
AP: no blocked-videos download (check_status=False, as CASE's copy), only
'database' / 'results' are required in the json files (CASE's copy drops
'external_data'; our gt.json files carry no 'taxonomy'), classes are
evaluated one after the other (the original uses joblib, with the same
result), and scores are float64.

Usage: python benchmarks/activitynet_official.py GT.json PRED.json
           [--subset validation] [--tiou 0.5:0.95:10]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

OFFICIAL_TIOUS = np.linspace(0.5, 0.95, 10)


# ---------------------------------------------------------------------------
# utils.py
# ---------------------------------------------------------------------------
def segment_iou(target_segment: np.ndarray, candidate_segments: np.ndarray
                ) -> np.ndarray:
  """tIoU of one [start, end] against (m, 2) candidates, no "+1": (m,)."""
  tt1 = np.maximum(target_segment[0], candidate_segments[:, 0])
  tt2 = np.minimum(target_segment[1], candidate_segments[:, 1])
  intersection = (tt2 - tt1).clip(0)
  union = ((candidate_segments[:, 1] - candidate_segments[:, 0])
           + (target_segment[1] - target_segment[0]) - intersection)
  with np.errstate(divide="ignore", invalid="ignore"):
    return intersection.astype(float) / union


def interpolated_prec_rec(prec: np.ndarray, rec: np.ndarray) -> float:
  """VOC 2011 all-points interpolated average precision."""
  mprec = np.hstack([[0], prec, [0]])
  mrec = np.hstack([[0], rec, [1]])
  for i in range(len(mprec) - 1)[::-1]:
    mprec[i] = max(mprec[i], mprec[i + 1])
  idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
  return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


# ---------------------------------------------------------------------------
# Table helpers (what pandas does for the original).
# ---------------------------------------------------------------------------
def _group_rows(column) -> dict:
  """{key: [row indices in table order]} (groupby + get_group)."""
  groups: dict = {}
  for i, key in enumerate(column):
    groups.setdefault(key, []).append(i)
  return groups


def _take(table: dict, rows) -> dict:
  """The rows ``rows`` of every column, renumbered 0.. (reset_index(drop=True))."""
  rows = np.asarray(rows, np.int64)
  return {k: v[rows] for k, v in table.items()}


def _table(**columns) -> dict:
  return {"video-id": np.array(columns["video-id"], dtype=object),
          **{k: np.array(v, np.float64 if k != "label" else np.int64)
             for k, v in columns.items() if k != "video-id"}}


# ---------------------------------------------------------------------------
# eval_detection.py
# ---------------------------------------------------------------------------
def compute_average_precision_detection(ground_truth: dict, prediction: dict,
                                        tiou_thresholds=OFFICIAL_TIOUS
                                        ) -> np.ndarray:
  """(T,) AP of one class: ground_truth {'video-id', 't-start', 't-end'},
  prediction {'video-id', 't-start', 't-end', 'score'} (columns of one
  class, table order)."""
  tiou_thresholds = np.asarray(tiou_thresholds, np.float64)
  ap = np.zeros(len(tiou_thresholds))
  if len(prediction["score"]) == 0:
    return ap
  npos = float(len(ground_truth["video-id"]))
  lock_gt = np.ones((len(tiou_thresholds), len(ground_truth["video-id"]))) * -1
  # Decreasing score: numpy's default (unstable) argsort, reversed.
  sort_idx = prediction["score"].argsort()[::-1]
  prediction = _take(prediction, sort_idx)
  tp = np.zeros((len(tiou_thresholds), len(prediction["score"])))
  fp = np.zeros((len(tiou_thresholds), len(prediction["score"])))
  gt_by_video = _group_rows(ground_truth["video-id"])
  for idx in range(len(prediction["score"])):
    rows = gt_by_video.get(prediction["video-id"][idx])
    if rows is None:              # no GT of this class in that video
      fp[:, idx] = 1
      continue
    this_gt = np.stack([ground_truth["t-start"][rows],
                        ground_truth["t-end"][rows]], axis=1)
    tiou_arr = segment_iou(np.array([prediction["t-start"][idx],
                                     prediction["t-end"][idx]]), this_gt)
    # Best GT first; a locked one passes the turn to the next best.
    tiou_sorted_idx = tiou_arr.argsort()[::-1]
    for tidx, tiou_thr in enumerate(tiou_thresholds):
      for jdx in tiou_sorted_idx:
        if tiou_arr[jdx] < tiou_thr:
          fp[tidx, idx] = 1
          break
        if lock_gt[tidx, rows[jdx]] >= 0:
          continue
        tp[tidx, idx] = 1
        lock_gt[tidx, rows[jdx]] = idx
        break
      if fp[tidx, idx] == 0 and tp[tidx, idx] == 0:
        fp[tidx, idx] = 1
  tp_cumsum = np.cumsum(tp, axis=1).astype(np.float64)
  fp_cumsum = np.cumsum(fp, axis=1).astype(np.float64)
  recall_cumsum = tp_cumsum / npos
  precision_cumsum = tp_cumsum / (tp_cumsum + fp_cumsum)
  for tidx in range(len(tiou_thresholds)):
    ap[tidx] = interpolated_prec_rec(precision_cumsum[tidx, :],
                                     recall_cumsum[tidx, :])
  return ap


class ANETdetection:
  """Detection mAP of a prediction json against a ground-truth json subset.

  ``ground_truth`` / ``prediction``: parsed json dicts, or pass the file
  names.  After ``evaluate()``: ``ap`` (T, C) in the classes' first-appearance
  order (``activity_index``), ``mAP`` (T,), ``average_mAP``.
  """

  def __init__(self, ground_truth_filename=None, prediction_filename=None,
               tiou_thresholds=OFFICIAL_TIOUS, subset="validation",
               verbose=False, *, ground_truth=None, prediction=None):
    self.subset = subset
    self.tiou_thresholds = np.asarray(tiou_thresholds, np.float64)
    self.verbose = verbose
    self.ap = None
    self.ground_truth, self.activity_index = self._import_ground_truth(
        ground_truth if ground_truth is not None else _read(ground_truth_filename))
    self.prediction = self._import_prediction(
        prediction if prediction is not None else _read(prediction_filename))
    if self.verbose:
      print("[INIT] Loaded annotations from {} subset.".format(subset))
      print("\tNumber of ground truth instances: {}".format(
          len(self.ground_truth["video-id"])))
      print("\tNumber of predictions: {}".format(len(self.prediction["video-id"])))
      print("\tFixed threshold for tiou score: {}".format(self.tiou_thresholds))

  def _import_ground_truth(self, data: dict):
    if "database" not in data:
      raise IOError("Please input a valid ground truth file.")
    activity_index, cidx = {}, 0
    video_lst, t_start_lst, t_end_lst, label_lst = [], [], [], []
    for videoid, v in data["database"].items():
      if self.subset != v["subset"]:
        continue
      for ann in v["annotations"]:
        if ann["label"] not in activity_index:
          activity_index[ann["label"]] = cidx
          cidx += 1
        video_lst.append(videoid)
        t_start_lst.append(float(ann["segment"][0]))
        t_end_lst.append(float(ann["segment"][1]))
        label_lst.append(activity_index[ann["label"]])
    return _table(**{"video-id": video_lst, "t-start": t_start_lst,
                     "t-end": t_end_lst, "label": label_lst}), activity_index

  def _import_prediction(self, data: dict) -> dict:
    if "results" not in data:
      raise IOError("Please input a valid prediction file.")
    video_lst, t_start_lst, t_end_lst = [], [], []
    label_lst, score_lst = [], []
    for videoid, v in data["results"].items():
      for result in v:
        label = self.activity_index[result["label"]]   # KeyError if unknown
        video_lst.append(videoid)
        t_start_lst.append(float(result["segment"][0]))
        t_end_lst.append(float(result["segment"][1]))
        label_lst.append(label)
        score_lst.append(result["score"])
    return _table(**{"video-id": video_lst, "t-start": t_start_lst,
                     "t-end": t_end_lst, "label": label_lst,
                     "score": score_lst})

  def wrapper_compute_average_precision(self) -> np.ndarray:
    """(T, C) AP, class by class."""
    ap = np.zeros((len(self.tiou_thresholds), len(self.activity_index)))
    gt_by_label = _group_rows(self.ground_truth["label"])
    pred_by_label = _group_rows(self.prediction["label"])
    empty = _table(**{"video-id": [], "t-start": [], "t-end": [], "label": [],
                      "score": []})
    for cidx in self.activity_index.values():
      rows = pred_by_label.get(cidx)
      ap[:, cidx] = compute_average_precision_detection(
          _take(self.ground_truth, gt_by_label[cidx]),
          _take(self.prediction, rows) if rows is not None else empty,
          tiou_thresholds=self.tiou_thresholds)
    return ap

  def evaluate(self):
    self.ap = self.wrapper_compute_average_precision()
    self.mAP = self.ap.mean(axis=1)
    self.average_mAP = self.mAP.mean()
    if self.verbose:
      print("[RESULTS] Performance on ActivityNet detection task.")
      print("\tAverage-mAP: {}".format(self.average_mAP))
    return self.mAP, self.average_mAP


def _read(path):
  with open(path) as f:
    return json.load(f)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("ground_truth")
  parser.add_argument("prediction")
  parser.add_argument("--subset", default="validation")
  parser.add_argument("--tiou", default="0.5:0.95:10", help="first:last:count")
  args = parser.parse_args(argv)
  first, last, count = args.tiou.split(":")
  anet = ANETdetection(args.ground_truth, args.prediction,
                       np.linspace(float(first), float(last), int(count)),
                       args.subset, verbose=True)
  m_ap, _ = anet.evaluate()
  for t, v in zip(anet.tiou_thresholds, m_ap):
    print(f"mAP@{t:.2f} = {100 * v:.3f}")


if __name__ == "__main__":
  main()
