"""Online deployments: one scoring server (a gunicorn master and its workers) per deployment.

Every change either completes or leaves the previous state as it was: no half rows, no orphan
processes, no stray directories. The commands on one deployment hold its row lock
(``Store.lock_row``) throughout, so they run one at a time; the store's lock, which every command
on the home waits for, is held only to start servers and record state, never while an
environment builds. Before the gateway exists an endpoint's scoring URI is the server of the
deployment holding its traffic.
"""

import functools
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from mlflow_deploy.errors import (
    InvalidParameter,
    InvalidState,
    NotFound,
    ServerFailed,
    name_taken,
)
from mlflow_deploy import logs
from mlflow_deploy.model import PYFUNC, names_fixed_version
from mlflow_deploy.online import instances, supervisor
from mlflow_deploy.online.traffic import (
    add_to_endpoint,
    busy_instances,
    check_not_batch,
    endpoint_or_create,
    endpoint_uri,
    gateway_alive,
    keys_path,
    remove_from_endpoint,
    scoring_uri_of,
    stop_gateway,
    sync_gateway,
)
from mlflow_deploy.online.routes import DEPLOYMENT_HEADER, Keys
from mlflow_deploy.online.invoke import score, to_payload
from mlflow_deploy.names import check_name
from mlflow_deploy.revisions import (
    environment_record,
    remove_revision,
    remove_revisions_except,
    stage_revision,
    staged_then_locked,
)
from mlflow_deploy.online.settings import (
    DeploymentSettings,
    boolean,
    only_gateway_changed,
    only_scaled,
    parse_settings,
)
from mlflow_deploy.scoring.config import ServerConfig
from mlflow_deploy.store import DEPLOYMENTS, Deployment, Store, home_dir

__all__ = [
    "create_deployment",
    "update_deployment",
    "delete_deployment",
    "list_deployments",
    "get_deployment",
    "predict",
    "describe",
    "server_config_for",
    "check_flavor",
    "environments_in_use",
    "port_holder",
]


def check_flavor(flavor: Optional[str]) -> str:
    if flavor in (None, "", PYFUNC):
        return PYFUNC
    raise InvalidParameter("Only the python_function flavor can be deployed.", argument="flavor")


# how much later than the gateway a deployment's own server gives up on a request
GATEWAY_GRACE_MS = 500


def server_config_for(
    name: str,
    files: Mapping[str, Optional[str]],
    model_uri: str,
    settings: DeploymentSettings,
    unix_socket: str,
    revision: int,
    deployment_dir: Optional[Path],
    python: Optional[str] = None,
) -> ServerConfig:
    """The scoring server's config for one revision of a deployment (or a foreground server,
    ``deployment_dir`` None); ``files`` locate the model and any scoring script
    (revision.stage_revision). The server listens only on the Unix socket ``unix_socket`` (a
    deployment's: relative to its instance's folder), in a folder only its owner can enter:
    its TCP port is the gateway's, which reads each whole request before the server sees it, so
    a slow client never holds one of its synchronous workers. A deployment's server times a
    request out ``GATEWAY_GRACE_MS`` after its endpoint's gateway does: the caller gets Azure's
    408 from the gateway, never a race between it and the server's own 504, and the stuck
    worker is still recycled. A foreground server's timeout is the caller's (its gateway has none)."""
    options = settings.scoring_options.to_dict()
    if deployment_dir is not None:
        options["request_timeout_ms"] += GATEWAY_GRACE_MS
    return ServerConfig(
        **files,
        bind=None,
        **options,
        model_uri=model_uri,
        deployment=name,
        revision=revision,
        pidfile=str(deployment_dir / "gunicorn.pid") if deployment_dir else None,
        ready_file=str(deployment_dir / "ready.json") if deployment_dir else None,
        unix_socket=unix_socket,
        python=python,
        environment_variables=dict(settings.environment_variables),
    )


def _taken_ports(store: Store, exclude_deployment: Optional[str] = None) -> List[int]:
    taken = [e.port for e in store.list_endpoints() if e.port]
    for deployment in store.list_deployments():
        if deployment.name != exclude_deployment:
            taken += [i.port for i in instances.instances_of(deployment)]
    return taken


