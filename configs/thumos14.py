"""CASE on THUMOS14 (I3D features in the BaS-Net/CASE layout).

    python -m case_jax.main --config=configs/thumos14.py \
        --config.data.root=/data/THUMOS14 --workdir=runs/thumos14

The base config (case_jax/defaults.py) is the released THUMOS14 recipe, so
this file sets only the class list: T = 750, k = T // 8, K^C = 16 and 3600
steps are its defaults, with their sources (notes = ../shared/reference/
official_code_notes.md §2.1, paper E.3) next to each value.  ``:paper``
switches to the paper's values where the two differ (defaults.paper_variant).

The 20 classes are fixed here in the released order, not read from gt.json:
a label outside them (a typo) is refused, naming the label, the video and
the file.
"""
import ml_collections

from case_jax import defaults
from case_jax.data.thumos_layout import THUMOS14_CLASSES


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = defaults.base_config()
  c.data.classes = THUMOS14_CLASSES
  return defaults.apply_variant(c, arg)
