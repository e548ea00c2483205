"""MLflow deployment plugin for the target ``azureml-local``: Azure ML no-code deployment of an
MLflow model, on this machine.

It only adapts MLflow's ``BaseDeploymentClient`` to mlflow_deploy's control plane. MLflow loads a
plugin by scanning this module with ``inspect.getmembers``: it must expose ``target_help``,
``run_local`` and exactly ONE ``BaseDeploymentClient`` subclass, so no other client class may be
imported here (a second one breaks loading).

An endpoint is online (the default) or batch (``create_endpoint(name, config={"kind": "batch"})``);
each call on a named endpoint goes to the control plane of its kind, so ``create_deployment(...,
endpoint=E)`` on a batch endpoint creates a batch deployment.

mlflow_deploy's errors do not derive from ``MlflowException`` (its CLI must start without importing
mlflow), so every entry point here is decorated with ``mlflow_exceptions``: a ``DeployError`` leaves
it as an instance of both its own class and ``MlflowException``, with the right error code.
"""

from typing import Any, Dict, List, Optional

from mlflow.deployments import BaseDeploymentClient, PredictionsResponse

from mlflow_deploy import online
from mlflow_deploy.batch import deployments as batch_deployments
from mlflow_deploy.batch import endpoints as batch_endpoints
from mlflow_deploy.errors import InvalidParameter, mlflow_exceptions
from mlflow_deploy.online.deployments import check_flavor
from mlflow_deploy.online.foreground import DEFAULT_PORT, serve
from mlflow_deploy.online.settings import SETTING_HELP
from mlflow_deploy.store import HOME_ENV, Store

__all__ = ["AzureMLLocalDeploymentClient", "run_local", "target_help"]


KINDS = ("online", "batch")


def target_help() -> str:
    keys = "\n".join(f"    {key:<20} {text}" for key, text in SETTING_HELP.items())
    batch_keys = "\n".join(f"    {key:<28} {text}"
                           for key, text in batch_deployments.SETTING_HELP.items())
    return f"""\
Target azureml-local: deploy an MLflow model on this machine the way Azure ML no-code deployment
does. Each deployment is a scoring server on 127.0.0.1 (Flask under gunicorn) that answers Azure's
/score (payload {{"input_data": ...}}) and MLflow's /invocations. Servers keep running after the
command ends; `mlflow deployments delete` stops them. State lives under ${HOME_ENV}
(default ~/.mlflow-deploy).

Target URI: azureml-local (nothing after it).

Model URIs: a local path, file:, runs:/<run_id>/<path>, models:/<name>/<version>,
models:/<name>@<alias>, azureml:<name>:<version> (looked up in the MLflow registry).

Deployment config (-C key=value):
{keys}

Deployment names are unique on this machine (3-32 letters, digits or hyphens, as in Azure ML).
Endpoints: each is one URL, served by its gateway (key auth by default: `mlflow-deploy
online-endpoint get-credentials --name E` prints the keys; predict sends them itself). A deployment
created without --endpoint gets an endpoint of its own name and all its traffic; a deployment added
to an existing endpoint gets none unless -C all_traffic=true, as on Azure. Endpoint config:
auth_mode (key or none), description, host (create; beyond 127.0.0.1 needs key); update-endpoint
also takes traffic='{{"blue": 90, "green": 10}}' (or "blue=90 green=10") and mirror_traffic.
A deployment that takes traffic cannot be deleted; deleting an endpoint deletes its deployments.
Deleting what does not exist is not an error.

Logs: `get` shows each instance's log_path (a line per request: request id, route, status,
latency, the reason of an error); `mlflow-deploy online-deployment get-logs --name D
--endpoint-name E [--lines N] [--follow]` prints them.

predict: --input-path takes an Azure payload file ({{"input_data": ...}}, split, tensor or named
tensors). It cannot carry params, because MLflow reads the file with pd.read_json: send params with
the Python API (client.predict(..., params={{...}})) or over HTTP to the scoring URI.

run-local: a foreground server on port {DEFAULT_PORT} (or -C port=N) until Ctrl-C.

Batch endpoints (Azure's batch endpoints: jobs that score folders of files): create_endpoint with
config kind=batch (and description, tags, default_deployment). create_deployment with --endpoint
naming a batch endpoint creates a batch deployment (the model fetched, its environment built,
nothing running); its first deployment becomes its default. Batch deployment config:
{batch_keys}
update-endpoint takes default_deployment (Azure's defaults.deployment_name). A batch endpoint is
invoked with `mlflow-deploy batch-endpoint invoke --name E --input PATH`, not predict.
"""


