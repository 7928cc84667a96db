# The peers' environments (issue 23): each released tool in its own virtual environment, .venv-peer-NAME,
# with the Python it needs. benchmarks/peers/run_NAME.py runs inside it; benchmarks/oos/peers.py calls it.
#   make peer-scgen peer-cpa peer-biolord peer-cellflow peer-scpram    (or: make peers-venv for all)
# On Python 3.11 the local CPU torch 2.13.0 is installed first (pip then keeps it where the peer accepts it);
# CPA and scPRAM pin torch < 2 (their own metadata), so they get Python 3.10 and torch from PyPI.
PEERS := scgen cpa biolord cellflow scpram
PEER_TORCH := torch==2.13.0
# where the environments go (PEER_VENV_PREFIX=/tmp/x/.venv-peer- checks a recipe without touching the ones in use)
PEER_VENV_PREFIX ?= .venv-peer-

# Python version, then the packages (pip requirement strings) of each peer
PEER_PY_scgen := 3.11
PEER_PKGS_scgen := "pertpy[scgen]==1.0.3"
# cpa-tools 0.8.1 requires torch>1.8,<2 and scvi-tools>=0.20.3,<1 (its wheel's metadata)
PEER_PY_cpa := 3.10
PEER_PKGS_cpa := "cpa-tools==0.8.1" "scvi-tools==0.20.3"
PEER_PY_biolord := 3.11
PEER_PKGS_biolord := "biolord==0.0.3"
PEER_PY_cellflow := 3.11
PEER_PKGS_cellflow := "cellflow-tools==0.0.9"
# scpram 0.0.3 pins torch==1.13.1, torchvision 0.14.1, torchaudio 0.13.1, scanpy==1.9.3, pot==0.9.1
PEER_PY_scpram := 3.10
PEER_PKGS_scpram := "scpram==0.0.3"
# extra pins a peer needs to import (filled in from the install logs; see docs/peers.md)
# pertpy 1.0.3 imports statsmodels.sandbox.stats.multicomp.multipletests, gone in statsmodels 0.15
PEER_EXTRA_scgen := "statsmodels<0.15"
# scvi-tools 0.20.3 (what cpa-tools 0.8.1 allows) needs the 2023 stack: anndata < 0.10 (SparseDataset), numpy < 2,
# jax 0.4.13 era (flax, optax, chex, orbax, numpyro, mudata), scipy < 1.12 (jax 0.4.13 wraps scipy.linalg.tril)
PEER_EXTRA_cpa := "numpy<2" "anndata<0.10" "jax==0.4.13" "jaxlib==0.4.13" "flax<0.7.1" "mudata<0.3" "numpyro<0.13" \
	"chex<0.1.83" "optax<0.1.8" "orbax-checkpoint<0.3" "scanpy<1.10" "pandas<2.1" "scipy<1.12"
PEER_EXTRA_biolord :=
# cellflow-tools 0.0.9 imports requests (cellflow/preprocessing/_gene_emb.py) without declaring it
PEER_EXTRA_cellflow := requests
# scanpy 1.9.3 (pinned by scpram) uses np.float_ (numpy < 2); POT 0.9.1 imports scipy.optimize.linesearch (scipy < 1.12)
PEER_EXTRA_scpram := "numpy<2" "scipy<1.12"

.PHONY: peers-venv $(addprefix peer-,$(PEERS))

peers-venv:
	@for p in $(PEERS); do $(MAKE) --no-print-directory peer-$$p || echo "peer-$$p FAILED (see above)"; done

# a fresh .venv-peer-NAME; .installed is written only when the peer's import check passes
$(addprefix peer-,$(PEERS)): peer-%:
	@py=$$(.ci/find_python $(PEER_PY_$*)); \
	if [ -z "$$py" ]; then echo "Python $(PEER_PY_$*) not found: cannot make $(PEER_VENV_PREFIX)$*" >&2; exit 1; fi; \
	venv=$(PEER_VENV_PREFIX)$*; rm -rf $$venv && $$py -m venv $$venv && \
	$$venv/bin/python -m pip install --quiet --upgrade pip && \
	if [ "$(PEER_PY_$*)" = "3.11" ]; then $$venv/bin/python -m pip install --quiet "$(PEER_TORCH)" || exit 1; fi && \
	$$venv/bin/python -m pip install --quiet $(PEER_PKGS_$*) $(PEER_EXTRA_$*) && \
	$$venv/bin/python benchmarks/peers/check_import.py $* && touch $$venv/.installed

# cell-eval (Arc Institute's scorer of the Virtual Cell Challenge) in its own environment, for the scoring notes of
# docs/peers.md; not a peer (it predicts nothing)
.PHONY: celleval-venv
celleval-venv:
	@py=$$(.ci/find_python 3.11); rm -rf .venv-celleval && $$py -m venv .venv-celleval && \
	.venv-celleval/bin/python -m pip install --quiet --upgrade pip && \
	.venv-celleval/bin/python -m pip install --quiet "cell-eval==0.8.2" && \
	.venv-celleval/bin/python -c "import cell_eval; print('cell-eval', cell_eval.__name__)" && touch .venv-celleval/.installed
