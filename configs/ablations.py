"""An ablation row of the paper on a dataset config.

    python -m case_jax.main --config=configs/ablations.py:thumos14/table2/row4 ...
    python -m case_jax.ablations        # lists every row and its flags

The argument is <dataset config name>/<table>/<row>, e.g. synthetic/table4/pl_hard.
"""
import os

from case_jax import ablations, defaults


def get_config(arg: str):
  dataset, _, row = arg.partition("/")
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{dataset}.py")
  if not row or not os.path.exists(path):
    raise ValueError(f"use <dataset>/<table>/<row>, e.g. thumos14/table2/row4; got {arg!r}")
  return ablations.apply(defaults.load_config(path), row)