def port_holder(port: int, store: Optional[Store] = None) -> str:
    """Who holds ``port``, for an error that says so: an endpoint or a deployment of ``store``
    (else of this home's store, if there is one), else another program."""
    if store is None and (home_dir() / "state.db").is_file():
        store = Store()
    for endpoint in store.list_endpoints() if store is not None else ():
        if endpoint.port == port:
            return f"the gateway of endpoint {endpoint.name}"
    for deployment in store.list_deployments() if store is not None else ():
        if port in [instance.port for instance in instances.instances_of(deployment)]:
            return f"deployment {deployment.name} of endpoint {deployment.endpoint}"
    return "another program"


def _pick_ports(store: Store, settings: DeploymentSettings, count: int,
                taken: Optional[List[int]] = None) -> List[int]:
    """Ports for ``count`` new instances: config 'port' (the first instance's) if given and
    free, else free ones no other deployment or endpoint holds."""
    taken = list(_taken_ports(store) if taken is None else taken)
    ports: List[int] = []
    if settings.port is not None and count:
        if settings.port in taken or not supervisor.port_is_free(settings.port):
            raise InvalidState(
                f"Port {settings.port} (config 'port') is taken by "
                f"{port_holder(settings.port, store)}: give another port, or none to get a "
                "free one.")
        ports.append(settings.port)
    while len(ports) < count:
        ports.append(supervisor.free_port(exclude=taken + ports))
    return ports


def _check_new(store: Store, name: str, settings: DeploymentSettings) -> List[int]:
    """The ports for a new deployment ``name``, which must not exist."""
    if store.find_deployment(name) is not None:
        raise name_taken("A deployment", "name")
    return _pick_ports(store, settings, settings.instance_count)


def create_deployment(
    name: str,
    model_uri: str,
    flavor: Optional[str] = None,
    config: Optional[Mapping[str, Any]] = None,
    endpoint: Optional[str] = None,
    store: Optional[Store] = None,
) -> Dict[str, Any]:
    """Resolve the model, build its environment, start its server, wait until it serves, then
    record it. A deployment without an endpoint gets an endpoint of its own name and all its
    traffic; a new deployment of an existing endpoint gets none unless config ``all_traffic``
    is true (Azure's rule). A server that starts but fails (the model or a
    scoring script's init() raises) leaves the deployment recorded as Failed, with no traffic and
    its log in place, as Azure does; any earlier failure leaves nothing."""
    store = store or Store()
    check_name(name, "deployment name", "name")
    endpoint_name = check_name(endpoint, "endpoint name", "endpoint") if endpoint else name
    flavor = check_flavor(flavor)
    config = dict(config or {})
    all_traffic = boolean("all_traffic")(config.pop("all_traffic", False))
    settings = parse_settings(config)
    if store.find_endpoint(endpoint_name) is None:
        check_not_batch(store, endpoint_name)  # before a build; endpoint_or_create checks again
    with store.lock_row(DEPLOYMENTS, name):
        _check_new(store, name, settings)  # before a build: the same checks as under the lock
        deployment_dir = store.deployment_dir(name)
        shutil.rmtree(deployment_dir, ignore_errors=True)  # leftovers without a row are garbage
        log_path = deployment_dir / "server.log"
        deployment = None
        recorded = False
        try:
            deployment_dir.mkdir(parents=True)
            with staged_then_locked(
                store,
                lambda: stage_revision(deployment_dir, 1, model_uri, settings),
                lambda: remove_revision(deployment_dir, 1),
            ) as (files, env):
                ports = _check_new(store, name, settings)
                deployment = Deployment(
                    name=name,
                    endpoint=endpoint_name,
                    model_uri=model_uri,
                    flavor=flavor,
                    config=settings.to_dict(),
                    port=ports[0],
                    dir=str(deployment_dir),
                    log_path=str(log_path),
                    pidfile=str(deployment_dir / "gunicorn.pid"),
                    state="Creating",
                    revision=1,
                    environment=environment_record(env),
                )
                started: List[instances.Instance] = []
                try:
                    for index, port in enumerate(ports):
                        instance = instances.Instance(
                            index, instances.instance_dir(deployment_dir, index), port)
                        instance.pid, self_test = instances.start(server_config_for(
                            name, files, model_uri, settings, instances.SOCKET, 1,
                            instance.dir, env.python), instance)
                        started.append(instance)
                        deployment.self_test = deployment.self_test or self_test
                except ServerFailed as exc:
                    for instance in started:
                        instances.stop(instance, grace=5)
                    deployment.state, deployment.error = "Failed", exc.message
                    _record(store, deployment)
                    recorded = True
                    raise
                instances.record(deployment, started)
                deployment.state = "Succeeded"
                _record(store, deployment, all_traffic)
                recorded = True
        except BaseException:
            if not recorded:
                _forget(deployment_dir, deployment)
            raise
    return describe(deployment, store)


