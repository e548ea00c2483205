"""Batch deployments, as ``az ml batch-deployment`` has them: a model (or a scoring script and
its files) with its environment built, and the settings its jobs run by. Nothing runs until a
job does: a deployment is its files, its environment and its row.

Its files live in ``Store.batch_deployment_dir(endpoint, name)`` by revision, staged exactly as an
online deployment's (``revisions.stage_revision``); an update builds the next revision aside and
switches the row to it only once it is complete, so a failed update leaves the deployment as it
was. The commands on one deployment hold its row lock throughout; the store's lock is held only
to record, never while an environment builds.

The row's ``config`` holds exactly the keys a job reads (``CONFIG_KEYS``): Azure's batch settings,
``compute`` (a registered compute's name, None for the local executor) and the local environment
options; ``files`` locates the current revision's model and script; ``environment`` is its
environment's record.
"""

import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Union

from mlflow_deploy import processes
from mlflow_deploy.batch.computes import get_compute
from mlflow_deploy.batch.settings import BATCH_PARSERS, RETRY_KEYS, RETRY_PARSERS, compute
from mlflow_deploy.errors import (AlreadyExists, InvalidParameter, InvalidState, NotFound,
                                  name_taken)
from mlflow_deploy.names import check_name
from mlflow_deploy.revisions import (
    environment_record,
    remove_revision,
    remove_revisions_except,
    stage_revision,
    staged_then_locked,
)
from mlflow_deploy.settings import (
    ENVIRONMENT_HELP,
    LOCAL_PARSERS,
    SCRIPT_HELP,
    boolean,
    check_script_settings,
    with_script_and_tags,
    environment_variables,
    json_object,
)
from mlflow_deploy.specs import BatchDeploymentSpec, BatchSettings
from mlflow_deploy.store import (
    BATCH_DEPLOYMENTS,
    BATCH_ENDPOINTS,
    JOBS,
    BatchDeployment,
    BatchEndpoint,
    Store,
)

__all__ = [
    "BatchDeploymentSettings",
    "CONFIG_KEYS",
    "SETTING_HELP",
    "parse_batch_settings",
    "config_from_spec",
    "create_batch_deployment",
    "update_batch_deployment",
    "delete_batch_deployment",
    "get_batch_deployment",
    "list_batch_deployments",
    "resolve_deployment",
    "describe_batch_deployment",
    "environments_in_use",
    "key_of",
]


def key_of(endpoint: str, name: str) -> str:
    return BatchDeployment.key_of(endpoint, name)


#: Azure's defaults, as the YAML's specs define them
_AZURE = BatchSettings()


@dataclass(frozen=True)
class BatchDeploymentSettings:
    """A batch deployment's settings, Azure's defaults. ``code``, ``scoring_script`` and
    ``conda_file`` say where a revision's script comes from: they are staged into the revision
    (``files``), not kept in ``config``."""
    mini_batch_size: int = _AZURE.mini_batch_size  # files per run() call
    max_concurrency_per_instance: int = _AZURE.max_concurrency_per_instance
    instance_count: int = 1
    output_action: str = _AZURE.output_action
    output_file_name: str = _AZURE.output_file_name
    retry_settings: Dict[str, int] = field(
        default_factory=lambda: asdict(_AZURE.retry_settings))
    error_threshold: int = _AZURE.error_threshold  # failed files a job tolerates; -1: no limit
    logging_level: str = _AZURE.logging_level
    environment_variables: Dict[str, str] = field(default_factory=dict)
    compute: Optional[str] = None  # a registered compute; None: the local executor
    env_manager: str = "uv"
    python_version_policy: str = "exact"
    exclude_newer: Optional[str] = None
    package: Optional[str] = None
    code: Optional[str] = None
    scoring_script: Optional[str] = None
    conda_file: Optional[str] = None

    def to_config(self) -> Dict[str, Any]:
        """The row's ``config``: every key but the script's sources."""
        values = asdict(self)
        return {key: values[key] for key in CONFIG_KEYS}


