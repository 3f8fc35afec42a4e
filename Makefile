# Quick start: `make demo` and `make test`; both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test

.PHONY: test test-fast demo bench bench-quick venv clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

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
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(PY) -m case_jax.main --config=configs/synthetic.py --workdir=$(DEMO_DIR)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