def _record(store: Store, deployment: Deployment, all_traffic: bool = False) -> None:
    """Add the row and its place in the endpoint (a Failed deployment gets no traffic), as one
    transaction: all of it is recorded, or none; then the endpoint's gateway routes by it."""
    with store.transaction():
        endpoint_or_create(store, deployment.endpoint)
        store.add_deployment(deployment)
        if deployment.state == "Succeeded":
            add_to_endpoint(store, deployment.endpoint, deployment.name, all_traffic)
        else:
            endpoint = store.get_endpoint(deployment.endpoint)
            endpoint.traffic[deployment.name] = 0
            store.save_endpoint(endpoint)
    sync_gateway(store, deployment.endpoint)


def _forget(deployment_dir: Path, deployment: Optional[Deployment]) -> None:
    """Undo a create that failed before its server was judged: no process, row or folder."""
    if deployment is not None:
        for instance in instances.instances_of(deployment):
            instances.stop(instance, grace=5)
    shutil.rmtree(deployment_dir, ignore_errors=True)


def update_deployment(
    name: str,
    model_uri: Optional[str] = None,
    flavor: Optional[str] = None,
    config: Optional[Mapping[str, Any]] = None,
    endpoint: Optional[str] = None,
    store: Optional[Store] = None,
    config_of: Optional[Callable[[Dict[str, Any]], Mapping[str, Any]]] = None,
) -> Dict[str, Any]:
    """Serve a new model and/or settings with no failed request, one instance at a time: each
    running master re-execs a new one on the same socket (gunicorn's USR2), which must load the
    model and pass the self-test; a dead instance is started afresh (this is how one restarts
    it). Only once every instance serves the new revision are the old masters drained; added
    instances start then, and surplus ones leave the endpoint's routing before they stop. On
    failure every instance keeps serving the old revision with its old config. A change of what
    only the endpoint's gateway reads (batching), on a running deployment, is no new revision:
    the gateway takes it when its routing table is reloaded, and the servers keep running. Nor
    is a change of instance_count alone (``_scale``): instances are added or removed, and the
    running ones keep serving untouched.

    ``config_of``, instead of ``config``: the config as a function of the deployment's own, for
    a change relative to it (``--set environment_variables.K=V``); it is called once the
    deployment's lock is held, so that two such updates at once both land."""
    store = store or Store()
    check_flavor(flavor)
    _get_in_endpoint(store, name, endpoint)  # a recorded name before its lock's file is named
    with store.lock_row(DEPLOYMENTS, name):
        deployment = _get_in_endpoint(store, name, endpoint)  # as the last command left it
        if config_of is not None:
            config = config_of(dict(deployment.config))
        settings = parse_settings(config, base=DeploymentSettings(**deployment.config))
        if settings.port not in (None, deployment.port) and "port" in (config or {}):
            raise InvalidParameter(
                "Config 'port' cannot change on update: create a new deployment on the new port."
            )
        settings = replace(settings, port=deployment.config.get("port"))
        if model_uri is None and runtime_state(deployment, store) == "Running" and \
                only_gateway_changed(DeploymentSettings(**deployment.config), settings):
            with store.lock():
                deployment.config = settings.to_dict()
                store.save_deployment(deployment)
                sync_gateway(store, deployment.endpoint)
            return describe(deployment, store)
        if runtime_state(deployment, store) == "Running" and \
                only_scaled(DeploymentSettings(**deployment.config), settings) and \
                _same_files(model_uri, deployment, settings):
            return _scale(store, deployment, settings)
        deployment_dir = Path(deployment.dir)
        running = instances.instances_of(deployment)
        kept, surplus = running[:settings.instance_count], running[settings.instance_count:]
        saved = {i.index: (_read_text(i.config_path), _read_text(i.ready_file)) for i in kept}
        old_config = ServerConfig.from_dict(_read_json(deployment.server_config_path))
        revision = deployment.revision + 1
        remove_revision(deployment_dir, revision)
        handed: List[Tuple[instances.Instance, Optional[int], int]] = []  # (it, old, new pid)
        unserved: Optional[InvalidState] = None
        added: List[instances.Instance] = []
        committed = False
        try:
            with staged_then_locked(
                store,
                lambda: stage_revision(deployment_dir, revision, model_uri, settings, old_config),
                lambda: remove_revision(deployment_dir, revision),
            ) as (files, env):

                def config_for(instance: instances.Instance) -> ServerConfig:
                    return server_config_for(name, files, model_uri or deployment.model_uri,
                                             settings, instances.SOCKET, revision, instance.dir,
                                             env.python)

                self_test: Dict[str, Any] = {}
                for instance in kept:
                    if supervisor.is_alive(instance.pid, instance.config_path):
                        new_pid, tested = instances.hand_over(instance, config_for(instance))
                        handed.append((instance, instance.pid, new_pid))
                    else:
                        new_pid, tested = instances.restart(instance, config_for(instance))
                        handed.append((instance, None, new_pid))
                    self_test = self_test or tested
                more = settings.instance_count - len(kept)
                for index, port in enumerate(_pick_ports(store, replace(settings, port=None),
                                                         more), len(kept)):
                    instance = instances.Instance(
                        index, instances.instance_dir(deployment_dir, index), port)
                    instance.pid, _ = instances.start(config_for(instance), instance)
                    added.append(instance)
                instances.record(deployment, [
                    instances.Instance(i.index, i.dir, i.port, new) for i, _, new in handed
                ] + added)
                deployment.self_test = self_test
                deployment.revision = revision
                deployment.model_uri = model_uri or deployment.model_uri
                deployment.config = settings.to_dict()
                deployment.environment = environment_record(env)
                deployment.state, deployment.error = "Succeeded", None
                with store.transaction():
                    store.save_deployment(deployment)
                    # a Failed first deployment of an implicit endpoint, fixed, takes its traffic
                    add_to_endpoint(store, deployment.endpoint, name)
                committed = True
                # routes the added instances, and drops the surplus once they have answered
                try:
                    sync_gateway(store, deployment.endpoint)
                except InvalidState as exc:  # a port not served: the new table is in force
                    unserved = exc
        except BaseException:
            if not committed:
                _roll_back(kept, handed, added, saved)
                remove_revision(deployment_dir, revision)
            raise
        # the old masters drain their requests: no state changes, so the store's lock is free
        for instance, old_pid, new_pid in handed:
            if old_pid and old_pid != new_pid and supervisor.is_alive(old_pid,
                                                                      instance.config_path):
                supervisor.stop(old_pid, config_path=instance.config_path, group=False)
                supervisor.wait_promoted(instance.pidfile, new_pid)
        for instance in surplus:
            instances.stop(instance)
            shutil.rmtree(instance.dir, ignore_errors=True)
        kept_folders = ("model", "code", "environment") if model_uri else ("code", "environment")
        remove_revisions_except(deployment_dir, revision, kept_folders)
    if unserved is not None:
        # an old master an earlier version started held its instance's port until now
        with store.lock():
            sync_gateway(store, deployment.endpoint)
    return describe(deployment, store)


