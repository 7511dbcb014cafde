# vit5 — every target creates/refreshes the local .venv first (Python 3.10+ with venv and pip).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# PyTorch is pinned to the release this project is developed and tested against.
TORCH ?= torch==2.14.1 torchvision==0.29.1
# Reference implementation for the parity tests; its model code needs only torch, einops,
# omegaconf and numpy, so it is installed without its heavy training dependencies.
REFERENCE ?= nvsubquadratic==0.2.0
# pip prints a harmless warning per missing local mirror folder; keep the log readable.
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup demo test test-all bench bench-before-after lint clean

# The fused CPU kernels (a C++ TORCH_LIBRARY extension, src/vit5/ops/csrc) are compiled by setup.py
# when the package is installed (optional: without a C++ compiler the install succeeds and vit5 runs
# its PyTorch paths). --no-build-isolation: the extension is built against, and its record names,
# the torch installed here. An edited kernel source rebuilds the stamp.
KERNEL_SOURCES := setup.py src/vit5/ops/build_kernels.py $(wildcard src/vit5/ops/csrc/*.cpp src/vit5/ops/csrc/*.h)

$(VENV)/.stamp: pyproject.toml Makefile $(KERNEL_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH) 'setuptools>=68' wheel $(QUIET_PIP)
	$(PIP) --no-build-isolation -e '.[train,test,dev,export,log,hf]' $(QUIET_PIP)
	$(PIP) --no-deps $(REFERENCE) $(QUIET_PIP)
	touch $@

setup: $(VENV)/.stamp

demo: setup
	$(BIN)/python -m vit5 demo

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m ""

bench: setup
	$(BIN)/python benchmarks/run.py

# Before/after protocol (benchmarks/before_after.py): BEFORE=<src folder of the old code>, e.g.
#   git worktree add /tmp/vit5-before <commit> && make bench-before-after BEFORE=/tmp/vit5-before/src
bench-before-after: setup
	test -n "$(BEFORE)" || { echo "set BEFORE=<src folder of the code before the change>"; exit 1; }
	$(BIN)/python benchmarks/before_after.py --before $(BEFORE) --after src

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
