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

from case_jax import errors


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The CLI; a user error (missing folder, bad layout) is a short message
  and exit status 2 (the traceback with --verbose)."""
  parser = argparse.ArgumentParser(prog="python -m case_jax.data.prepare",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--dataset", required=True,
                      choices=("thumos14", "activitynet12", "activitynet13"),
                      help="which dataset the release holds")
  parser.add_argument("--layout", default=None,
                      help="builder config: basnet | wtalc | acmnet "
                           "(thumos14); default the dataset's release layout")
  parser.add_argument("--manual_dir", required=True,
                      help="the folder holding the raw feature release")
  parser.add_argument("--data_dir",
                      default=os.path.expanduser("~/tensorflow_datasets"),
                      help="where the TFDS dataset is written "
                           "(default ~/tensorflow_datasets)")
  parser.add_argument("--verbose", action="store_true",
                      help="show the traceback of a user error")
  args = parser.parse_args(argv)
  return errors.run_reporting(_prepare, args, prog="case_jax.data.prepare",
                              verbose=args.verbose)


def _prepare(args) -> int:
  if not os.path.isdir(args.manual_dir) or not os.listdir(args.manual_dir):
    raise errors.MissingFile(
        f"--manual_dir {args.manual_dir}: no such folder, or it is empty; put "
        "the feature release there (see case_jax.data.tfds_builders for each "
        "layout's files)")
  try:
    from case_jax.data import tfds_builders
  except ImportError as e:
    raise errors.ConfigError(f"tensorflow-datasets is not installed ({e}); "
                             "pip install -e '.[data]'") from None
  builder = tfds_builders.prepare(args.dataset, args.manual_dir,
                                  args.data_dir, layout=args.layout)
  print(f"prepared {builder.info.full_name} in {builder.data_dir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