def _same_files(model_uri: Optional[str], deployment: Deployment,
                settings: DeploymentSettings) -> bool:
    """Whether an update serves the running revision's files: no model given, or the same URI
    of a fixed version, and no scoring script's code folder given again (an update re-reads a
    local model or code folder: it is how edits to them are taken)."""
    if model_uri is None:
        return True
    return model_uri == deployment.model_uri and names_fixed_version(model_uri) and \
        not settings.scoring_script


def _scale(store: Store, deployment: Deployment, settings: DeploymentSettings
           ) -> Dict[str, Any]:
    """Only instance_count changed: new instances start from the first one's config (the
    running revision; only their folders differ), and surplus ones leave the endpoint's routing,
    then stop. The running instances are not restarted, so a scale-up takes an instance's
    start, not a new revision's (model fetched again, every master re-exec'd). If an added
    instance does not start, those added stop and the deployment is as it was."""
    running = instances.instances_of(deployment)
    kept, surplus = running[:settings.instance_count], running[settings.instance_count:]
    first = ServerConfig.from_dict(_read_json(deployment.server_config_path))
    added: List[instances.Instance] = []
    committed = False
    try:
        more = settings.instance_count - len(kept)  # 0 when scaling down
        for index, port in enumerate(_pick_ports(store, replace(settings, port=None), more),
                                     len(kept)):
            instance = instances.Instance(
                index, instances.instance_dir(Path(deployment.dir), index), port)
            instance.pid, _ = instances.start(
                replace(first, pidfile=str(instance.pidfile), ready_file=str(instance.ready_file)),
                instance)
            added.append(instance)
        with store.lock():
            instances.record(deployment, kept + added)
            deployment.config = settings.to_dict()
            store.save_deployment(deployment)
            committed = True
            sync_gateway(store, deployment.endpoint)
    except BaseException:
        if not committed:
            for instance in added:
                instances.stop(instance, grace=5)
                shutil.rmtree(instance.dir, ignore_errors=True)
        raise
    for instance in surplus:
        instances.stop(instance)
        shutil.rmtree(instance.dir, ignore_errors=True)
    return describe(deployment, store)


