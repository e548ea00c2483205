"""Online endpoints and deployments on this machine: the control plane behind the
``azureml-local`` MLflow plugin and the ``mlflow-deploy`` CLI."""

from mlflow_deploy.online.deployments import (
    create_deployment,
    delete_deployment,
    deployment_log_paths,
    deployment_logs,
    environments_in_use,
    follow_deployment_logs,
    get_deployment,
    list_deployments,
    predict,
    update_deployment,
)
from mlflow_deploy.online.endpoints import (
    create_endpoint,
    delete_endpoint,
    get_endpoint,
    list_endpoints,
    update_endpoint,
)
from mlflow_deploy.online.settings import SETTING_HELP, DeploymentSettings, parse_settings

__all__ = [
    "create_deployment",
    "update_deployment",
    "delete_deployment",
    "list_deployments",
    "get_deployment",
    "deployment_log_paths",
    "deployment_logs",
    "follow_deployment_logs",
    "environments_in_use",
    "predict",
    "create_endpoint",
    "update_endpoint",
    "delete_endpoint",
    "list_endpoints",
    "get_endpoint",
    "DeploymentSettings",
    "parse_settings",
    "SETTING_HELP",
]
