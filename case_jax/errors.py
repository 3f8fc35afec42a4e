"""User errors: what the user gave is wrong (a file, a video, a flag, a
config key), as opposed to a bug.

Every entry point reports a ``UserError`` in a few lines -- what is wrong,
where (file / video / key / class) and the fix -- on stderr, and exits with
``EXIT_USER_ERROR``; no traceback unless ``--verbose``.  Anything else is a
bug and raises normally.  The subclasses keep the built-in exception they
refine (``ConfigError`` is a ``ValueError``, ``MissingFile`` a
``FileNotFoundError``), so callers that catch those still do.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional

EXIT_USER_ERROR = 2


class UserError(Exception):
  """A problem in the user's input, reported without a traceback."""


class ConfigError(UserError, ValueError):
  """A config value, flag or key that cannot be used."""


class MissingFile(UserError, FileNotFoundError):
  """A file or folder the user pointed to (or that should be in it) is
  missing."""


def report(error: BaseException, prog: str, stream=None) -> None:
  """``<prog>: error: <message>`` on ``stream`` (stderr)."""
  stream = stream or sys.stderr
  stream.write(f"{prog}: error: {error}\n")
  stream.flush()


def run_reporting(fn: Callable, *args, prog: str, verbose: bool = False,
                  stream=None, **kwargs):
  """``fn(*args, **kwargs)``; a ``UserError`` becomes a short report and
  ``SystemExit(EXIT_USER_ERROR)`` (re-raised as is with ``verbose``)."""
  try:
    return fn(*args, **kwargs)
  except UserError as e:
    if verbose:
      raise
    report(e, prog, stream)
    raise SystemExit(EXIT_USER_ERROR) from None


def wants_verbose(argv: Optional[list]) -> bool:
  """Whether a raw argv asks for tracebacks (``--verbose``)."""
  return any(a in ("--verbose", "--verbose=true", "--verbose=True")
             for a in (argv if argv is not None else sys.argv[1:]))