def _roll_back(kept, handed, added, saved) -> None:
    """Undo an update that failed part way: the instances it added stop, the new masters of
    those it handed over stop (their old masters never stopped serving: they serve alone
    again), one it restarted from dead stops again, and every config file is as it was."""
    for instance in added:
        instances.stop(instance, grace=5)
        shutil.rmtree(instance.dir, ignore_errors=True)
    for instance, old_pid, new_pid in handed:
        supervisor.stop(new_pid, grace=5, config_path=instance.config_path,
                        group=old_pid is None)
    for instance in kept:
        config_text, ready_text = saved[instance.index]
        _restore_text(instance.config_path, config_text)
        _restore_text(instance.ready_file, ready_text)


def revive_instance(name: str, index: int, store: Optional[Store] = None) -> bool:
    """Start one instance of a deployment again as it was (same revision, config and port) when
    it is dead or does not answer: what the endpoint's gateway asks for when the instance fails
    its liveness probe. Nothing happens when, once the deployment's lock is ours, the deployment
    or the instance is gone or the instance answers again (an update or a delete got there
    first). True when the instance serves."""
    store = store or Store()
    with store.lock_row(DEPLOYMENTS, name):
        deployment = store.find_deployment(name)
        members = instances.instances_of(deployment) if deployment else []
        if deployment is None or deployment.state != "Succeeded" or index >= len(members):
            return False
        instance = members[index]
        # a busy instance is not restarted: the requests it is answering would be lost
        busy = functools.partial(busy_instances, store, deployment.endpoint)
        if instances.state(instance, busy) == "Running":
            return True
        config = ServerConfig.from_dict(_read_json(instance.config_path))
        with store.lock():
            instance.pid, _ = instances.restart(instance, config)
            instances.record(deployment, members)
            store.save_deployment(deployment)
    return True


def delete_deployment(
    name: str,
    config: Optional[Mapping[str, Any]] = None,
    endpoint: Optional[str] = None,
    store: Optional[Store] = None,
) -> None:
    """Take the deployment out of its endpoint's routing, stop its server (it finishes what it
    was given), remove its files and its row. Refused while it holds traffic another deployment
    could take (move the traffic first, as on Azure); an endpoint that create_deployment made
    implicitly goes with its last deployment. Deleting a deployment that does not exist is not
    an error (MLflow's BaseDeploymentClient contract)."""
    store = store or Store()
    if config:
        raise InvalidParameter("delete takes no config keys (-C).")
    if _find_in_endpoint(store, name, endpoint) is None:
        return
    with store.lock_row(DEPLOYMENTS, name):
        deployment = _find_in_endpoint(store, name, endpoint)
        if deployment is None:
            return
        with store.lock():
            owner = store.find_endpoint(deployment.endpoint)
            others = [d for d in store.list_deployments(deployment.endpoint) if d.name != name]
            if owner is not None and owner.traffic.get(name, 0) > 0 and others:
                raise InvalidState(
                    "The deployment still takes part of its endpoint's traffic: give its share "
                    "to the other deployments first (the endpoint's traffic)."
                )
            deployment.state = "Deleting"
            store.save_deployment(deployment)
            # no new request reaches it from now on
            sync_gateway(store, deployment.endpoint, start=False)
        for instance in instances.instances_of(deployment):
            instances.stop(instance)
        shutil.rmtree(deployment.dir, ignore_errors=True)
        with store.lock():
            owner = store.find_endpoint(deployment.endpoint)
            with store.transaction():
                store.remove_deployment(name)
                remove_from_endpoint(store, deployment.endpoint, name)
            if store.find_endpoint(deployment.endpoint) is not None:
                sync_gateway(store, deployment.endpoint, start=False)
            elif owner is not None:  # an implicit endpoint, gone with its last deployment
                stop_gateway(store, owner)
                shutil.rmtree(store.endpoint_dir(owner.name), ignore_errors=True)


