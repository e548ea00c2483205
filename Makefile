# The two commands: `make demo` (set up, log the example models, deploy, score, clean up) and
# `make test` (set up, then the whole suite). Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= $(shell python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python

# embedded defaults: a local SQLite tracking store and registry, state beside the checkout
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/.mlflow/mlflow.db
export MLFLOW_ARTIFACT_ROOT ?= $(CURDIR)/.mlflow/artifacts
export MLFLOW_DEPLOY_HOME ?= $(CURDIR)/.mlflow-deploy
export PATH := $(VENV)/bin:$(PATH)

.PHONY: setup demo test example-models bench bench-envs clean

setup: $(VENV)/.installed

# Nothing is assumed on PATH but python3: the venv's own pip installs uv into the venv, and that
# uv (called by its path) installs the rest. --compile-bytecode: where PYTHONDONTWRITEBYTECODE is
# set, every server start would otherwise compile mlflow from source again (6.5 of 10.7 s of cold
# start, measured: bench/RESULTS.md)
$(VENV)/.installed: pyproject.toml plugins/mlflow-azureml-local/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip install -q --compile-bytecode -p $(PY) -e '.[dev]' \
		-e plugins/mlflow-azureml-local
	touch $@

example-models: setup
	@mkdir -p .mlflow
	$(PY) -m example_models.build

demo: example-models
	bash example_models/demo.sh

test: setup
	$(PY) -m pytest -q

bench: setup
	bash bench/run.sh

# environments against `mlflow models prepare-env` / `mlflow models serve` (issue 3)
bench-envs: setup
	$(PY) bench/envs.py --runs 3

clean:
	rm -rf .mlflow .mlflow-deploy
