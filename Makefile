# Entry points: `make demo` (install + run the demo), `make test` (every test tier on every supported stack, the
# wheel as users install it, and a fresh resolve; what CI runs), `make test-fast` (the fast tier, at the keyboard)
# and `make docs` (build the documentation into docs/_build/html).
#
# Each stack installs from its lock file (requirements/py3.X.txt, pip constraints), so a fresh clone gets the
# versions the last green run saw; `make lock` re-resolves them on purpose. `make test-fresh` installs what pip
# resolves today, without the lock, and names the packages that drifted.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch first: on Python 3.11 this picks the local CPU build instead of pulling a multi-GB CUDA wheel
TORCH := torch==2.13.0
# the stacks `make test` runs; 3.13 is locked too and runs with `make test-stack STACK=3.13`
STACKS := 3.11 3.12
# free disk a stack with PyPI's CUDA torch needs (6.1 GB installed, plus the downloads while pip installs)
STACK_DISK_GB := 10
PYTEST_ALL := -m "" -p no:cacheprovider

.PHONY: demo test test-fast test-stack test-fresh wheel-check lock lint docs benchmark scarches-venv clean

$(STAMP): pyproject.toml requirements/py3.11.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -c requirements/py$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])').txt -e ".[test,doc]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m scvi_trvae.demo $(ARGS)

# every tier on each stack of STACKS, then the wheel, then a fresh resolve (fast tier)
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ALL) $(ARGS)
	@for v in $(filter-out 3.11,$(STACKS)); do $(MAKE) --no-print-directory test-stack STACK=$$v || exit 1; done
	$(MAKE) --no-print-directory wheel-check
	$(MAKE) --no-print-directory test-fresh

# the fast tier (no docs build, no notebooks, no slow tests): pytest's default
test-fast: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

# every tier on the locked stack of Python $(STACK), in .venv-py$(STACK). Only Python 3.11 has a CPU build of torch
# on this machine's disk, so other stacks take PyPI's CUDA build (about 6 GB): without the disk for it the stack is
# skipped with a warning that says so. Under CI the venv is removed afterwards, to leave the disk to the next step.
test-stack:
	@py=$$(.ci/find_python $(STACK)); \
	if [ -z "$$py" ]; then \
		if [ -n "$$CI" ]; then echo "Python $(STACK) not found: its stack cannot be tested" >&2; exit 1; fi; \
		echo "WARNING: Python $(STACK) not found; its stack was NOT tested" >&2; exit 0; \
	fi; \
	venv=.venv-py$(STACK); \
	if [ ! -f $$venv/.installed ] || [ $$venv/.installed -ot requirements/py$(STACK).txt ] || [ $$venv/.installed -ot pyproject.toml ]; then \
		rm -rf $$venv; \
		free_gb=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
		if [ "$$free_gb" -lt $(STACK_DISK_GB) ]; then \
			echo "WARNING: only $$free_gb GB of disk free, the Python $(STACK) stack needs $(STACK_DISK_GB) GB: it was NOT tested" >&2; exit 0; \
		fi; \
		$$py -m venv $$venv && $$venv/bin/python -m pip install --quiet --no-cache-dir --upgrade pip && \
		$$venv/bin/python -m pip install --quiet --no-cache-dir "$(TORCH)" && \
		$$venv/bin/python -m pip install --quiet --no-cache-dir -c requirements/py$(STACK).txt -e ".[test,doc]" && touch $$venv/.installed || exit 1; \
	fi; \
	echo "== Python $(STACK) stack: $$($$venv/bin/python -c 'import scvi, anndata, scanpy; print("scvi-tools", scvi.__version__, "anndata", anndata.__version__, "scanpy", scanpy.__version__)')"; \
	$$venv/bin/python -m pytest -q $(PYTEST_ALL) $(ARGS); status=$$?; \
	if [ -n "$$CI" ]; then rm -rf $$venv; fi; exit $$status

# what pip resolves today without the lock, the fast tier; names the drift. On Python 3.11, where a fresh clone
# once failed on newer packages and torch's CPU build is on disk (the 3.12 stack's drift shows in `make lock`'s diff)
test-fresh:
	@py=$$(.ci/find_python 3.11) || py=$(PYTHON); \
	rm -rf .venv-fresh && $$py -m venv .venv-fresh && .venv-fresh/bin/python -m pip install --quiet --upgrade pip && \
	.venv-fresh/bin/python -m pip install --quiet "$(TORCH)" && .venv-fresh/bin/python -m pip install --quiet -e ".[test]" || exit 1; \
	v=$$(.venv-fresh/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	.venv-fresh/bin/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' | sort > .venv-fresh/resolved.txt; \
	drift=$$(grep -v '^#' requirements/py$$v.txt | sort | comm -13 - .venv-fresh/resolved.txt); \
	if [ -n "$$drift" ]; then echo "== fresh resolve on Python $$v differs from requirements/py$$v.txt in:"; echo "$$drift"; \
	else echo "== fresh resolve on Python $$v: the same versions as requirements/py$$v.txt"; fi; \
	.venv-fresh/bin/python -m pytest -q -p no:cacheprovider $(ARGS) || { \
		echo "DEPENDENCY DRIFT: the fast tier fails on what pip resolves today (Python $$v), though it passes on the lock;" \
		"the packages above changed. Fix the code for them, or bound them in pyproject.toml, then 'make lock'." >&2; exit 1; }

# the sdist and wheel as users get them: built, checked by twine, the wheel installed into a clean environment
wheel-check: $(STAMP)
	rm -rf dist .venv-wheel
	$(PY) -m build --quiet --outdir dist .
	$(PY) -m twine check --strict dist/*
	$(PYTHON) -m venv .venv-wheel
	.venv-wheel/bin/python -m pip install --quiet --upgrade pip
	.venv-wheel/bin/python -m pip install --quiet "$(TORCH)"
	.venv-wheel/bin/python -m pip install --quiet -c requirements/py3.11.txt dist/*.whl
	.ci/wheel_smoke "$(CURDIR)/.venv-wheel" "$(CURDIR)"

# re-resolve every stack's lock file from pyproject.toml (on purpose: review the diff, then commit it)
lock:
	@for v in $(STACKS); do \
		py=$$(.ci/find_python $$v); \
		if [ -z "$$py" ]; then echo "Python $$v not found: requirements/py$$v.txt left as it is" >&2; continue; fi; \
		rm -rf .venv-lock && $$py -m venv .venv-lock && .venv-lock/bin/python -m pip install --quiet --upgrade pip && \
		.venv-lock/bin/python -m pip install --quiet "$(TORCH)" && .venv-lock/bin/python -m pip install --quiet -e ".[test,doc]" && \
		{ echo "# Python $$v stack resolved by 'make lock' on $$(date -u +%Y-%m-%d); pip constraints for the Makefile's installs"; \
		  .venv-lock/bin/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' | sort; } > requirements/py$$v.txt || exit 1; \
		echo "requirements/py$$v.txt written"; \
	done; rm -rf .venv-lock

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

# the benchmark's peers (scGen, CPA, biolord, CellFlow, scPRAM), each in its own environment
include benchmarks/peers/peers.mk

clean:
	rm -rf $(VENV) .venv-py3.* .venv-fresh .venv-wheel dist demo_output .pytest_cache docs/_build docs/generated
