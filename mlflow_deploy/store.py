"""The state of endpoints and deployments: one SQLite file under ``MLFLOW_DEPLOY_HOME``.

Layout (DESIGN §6)::

    $MLFLOW_DEPLOY_HOME/            default ~/.mlflow-deploy
      state.db                      this store
      lock                          flock'ed while the state changes (one writer at a time)
      logs/
      deployments/<name>/
        server.json                 the scoring server's ServerConfig (re-read on a USR2 re-exec)
        model/<revision>/           the model files each revision serves
        server.log  gunicorn.pid  ready.json

SQLite (not JSON files) because several CLI processes may read and write at once, and a failed
create must leave no half row: every change is one transaction.
"""

import fcntl
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from mlflow_deploy.errors import AlreadyExists, NotFound

__all__ = ["HOME_ENV", "home_dir", "Endpoint", "Deployment", "Store"]

HOME_ENV = "MLFLOW_DEPLOY_HOME"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY,
    auth_mode TEXT NOT NULL DEFAULT 'none',
    description TEXT,
    traffic TEXT NOT NULL DEFAULT '{}',
    auto_created INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    name TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL REFERENCES endpoints(name),
    model_uri TEXT NOT NULL,
    flavor TEXT NOT NULL,
    config TEXT NOT NULL,
    environment TEXT NOT NULL DEFAULT '{}',
    port INTEGER NOT NULL,
    pid INTEGER,
    revision INTEGER NOT NULL DEFAULT 1,
    dir TEXT NOT NULL,
    log_path TEXT NOT NULL,
    pidfile TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
"""


def home_dir() -> Path:
    """Absolute, because servers run with their deployment directory as working directory."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".mlflow-deploy").expanduser().resolve()


@dataclass
class Endpoint:
    name: str
    auth_mode: str = "none"
    description: Optional[str] = None
    traffic: Dict[str, int] = field(default_factory=dict)
    auto_created: bool = False  # made by create_deployment: removed with its last deployment
    created: float = 0.0
    updated: float = 0.0


@dataclass
class Deployment:
    name: str
    endpoint: str
    model_uri: str
    flavor: str
    config: Dict[str, Any]  # the validated deployment settings (online.settings)
    port: int
    dir: str
    log_path: str
    pidfile: str
    state: str  # Creating | Updating | Succeeded | Failed | Deleting
    pid: Optional[int] = None  # the gunicorn master serving the current revision
    revision: int = 1
    error: Optional[str] = None
    # the environment serving the current revision: key, python, python_version, manager, root
    environment: Dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0

    @property
    def server_config_path(self) -> Path:
        return Path(self.dir) / "server.json"

    @property
    def ready_file(self) -> Path:
        return Path(self.dir) / "ready.json"

    def model_dir(self, revision: Optional[int] = None) -> Path:
        return Path(self.dir) / "model" / str(revision or self.revision)


