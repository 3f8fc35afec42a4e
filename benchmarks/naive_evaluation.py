"""A deliberately plain second implementation of the detection mAP (Python
loops over the parsed gt.json / result json dicts, written from the
algorithm description): the oracle of tests/test_evaluation.py's randomized
comparison and the "naive loops" row of benchmarks/evaluation_speed.py.
"""
import numpy as np


def _naive_best_first(values, tie_order):
  """Indices best first: numpy's default argsort reversed, or a stable sort
  with NaN first (where the reversed numpy sort puts it)."""
  if tie_order == "numpy":
    return [int(i) for i in np.argsort(np.array(values, np.float64))[::-1]]
  return sorted(range(len(values)),
                key=lambda i: (0, 0.0) if values[i] != values[i] else (1, -values[i]))


def _naive_iou(p, g):
  """NaN for 0/0 (reversed or zero-length segments), as numpy gives."""
  inter = max(0.0, min(p[1], g[1]) - max(p[0], g[0]))
  union = (g[1] - g[0]) + (p[1] - p[0]) - inter
  return float("nan") if union == 0 else inter / union


def _naive_vo_ap(precisions, recalls):
  prec = [0.0] + list(precisions) + [0.0]
  rec = [0.0] + list(recalls) + [1.0]
  for i in range(len(prec) - 2, -1, -1):
    prec[i] = max(prec[i], prec[i + 1])
  total = 0.0
  for i in range(1, len(rec)):
    if rec[i] != rec[i - 1]:
      total += (rec[i] - rec[i - 1]) * prec[i]
  return total


def naive_class_ap(gts, preds, thresholds, tie_order):
  """gts: [(video, start, end)]; preds: [(video, score, start, end)]."""
  if not preds:
    return [0.0] * len(thresholds)
  order = _naive_best_first([p[1] for p in preds], tie_order)
  gts_of_video = {}
  for j, g in enumerate(gts):
    gts_of_video.setdefault(g[0], []).append(j)
  walks = []           # per prediction in rank order: [(gt index, tIoU)]
  for i in order:
    video, _, s, e = preds[i]
    mine = gts_of_video.get(video, [])
    ious = [_naive_iou((s, e), gts[j][1:]) for j in mine]
    walks.append([(mine[k], ious[k]) for k in
                  (_naive_best_first(ious, tie_order) if ious else [])])
  aps = []
  for t in thresholds:
    used = set()
    flags = []
    for walk in walks:
      hit = False
      for j, iou in walk:
        if iou < t:
          break
        if j in used:
          continue
        used.add(j)
        hit = True
        break
      flags.append(hit)
    tp = fp = 0
    precisions, recalls = [], []
    for f in flags:
      tp += f
      fp += not f
      precisions.append(tp / (tp + fp))
      recalls.append(tp / len(gts))
    aps.append(_naive_vo_ap(precisions, recalls))
  return aps


def naive_evaluate(gt_json, result_json, subset, thresholds, tie_order):
  """(T, C) AP and class names, straight from the two parsed json dicts."""
  classes, gts = [], {}
  for vid, entry in gt_json["database"].items():
    if entry["subset"] != subset:
      continue
    for ann in entry["annotations"]:
      if ann["label"] not in classes:
        classes.append(ann["label"])
      gts.setdefault(ann["label"], []).append(
          (vid, float(ann["segment"][0]), float(ann["segment"][1])))
  preds = {c: [] for c in classes}
  for vid, dets in result_json["results"].items():
    for d in dets:
      preds[d["label"]].append((vid, d["score"], d["segment"][0], d["segment"][1]))
  ap = np.array([naive_class_ap(gts[c], preds[c], thresholds, tie_order)
                 for c in classes]).T
  return ap.reshape(len(thresholds), len(classes)), classes
