"""CASE on THUMOS14 (I3D features in the BaS-Net/CASE layout).

    python -m case_jax.main --config=configs/thumos14.py \
        --config.data.root=/data/THUMOS14 --workdir=runs/thumos14

The base config (case_jax/defaults.py) is the released THUMOS14 recipe, so
this file sets nothing: T = 750, k = T // 8, K^C = 16 and 3600 steps are its
defaults, with their sources (notes = ../shared/reference/
official_code_notes.md §2.1, paper E.3) next to each value.  ``:paper``
switches to the paper's values where the two differ (defaults.paper_variant).
"""
import ml_collections

from case_jax import defaults


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  return defaults.apply_variant(defaults.base_config(), arg)
