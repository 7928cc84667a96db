# Entry points: `make demo` (install + run the demo), `make test` (install + run the tests, the docs build included)
# and `make docs` (build the documentation into docs/_build/html).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs benchmark scarches-venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: this pins the local CPU build instead of pulling a multi-GB CUDA wheel
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test,doc]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m scvi_trvae.demo $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

# the documentation, warnings as errors; notebooks are rendered with their stored outputs (not executed)
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks tutorials
	$(PY) -m ruff format --check src tests benchmarks tutorials

benchmark: $(STAMP)
	$(PY) benchmarks/out_of_sample.py $(ARGS)

# scArches (a benchmark baseline) lives in its own environment so that it cannot change the packages under test
scarches-venv:
	$(PYTHON) -m venv .venv-scarches
	.venv-scarches/bin/python -m pip install --quiet "torch==2.13.0"
	.venv-scarches/bin/python -m pip install --quiet "scarches==0.6.1" "scvi-tools==1.4.2"

clean:
	rm -rf $(VENV) demo_output .pytest_cache docs/_build docs/generated
