"""CASE on THUMOS14 (I3D features in the BaS-Net/CASE layout).

    python -m case_jax.main --config=configs/thumos14.py \
        --config.data.root=/data/THUMOS14 --workdir=runs/thumos14

Every value is the released code's (notes = ../shared/reference/
official_code_notes.md §2.1); ``:paper`` switches to the paper's values where
the two differ (case_jax/defaults.py lists each difference).
"""
import ml_collections

from case_jax import defaults


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = defaults.base_config()
  c.data.dataset = "thumos14"
  c.data.num_segments = 750       # T (paper E.3, notes §2.1)
  c.labeling.topk_divisor = 8     # k = T // 8 = 93 (paper E.3)
  c.model.num_clusters = 16       # K^C (paper E.3)
  c.num_steps = 3600              # 300 epochs of 12 steps (notes §2.1)
  return defaults.apply_variant(c, arg)
