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

# Setup and every environment the demo and the suite resolve see the package indexes as they were
# on this date, so a release published upstream tomorrow cannot break a fresh machine (the suite
# pins the same date in tests/conftest.py; tests/test_setup.py checks they agree). Move both
# together, after `make test` passes with the new date.
RESOLVED_AS_OF := 2026-11-25T00:00:00Z
UV_VERSION := 0.13.9
export MLFLOW_DEPLOY_EXCLUDE_NEWER ?= $(RESOLVED_AS_OF)

.PHONY: setup env demo test test-flavors example-models bench bench-envs bench-gateway bench-batch \
	bench-batching bench-soak bench-scale bench-fuzz clean

setup: $(VENV)/.installed

# Nothing is assumed on PATH but python3: the venv's own pip installs uv into the venv, and that
# uv (called by its path) installs the rest. --compile-bytecode: where PYTHONDONTWRITEBYTECODE is
# set, every server start would otherwise compile mlflow from source again (6.5 of 10.7 s of cold
# start, measured: bench/RESULTS.md)
$(VENV)/.installed: pyproject.toml plugins/mlflow-azureml-local/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install -q --compile-bytecode --exclude-newer $(RESOLVED_AS_OF) -p $(PY) \
		-e '.[dev,dask]' \
		-e plugins/mlflow-azureml-local
	@# the checkout's own sources as well, which an editable install leaves out: where
	@# PYTHONDONTWRITEBYTECODE is set, every CLI start would compile them again (--help: 0.32 s
	@# against 0.25 s)
	$(PY) -m compileall -q mlflow_deploy plugins/mlflow-azureml-local example_models
	touch $@

# The exports above, for a shell of your own: eval "$(make -s env)". Without them MLflow looks for
# models in a new mlflow.db of the current folder, and mlflow-deploy keeps its state in ~/.
env:
	@echo "export MLFLOW_TRACKING_URI='$(MLFLOW_TRACKING_URI)'"
	@echo "export MLFLOW_ARTIFACT_ROOT='$(MLFLOW_ARTIFACT_ROOT)'"
	@echo "export MLFLOW_DEPLOY_HOME='$(MLFLOW_DEPLOY_HOME)'"
	@echo "export MLFLOW_DEPLOY_EXCLUDE_NEWER='$(MLFLOW_DEPLOY_EXCLUDE_NEWER)'"
	@echo 'export PATH="$(VENV)/bin:$$PATH"'

example-models: setup
	@mkdir -p .mlflow
	$(PY) -m example_models.build

demo: example-models
	bash example_models/demo.sh

# two test files at a time (pytest-xdist, a file's tests stay together so its module fixtures
# start once): most of the suite waits on servers and env builds, not on its own CPU
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25

# The flavor matrix with the heavy flavors (PyTorch, TensorFlow/Keras, transformers), which
# `make test` leaves out: their libraries (gigabytes) go into a venv of their own, .venv-flavors,
# so `make test` never carries them. pip installs them, not uv: torch 2.13.0's CPU build lies on
# this machine's disk, where pip looks and uv does not (uv would fetch a CUDA build of several GB).
test-flavors: setup
	test -x .venv-flavors/bin/python || $(PYTHON) -m venv .venv-flavors
	$(VENV)/bin/uv pip install -q --compile-bytecode --exclude-newer $(RESOLVED_AS_OF) \
		-p .venv-flavors/bin/python -e '.[dev]' \
		-e plugins/mlflow-azureml-local
	.venv-flavors/bin/python -m pip install -q torch==2.13.0 tensorflow-cpu==2.21.0 \
		transformers==5.24.0
	MLFLOW_DEPLOY_TEST_FLAVORS=1 TF_CPP_MIN_LOG_LEVEL=2 .venv-flavors/bin/python -m pytest -q \
		-p no:cacheprovider -rsx --durations=20 tests/flavors

bench: setup
	bash bench/run.sh

# the endpoint's gateway against calling its deployment directly (wrk, the peers' model)
bench-gateway: setup
	$(PY) bench/gateway.py

# 1-row requests at concurrency 32 through an endpoint, its batching off and on
bench-batching: setup
	$(PY) bench/batching.py

# environments against `mlflow models prepare-env` / `mlflow models serve` (issue 3)
# a batch job of ours beside `mlflow models predict` and a one-process floor (bench/batch.py);
# 10,000,000 rows in 100 files by default: ROWS=... FILES=... for a smaller run
bench-batch: example-models
	$(PY) bench/batch.py --rows $${ROWS:-10000000} --files $${FILES:-100}

# a deployment behind its endpoint under steady load for DURATION seconds (default 600): every
# process's resident memory, fds and threads and the latency, watched for growth (bench/soak.py)
bench-soak: example-models
	$(PY) bench/soak.py --duration $${DURATION:-600}

# create -> first 200, and a 2nd instance under load -> its first request; RUNS=3 (bench/scale.py)
bench-scale: example-models
	$(PY) bench/scale.py --runs $${RUNS:-3}

bench-envs: setup
	$(PY) bench/envs.py --runs 3

# hostile and valid requests against a live server of each example model (bench/fuzz.py, the
# suite's tests/scoring/fuzzing.py): 5xx, hangs and crashes, target 0 of each, exit 1 otherwise;
# 100,000 requests by default: TOTAL=... for a smaller run
bench-fuzz: setup
	$(PY) bench/fuzz.py --total $${TOTAL:-100000}

clean:
	rm -rf .mlflow .mlflow-deploy
