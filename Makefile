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

demo: $(STAMP)
	@echo "make demo: training on the synthetic dataset arrives with issue #3 (the CASE method end to end)." >&2
	@exit 1

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
