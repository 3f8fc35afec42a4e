"""Test setup: four simulated CPU devices, so the distributed paths run here.

Must run before jax is imported anywhere (pytest imports conftest first).
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the session, inherited by the
# command-line runs the tests start: the same programs are compiled once, not
# once per process (the compiled code, hence every number, is the same).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="case_jax_xla_")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=4").strip()

# The real THUMOS14 annotations live in ../shared/data next to the checkout
# (CI clones the repo with shared/ beside it); tests that need them skip
# when it is absent.
SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..",
                                            "shared", "data"))


# Property tests draw the same examples on every run (CI must not flake on a
# new random draw); explore with --hypothesis-profile=explore.
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", derandomize=True)
_hyp_settings.register_profile("explore", derandomize=False)
_hyp_settings.load_profile("ci")


# `make test` installs every optional dependency (the [data] extra, tensorboard,
# a CPU torch) and sets CASE_REQUIRE_OPTIONAL=1: there, a test skipped for a
# missing package is a failure, so CI never passes by skipping a path.
import pytest  # noqa: E402

_MISSING = ("could not import", "is not installed")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  outcome = yield
  report = outcome.get_result()
  if (os.environ.get("CASE_REQUIRE_OPTIONAL") == "1" and report.skipped
      and any(m in str(report.longrepr) for m in _MISSING)):
    report.outcome = "failed"
    report.longrepr = f"skipped for a missing package under make test: {report.longrepr}"
