"""Every model users log serves: one real model per flavor, each deployed with
``create_deployment`` into its own environment (env_manager uv, built from the model's own
requirements), scored over HTTP with the model's own input example as an Azure body, and the
answer compared with the pyfunc's prediction in this process. Known product failures are strict
xfails for their exception only (conftest.KNOWN_FAILURES)."""
import pytest
import requests

from example_models.flavors import SUITE
from mlflow_deploy import online
from tests.flavors.conftest import (as_json, in_process, matrix_case,
                                    serve_and_compare)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", [matrix_case(name) for name in SUITE])
def test_the_flavor_serves_its_input_example_as_in_process(name, matrix_model, deploy_home,
                                                           bounded_start):
    bounded_start(name)
    serve_and_compare(name, matrix_model(name))


def test_the_params_the_request_sends_reach_the_model(matrix_model):
    """The input example's params are not the schema's defaults, so an answer computed with the
    defaults (params dropped on the way) would differ from the in-process one."""
    body, expected = in_process(str(matrix_model("pyfunc-params")))
    assert body["params"] == {"scale": 2.5, "suffix": "-eu"}
    assert [row["label"] for row in as_json(expected)] == ["pen-eu", "ink-eu"]


def test_the_matrix_shares_one_environment(matrix_model, deploy_home):
    """One pinned requirement list, one lock: two flavors' deployments run in the same env."""
    first = online.create_deployment("share-a", str(matrix_model("catboost")))
    second = online.create_deployment("share-b", str(matrix_model("statsmodels")))
    assert first["environment"]["key"] == second["environment"]["key"]


def test_a_model_that_cannot_score_its_own_example_fails_at_create(matrix_model, deploy_home):
    """A deployment that cannot serve must fail when it is created, saying why, never at its
    first request: either the text model serves its own input example, or create_deployment
    refuses it with a message about that example."""
    from mlflow_deploy.errors import DeployError

    model_dir = str(matrix_model("pyfunc-text"))
    try:
        deployment = online.create_deployment("text", model_dir)
    except DeployError as exc:
        assert "input example" in str(exc).lower(), str(exc)
        return
    body, _ = in_process(model_dir)
    response = requests.post(deployment["scoring_uri"], json=body, timeout=60)
    assert response.status_code == 200, (
        "created, then its own input example answered {}: {}".format(
            response.status_code, response.text))