@mlflow_exceptions
def run_local(name, model_uri, flavor=None, config=None):
    """``mlflow deployments run-local``: serve in the foreground until Ctrl-C."""
    serve(model_uri, config=config, name=name, flavor=flavor)


def _is_batch(endpoint: Optional[str]) -> bool:
    """Whether ``endpoint`` names a batch endpoint (anything else is online's to judge)."""
    return bool(endpoint) and batch_endpoints.find_batch_endpoint(Store(), endpoint) is not None


class AzureMLLocalDeploymentClient(BaseDeploymentClient):
    """``get_deploy_client("azureml-local")``: deployments and endpoints on this machine."""

    @mlflow_exceptions
    def create_deployment(
        self, name, model_uri, flavor=None, config=None, endpoint=None
    ) -> Dict[str, Any]:
        if _is_batch(endpoint):
            check_flavor(flavor)
            return batch_deployments.create_batch_deployment(name, endpoint, model_uri, config)
        return online.create_deployment(
            name, model_uri, flavor=flavor, config=config, endpoint=endpoint
        )

    @mlflow_exceptions
    def update_deployment(
        self, name, model_uri=None, flavor=None, config=None, endpoint=None
    ) -> Dict[str, Any]:
        if _is_batch(endpoint):
            check_flavor(flavor)
            return batch_deployments.update_batch_deployment(name, endpoint, model_uri, config)
        return online.update_deployment(
            name, model_uri=model_uri, flavor=flavor, config=config, endpoint=endpoint
        )

    @mlflow_exceptions
    def delete_deployment(self, name, config=None, endpoint=None) -> None:
        if _is_batch(endpoint):
            if config:
                raise InvalidParameter("delete takes no config keys (-C).")
            batch_deployments.delete_batch_deployment(name, endpoint)
            return
        online.delete_deployment(name, config=config, endpoint=endpoint)

    @mlflow_exceptions
    def list_deployments(self, endpoint=None) -> List[Dict[str, Any]]:
        if _is_batch(endpoint):
            return batch_deployments.list_batch_deployments(endpoint)
        if endpoint is None:  # every deployment: online, then batch
            return online.list_deployments() + batch_deployments.list_batch_deployments()
        return online.list_deployments(endpoint=endpoint)

    @mlflow_exceptions
    def get_deployment(self, name, endpoint=None) -> Dict[str, Any]:
        if _is_batch(endpoint):
            return batch_deployments.get_batch_deployment(name, endpoint)
        return online.get_deployment(name, endpoint=endpoint)

    @mlflow_exceptions
    def predict(
        self, deployment_name=None, inputs=None, endpoint=None, params=None
    ) -> PredictionsResponse:
        if _is_batch(endpoint):
            raise InvalidParameter(
                "A batch endpoint scores files in jobs, not requests: start a job with "
                "`mlflow-deploy batch-endpoint invoke` or mlflow_deploy.batch.jobs.invoke.")
        predictions = online.predict(deployment_name, inputs, endpoint=endpoint, params=params)
        return PredictionsResponse({"predictions": predictions})

    @mlflow_exceptions
    def create_endpoint(self, name=None, config=None, endpoint=None) -> Dict[str, Any]:
        # MLflow 3.17's `create-endpoint` CLI passes the name as `endpoint=` as well
        name = name if name is not None else endpoint
        config = dict(config or {})
        kind = str(config.pop("kind", "online")).strip().lower()
        if kind not in KINDS:
            raise InvalidParameter("Config 'kind' must be 'online' or 'batch'.")
        if kind == "batch":
            return batch_endpoints.create_batch_endpoint(
                name, **batch_endpoints.config_values(config))
        return online.create_endpoint(name, config=config)

    @mlflow_exceptions
    def update_endpoint(self, endpoint, config=None) -> Dict[str, Any]:
        if _is_batch(endpoint):
            return batch_endpoints.update_batch_endpoint(
                endpoint, **batch_endpoints.config_values(config))
        return online.update_endpoint(endpoint, config=config)

    @mlflow_exceptions
    def delete_endpoint(self, endpoint) -> None:
        if _is_batch(endpoint):
            batch_endpoints.delete_batch_endpoint(endpoint)
            return
        online.delete_endpoint(endpoint)

    @mlflow_exceptions
    def list_endpoints(self) -> List[Dict[str, Any]]:
        return online.list_endpoints() + batch_endpoints.list_batch_endpoints()

    @mlflow_exceptions
    def get_endpoint(self, endpoint) -> Dict[str, Any]:
        if _is_batch(endpoint):
            return batch_endpoints.get_batch_endpoint(endpoint)
        return online.get_endpoint(endpoint)
