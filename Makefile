# edgetool: one command to set up and run the main job, one to run the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo setup test test-fast lint wheel-smoke bench models firmware clean

## demo: set up (first time) and deploy the shipped tiny-mlp on the default target (local)
demo: $(STAMP)
	$(BIN)/edgetool deploy --model tiny-mlp

## setup: create .venv and install edgetool with its dev and farm extras
setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,farm]'
	touch $(STAMP)

## test: every test, including the ones against a real loopback sshd (what CI runs)
test: $(STAMP)
	$(BIN)/python -m pytest -m "" -q

## test-fast: unit tests only (no sshd)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q

## lint: ruff, mypy --strict, the Python floor (vermin: 3.10; the device runner: 3.9)
## and the import rules of DESIGN.md (lint-imports)
lint: $(STAMP)
	$(BIN)/ruff check edgetool tests bench
	$(BIN)/ruff format --check edgetool tests bench
	$(BIN)/mypy edgetool
	$(BIN)/vermin --no-tips --violations -t=3.10- edgetool tests bench
	$(BIN)/vermin --no-tips --violations -t=3.9- edgetool/runner/device_runner.py
	$(BIN)/lint-imports

## wheel-smoke: build the wheel, pip install it into a fresh venv, run the demo from an empty folder
wheel-smoke:
	PYTHON=$(PYTHON) bash .ci/wheel-smoke

## bench: the benchmarks behind bench/RESULTS.md
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

## models: regenerate the shipped demo models (byte-identical)
models: $(STAMP)
	$(BIN)/python -m edgetool.zoo.tinymlp

## firmware: build the bench firmware for every board port (protocol only, no model)
firmware:
	for board in $$(ls firmware_stubs/boards); do \
	  $(MAKE) -s -C firmware_stubs BOARD=$$board OUT=build/$$board || exit 1; \
	  arm-none-eabi-size firmware_stubs/build/$$board/firmware.elf; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache firmware_stubs/build
