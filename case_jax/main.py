"""Entry point: python -m case_jax.main --config=configs/<dataset>.py --workdir=DIR

Overrides: --config.num_steps=100 --config.model.num_clusters=32 ...
--mode=evaluate/predict/plots read the workdir's config.json: --config is
optional there, and its command-line overrides of inference.*, eval.* and
run keys apply on top (another trained key is refused).
Variants:  --config=configs/thumos14.py:paper (the paper's values where it and
           the released code differ), configs/synthetic.py:runlocal (smoke run),
           :rgb (an RGB-only model); joined with "+" (:rgb+paper).
Videos:    --mode=predict --videos=DIR extracts I3D features first
           (python -m case_jax.extract; README "Your own videos").
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from case_jax import config_args, distributed, errors, runs, train, workdir
from case_jax.data import inspect

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a configs/<dataset>.py "
                                "(--mode=evaluate/predict/plots: optional, the "
                                "workdir's config.json is used).", lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, metrics and outputs go here; "
                    "an existing checkpoint is resumed.")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "predict", "inspect",
                                    "plots"],
                  "train: train (and evaluate) into --workdir; evaluate: the "
                  "latest checkpoint in --workdir on the test split -> "
                  "<workdir>/eval/; predict: detections for --features -> "
                  "<workdir>/predict/; inspect: statistics and problems of "
                  "the dataset at data.root (no training); plots: PNG figures "
                  "of --workdir's run and latest checkpoint -> <workdir>/plots/.")
flags.DEFINE_string("features", None, "--mode=predict: a folder with "
                    "rgb/<video>.npy and flow/<video>.npy (n, D) feature files.")
flags.DEFINE_string("videos", None, "--mode=predict: video files (a folder or "
                    "comma-separated files); their I3D features are extracted "
                    "into <workdir>/predict/features/ first (the [video] extra).")
flags.DEFINE_string("flow_weights", None, "--mode=predict --videos with a model "
                    "using flow: pytorch-i3d's flow_imagenet.pt.")
flags.DEFINE_enum("projection", "pca", ["pca", "tsne"], "--mode=plots: the 2-D "
                  "map of the snippet embeddings (t-SNE: exact, slower).")
flags.DEFINE_bool("verbose", False, "Show library INFO logs (Orbax, JAX) and "
                  "the traceback of a user error.")


def main(argv):
  """A user error (bad file, video, key: case_jax.errors.UserError) is a
  short message and exit status 2; anything else raises."""
  errors.run_reporting(_main, argv, prog="case_jax.main", verbose=FLAGS.verbose)


def _main(argv):
  distributed.maybe_initialize()  # multi-host: before any JAX backend use
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.verbose:  # Orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  if FLAGS.mode in ("train", "inspect") and FLAGS.config is None:
    raise errors.ConfigError(f"--mode={FLAGS.mode} needs --config=configs/<dataset>.py "
                             "(e.g. --config=configs/thumos14.py)")
  if FLAGS.mode == "inspect":
    raise SystemExit(inspect.inspect_config(FLAGS.config))
  if not FLAGS.workdir:
    raise errors.ConfigError(f"--mode={FLAGS.mode} needs --workdir=DIR (checkpoints, "
                             "metrics and outputs go there)")
  if FLAGS.mode == "train":  # cfg.seeds: <workdir>/seed_<s>/ and seeds.md
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    return
  if FLAGS.mode == "predict" and bool(FLAGS.features) == bool(FLAGS.videos):
    raise errors.ConfigError("--mode=predict needs either --features=DIR (a folder "
                             "with rgb/<video>.npy and flow/<video>.npy (n, D) files) "
                             "or --videos=DIR_OR_FILES (video files)")
  overrides = (config_flags.get_override_values(FLAGS["config"])
               if FLAGS.config is not None else {})
  cfg = workdir.evaluation_config(workdir.local_workdir(FLAGS.workdir),
                                  FLAGS.config, overrides)
  if FLAGS.mode == "evaluate":
    runs.evaluate(cfg, FLAGS.workdir)
  elif FLAGS.mode == "plots":
    runs.plots(cfg, FLAGS.workdir, projection=FLAGS.projection)
  else:
    runs.predict(cfg, FLAGS.workdir, FLAGS.features, videos=FLAGS.videos,
                 flow_weights=FLAGS.flow_weights)


if __name__ == "__main__":
  if any(a in ("--help", "-h", "--helpshort") for a in sys.argv[1:]):
    # absl answers --help with status 1; a help request is not an error.
    FLAGS.mark_as_parsed()
    app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
  # An unknown --config.KEY or config file is a user error before absl parses
  # the flags (ml_collections would answer it with a traceback).
  errors.run_reporting(config_args.check_config_argv, sys.argv[1:],
                       prog="case_jax.main", verbose=errors.wants_verbose(None))
  app.run(main)
