# The front door. `make help` lists the targets. Targets that need the Python
# environment create it first, so `make demo` and `make test` work on a fresh clone.

PYTHON     ?= python3
VENV       ?= .venv
# On the CPU machines this project is developed on, torch 2.13.0 installs from a local
# wheel; on a GPU machine pass e.g. TORCH_SPEC='torch>=2.5' (or your CUDA build).
TORCH_SPEC ?= torch==2.13.0
CONFIG     ?= tiny
ARGS       ?=
NPROC      ?= 1
CKPT       ?=
INPUT      ?=
PRESET     ?= tiny
BUDGET     ?= 600
LOGDIR     ?= outputs
TB_HOST    ?= 127.0.0.1
TB_PORT    ?= 6006
# Real-text tests read the shared LM1B sample; point this elsewhere or leave it empty to skip them.
LM1B_SAMPLE_DIR ?= $(wildcard $(CURDIR)/../shared/lm1b-sample)
export LM1B_SAMPLE_DIR

BIN   := $(VENV)/bin
PY    := $(BIN)/python
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast lint demo synthetic train eval score bench gpu-check gpu-wheels table data summary paper-size-check corpus-scale-check tensorboard clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: CONFIG=$(CONFIG) ARGS='$(ARGS)' NPROC=$(NPROC) CKPT=$(CKPT) PRESET=$(PRESET) TORCH_SPEC='$(TORCH_SPEC)'"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install '$(TORCH_SPEC)'
	$(BIN)/pip install -e '.[dev]'
	@touch $@

setup: $(STAMP) ## create .venv and install the package with its dev tools

test: $(STAMP) ## run the whole test suite (what CI runs)
	$(BIN)/pytest

test-fast: $(STAMP) ## run the tests not marked slow
	$(BIN)/pytest -m "not slow"

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

demo: $(STAMP) ## train and evaluate a small G-LSTM in a few CPU minutes, print where results are
	$(PY) -m lm1b.demo $(ARGS)

SYNTHETIC := data/synthetic/source.json

$(SYNTHETIC): | $(STAMP)
	$(PY) -m lm1b.data.synthetic --out data/synthetic

synthetic: $(SYNTHETIC) ## write the small synthetic corpus (data/synthetic) the tiny experiment trains on

# NPROC>1 runs one process per GPU (or CPU rank) under torchrun on this node.
train: $(STAMP) $(SYNTHETIC) ## train: make train CONFIG=glstm_k4 ARGS="size=cpu data=sample" [NPROC=8]
ifeq ($(NPROC),1)
	$(PY) -m lm1b.train experiment=$(CONFIG) $(ARGS)
else
	$(PY) -m torch.distributed.run --standalone --nproc_per_node=$(NPROC) -m lm1b.train experiment=$(CONFIG) $(ARGS)
endif

eval: $(STAMP) ## evaluate a checkpoint: make eval CKPT=outputs/.../checkpoints
	@test -n "$(CKPT)" || { echo "make eval: pass CKPT=<checkpoint file or run directory>" >&2; exit 2; }
	$(PY) -m lm1b.evaluate checkpoint=$(CKPT) $(ARGS)

score: $(STAMP) ## per-sentence log-probs as JSON lines: make score CKPT=... INPUT=file|- [ARGS="carry_state=true"]
	@test -n "$(CKPT)" -a -n "$(INPUT)" || { echo "make score: pass CKPT=<checkpoint> INPUT=<text file or ->" >&2; exit 2; }
	$(PY) -m lm1b.score checkpoint=$(CKPT) input=$(INPUT) $(ARGS)

bench: $(STAMP) ## benchmark every variant: make bench PRESET=tiny|cpu|full
	$(PY) -m lm1b.bench preset=$(PRESET) $(ARGS)

# No $(STAMP): a GPU machine brings its own CUDA torch (the script picks .venv when there is one).
gpu-check: ## the GPU check (env, GPU tests, bench preset=full), about 8 minutes: make gpu-check [ARGS=...]
	scripts/gpu_check.sh $(ARGS)

gpu-wheels: $(STAMP) ## hydra-core, omegaconf, antlr4 as wheels in .whl/ for a GPU machine without them
	PYTHON=$(PY) scripts/gpu_wheels.sh

table: $(STAMP) ## the paper's table on the shared sample: make table BUDGET=600 [ARGS="variants=[...]"]
	$(PY) -m lm1b.table budget_seconds=$(BUDGET) $(ARGS)

data: $(STAMP) ## download, verify and prepare the full LM1B corpus under data/lm1b
	$(PY) -m lm1b.download $(ARGS)

summary: $(STAMP) ## parameter counts of a variant: make summary CONFIG=glstm_k8
	$(PY) -m lm1b.summary experiment=$(CONFIG) $(ARGS)

paper-size-check: $(STAMP) ## paper size on this CPU: fit, checkpoint, exact resume, evaluation (20 GB memory, 30 GB disk)
	$(PY) scripts/paper_size_check.py $(ARGS)

corpus-scale-check: $(STAMP) ## vocabulary build and loader on a generated LM1B-sized corpus (5 GB disk)
	$(PY) scripts/corpus_scale_check.py $(ARGS)

# Loopback only by default: on a shared login node every interface would publish every run's
# metrics and config. Reach it through an SSH tunnel, or opt in with TB_HOST=0.0.0.0.
tensorboard: $(STAMP) ## dashboards of every run under outputs/ on 127.0.0.1 [TB_HOST=0.0.0.0 to publish]
	$(BIN)/tensorboard --logdir $(LOGDIR) --host $(TB_HOST) --port $(TB_PORT)

clean: ## remove the environment and caches (keeps data/ and outputs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