class Store:
    """Rows in, rows out. Callers hold ``lock()`` around read-modify-write sequences."""

    def __init__(self, home: Optional[os.PathLike] = None):
        self.home = Path(home).expanduser().resolve() if home is not None else home_dir()
        for sub in ("deployments", "logs"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.path = self.home / "state.db"
        with self._connect() as conn:
            conn.executescript(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(deployments)")}
            if "environment" not in columns:  # a store written before environments were built
                conn.execute(
                    "ALTER TABLE deployments ADD COLUMN environment TEXT NOT NULL DEFAULT '{}'"
                )

    def deployment_dir(self, name: str) -> Path:
        return self.home / "deployments" / name

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            with conn:  # one transaction: commit on success, roll back on error
                yield conn
        finally:
            conn.close()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise state changes across processes (CLI calls, tests, the Python API)."""
        with open(self.home / "lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # endpoints

    def add_endpoint(self, endpoint: Endpoint) -> Endpoint:
        endpoint.created = endpoint.updated = time.time()
        try:
            with self._connect() as conn:
                conn.execute(
                    "INSERT INTO endpoints (name, auth_mode, description, traffic, auto_created,"
                    " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        endpoint.name,
                        endpoint.auth_mode,
                        endpoint.description,
                        json.dumps(endpoint.traffic),
                        int(endpoint.auto_created),
                        endpoint.created,
                        endpoint.updated,
                    ),
                )
        except sqlite3.IntegrityError:
            raise AlreadyExists("An endpoint with this name already exists (--endpoint).") from None
        return endpoint

    def save_endpoint(self, endpoint: Endpoint) -> Endpoint:
        endpoint.updated = time.time()
        with self._connect() as conn:
            conn.execute(
                "UPDATE endpoints SET auth_mode=?, description=?, traffic=?, auto_created=?,"
                " updated=? WHERE name=?",
                (
                    endpoint.auth_mode,
                    endpoint.description,
                    json.dumps(endpoint.traffic),
                    int(endpoint.auto_created),
                    endpoint.updated,
                    endpoint.name,
                ),
            )
        return endpoint

    def find_endpoint(self, name: str) -> Optional[Endpoint]:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM endpoints WHERE name=?", (name,)).fetchone()
        return _endpoint(row) if row else None

    def get_endpoint(self, name: str) -> Endpoint:
        endpoint = self.find_endpoint(name)
        if endpoint is None:
            raise NotFound("No endpoint with this name (--endpoint).")
        return endpoint

    def list_endpoints(self) -> List[Endpoint]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM endpoints ORDER BY created").fetchall()
        return [_endpoint(row) for row in rows]

    def remove_endpoint(self, name: str) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM endpoints WHERE name=?", (name,))

    # deployments

    def add_deployment(self, deployment: Deployment) -> Deployment:
        deployment.created = deployment.updated = time.time()
        try:
            with self._connect() as conn:
                conn.execute(
                    "INSERT INTO deployments (name, endpoint, model_uri, flavor, config,"
                    " environment, port, pid, revision, dir, log_path, pidfile, state, error,"
                    " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        deployment.name,
                        deployment.endpoint,
                        deployment.model_uri,
                        deployment.flavor,
                        json.dumps(deployment.config),
                        json.dumps(deployment.environment),
                        deployment.port,
                        deployment.pid,
                        deployment.revision,
                        deployment.dir,
                        deployment.log_path,
                        deployment.pidfile,
                        deployment.state,
                        deployment.error,
                        deployment.created,
                        deployment.updated,
                    ),
                )
        except sqlite3.IntegrityError:
            raise AlreadyExists("A deployment with this name already exists (--name).") from None
        return deployment

    def save_deployment(self, deployment: Deployment) -> Deployment:
        deployment.updated = time.time()
        with self._connect() as conn:
            conn.execute(
                "UPDATE deployments SET endpoint=?, model_uri=?, flavor=?, config=?, environment=?,"
                " port=?, pid=?, revision=?, state=?, error=?, updated=? WHERE name=?",
                (
                    deployment.endpoint,
                    deployment.model_uri,
                    deployment.flavor,
                    json.dumps(deployment.config),
                    json.dumps(deployment.environment),
                    deployment.port,
                    deployment.pid,
                    deployment.revision,
                    deployment.state,
                    deployment.error,
                    deployment.updated,
                    deployment.name,
                ),
            )
        return deployment

    def find_deployment(self, name: str) -> Optional[Deployment]:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM deployments WHERE name=?", (name,)).fetchone()
        return _deployment(row) if row else None

    def get_deployment(self, name: str) -> Deployment:
        deployment = self.find_deployment(name)
        if deployment is None:
            raise NotFound("No deployment with this name (--name).")
        return deployment

    def list_deployments(self, endpoint: Optional[str] = None) -> List[Deployment]:
        with self._connect() as conn:
            if endpoint is None:
                rows = conn.execute("SELECT * FROM deployments ORDER BY created").fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM deployments WHERE endpoint=? ORDER BY created", (endpoint,)
                ).fetchall()
        return [_deployment(row) for row in rows]

    def remove_deployment(self, name: str) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM deployments WHERE name=?", (name,))

    def used_ports(self) -> List[int]:
        with self._connect() as conn:
            return [row[0] for row in conn.execute("SELECT port FROM deployments")]


def _endpoint(row: sqlite3.Row) -> Endpoint:
    data = dict(row)
    data["traffic"] = json.loads(data["traffic"])
    data["auto_created"] = bool(data["auto_created"])
    return Endpoint(**data)


def _deployment(row: sqlite3.Row) -> Deployment:
    data = dict(row)
    data["config"] = json.loads(data["config"])
    data["environment"] = json.loads(data["environment"] or "{}")
    return Deployment(**data)
