# Quick start: `make demo` and `make test`; both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BASE   := $(VENV)/.installed
STAMP  := $(VENV)/.installed-test
# A CPU build, only for the tests of the torch-file importer (never a core dependency).
TORCH  ?= torch==2.13.0

.PHONY: test test-fast demo bench bench-quick venv clean

$(BASE): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

# Everything the optional paths need (the [video] extra included), so no test
# is skipped on a fresh machine.
$(STAMP): $(BASE)
	$(PY) -m pip install --quiet -e '.[test,data,video]'
	$(PY) -m pip install --quiet '$(TORCH)'
	touch $@

venv: $(STAMP)

test: $(STAMP)
	CASE_REQUIRE_OPTIONAL=1 $(PY) -m pytest -q

test-fast: $(STAMP)
	CASE_REQUIRE_OPTIONAL=1 $(PY) -m pytest -q -m "not slow"

$(VENV)/.installed-bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(PY) -m benchmarks.sinkhorn_throughput

bench-quick: $(VENV)/.installed-bench
	$(PY) -m benchmarks.sinkhorn_throughput --quick

DEMO_DIR ?= demo_out

# Trains CASE on the built-in synthetic dataset (generated into $(DEMO_DIR)).
# Train, detect, evaluate (mAP table), write detections and PNG plots (plots/).
demo: $(BASE)
	rm -rf $(DEMO_DIR)
	$(PY) -m case_jax.main --config=configs/synthetic.py --workdir=$(DEMO_DIR)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
