"""Prepares a raw feature release as a TFDS array_record dataset (no TF).

  python -m case_jax.data.prepare --dataset=thumos14 --layout=basnet \
      --manual_dir=/path/to/release --data_dir=~/tensorflow_datasets

Needs the ``data`` extra (pip install -e .[data]); see
``case_jax.data.tfds_builders`` for what is stored and how to read it back.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m case_jax.data.prepare",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--dataset", required=True,
                      choices=("thumos14", "activitynet12", "activitynet13"))
  parser.add_argument("--layout", default=None,
                      help="builder config: basnet | wtalc | acmnet "
                           "(thumos14); default the dataset's release layout")
  parser.add_argument("--manual_dir", required=True)
  parser.add_argument("--data_dir",
                      default=os.path.expanduser("~/tensorflow_datasets"))
  args = parser.parse_args(argv)
  try:
    from case_jax.data import tfds_builders
  except ImportError as e:
    print(f"tensorflow-datasets is not installed ({e}); pip install -e "
          "'.[data]'", file=sys.stderr)
    return 2
  builder = tfds_builders.prepare(args.dataset, args.manual_dir,
                                  args.data_dir, layout=args.layout)
  print(f"prepared {builder.info.full_name} in {builder.data_dir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