#: the keys of BatchDeployment.config, which jobs read
CONFIG_KEYS = ("mini_batch_size", "max_concurrency_per_instance", "instance_count",
               "output_action", "output_file_name", "retry_settings", "error_threshold",
               "logging_level", "environment_variables", "compute", "env_manager",
               "python_version_policy", "exclude_newer", "package")

SETTING_HELP = {
    "mini_batch_size": "files per run() call of the scorer (default 10)",
    "max_concurrency_per_instance": "mini-batches one instance scores at once (default 1)",
    "instance_count": "instances a job runs on (default 1)",
    "output_action": "append_row (default: every row into output_file_name) or summary_only",
    "output_file_name": "the job's output file in its output folder (default predictions.csv)",
    "retry_settings": 'a JSON object: {"max_retries": 3, "timeout": 30} (the defaults; timeout '
    "in seconds per try of a mini-batch)",
    "max_retries": "the same as retry_settings.max_retries",
    "timeout": "the same as retry_settings.timeout",
    "error_threshold": "failed files a job tolerates before it fails (default -1: no limit)",
    "logging_level": "the job log's level: debug, info (default), warning, error, critical",
    "environment_variables": "a JSON object of environment variables for the scorer",
    "compute": "a compute registered with `mlflow-deploy compute create` (default: this "
    "machine's processes)",
    **ENVIRONMENT_HELP,
    **{key: text.replace("run(raw_data) serve requests", "run(mini_batch) score files")
       for key, text in SCRIPT_HELP.items()},
    "set_default": "true: make it its endpoint's default deployment (the first one is anyway)",
}


_PARSERS: Dict[str, Callable[[Any], Any]] = {
    **BATCH_PARSERS,
    "environment_variables": environment_variables,
    "compute": compute,
    **LOCAL_PARSERS,
}
_KNOWN = tuple(_PARSERS) + ("retry_settings",) + RETRY_KEYS
assert set(_PARSERS) | {"retry_settings"} == {f.name for f in fields(BatchDeploymentSettings)}


def parse_batch_settings(config: Optional[Mapping[str, Any]],
                         base: Optional[BatchDeploymentSettings] = None
                         ) -> BatchDeploymentSettings:
    """Check ``config`` (``-C`` strings or Python values) and lay it over ``base`` (the
    defaults, or a deployment's settings). ``retry_settings`` is a mapping (or its JSON) of
    the fields it changes; ``max_retries`` and ``timeout`` set one field each."""
    values = asdict(base or BatchDeploymentSettings())
    retry = dict(values["retry_settings"])
    for key, value in (config or {}).items():
        if key == "retry_settings":
            for name, number in json_object(key, value, "max_retries and timeout to "
                                                        "numbers").items():
                if name not in RETRY_KEYS:
                    raise InvalidParameter("Config 'retry_settings' takes only: "
                                           + ", ".join(RETRY_KEYS) + ".")
                retry[name] = RETRY_PARSERS[name](number)
        elif key in RETRY_KEYS:
            retry[key] = RETRY_PARSERS[key](value)
        elif key in _PARSERS:
            values[key] = _PARSERS[key](value)
        else:
            raise InvalidParameter(f"Unknown config key '{key}'. Known keys: "
                                   + ", ".join(_KNOWN) + ".")
    values["retry_settings"] = retry
    settings = BatchDeploymentSettings(**values)
    check_script_settings(settings)
    return settings


def config_from_spec(spec: BatchDeploymentSpec) -> Dict[str, Any]:
    """The config a ``modelBatchDeployment`` YAML (specs.BatchDeploymentSpec) asks for: its
    settings block, instance count, compute and scoring script, then the local settings given
    as ``mlflow-deploy/<setting>`` tags."""
    batch = spec.batch_settings
    config: Dict[str, Any] = {
        "mini_batch_size": batch.mini_batch_size,
        "max_concurrency_per_instance": batch.max_concurrency_per_instance,
        "instance_count": spec.instance_count,
        "output_action": batch.output_action,
        "output_file_name": batch.output_file_name,
        "retry_settings": asdict(batch.retry_settings),
        "error_threshold": batch.error_threshold,
        "logging_level": batch.logging_level,
        "environment_variables": dict(batch.environment_variables),
        "compute": spec.compute,
    }
    return with_script_and_tags(config, spec)


