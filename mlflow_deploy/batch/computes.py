"""Computes: the named places batch jobs run, as ``az ml compute`` has them (on Azure a compute
is a workspace resource that deployments name with ``compute: azureml:NAME``; here too).

Two types: ``local`` (this machine's processes, the default executor's) and ``dask`` (a Dask
cluster: its scheduler's ``tcp://HOST:PORT``, or none to start a local cluster for each job).
A compute that a batch deployment names cannot be deleted.
"""

import re
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from mlflow_deploy.errors import InvalidParameter, InvalidState, NotFound, name_taken
from mlflow_deploy.store import BATCH_DEPLOYMENTS, COMPUTES, Compute, Store

__all__ = ["TYPES", "create_compute", "get_compute", "show_compute", "list_computes",
           "delete_compute", "describe_compute", "check_compute_name", "check_scheduler_address",
           "deployments_using"]

TYPES = ("local", "dask")
# the names a deployment's `compute: azureml:NAME` can give (specs.py reads them the same way),
# which are also safe as file names
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")
_ADDRESS = re.compile(r"tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):"
                      r"(?P<port>[0-9]{1,5})")


def check_compute_name(name: Any, key: Optional[str] = None) -> str:
    """``name`` if it is a valid compute name; the error names the config ``key`` it came from,
    else it is about the argument ``name``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidParameter(f"Invalid compute name{f' ({key})' if key else ''}: use letters, "
                               "digits, hyphens or underscores, starting with a letter or a "
                               "digit.", argument=None if key else "name")
    return name


def check_scheduler_address(address: Any, key: str = "scheduler_address") -> str:
    """``tcp://HOST:PORT``, as Dask's scheduler prints it; the error names ``key``."""
    text = str(address).strip() if address is not None else ""
    match = _ADDRESS.fullmatch(text)
    if not match or not 1 <= int(match.group("port")) <= 65535:
        raise InvalidParameter(f"{key} must be tcp://HOST:PORT (the Dask scheduler's address).",
                               argument="scheduler_address")
    return text


def create_compute(name: str, type: str = "local", scheduler_address: Optional[str] = None,
                   description: Optional[str] = None,
                   store: Optional[Store] = None) -> Dict[str, Any]:
    """Register a compute. A ``dask`` compute without an address starts a local cluster for
    each job; a ``local`` one takes no address."""
    store = store or Store()
    check_compute_name(name)
    kind = str(type).strip().lower()
    if kind not in TYPES:
        raise InvalidParameter("The compute type must be one of: " + ", ".join(TYPES) + ".",
                               argument="type")
    if scheduler_address not in (None, ""):
        if kind != "dask":
            raise InvalidParameter("A scheduler address is for a compute of type dask only.",
                                   argument="scheduler_address")
        scheduler_address = check_scheduler_address(scheduler_address)
    else:
        scheduler_address = None
    if description is not None and not isinstance(description, str):
        raise InvalidParameter("description must be text.", argument="description")
    with store.lock():
        compute = store.add(COMPUTES, Compute(name=name, type=kind,
                                              scheduler_address=scheduler_address,
                                              description=description),
                            name_taken("A compute", "name", update=False))
        return describe_compute(compute, store)


def get_compute(store: Store, name: str, key: Optional[str] = None) -> Compute:
    """The registered compute ``name``; the error names the config ``key`` the name came from,
    else it is about the argument ``name``."""
    compute = store.find(COMPUTES, name) if isinstance(name, str) and name else None
    if compute is None:
        raise NotFound(f"No compute with the name given{f' in {key}' if key else ''} is "
                       "registered: register it with `mlflow-deploy compute create`.",
                       argument=None if key else "name")
    return compute


def show_compute(name: str, store: Optional[Store] = None) -> Dict[str, Any]:
    store = store or Store()
    return describe_compute(get_compute(store, name), store)


def list_computes(store: Optional[Store] = None) -> List[Dict[str, Any]]:
    store = store or Store()
    return [describe_compute(c, store) for c in store.select(COMPUTES)]


def deployments_using(store: Store, name: str) -> List[str]:
    """``endpoint:deployment`` keys of the batch deployments that run on compute ``name``."""
    return [d.key for d in store.select(BATCH_DEPLOYMENTS) if d.config.get("compute") == name]


def delete_compute(name: str, store: Optional[Store] = None) -> None:
    """Refused while a batch deployment names it (update or delete those first)."""
    store = store or Store()
    with store.lock():
        get_compute(store, name)
        users = deployments_using(store, name)
        if users:
            raise InvalidState(
                f"The compute is used by {len(users)} batch deployment"
                f"{'' if len(users) == 1 else 's'}: delete them, or update them to another "
                "compute, first.")
        store.remove(COMPUTES, name)


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds")


def describe_compute(compute: Compute, store: Store) -> Dict[str, Any]:
    """What ``compute show`` prints, shaped like ``az ml compute show``."""
    return {
        "name": compute.name,
        "type": compute.type,
        "scheduler_address": compute.scheduler_address,
        "description": compute.description,
        "location": "local",
        "provisioning_state": "Succeeded",
        "created_on": _iso(compute.created),
        "batch_deployments": deployments_using(store, compute.name),
    }
