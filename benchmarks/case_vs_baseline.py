"""CASE against the MIL baseline on the synthetic dataset, several seeds.

    python -m benchmarks.case_vs_baseline [--seeds 0 1 2] [--steps N] [--json PATH]

Trains each variant with the synthetic config (data seed fixed, run seed
varied) and reports the test-split F&B snippet accuracy (Table 2 "ACC") with
the attention P^A and, for CASE, the clustering-assisted P-ddot^A.  The mAP
column arrives with the evaluation issue (#4).
"""
import argparse
import importlib.util
import json
import os
import socket
import sys
import tempfile
import time

import jax
import numpy as np

from case_jax import ablations, inference, train
from case_jax.data import WTALDataset

VARIANTS = {"baseline (Table 2 row 1)": "table2/row1", "CASE (all components)": "table2/row8"}


def load_config(path):
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--steps", type=int, default=None)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  here = os.path.dirname(os.path.abspath(__file__))
  cfg_path = os.path.join(here, "..", "configs", "synthetic.py")
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name, row in VARIANTS.items():
      for seed in args.seeds:
        cfg = ablations.apply(load_config(cfg_path), row)
        cfg.seed = seed
        cfg.data.root = os.path.join(tmp, "data")   # shared, generated once
        if args.steps:
          cfg.num_steps = args.steps
        t0 = time.time()
        res = train.train(cfg, os.path.join(tmp, f"{row.replace('/', '_')}_{seed}"),
                          devices=jax.local_devices()[:1], stream=open(os.devnull, "w"))
        test = WTALDataset(cfg.data.root, "test")
        st = res["state"]
        acc = {how: inference.dataset_fb_accuracy(
            test, res["model"], st.params, st.q_r,
            num_segments=cfg.data.num_segments, how=how)
            for how in ("attention", "fused")}
        rows.append({"variant": name, "row": row, "seed": seed,
                     "acc_attention": acc["attention"], "acc_fused": acc["fused"],
                     "train_fb_acc_last": res["metrics"].get("fb_acc"),
                     "seconds": time.time() - t0, "steps": cfg.num_steps})
        print(f"{name:28s} seed {seed}: ACC(P^A) {acc['attention']:.4f}  "
              f"ACC(P-ddot^A) {acc['fused']:.4f}  ({time.time() - t0:.0f} s)",
              flush=True)
  print("\n| variant | ACC P^A (mean ± std) | ACC P̈^A (mean ± std) | seeds |")
  print("|---|---|---|---|")
  for name in VARIANTS:
    r = [x for x in rows if x["variant"] == name]
    a = np.array([x["acc_attention"] for x in r]) * 100
    f = np.array([x["acc_fused"] for x in r]) * 100
    print(f"| {name} | {a.mean():.1f} ± {a.std():.1f} | {f.mean():.1f} ± {f.std():.1f} "
          f"| {len(r)} |")
  out = args.json or os.path.join(here, "results", f"case_vs_baseline_{socket.gethostname()}.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as fh:
    json.dump({"rows": rows, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "command": "python -m benchmarks.case_vs_baseline " + " ".join(sys.argv[1:])},
              fh, indent=2)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