# ---- the revision a deployment's jobs score with ---------------------------------------------

@dataclass(frozen=True)
class _Previous:
    """Where the current revision keeps its model (revisions.PreviousFiles)."""
    model_dir: Optional[str]
    azureml_model_dir: Optional[str]


def _settings_of(deployment: BatchDeployment) -> BatchDeploymentSettings:
    """The deployment's settings, its script's sources being the current revision's copies:
    an update that brings no new code stages those again."""
    files = deployment.files
    conda = Path(deployment.dir) / "environment" / str(deployment.revision) / "conda.yaml"
    known = {f.name for f in fields(BatchDeploymentSettings)}
    values = {k: v for k, v in deployment.config.items() if k in known}
    return BatchDeploymentSettings(
        **values,
        code=files.get("code_dir"),
        scoring_script=files.get("scoring_script"),
        conda_file=str(conda) if files.get("scoring_script") and conda.is_file() else None)


def _check_compute(store: Store, settings: BatchDeploymentSettings) -> None:
    if settings.compute is not None:
        get_compute(store, settings.compute, "compute")


def _endpoint(store: Store, endpoint: str) -> BatchEndpoint:
    found = store.find(BATCH_ENDPOINTS, endpoint)
    if found is None:
        raise NotFound("No batch endpoint with this name.", argument="endpoint")
    return found


class _Arguments(NamedTuple):
    name: str
    endpoint: str
    model_uri: Optional[str]
    config: Dict[str, Any]  # without set_default
    set_default: bool
    description: Optional[str]
    tags: Optional[Mapping[str, str]]


def _arguments(spec_or_name: Union[BatchDeploymentSpec, str], endpoint: Optional[str],
               model_uri: Optional[str], config: Optional[Mapping[str, Any]], set_default: bool,
               description: Optional[str], tags: Optional[Mapping[str, str]],
               needs_model: bool) -> _Arguments:
    """What a create or an update is asked, from a spec's fields (``config``, ``description``
    and ``tags`` over them) or from the arguments as they are, with the names, the model (when
    ``needs_model``), ``set_default`` (an argument, or a config key) and the text checked."""
    if isinstance(spec_or_name, BatchDeploymentSpec):
        spec = spec_or_name
        merged = config_from_spec(spec)
        merged.update(config or {})
        name, endpoint, model_uri, config = (spec.name, spec.endpoint_name,
                                             spec.model or model_uri, merged)
        description = spec.description if description is None else description
        tags = (dict(spec.tags) or None) if tags is None else tags
    else:
        name, config = spec_or_name, dict(config or {})
    check_name(name, "deployment name", "name")
    check_name(endpoint, "endpoint name", "endpoint")
    if needs_model and not model_uri:
        raise InvalidParameter("A batch deployment needs a model (key 'model').")
    set_default = boolean("set_default")(config.pop("set_default", False)) or bool(set_default)
    if description is not None and not isinstance(description, str):
        raise InvalidParameter("Config 'description' must be text.")
    if tags is not None and (not isinstance(tags, Mapping)
                             or not all(isinstance(k, str) for k in tags)):
        raise InvalidParameter("Config 'tags' must map names to text.")
    return _Arguments(name, endpoint, model_uri, config, set_default, description, tags)


