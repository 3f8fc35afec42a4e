"""CASE on the built-in synthetic dataset (test and demo data, not a benchmark).

    python -m case_jax.main --config=configs/synthetic.py --workdir=/tmp/case_demo
    python -m case_jax.main --config=configs/synthetic.py:context_cheat ...

Data are generated into <workdir>/synthetic_data unless data.root is given.
Sizes are small so the whole run fits in a few CPU minutes; the method's
hyper-parameters are the released THUMOS14 ones except where noted.

Variants: "paper" and "runlocal" (defaults.apply_variant), and
"context_cheat": the data and run before issue #14 (half-length videos and
instances), on which the video classifier solves its loss from the
background scene alone and neither CASE nor the baseline localizes (mAP at
chance; README, "How the demo's data were chosen").
"""
import ml_collections

from case_jax import defaults

CONTEXT_CHEAT = "context_cheat"


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = defaults.base_config()
  c.data.dataset = "synthetic"
  # THUMOS14 in miniature (README, "How the demo's data were chosen"):
  # videos at a quarter of their real duration, instances at their real
  # length (as many snippets as there), as many training instances as its
  # 200 validation videos hold (~3,000), and T about 4x the median video (66
  # snippets) as T = 750 is for THUMOS14's (~200): few videos are subsampled.
  c.data.num_segments = 256
  c.data.synthetic = ml_collections.ConfigDict(dict(
      num_train=800, num_test=256, num_classes=10, feature_dim=64, seed=0,
      time_scale=0.25, instance_lengths="real", max_snippets=400,
      signal="default"))          # synthetic_generator.SIGNAL_PRESETS
  c.model.embed_dim = 128         # smaller than 512: 64-d features
  c.num_steps = 2000
  c.eval_every = 200
  c.log_every = 20
  if arg == CONTEXT_CHEAT:
    c.data.synthetic.update(signal=CONTEXT_CHEAT, time_scale=0.5,
                            instance_lengths="scaled", num_train=128,
                            num_test=64)
    c.data.num_segments, c.num_steps = 128, 3000
    return c
  return defaults.apply_variant(c, arg)
