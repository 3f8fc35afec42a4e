"""``--config`` / ``--config.KEY=VALUE`` checked before ml_collections sees them.

ml_collections' config flag answers a missing config file, a bad variant or
an unknown ``--config.KEY`` with a traceback (or loads lazily and fails
later); the tools' entry points call ``check_config_argv`` first so that
each is a user error naming the file or key and the fix.
"""
from __future__ import annotations

from typing import Optional, Sequence

import ml_collections

from case_jax import defaults
from case_jax.errors import ConfigError, MissingFile


def config_args(argv: Sequence[str]) -> tuple[Optional[str], list]:
  """(the --config value or None, [(dotted key, raw flag)] of the overrides)."""
  spec, keys = None, []
  args = list(argv)
  for i, a in enumerate(args):
    if a.startswith("--config="):
      spec = a.split("=", 1)[1]
    elif a == "--config" and i + 1 < len(args):
      spec = args[i + 1]
    elif a.startswith("--config."):
      keys.append((a[len("--config."):].split("=", 1)[0], a))
  return spec, keys


def check_config_argv(argv: Sequence[str], default: Optional[str] = None):
  """Loads the config ``argv`` names (else ``default``) and checks that every
  ``--config.KEY`` exists in it; returns the config, or None when there is
  no --config (the flag's own required check reports that)."""
  spec, keys = config_args(argv)
  spec = spec or default
  if spec is None:
    return None
  try:
    cfg = defaults.load_config(spec)
  except FileNotFoundError:
    raise MissingFile(f"--config={spec}: no such config file; pass one of "
                      "configs/*.py (e.g. --config=configs/thumos14.py)") from None
  except (ValueError, KeyError) as e:   # a variant the config refuses
    raise ConfigError(f"--config={spec}: {e}") from None
  for key, flag in keys:
    node = cfg
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ConfigError(f"{flag}: {spec} has no config key {key!r}; check the "
                          "spelling against the config file (keys are "
                          "section.name, e.g. model.num_clusters)")
      node = node[part]
  return cfg
