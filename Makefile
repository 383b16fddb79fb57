# peftlab — run `make help` for the targets. Everything installs into ./.venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install demo train test test-fast test-gpu lint format bench bench-sweep bench-gpu report clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install peftlab with its dev tools

demo: $(STAMP) ## set up, then train the embedded default (offline demo task, a few minutes on CPU)
	$(BIN)/python -m peftlab.train

train: $(STAMP) ## train with overrides: make train ARGS="method=hta data=vtab1k/dtd"
	$(BIN)/python -m peftlab.train $(ARGS)

test: $(STAMP) ## set up, then run the whole test suite (slow tests included; GPU tests skip without CUDA)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## the test suite without the slow end-to-end tests
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-gpu: $(STAMP) ## only the GPU tests
	$(BIN)/python -m pytest -m gpu $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check peftlab hydra_plugins tests experiments
	$(BIN)/ruff format --check peftlab hydra_plugins tests experiments

format: $(STAMP) ## ruff fix + format
	$(BIN)/ruff check --fix peftlab hydra_plugins tests experiments
	$(BIN)/ruff format peftlab hydra_plugins tests experiments

bench: $(STAMP) ## step/floor/memory/dispatch table of every method (ARGS="--block", "--before main", "--device cuda")
	$(BIN)/python experiments/bench.py $(ARGS)

bench-sweep: $(STAMP) ## end-to-end time of a VTAB-1k sweep for one method (ARGS="--method rlrr --jobs-per-device 1,2")
	$(BIN)/python experiments/bench_sweep.py $(ARGS)

bench-gpu: $(STAMP) ## GPU: ViT-B/16 224px bf16 batch 64 table + sweep estimate with k = 1, 2, 4 jobs per GPU
	$(BIN)/python experiments/bench_gpu.py $(ARGS)

report: $(STAMP) ## aggregate results.json files into tables: make report ARGS="logs/sweeps/vtab1k_all/rlrr_vtab1k"
	$(BIN)/python -m peftlab.report $(ARGS)

clean: ## remove caches (keeps logs/ and data/)
	rm -rf .pytest_cache .ruff_cache **/__pycache__
