# `make repro` runs the pipeline, `make test` the lint and the tests; both build .venv first when needed.
# Debian's python3.11 where it can make a venv: a static build, it runs a train stage in a tenth less
# time than pyenv's default shared-library build, the tests in a fifth less (docs/ci-tests-dependencies.md).
PYTHON ?= $(shell /usr/bin/python3.11 -c 'import ensurepip' 2>/dev/null && echo /usr/bin/python3.11 || echo python3.11)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Stage commands in dvc.yaml call `python`: the venv's, with or without an activated shell.
export PATH := $(BIN):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := true

.PHONY: repro lint test ui server server-stop serve demo bench sweep dashboard report lock clean

# The venv is built from requirements.lock alone: every package pinned and hash-checked, so a
# fresh machine gets exactly the versions this repo was tested with (`pip freeze` equals the lock).
$(VENV)/.installed: requirements.lock
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m mnist_pipeline.evaluation.vega_page $(VENV)/dvc-plots.html  # .dvc/config's plots.html_template
	touch $@

# Rebuild requirements.lock from pyproject.toml's direct dependencies, keeping every other pin;
# UPGRADE="-P name" moves one package beneath them (docs/ci-tests-dependencies.md).
lock: $(VENV)/.installed
	pip-compile --quiet --extra dev --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links $(UPGRADE) --output-file requirements.lock pyproject.toml

repro: $(VENV)/.installed
	dvc repro

# Lint and format check (ruff), then the type checker (mypy); their settings are in pyproject.toml.
lint: $(VENV)/.installed
	ruff check src tests bench conf
	ruff format --check src tests bench conf
	mypy

# Two workers (the test files shared between them, each file on one worker: its module fixtures are
# built once); the 30 slowest tests listed at the end.
TEST_WORKERS ?= 2
test: lint
	pytest -n $(TEST_WORKERS) --dist loadfile --durations=30

ui: $(VENV)/.installed
	python -m mnist_pipeline.ui

# The team tracking server (docs/sharing.md): PostgreSQL + mlflow server with basic-auth, in
# the background on 127.0.0.1:${MLFLOW_PORT:-5000}; needs MLFLOW_AUTH_ADMIN_PASSWORD. STUDIES_HOST
# (with STUDIES_PASSWORD) also opens a studies database to other hosts.
server: $(VENV)/.installed
	python -m mnist_pipeline.server start

server-stop: $(VENV)/.installed
	python -m mnist_pipeline.server stop

# MLflow's scoring server for the champion model of the project's store (or MLFLOW_TRACKING_URI's),
# else for models/model.pt; it says which at start.
serve: $(VENV)/.installed
	python -m mnist_pipeline.serve --host 127.0.0.1 --port $${SERVE_PORT:-5001}

# A page to draw a digit on, answered as you draw by the same model as `make serve`.
demo: $(VENV)/.installed
	python -m mnist_pipeline.demo --host 127.0.0.1 --port $${DEMO_PORT:-5002}

# A search of sweep.yaml's STUDY with WORKERS processes here (docs/experiments.md, "Search"), then its winner as
# the DVC experiment STUDY-best. More machines join with `python -m mnist_pipeline.sweep run STUDY`.
WORKERS ?= 2
sweep: $(VENV)/.installed
	$(if $(STUDY),,$(error STUDY is not set: make sweep STUDY=mlp (a study of sweep.yaml)))
	dvc repro download
	python -m mnist_pipeline.sweep run $(STUDY) --workers $(WORKERS)
	python -m mnist_pipeline.sweep promote $(STUDY)

# optuna-dashboard on the studies' storage (sweeps.journal, or MNIST_SWEEP_STORAGE): watch a search live.
dashboard: $(VENV)/.installed
	python -m mnist_pipeline.sweep.dashboard --host 127.0.0.1 --port $${DASHBOARD_PORT:-8080}

# report/report.md: params and metrics diffs against BASE as tables, the plot diffs as PNGs beside it.
BASE ?= HEAD
report: $(VENV)/.installed
	python -m mnist_pipeline.evaluation.change_report --base $(BASE) --out report

bench: $(VENV)/.installed
	dvc repro download
	PYTHONPATH=src python bench/bench.py

clean:
	rm -rf $(VENV) .pytest_cache
