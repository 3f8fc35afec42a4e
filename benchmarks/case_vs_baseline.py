"""CASE against the MIL baseline on the synthetic dataset, several seeds.

    python -m benchmarks.case_vs_baseline [--seeds 0 1 2] [--steps N] [--json PATH]

Trains each variant with the synthetic config (data seed fixed, run seed
varied) and reports, on the test split of the final checkpoint: detection mAP
(official protocol), the F&B snippet accuracy (Table 2 "ACC", threshold 0.5)
with the attention P^A and with the clustering-assisted P-ddot^A, and the
threshold-free ROC AUC of the inference foreground score.
"""
import argparse
import os
import sys
import tempfile
import time

import jax
import numpy as np

from benchmarks import harness
from case_jax import ablations, defaults, inference, train
from case_jax.data import BasnetDataset
from case_jax.seeds import mean_std

VARIANTS = {"baseline (Table 2 row 1)": "table2/row1", "CASE (all components)": "table2/row8"}


def fb_auc(test, model, state, cfg):
  """Threshold-free F&B separation: ROC AUC of the inference foreground score
  (P-ddot^A with CAT, else P^A) against the ground-truth snippet mask."""
  from case_jax import data as data_lib
  how = cfg.inference.fg_score if cfg.inference.cat else "attention"
  scores, labels = [], []
  for batch in data_lib.eval_batches(test, num_segments=cfg.data.num_segments,
                                     batch_size=32, pad_last=True):
    out = inference.forward(model, state.params, batch["rgb"], batch["flow"])
    s = np.asarray(inference.foreground_scores(out, state.q_r, how))
    keep = batch["valid"][:, None] & (batch["fg_mask"] >= 0)
    scores.append(s[keep])
    labels.append(batch["fg_mask"][keep] > 0)
  return harness.roc_auc(np.concatenate(scores), np.concatenate(labels))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--steps", type=int, default=None)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name, row in VARIANTS.items():
      for seed in args.seeds:
        cfg = ablations.apply(defaults.load_config("synthetic"), row)
        cfg.seed = seed
        cfg.data.root = os.path.join(tmp, "data")   # shared, generated once
        cfg.eval_every = 0   # only the final evaluation
        if args.steps:
          cfg.num_steps = args.steps
        t0 = time.time()
        res = train.train_and_evaluate(cfg, os.path.join(tmp, f"{row.replace('/', '_')}_{seed}"),
                          devices=jax.local_devices()[:1], stream=open(os.devnull, "w"))
        test = BasnetDataset(cfg.data.root, "test")
        st = res["state"]
        acc = {how: inference.dataset_fb_accuracy(
            test, res["model"], st.params, st.q_r,
            num_segments=cfg.data.num_segments, how=how)
            for how in ("attention", "fused")}
        acc["auc"] = fb_auc(test, res["model"], st, cfg)
        m = res["metrics"]
        rows.append({"variant": name, "row": row, "seed": seed,
                     "acc_attention": acc["attention"], "acc_fused": acc["fused"],
                     "auc": acc["auc"], "mAP": m["mAP"],
                     "mAP@0.5": m["mAP@0.50"], "AVG(0.1:0.5)": m["AVG(0.1:0.5)"],
                     "seconds": time.time() - t0, "steps": cfg.num_steps})
        print(f"{name:28s} seed {seed}: mAP {100 * m['mAP']:.2f}  ACC(P^A) "
              f"{acc['attention']:.4f}  ACC(P-ddot^A) {acc['fused']:.4f}  "
              f"F&B AUC {acc['auc']:.4f}  ({time.time() - t0:.0f} s)", flush=True)
  print("\nmean ± sample std (ddof=1) over the seeds, in %:")
  print("| variant | mAP AVG(0.1:0.7) | mAP@0.5 | ACC P^A | ACC P̈^A | F&B AUC | seeds |")
  print("|---|---|---|---|---|---|---|")
  for name in VARIANTS:
    r = [x for x in rows if x["variant"] == name]
    cells = []
    for key, scale in (("mAP", 100), ("mAP@0.5", 100), ("acc_attention", 100),
                       ("acc_fused", 100), ("auc", 100)):
      m, sd = mean_std([x[key] * scale for x in r])
      cells.append(f"{m:.1f} ± {sd:.1f}")
    print(f"| {name} | " + " | ".join(cells) + f" | {len(r)} |")
  harness.write_json(
      harness.results_path("case_vs_baseline", args.json),
      {"rows": rows, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
       "command": "python -m benchmarks.case_vs_baseline " + " ".join(sys.argv[1:])},
      indent=2)


if __name__ == "__main__":
  main()
