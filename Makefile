# The README's two commands: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= 8
# Snakemake rules and DVC stages call `seemore`: put the venv's commands first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup run test lint plan paper openstl embedded clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# At most experiment.jobs_per_gpu GPU jobs per GPU, each pinned to its own device
# (seemore/devices.py); 0 slots on a CPU-only machine, where nothing changes. The target
# comes first: --resources takes every word after it.
run: $(STAMP)
	$(BIN)/snakemake all --cores $(CORES) --resources gpu=$$($(BIN)/python -m seemore.devices)

# dvc.yaml is written from params.yaml (seemore/pipeline.py); re-write it after editing
# experiment.datasets/backbones/variants.
dvc.yaml: params.yaml $(STAMP)
	$(BIN)/seemore dvc-yaml

# pytest exits 5 when it collects no tests: that is a failure here, not a pass.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .

# Jobs, FLOPs, GPU/CPU hours and disk of the active params.yaml, before anything runs.
plan: $(STAMP)
	$(BIN)/seemore plan

# The one switch between presets, for snakemake and dvc alike: it rewrites params.yaml.
paper: $(STAMP)
	$(BIN)/seemore use-preset paper
	$(BIN)/seemore dvc-yaml

openstl: $(STAMP)
	$(BIN)/seemore use-preset openstl
	$(BIN)/seemore dvc-yaml

embedded: $(STAMP)
	$(BIN)/seemore use-preset embedded
	$(BIN)/seemore dvc-yaml

clean:
	rm -rf results reports .snakemake
