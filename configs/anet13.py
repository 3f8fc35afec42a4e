"""CASE on ActivityNet v1.3.

    python -m case_jax.main --config=configs/anet13.py \
        --config.data.root=/data/anet13 --workdir=runs/anet13

Values and their sources: case_jax/defaults.py (activitynet_config); readers
for the ActivityNet feature releases arrive with issue #5.
"""
from case_jax import defaults


def get_config(arg: str = ""):
  return defaults.apply_variant(defaults.activitynet_config("1.3"), arg)
