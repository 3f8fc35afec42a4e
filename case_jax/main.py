"""Entry point: python -m case_jax.main --config=configs/<dataset>.py --workdir=DIR

Overrides: --config.num_steps=100 --config.model.num_clusters=32 ...
Variants:  --config=configs/thumos14.py:paper (the paper's values where it and
           the released code differ), configs/synthetic.py:runlocal (smoke run).
"""
from absl import app, flags, logging
from ml_collections import config_flags

from case_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a configs/<dataset>.py.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, metrics and outputs go here; "
                    "an existing checkpoint is resumed.")
flags.DEFINE_enum("mode", "train", ["train"], "What to run.")
flags.DEFINE_bool("verbose", False, "Show library INFO logs (Orbax, JAX).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.verbose:  # Orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  train.train(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