def create_batch_deployment(
    spec_or_name: Union[BatchDeploymentSpec, str],
    endpoint: Optional[str] = None,
    model_uri: Optional[str] = None,
    config: Optional[Mapping[str, Any]] = None,
    *,
    set_default: bool = False,
    description: Optional[str] = None,
    tags: Optional[Mapping[str, str]] = None,
    store: Optional[Store] = None,
) -> Dict[str, Any]:
    """Create a deployment of an existing batch endpoint, from a spec
    (``create_batch_deployment(load_batch_deployment_spec(...))``, ``config`` then overriding
    it) or from its name, endpoint, model and ``config`` (``parse_batch_settings``' keys, plus
    ``set_default``). Fetches the model (or places it for a script as AZUREML_MODEL_DIR),
    copies the code folder and builds the environment; any failure leaves nothing. The first
    deployment of an endpoint without a default becomes it (as on Azure), and ``set_default``
    makes this one the default."""
    store = store or Store()
    name, endpoint, model_uri, config, set_default, description, tags = _arguments(
        spec_or_name, endpoint, model_uri, config, set_default, description, tags,
        needs_model=True)
    settings = parse_batch_settings(config)
    key = key_of(endpoint, name)

    def check_new() -> None:
        _endpoint(store, endpoint)
        if store.find(BATCH_DEPLOYMENTS, key) is not None:
            raise _deployment_taken()
        _check_compute(store, settings)

    check_new()  # before a build: the same checks as under the lock
    with store.lock_row(BATCH_DEPLOYMENTS, key):
        check_new()
        root = store.batch_deployment_dir(endpoint, name)
        shutil.rmtree(root, ignore_errors=True)  # leftovers without a row are garbage
        recorded = False
        try:
            root.mkdir(parents=True)
            with staged_then_locked(
                store,
                lambda: stage_revision(root, 1, model_uri, settings),
                lambda: remove_revision(root, 1),
            ) as (files, env):
                check_new()
                deployment = BatchDeployment(
                    key=key, name=name, endpoint=endpoint, model_uri=model_uri, dir=str(root),
                    config=settings.to_config(), state="Succeeded", files=dict(files),
                    environment=environment_record(env), revision=1,
                    description=description, tags=dict(tags or {}))
                with store.transaction():
                    store.add(BATCH_DEPLOYMENTS, deployment, _deployment_taken())
                    _make_default(store, endpoint, name, set_default)
                recorded = True
        finally:
            if not recorded:
                shutil.rmtree(root, ignore_errors=True)
    return describe_batch_deployment(deployment, store)


def _make_default(store: Store, endpoint: str, name: str, asked: bool) -> None:
    """``name`` becomes the endpoint's default when asked, or when the endpoint has none."""
    owner = _endpoint(store, endpoint)
    if asked or owner.default_deployment is None:
        owner.default_deployment = name
        store.save(BATCH_ENDPOINTS, owner)


def update_batch_deployment(
    spec_or_name: Union[BatchDeploymentSpec, str],
    endpoint: Optional[str] = None,
    model_uri: Optional[str] = None,
    config: Optional[Mapping[str, Any]] = None,
    *,
    set_default: bool = False,
    description: Optional[str] = None,
    tags: Optional[Mapping[str, str]] = None,
    store: Optional[Store] = None,
    added: bool = False,
) -> Dict[str, Any]:
    """Stage the next revision aside (a new model when ``model_uri`` is given, else the current
    one; the given settings over the current ones; the code folder copied again) and switch the
    deployment to it only once it is complete: on failure the deployment is as it was. Jobs
    already running keep the revision they started with.

    ``added``: the config's environment variables and the tags are added to the deployment's
    own, as ``--set`` items add them, merged once the deployment's lock is held, so that two
    such updates at once both land."""
    store = store or Store()
    name, endpoint, model_uri, config, set_default, description, tags = _arguments(
        spec_or_name, endpoint, model_uri, config, set_default, description, tags,
        needs_model=False)
    key = key_of(endpoint, name)
    _get(store, endpoint, name)  # a recorded name before its lock's file is named
    with store.lock_row(BATCH_DEPLOYMENTS, key):
        deployment = _get(store, endpoint, name)  # as the last command left it
        if added and "environment_variables" in config:
            config = {**config, "environment_variables": {
                **(deployment.config.get("environment_variables") or {}),
                **config["environment_variables"]}}
        if added and tags is not None:
            tags = {**deployment.tags, **tags}
        settings = parse_batch_settings(config, base=_settings_of(deployment))
        _check_compute(store, settings)
        root = Path(deployment.dir)
        revision = deployment.revision + 1
        remove_revision(root, revision)
        previous = _Previous(deployment.files.get("model_dir"),
                             deployment.files.get("azureml_model_dir"))
        committed = False
        try:
            with staged_then_locked(
                store,
                lambda: stage_revision(root, revision, model_uri, settings, previous),
                lambda: remove_revision(root, revision),
            ) as (files, env):
                current = _get(store, endpoint, name)
                _check_compute(store, settings)
                current.revision = revision
                current.model_uri = model_uri or current.model_uri
                current.config = settings.to_config()
                current.files = dict(files)
                current.environment = environment_record(env)
                current.state, current.error = "Succeeded", None
                if description is not None:
                    current.description = description
                if tags is not None:
                    current.tags = dict(tags)
                with store.transaction():
                    store.save(BATCH_DEPLOYMENTS, current)
                    if set_default:
                        _make_default(store, endpoint, name, True)
                committed = True
                deployment = current
        finally:
            if not committed:
                remove_revision(root, revision)
        if not _running_jobs(store, endpoint, [name]):
            # the model of a revision that kept the previous model is still in use
            kept = ("model", "code", "environment") if model_uri else ("code", "environment")
            remove_revisions_except(root, revision, kept)
    return describe_batch_deployment(deployment, store)


