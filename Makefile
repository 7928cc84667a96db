# Two entry points: `make demo` (install + run the demo) and `make test` (install + run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint benchmark scarches-venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: this pins the local CPU build instead of pulling a multi-GB CUDA wheel
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m scvi_trvae.demo $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

benchmark: $(STAMP)
	$(PY) benchmarks/out_of_sample.py $(ARGS)

# scArches (a benchmark baseline) lives in its own environment so that it cannot change the packages under test
scarches-venv:
	$(PYTHON) -m venv .venv-scarches
	.venv-scarches/bin/python -m pip install --quiet "torch==2.13.0"
	.venv-scarches/bin/python -m pip install --quiet "scarches==0.6.1" "scvi-tools==1.4.2"

clean:
	rm -rf $(VENV) demo_output .pytest_cache
