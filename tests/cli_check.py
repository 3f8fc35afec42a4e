"""Running an entry point as a user would, for the bad-input tests."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module: str, *args, cwd=REPO, timeout=300, env_extra=None):
  """``python -m <module> <args>`` on one CPU device -> CompletedProcess."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", **(env_extra or {}))
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd,
                        env=env, capture_output=True, text=True, timeout=timeout)


def assert_clean_refusal(proc, *names, code=2):
  """Exit status ``code``, no traceback, and a message naming each of
  ``names`` (file, video, key, class, the fix) in a few lines."""
  text = proc.stdout + proc.stderr
  assert proc.returncode == code, (proc.returncode, text[-3000:])
  assert "Traceback" not in text, text[-3000:]
  for name in names:
    assert str(name) in proc.stderr, (name, proc.stderr[-3000:])
  assert len(proc.stderr.strip().splitlines()) <= 12, proc.stderr
