"""Shared fixtures: the example models (built once per session) and real gunicorn servers."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from mlflow_deploy.scoring.config import CONFIG_ENV, ServerConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", autouse=True)
def shared_env_cache():
    """Every deployment of the suite (each test has its own MLFLOW_DEPLOY_HOME) takes its model
    environment from one cache, the one `make demo` fills: the example models share one lock, so
    their env is built once. A cache, keyed by what was locked: a changed checkout builds anew."""
    from mlflow_deploy.envs.cache import CACHE_ENV

    path = os.environ.get(CACHE_ENV) or os.path.join(ROOT, ".mlflow-deploy", "envs")
    saved = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = path
    yield path
    if saved is None:
        os.environ.pop(CACHE_ENV, None)


#: Every resolution of the suite sees the package indexes as they were then, so env keys and locks
#: do not drift when upstream publishes (a test that needs a new release publishes it itself).
EXCLUDE_NEWER = "2026-11-25T00:00:00Z"


@pytest.fixture(scope="session", autouse=True)
def resolve_as_of_a_fixed_date():
    from mlflow_deploy.envs.indexes import EXCLUDE_NEWER_ENV

    saved = os.environ.get(EXCLUDE_NEWER_ENV)
    os.environ[EXCLUDE_NEWER_ENV] = EXCLUDE_NEWER
    yield EXCLUDE_NEWER
    if saved is None:
        os.environ.pop(EXCLUDE_NEWER_ENV, None)
    else:
        os.environ[EXCLUDE_NEWER_ENV] = saved


@pytest.fixture(scope="session", autouse=True)
def shared_build_cache():
    """The project wheel every env gets is built once per source hash into a build cache in the
    checkout (gitignored), not the user's ~/.cache/mlflow-deploy: a test run writes nothing
    outside the checkout and its temporary folders, and CI on a fresh machine needs no home."""
    from mlflow_deploy.envs.cache import BUILD_CACHE_ENV

    saved = os.environ.get(BUILD_CACHE_ENV)
    path = saved or os.path.join(ROOT, ".mlflow-deploy", "build")
    os.environ[BUILD_CACHE_ENV] = path
    yield path
    if saved is None:
        os.environ.pop(BUILD_CACHE_ENV, None)


@pytest.fixture(scope="session", autouse=True)
def fork_servers(tmp_path_factory):
    """The suite's fork servers (online/forkserver.py) keep their sockets in a folder of its own
    and are all stopped at the end; the servers they started are stopped by their tests."""
    from mlflow_deploy.online import forkserver

    path = str(tmp_path_factory.mktemp("run"))
    saved = os.environ.get(forkserver.RUN_DIR_ENV)
    os.environ[forkserver.RUN_DIR_ENV] = path
    yield path
    forkserver.stop_all(path)
    if saved is None:
        os.environ.pop(forkserver.RUN_DIR_ENV, None)
    else:
        os.environ[forkserver.RUN_DIR_ENV] = saved


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory):
    """A local SQLite tracking store and registry for the whole session (the embedded defaults)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = "sqlite:///{}".format(root / "mlflow.db")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_ARTIFACT_ROOT")}
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_ARTIFACT_ROOT"] = str(root / "artifacts")
    import mlflow

    mlflow.set_tracking_uri(uri)
    yield uri
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def example_models(tracking_uri):
    """name -> 'models:/<name>/1' for every example model, logged and registered once."""
    from example_models.build import log_all

    return log_all(tracking_uri)


@pytest.fixture(scope="session")
def example_model_dirs(example_models, tmp_path_factory):
    """name -> local model folder (downloaded once from the registry)."""
    import mlflow.artifacts

    root = tmp_path_factory.mktemp("model-dirs")
    return {name: mlflow.artifacts.download_artifacts(uri, dst_path=str(root / name))
            for name, uri in example_models.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real gunicorn scoring server on 127.0.0.1, stopped by the test that started it."""

    def __init__(self, directory, model_dir, **settings):
        self.dir = directory
        self.port = free_port()
        self.config = ServerConfig(model_dir=str(model_dir), bind="127.0.0.1:{}".format(self.port),
                                   pidfile=str(directory / "gunicorn.pid"),
                                   ready_file=str(directory / "ready.json"), **settings)
        self.config_path = str(directory / "server.json")
        self.config.write(self.config_path)
        self.log_path = directory / "server.log"
        env = dict(os.environ, **{CONFIG_ENV: self.config_path})
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "python:mlflow_deploy.scoring.gunicorn_conf",
                 "mlflow_deploy.scoring.wsgi:app"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = "http://127.0.0.1:{}".format(self.port)

    def wait_ready(self, timeout=120.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + self.log())
            try:
                if requests.get(self.url + "/", timeout=2).status_code == 200:
                    return self
            except (requests.ConnectionError, requests.Timeout):  # not bound, or not booted yet
                pass
            time.sleep(0.1)
        raise RuntimeError("server not ready:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready_state(self):
        with open(self.config.ready_file) as f:
            return json.load(f)

    def post(self, path="/score", body=None, **kwargs):
        if body is not None and "data" not in kwargs:
            kwargs["data"] = json.dumps(body)
            kwargs.setdefault("headers", {}).setdefault("Content-Type", "application/json")
        return requests.post(self.url + path, timeout=30, **kwargs)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def start_server(tmp_path):
    """start_server(model_dir, **ServerConfig settings) -> a ready Server."""
    servers = []

    def start(model_dir, wait=True, **settings):
        directory = tmp_path / "server{}".format(len(servers))
        directory.mkdir()
        server = Server(directory, model_dir, **settings)
        servers.append(server)
        return server.wait_ready() if wait else server

    yield start
    for server in servers:
        server.stop()


def wait_ready_file(server: Server, timeout: float = 120.0) -> Server:
    """Wait the way the control plane does: for the ready file, then for GET /.

    A scoring script's workers run init() before they take traffic, so GET / alone can hang until
    then; the ready file says ok once every worker is through (or why one failed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(server.config.ready_file):
            state = server.ready_state()
            if not state["ok"]:
                raise RuntimeError("server failed: {}\n{}".format(state.get("error"), server.log()))
            return server.wait_ready(max(1.0, deadline - time.monotonic()))
        if server.proc.poll() is not None:
            raise RuntimeError("server exited:\n" + server.log())
        time.sleep(0.05)
    raise RuntimeError("server not ready:\n" + server.log())
