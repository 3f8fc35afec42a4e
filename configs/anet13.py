"""CASE on ActivityNet v1.3.

    python -m case_jax.main --config=configs/anet13.py \
        --config.data.root=/data/anet13 --workdir=runs/anet13

Values and their sources: case_jax/defaults.py (activitynet_config).  The
feature layout (BaS-Net, ACM-Net, W-TALC or a prepared TFDS data_dir) is
recognised from data.root (data.layout="auto"; set it to insist), and the
scored ground-truth subset is the test split's as found (ActivityNet:
'validation'; eval.gt_subset).
"""
from case_jax import defaults


def get_config(arg: str = ""):
  return defaults.apply_variant(defaults.activitynet_config("1.3"), arg)