def list_deployments(
    endpoint: Optional[str] = None, store: Optional[Store] = None
) -> List[Dict[str, Any]]:
    store = store or Store()
    if endpoint is not None:
        store.get_endpoint(endpoint)
    return [describe(d, store) for d in store.list_deployments(endpoint)]


def get_deployment(
    name: str, endpoint: Optional[str] = None, store: Optional[Store] = None
) -> Dict[str, Any]:
    store = store or Store()
    return describe(_get_in_endpoint(store, name, endpoint), store)


def deployment_log_paths(name: str, endpoint: Optional[str] = None,
                         store: Optional[Store] = None) -> List[Path]:
    """Each instance's server log, by instance index (old copies beside it: ``<log>.1``, ...)."""
    deployment = _get_in_endpoint(store or Store(), name, endpoint)
    return [instance.log_path for instance in instances.instances_of(deployment)]


def deployment_logs(name: str, endpoint: Optional[str] = None, lines: Optional[int] = None,
                    store: Optional[Store] = None) -> List[Tuple[int, str]]:
    """Each instance's last ``lines`` log lines (all it keeps, rotated copies too, when None),
    instance by instance, as (instance index, line): the access line of every request, and
    whatever the server, the model or the scoring script printed."""
    return [(index, line) for index, last, _ in _log_followers(name, endpoint, lines, store)
            for line in last]


def follow_deployment_logs(name: str, endpoint: Optional[str] = None,
                           lines: Optional[int] = None, poll: float = 0.2,
                           store: Optional[Store] = None) -> Iterator[Tuple[int, str]]:
    """``deployment_logs``, then each line any instance appends as it comes (a rotation of its
    log included), for as long as the caller iterates: the instances are those of the
    deployment when it began."""
    followers = _log_followers(name, endpoint, lines, store)
    for index, last, _ in followers:
        yield from ((index, line) for line in last)
    while True:
        time.sleep(poll)
        for index, _, follower in followers:
            yield from ((index, line) for line in follower.read())


def _log_followers(name: str, endpoint: Optional[str], lines: Optional[int],
                   store: Optional[Store]) -> List[Tuple[int, List[str], logs.Follower]]:
    """Each instance's index, its last ``lines`` log lines, and a follower of its log from
    there."""
    followers = []
    for index, path in enumerate(deployment_log_paths(name, endpoint, store)):
        last, end = logs.tail(path, lines)
        followers.append((index, last, logs.Follower(path, end)))
    return followers


def predict(
    deployment_name: Optional[str] = None,
    inputs: Any = None,
    endpoint: Optional[str] = None,
    params: Optional[Mapping[str, Any]] = None,
    store: Optional[Store] = None,
) -> Any:
    """Score ``inputs`` through the endpoint's gateway, as a client of the endpoint would (its
    key sent for the user): on the named deployment (Azure's ``azureml-model-deployment``
    header), else where the endpoint's traffic sends it. Returns the server's decoded answer."""
    store = store or Store()
    if deployment_name is None and endpoint is None:
        raise InvalidParameter("Name a deployment or an endpoint.")
    if deployment_name is not None:
        endpoint = _get_in_endpoint(store, deployment_name, endpoint).endpoint
    elif not any(share > 0 for share in store.get_endpoint(endpoint).traffic.values()):
        raise InvalidState("The endpoint has no deployment to send traffic to.",
                           argument="endpoint")
    uri, headers, timeout_s = endpoint_request(store, endpoint, deployment_name)
    return score(uri, to_payload(inputs, params), timeout_s, headers)


