"""Prepares a raw feature release as a TFDS array_record dataset (no TF).

  python -m case_jax.data.prepare --dataset=thumos14 --layout=basnet \
      --manual_dir=/path/to/release --data_dir=~/tensorflow_datasets \
      [--classes=FILE]

The class list is FILE (one name per line), else the sorted labels of the
release's training split; it is stored with the prepared data, as is the
ground truth (gt.json), so training and evaluation need only data_dir
(``--config.data.layout=tfds --config.data.tfds_name=thumos14/basnet
--config.data.root=<data_dir>``).  ``--dataset=synthetic`` prepares the
project's synthetic data (python -m case_jax.data.synthetic).

Needs the ``data`` extra (pip install -e .[data]); see
``case_jax.data.tfds_builders`` for what is stored and how to read it back.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from case_jax import errors
from case_jax.data.classes import read_class_file


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The CLI; a user error (missing folder, bad layout) is a short message
  and exit status 2 (the traceback with --verbose)."""
  parser = argparse.ArgumentParser(prog="python -m case_jax.data.prepare",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--dataset", required=True,
                      choices=("thumos14", "activitynet12", "activitynet13",
                               "synthetic"),
                      help="which dataset the release holds (the builder; "
                           "data.tfds_name is <dataset>/<layout>)")
  parser.add_argument("--layout", default=None,
                      help="builder config: basnet | wtalc | acmnet "
                           "(thumos14); default the dataset's release layout")
  parser.add_argument("--manual_dir", required=True,
                      help="the folder holding the raw feature release")
  parser.add_argument("--data_dir",
                      default=os.path.expanduser("~/tensorflow_datasets"),
                      help="where the TFDS dataset is written "
                           "(default ~/tensorflow_datasets)")
  parser.add_argument("--classes", default=None,
                      help="class-list file, one name per line (default: "
                           "the sorted labels of the training split)")
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
  classes = read_class_file(args.classes) if args.classes else None
  builder = tfds_builders.prepare(args.dataset, args.manual_dir,
                                  args.data_dir, layout=args.layout,
                                  classes=classes)
  print(f"prepared {builder.info.full_name} in {builder.data_dir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
