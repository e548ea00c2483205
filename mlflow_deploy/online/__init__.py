"""Online endpoints and deployments on this machine: the control plane behind the
``azureml-local`` MLflow plugin and the ``mlflow-deploy`` CLI.

The names below load their module on first use (PEP 562) rather than with the package: an
endpoint's gateway process imports modules of this package too, and starting it must not wait
for the control plane's (a tenth of a second here, on every endpoint's creation)."""
import importlib
from typing import Any

#: every public name, and the module of this package that defines it
_MODULE_OF = {
    "create_deployment": "deployments",
    "update_deployment": "deployments",
    "delete_deployment": "deployments",
    "list_deployments": "deployments",
    "get_deployment": "deployments",
    "deployment_log_paths": "deployments",
    "deployment_logs": "deployments",
    "follow_deployment_logs": "deployments",
    "environments_in_use": "deployments",
    "predict": "deployments",
    "create_endpoint": "endpoints",
    "update_endpoint": "endpoints",
    "delete_endpoint": "endpoints",
    "list_endpoints": "endpoints",
    "get_endpoint": "endpoints",
    "DeploymentSettings": "settings",
    "parse_settings": "settings",
    "SETTING_HELP": "settings",
}

__all__ = list(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:  # also how `from mlflow_deploy.online import gateway` finds a submodule
        raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))
    value = getattr(importlib.import_module("." + module, __name__), name)
    globals()[name] = value  # the next lookup is a plain one
    return value
