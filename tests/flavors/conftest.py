"""The flavor matrix's models, saved once per session, and a private deployment home per test.

Every model of a group is saved with one pinned requirement list (example_models/flavors.py), so
the group's deployments share one locked environment: the suite's env cache (tests/conftest.py)
builds it once and later runs reuse it."""
import functools
import math
import os
import time

import numpy as np
import pandas as pd
import pytest
import requests

from tests.online.fixtures import private_home

#: `make test-flavors` sets it: the heavy flavors (PyTorch, TensorFlow, transformers) run only then.
HEAVY_ENV = "MLFLOW_DEPLOY_TEST_FLAVORS"

#: A list of strings for a one-column signature (what MLflow infers from a text model's example).
_TEXT_LIST_REJECTED = (
    "a column signature takes Azure's split orientation; the model's own input example is a list "
    "of strings (MLflow's /invocations 'inputs' form), which Azure's server rejects too, so the "
    "start-up self-test gets 400 'input_data is a list; a column signature takes the split "
    "orientation' and create_deployment fails, "
    "saying so: the deployment fails at create, never at its first request")
#: name -> (the exception the test fails with, why), until the product changes.
KNOWN_FAILURES = {
    "pyfunc-text": ("ServerFailed", _TEXT_LIST_REJECTED),
    "transformers": ("ServerFailed", _TEXT_LIST_REJECTED),
}
#: A healthy matrix model is ready in a few seconds; a hung one never is: its test waits this long
#: rather than the default start timeout (180 s).
HUNG_START_TIMEOUT_S = 10.0


def matrix_case(name):
    """A parametrize case for ``name``: a strict xfail (for that exception only) if it is known
    to fail."""
    if name not in KNOWN_FAILURES:
        return name
    from mlflow_deploy.errors import ServerFailed

    raises, reason = KNOWN_FAILURES[name]
    return pytest.param(name, marks=pytest.mark.xfail(
        strict=True, reason=reason,
        raises={"ServerFailed": ServerFailed, "AssertionError": AssertionError}[raises]))


@pytest.fixture
def bounded_start(monkeypatch):
    """bounded_start(name): a deployment of a model known to hang waits HUNG_START_TIMEOUT_S."""

    def bound(name):
        if KNOWN_FAILURES.get(name, ("",))[0] == "ServerFailed":
            from mlflow_deploy.online import supervisor

            monkeypatch.setattr(supervisor, "wait_ready", functools.partial(
                supervisor.wait_ready, timeout=HUNG_START_TIMEOUT_S))

    return bound


@pytest.fixture
def deploy_home(tmp_path, monkeypatch):
    """A private MLFLOW_DEPLOY_HOME whose deployments are all deleted at the end."""
    yield from private_home(tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def matrix_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("flavor-models")


@pytest.fixture(scope="session")
def matrix_model(matrix_dir):
    """matrix_model(name) -> the folder of that matrix model, saved at most once a session."""
    from example_models import flavors

    saved = {}

    def get(name):
        if name not in saved:
            saved[name] = flavors.save_all(str(matrix_dir), [name])[name]
        return saved[name]

    return get


def in_process(model_dir):
    """The Azure body made from the model's input example (as the server's swagger does), and
    what the pyfunc predicts in this process for the same input and params."""
    import mlflow.pyfunc
    from mlflow.models import Model

    from mlflow_deploy.scoring.predictor import azure_example

    meta = Model.load(model_dir)
    body = azure_example(model_dir, meta)
    example = meta.load_input_example(model_dir)
    params = meta.load_input_example_params(model_dir)
    model = mlflow.pyfunc.load_model(model_dir)
    predicted = model.predict(example, params=params) if params else model.predict(example)
    return body, predicted


def as_json(value):
    """A prediction as the scoring contract answers it: a DataFrame as records, a Series or an
    array as a (nested) list, a dict of them as a dict."""
    if isinstance(value, pd.DataFrame):
        return [{str(k): as_json(v) for k, v in row.items()} for row in value.to_dict("records")]
    if isinstance(value, (pd.Series, np.ndarray)):
        return [as_json(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def assert_close(served, expected, rel=1e-5, abs_=1e-6, where="prediction"):
    """``served`` (parsed JSON) equals ``expected`` (as_json of the in-process prediction):
    the same structure, strings and booleans exactly, numbers within a tolerance (float32
    outputs go through text)."""
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        assert served == expected, "{}: served {!r}, in-process {!r}".format(
            where, served, expected)
    elif isinstance(expected, (int, float)):
        assert isinstance(served, (int, float)) and not isinstance(served, bool), \
            "{}: served {!r}, in-process {!r}".format(where, served, expected)
        assert math.isclose(served, expected, rel_tol=rel, abs_tol=abs_), \
            "{}: served {!r}, in-process {!r}".format(where, served, expected)
    elif isinstance(expected, dict):
        assert isinstance(served, dict) and sorted(served) == sorted(expected), \
            "{}: served {!r}, in-process {!r}".format(where, served, expected)
        for key in expected:
            assert_close(served[key], expected[key], rel, abs_, "{}[{!r}]".format(where, key))
    elif isinstance(expected, list):
        assert isinstance(served, list) and len(served) == len(expected), \
            "{}: served {!r}, in-process {!r}".format(where, served, expected)
        for i, (s, e) in enumerate(zip(served, expected)):
            assert_close(s, e, rel, abs_, "{}[{}]".format(where, i))
    else:
        raise AssertionError("{}: cannot compare a {}".format(where, type(expected).__name__))


def heavy_requested():
    return bool(os.environ.get(HEAVY_ENV))


def serve_and_compare(name, model_dir):
    """Deploy ``model_dir`` as ``name`` in its own env (env_manager uv, the default), score its
    input example over HTTP and compare the answer with the in-process prediction."""
    from mlflow_deploy import online

    started = time.monotonic()
    deployment = online.create_deployment(name, str(model_dir))
    assert deployment["environment"]["manager"] == "uv"
    body, expected = in_process(str(model_dir))
    response = requests.post(deployment["scoring_uri"], json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert_close(response.json(), as_json(expected))
    print("{}: deployed and scored in {:.1f} s".format(name, time.monotonic() - started))
    return deployment