def _running_jobs(store: Store, endpoint: str, names: Sequence[str]) -> List[str]:
    """The jobs of these deployments that are queued or running (a job's process that died
    does not count: it has to be resumed, with the deployment as it is then)."""
    found = []
    for job in store.select(JOBS, endpoint=endpoint):
        if job.deployment in names and job.status in ("Queued", "Running"):
            if job.pid is None or processes.is_running(job.pid):
                found.append(job.name)
    return found


def check_no_running_jobs(store: Store, endpoint: str, names: Sequence[str]) -> None:
    jobs = _running_jobs(store, endpoint, names)
    if jobs:
        raise InvalidState(f"{len(jobs)} job{'' if len(jobs) == 1 else 's'} of the deployment "
                           "still run: cancel them (mlflow-deploy job cancel) or let them end "
                           "first.")


def delete_batch_deployment(name: str, endpoint: str, store: Optional[Store] = None,
                            _with_endpoint: bool = False) -> None:
    """Remove the deployment's files and row. Refused while jobs of it run, and, as on Azure,
    while it is its endpoint's default and the endpoint has other deployments (make another
    one the default first); an endpoint's last deployment leaves it without a default.
    Deleting one that does not exist is not an error (MLflow's BaseDeploymentClient contract;
    the CLI says NotFound itself)."""
    store = store or Store()
    check_name(name, "deployment name", "name")
    check_name(endpoint, "endpoint name", "endpoint")
    key = key_of(endpoint, name)
    if store.find(BATCH_DEPLOYMENTS, key) is None:
        return
    with store.lock_row(BATCH_DEPLOYMENTS, key):
        with store.lock():
            deployment = store.find(BATCH_DEPLOYMENTS, key)
            if deployment is None:
                return
            owner = store.find(BATCH_ENDPOINTS, endpoint)
            others = [d for d in store.select(BATCH_DEPLOYMENTS, endpoint=endpoint)
                      if d.name != name]
            if (not _with_endpoint and owner is not None
                    and owner.default_deployment == name and others):
                raise InvalidState(
                    "The deployment is its endpoint's default (defaults.deployment_name): make "
                    "another deployment the default first (the endpoint's "
                    "defaults.deployment_name).")
            check_no_running_jobs(store, endpoint, [name])
            deployment.state = "Deleting"  # no job starts on it from now on
            store.save(BATCH_DEPLOYMENTS, deployment)
        shutil.rmtree(deployment.dir, ignore_errors=True)
        with store.lock(), store.transaction():
            store.remove(BATCH_DEPLOYMENTS, key)
            owner = store.find(BATCH_ENDPOINTS, endpoint)
            if owner is not None and owner.default_deployment == name:
                owner.default_deployment = None
                store.save(BATCH_ENDPOINTS, owner)


def remove_endpoint_folder(store: Store, endpoint: str) -> None:
    """The endpoint's folder under ``batch/``, once its deployments are gone."""
    shutil.rmtree(store.batch_deployment_dir(endpoint, "x").parent, ignore_errors=True)


def _deployment_taken() -> AlreadyExists:
    return name_taken("The batch endpoint already has a deployment", "name")


