"""CASE on the built-in synthetic dataset (test and demo data, not a benchmark).

    python -m case_jax.main --config=configs/synthetic.py --workdir=/tmp/case_demo
    python -m case_jax.main --config=configs/synthetic.py:context_cheat ...

Data are generated into <workdir>/synthetic_data unless data.root is given.
Sizes are small so the whole run fits in a few CPU minutes; the method's
hyper-parameters are the released THUMOS14 ones except where noted.

Variants: "paper" and "runlocal" (defaults.apply_variant), and
"context_cheat": the data and run before issue #14, on which the video
classifier solves its loss from the background scene alone and neither CASE
nor the baseline localizes (mAP at chance; README, "The synthetic data").
"""
import ml_collections

from case_jax import defaults

CONTEXT_CHEAT = "context_cheat"


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = defaults.base_config()
  c.data.dataset = "synthetic"
  c.data.num_segments = 128       # T: synthetic videos are shorter than THUMOS'
  c.data.synthetic = ml_collections.ConfigDict(dict(
      num_train=128, num_test=64, num_classes=10, feature_dim=64, seed=0,
      time_scale=0.5, max_snippets=400,
      signal="default"))          # synthetic_generator.SIGNAL_PRESETS
  c.model.embed_dim = 128         # smaller than 512: 64-d features
  c.num_steps = 3000
  c.eval_every = 200
  c.log_every = 20
  if arg == CONTEXT_CHEAT:
    c.data.synthetic.signal = CONTEXT_CHEAT
    return c
  return defaults.apply_variant(c, arg)
