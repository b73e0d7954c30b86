# `make repro` runs the pipeline, `make test` the tests; both build .venv first when needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Stage commands in dvc.yaml call `python`: the venv's, with or without an activated shell.
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := true

.PHONY: repro test ui bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

repro: $(VENV)/.installed
	dvc repro

test: $(VENV)/.installed
	pytest

ui: $(VENV)/.installed
	python -m mnist_pipeline.ui

bench: $(VENV)/.installed
	dvc repro download
	PYTHONPATH=src python bench/bench.py

clean:
	rm -rf $(VENV) .pytest_cache
