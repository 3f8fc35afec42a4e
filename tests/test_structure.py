"""The package's structure (issue #11): no import cycle among case_jax modules
(imports inside functions included), no use of another module's private
names, no file over 450 lines -- measured by ../shared/tools/check_structure.py,
which CI has beside the checkout."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(os.path.dirname(REPO), "shared", "tools", "check_structure.py")


def test_no_cycles_no_private_uses_no_long_files():
  assert os.path.exists(TOOL), f"{TOOL} is missing: clone with ../shared beside"
  proc = subprocess.run([sys.executable, TOOL], cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "import cycles 0" in proc.stdout and "private cross-module uses 0" in proc.stdout