def _get(store: Store, endpoint: str, name: str) -> BatchDeployment:
    _endpoint(store, endpoint)
    deployment = store.find(BATCH_DEPLOYMENTS, key_of(endpoint, name))
    if deployment is None:
        raise NotFound("The batch endpoint has no deployment with this name.", argument="name")
    return deployment


def get_batch_deployment(name: str, endpoint: str,
                         store: Optional[Store] = None) -> Dict[str, Any]:
    store = store or Store()
    return describe_batch_deployment(_get(store, endpoint, name), store)


def list_batch_deployments(endpoint: Optional[str] = None,
                           store: Optional[Store] = None) -> List[Dict[str, Any]]:
    """The endpoint's deployments (every batch deployment when ``endpoint`` is None)."""
    store = store or Store()
    if endpoint is None:
        return [describe_batch_deployment(d, store) for d in store.select(BATCH_DEPLOYMENTS)]
    _endpoint(store, endpoint)
    return [describe_batch_deployment(d, store)
            for d in store.select(BATCH_DEPLOYMENTS, endpoint=endpoint)]


def resolve_deployment(store: Store, endpoint: str,
                       name: Optional[str] = None) -> BatchDeployment:
    """The deployment a job of ``endpoint`` runs: ``name``, else the endpoint's default."""
    owner = store.find(BATCH_ENDPOINTS, endpoint) if isinstance(endpoint, str) else None
    if owner is None:
        raise NotFound("No batch endpoint with this name.", argument="endpoint")
    if name is None:
        if owner.default_deployment is None:
            raise InvalidState(
                "The batch endpoint has no default deployment: name the deployment to run, or "
                "set the endpoint's defaults.deployment_name.")
        deployment = store.find(BATCH_DEPLOYMENTS, key_of(endpoint, owner.default_deployment))
        if deployment is None:
            raise InvalidState(
                "The batch endpoint's default deployment (defaults.deployment_name) does not "
                "exist yet: create it, or name another deployment to run.")
    else:
        deployment = store.find(BATCH_DEPLOYMENTS, key_of(endpoint, name)) \
            if isinstance(name, str) else None
        if deployment is None:
            raise NotFound("The batch endpoint has no deployment with this name.",
                           argument="deployment")
    if deployment.state != "Succeeded":
        raise InvalidState(f"The deployment cannot run jobs (state {deployment.state}).")
    return deployment


def environments_in_use(store: Optional[Store] = None) -> Dict[str, List[str]]:
    """Env cache key -> the batch deployments (``endpoint:name``) whose current revision
    scores in it."""
    store = store or Store()
    used: Dict[str, List[str]] = {}
    for deployment in store.select(BATCH_DEPLOYMENTS):
        env_key = deployment.environment.get("key")
        if env_key:
            used.setdefault(env_key, []).append(deployment.key)
    return used


def describe_batch_deployment(deployment: BatchDeployment, store: Store) -> Dict[str, Any]:
    """What ``batch-deployment show`` prints, shaped like ``az ml batch-deployment show``
    (MLflow's ``name`` first), with the row's config, files and environment as they are."""
    config = deployment.config
    owner = store.find(BATCH_ENDPOINTS, deployment.endpoint)
    files = deployment.files
    return {
        "name": deployment.name,
        "endpoint_name": deployment.endpoint,
        "kind": "batch",
        "type": "model",
        "description": deployment.description,
        "tags": dict(deployment.tags),
        "model": deployment.model_uri,
        "code_configuration": ({"code": files.get("code_dir"),
                                "scoring_script": files.get("scoring_script")}
                               if files.get("scoring_script") else None),
        "compute": f"azureml:{config['compute']}" if config.get("compute") else None,
        "resources": {"instance_count": config.get("instance_count", 1)},
        "settings": {key: config.get(key) for key in (
            "mini_batch_size", "max_concurrency_per_instance", "output_action",
            "output_file_name", "retry_settings", "error_threshold", "logging_level",
            "environment_variables")},
        "is_default": owner is not None and owner.default_deployment == deployment.name,
        "provisioning_state": deployment.state,
        "revision": deployment.revision,
        "environment": dict(deployment.environment),
        "files": dict(files),
        "config": dict(config),
        "error": deployment.error,
    }