def endpoint_request(store: Store, endpoint: str, deployment_name: Optional[str] = None
                     ) -> Tuple[str, Dict[str, str], float]:
    """(scoring URI, headers, timeout) of a request to the endpoint, as its client would send it:
    with its key, and Azure's ``azureml-model-deployment`` header to target one deployment."""
    owner = store.get_endpoint(endpoint)
    headers = {}
    if deployment_name is not None:
        deployment = _get_in_endpoint(store, deployment_name, endpoint)
        state = runtime_state(deployment, store)
        if state != "Running":
            raise ServerFailed(
                f"The deployment's server is not running (state {state}); "
                "update the deployment to restart it, or see its log."
            )
        headers[DEPLOYMENT_HEADER] = deployment.name
        targets = [deployment]
    else:
        targets = store.list_deployments(owner.name)
    if not gateway_alive(store, owner):
        raise ServerFailed("The endpoint's gateway is not running: start the endpoint again "
                           "(`mlflow-deploy online-endpoint start`).")
    if owner.auth_mode == "key":
        headers["Authorization"] = "Bearer " + Keys.read(keys_path(store, owner.name)).primary
    timeout_ms = max((DeploymentSettings(**d.config).request_timeout_ms for d in targets),
                     default=DeploymentSettings().request_timeout_ms)
    return endpoint_uri(owner), headers, timeout_ms / 1000.0 + 30


def environments_in_use(store: Optional[Store] = None) -> Dict[str, List[str]]:
    """Env cache key -> the deployments whose current revision runs in it. Every recorded
    deployment counts, running or not: a dead one restarts in its env on update."""
    store = store or Store()
    used: Dict[str, List[str]] = {}
    for deployment in store.list_deployments():
        key = deployment.environment.get("key")
        if key:
            used.setdefault(key, []).append(deployment.name)
    return used


def instance_states(deployment: Deployment, store: Store) -> List[str]:
    """Each instance's state now (``instances.state``), its endpoint's gateway asked at most
    once which are busy, and only where a health check timed out."""
    busy = functools.lru_cache(maxsize=None)(
        functools.partial(busy_instances, store, deployment.endpoint))
    return [instances.state(i, busy) for i in instances.instances_of(deployment)]


def runtime_state(deployment: Deployment, store: Store,
                  states: Optional[List[str]] = None) -> str:
    """The truth about a deployment now: the stored state, unless its instances died or hang
    (Dead: none runs; Unhealthy: some do not serve). ``states``: its ``instance_states``,
    where the caller has them."""
    if deployment.state != "Succeeded":
        return deployment.state
    found = set(instance_states(deployment, store) if states is None else states)
    if found == {"Running"}:
        return "Running"
    return "Dead" if found == {"Dead"} else "Unhealthy"


def describe(deployment: Deployment, store: Store) -> Dict[str, Any]:
    """The dict the plugin and the CLI return: MLflow's keys (``name``, ``flavor``) first."""
    endpoint = store.find_endpoint(deployment.endpoint)
    states = instance_states(deployment, store)
    state = runtime_state(deployment, store, states)
    return {
        "name": deployment.name,
        "flavor": deployment.flavor,
        "endpoint": deployment.endpoint,
        "model_uri": deployment.model_uri,
        "state": state,
        "provisioning_state": deployment.state,
        "scoring_uri": scoring_uri_of(deployment),
        "instance_count": deployment.config.get("instance_count", 1),
        "worker_count": DeploymentSettings(**deployment.config).workers,
        "instances": [{"index": i.index, "port": i.port, "pid": i.pid, "state": s,
                       "log_path": str(i.log_path)}
                      for i, s in zip(instances.instances_of(deployment), states)],
        "traffic": (endpoint.traffic.get(deployment.name, 0) if endpoint else 0),
        "port": deployment.port,
        "pid": deployment.pid if state in ("Running", "Unhealthy") else None,
        "revision": deployment.revision,
        "log_path": deployment.log_path,
        "environment": dict(deployment.environment),
        "self_test": dict(deployment.self_test),
        "config": dict(deployment.config),
        "error": deployment.error,
    }


def _find_in_endpoint(store: Store, name: str, endpoint: Optional[str]) -> Optional[Deployment]:
    deployment = store.find_deployment(name)
    if deployment is None or (endpoint is not None and deployment.endpoint != endpoint):
        return None
    return deployment


def _get_in_endpoint(store: Store, name: str, endpoint: Optional[str]) -> Deployment:
    deployment = store.get_deployment(name)
    if endpoint is not None and deployment.endpoint != endpoint:
        raise NotFound("The endpoint has no deployment with this name.", argument="name")
    return deployment


def _read_json(path: Path) -> dict:
    import json

    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_text(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _restore_text(path: Path, text: Optional[str]) -> None:
    if text is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".restore")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
