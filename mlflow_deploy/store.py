"""The state of endpoints and deployments: one SQLite file under ``MLFLOW_DEPLOY_HOME``.

Layout::

    $MLFLOW_DEPLOY_HOME/            default ~/.mlflow-deploy
      state.db                      this store
      lock                          flock'ed while the state changes (one writer at a time)
      locks/<table>/<name>          flock'ed while a command works on that row (Store.lock_row)
      logs/
      endpoints/<name>/             owner-only (0700)
        keys.json                   the endpoint's two keys (0600)
        gateway.json                the gateway's routing table (online.routes.GatewayConfig)
        admin.sock                  the gateway's admin socket (reload, mirror report)
      batch/<endpoint>/<deployment>/ a batch deployment's model/, code/, environment/ folders
      jobs/<job>/                   a batch job's input list, parts, log and default outputs/
      deployments/<name>/
        server.json                 the scoring server's ServerConfig (re-read on a USR2 re-exec)
        model/<revision>/           the model files each revision serves
        server.log  gunicorn.pid  ready.json

SQLite (not JSON files) because several CLI processes may read and write at once, and a failed
change must leave no half state: every change is one transaction (``Store.transaction``), however
many rows it touches.

Each table holds the rows of one dataclass (``Table``): its columns are the dataclass's fields.
The schema has a version (SQLite's ``user_version``): opening a store written by an older version
runs the ``MIGRATIONS`` it has not had yet. A new table is a dataclass, a ``Table`` and a
migration that creates it.
"""

import dataclasses
import json
import os
import sqlite3
import threading
import time
import typing
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from mlflow_deploy.envs.cache import file_lock
from mlflow_deploy.errors import AlreadyExists, InvalidState, NotFound, name_taken

__all__ = [
    "HOME_ENV",
    "home_dir",
    "Endpoint",
    "Deployment",
    "Compute",
    "BatchEndpoint",
    "BatchDeployment",
    "Job",
    "Table",
    "ENDPOINTS",
    "DEPLOYMENTS",
    "COMPUTES",
    "BATCH_ENDPOINTS",
    "BATCH_DEPLOYMENTS",
    "JOBS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Store",
]

HOME_ENV = "MLFLOW_DEPLOY_HOME"


def home_dir() -> Path:
    """Absolute, because servers run with their deployment directory as working directory."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".mlflow-deploy").expanduser().resolve()


@dataclass
class Endpoint:
    name: str
    auth_mode: str = "key"  # Azure's default; "none" for local experiments
    description: Optional[str] = None
    traffic: Dict[str, int] = field(default_factory=dict)
    mirror_traffic: Dict[str, int] = field(default_factory=dict)
    auto_created: bool = False  # made by create_deployment: removed with its last deployment
    port: Optional[int] = None  # the gateway's, kept across restarts (the URL stays the same)
    pid: Optional[int] = None  # the gateway process
    host: str = "127.0.0.1"
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
    # the request the current revision was tried with before it took traffic: kind, status
    self_test: Dict[str, Any] = field(default_factory=dict)
    # instances after the first (whose port and pid are the fields above): {"port", "pid"}
    instances: List[Dict[str, Any]] = field(default_factory=list)
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


@dataclass
class Compute:
    """A named place batch jobs run (``compute: azureml:NAME``): this machine's processes, or
    a Dask cluster (its scheduler's address; none starts a local cluster per job)."""
    name: str
    type: str  # local | dask
    scheduler_address: Optional[str] = None
    description: Optional[str] = None
    created: float = 0.0
    updated: float = 0.0


@dataclass
class BatchEndpoint:
    name: str
    description: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    default_deployment: Optional[str] = None  # Azure's defaults.deployment_name
    created: float = 0.0
    updated: float = 0.0


@dataclass
class BatchDeployment:
    """Keyed by ``<endpoint>:<name>``: as on Azure, a deployment's name is unique within its
    endpoint only (every tutorial's endpoint has a deployment of the same name)."""
    key: str
    name: str
    endpoint: str
    model_uri: Optional[str]
    dir: str
    # the validated settings: Azure's batch settings, compute, code, environment options
    config: Dict[str, Any]
    state: str  # Creating | Updating | Succeeded | Failed | Deleting
    # where the current revision's files are: model_dir, code_dir, scoring_script,
    # azureml_model_dir
    files: Dict[str, Any] = field(default_factory=dict)
    # the environment of the current revision: key, python, python_version, manager, root, lock
    environment: Dict[str, Any] = field(default_factory=dict)
    revision: int = 1
    error: Optional[str] = None
    description: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0

    @staticmethod
    def key_of(endpoint: str, name: str) -> str:
        return f"{endpoint}:{name}"


@dataclass
class Job:
    """One invocation of a batch endpoint. Its files live in ``dir`` (Store.job_dir): the list
    of input files, one part per finished mini-batch, the log. ``settings`` are the effective
    ones (the deployment's, then the job's overrides); ``counts`` what is done so far."""
    name: str
    endpoint: str
    deployment: str
    status: str  # Queued | Running | Completed | Failed | Canceled
    input: str  # as given: a file, a folder or a glob
    output_path: str  # the output folder
    dir: str
    log_path: str
    settings: Dict[str, Any] = field(default_factory=dict)
    # files, files_done, files_failed, mini_batches, mini_batches_done, mini_batches_failed,
    # retries, rows
    counts: Dict[str, int] = field(default_factory=dict)
    pid: Optional[int] = None  # the process running it
    error: Optional[str] = None
    started: Optional[float] = None
    finished: Optional[float] = None
    created: float = 0.0
    updated: float = 0.0


R = TypeVar("R")


class Table(Generic[R]):
    """The rows of one dataclass: a column per field, named as the field, keyed by ``key``.
    Dict and list fields are stored as JSON text, bools as 0/1, the rest as they are."""

    def __init__(self, name: str, row_type: Type[R], key: str = "name"):
        hints = typing.get_type_hints(row_type)
        self.name, self.row_type, self.key = name, row_type, key
        self.fields = dataclasses.fields(row_type)
        self.columns: Tuple[str, ...] = tuple(f.name for f in self.fields)
        self._json = {f.name for f in self.fields if _base_type(hints[f.name]) in (dict, list)}
        self._bool = {f.name for f in self.fields if _base_type(hints[f.name]) is bool}
        self._select = "SELECT {} FROM {}".format(", ".join(self.columns), name)

    def to_row(self, item: R) -> Tuple[Any, ...]:
        return tuple(self._encode(column, getattr(item, column)) for column in self.columns)

    def from_row(self, row: Sequence[Any]) -> R:
        """``row``: the values of ``columns``, in their order (as ``select`` reads them)."""
        values = {f.name: self._decode(f, value) for f, value in zip(self.fields, row)}
        return self.row_type(**values)

    def _encode(self, column: str, value: Any) -> Any:
        if column in self._json:
            return json.dumps(value)
        if column in self._bool:
            return int(value)
        return value

    def _decode(self, column: dataclasses.Field, value: Any) -> Any:
        if column.name in self._json:
            if value is None:  # NULL where the field has a default: the default
                factory = column.default_factory
                return factory() if factory is not dataclasses.MISSING else None
            return json.loads(value)
        if column.name in self._bool:
            return bool(value)
        return value

    def insert(self, conn: sqlite3.Connection, item: R) -> None:
        """Raises sqlite3.IntegrityError if the key is taken."""
        conn.execute(
            "INSERT INTO {} ({}) VALUES ({})".format(
                self.name, ", ".join(self.columns), ", ".join("?" * len(self.columns))
            ),
            self.to_row(item),
        )

    def update(self, conn: sqlite3.Connection, item: R) -> None:
        """Write every column of the row with ``item``'s key."""
        values = dict(zip(self.columns, self.to_row(item)))
        key = values.pop(self.key)
        conn.execute(
            "UPDATE {} SET {} WHERE {}=?".format(
                self.name, ", ".join(c + "=?" for c in values), self.key
            ),
            (*values.values(), key),
        )

    def get(self, conn: sqlite3.Connection, key: Any) -> Optional[R]:
        rows = self.select(conn, **{self.key: key})
        return rows[0] if rows else None

    def select(
        self, conn: sqlite3.Connection, order_by: Optional[str] = None, **equal: Any
    ) -> List[R]:
        """The rows whose columns equal ``equal``'s values, ordered by column ``order_by``."""
        for column in list(equal) + ([order_by] if order_by else []):
            if column not in self.columns:
                raise ValueError("{} has no column {}".format(self.name, column))
        sql = self._select
        if equal:
            sql += " WHERE " + " AND ".join(c + "=?" for c in equal)
        if order_by:
            sql += " ORDER BY " + order_by
        return [self.from_row(row) for row in conn.execute(sql, tuple(equal.values()))]

    def delete(self, conn: sqlite3.Connection, key: Any) -> None:
        conn.execute("DELETE FROM {} WHERE {}=?".format(self.name, self.key), (key,))


def _base_type(hint: Any) -> Any:
    """``Dict[str, int]`` -> dict, ``Optional[X]`` -> the base of X, ``int`` -> int."""
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else hint
    return typing.get_origin(hint) or hint


ENDPOINTS: Table[Endpoint] = Table("endpoints", Endpoint)
DEPLOYMENTS: Table[Deployment] = Table("deployments", Deployment)
COMPUTES: Table[Compute] = Table("computes", Compute)
BATCH_ENDPOINTS: Table[BatchEndpoint] = Table("batch_endpoints", BatchEndpoint)
BATCH_DEPLOYMENTS: Table[BatchDeployment] = Table("batch_deployments", BatchDeployment,
                                                  key="key")
JOBS: Table[Job] = Table("jobs", Job)


# --- schema versions -------------------------------------------------------------------------
# Each migration's SQL is written out, not derived from the dataclasses: they will change, and a
# migration must keep making what it made when it was released.

_VERSION_1 = (
    """CREATE TABLE IF NOT EXISTS endpoints (
        name TEXT PRIMARY KEY,
        auth_mode TEXT NOT NULL DEFAULT 'none',
        description TEXT,
        traffic TEXT NOT NULL DEFAULT '{}',
        auto_created INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        updated REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS deployments (
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
    )""",
)


def _to_version_1(conn: sqlite3.Connection) -> None:
    """Endpoints and deployments. Stores written before the schema had a version have these
    tables already (they read as version 0); the oldest lack deployments.environment."""
    for statement in _VERSION_1:
        conn.execute(statement)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(deployments)")}
    if "environment" not in columns:
        conn.execute("ALTER TABLE deployments ADD COLUMN environment TEXT NOT NULL DEFAULT '{}'")


def _to_version_2(conn: sqlite3.Connection) -> None:
    """Deployments record their start-up self-test."""
    conn.execute("ALTER TABLE deployments ADD COLUMN self_test TEXT NOT NULL DEFAULT '{}'")


def _to_version_3(conn: sqlite3.Connection) -> None:
    """Endpoints get a gateway of their own: its port, process and bind address, and mirrored
    traffic. Endpoints made before had no auth; they keep none."""
    conn.execute("ALTER TABLE endpoints ADD COLUMN mirror_traffic TEXT NOT NULL DEFAULT '{}'")
    conn.execute("ALTER TABLE endpoints ADD COLUMN port INTEGER")
    conn.execute("ALTER TABLE endpoints ADD COLUMN pid INTEGER")
    conn.execute("ALTER TABLE endpoints ADD COLUMN host TEXT NOT NULL DEFAULT '127.0.0.1'")


def _to_version_4(conn: sqlite3.Connection) -> None:
    """``instance_count`` becomes Azure's: independent server instances, each with the workers
    of ``environment_variables.WORKER_COUNT``. A stored deployment's instance_count counted its
    workers: it becomes its WORKER_COUNT, and it has one instance."""
    conn.execute("ALTER TABLE deployments ADD COLUMN instances TEXT NOT NULL DEFAULT '[]'")
    for name, text in conn.execute("SELECT name, config FROM deployments").fetchall():
        config = json.loads(text)
        workers = config.pop("instance_count", None)
        if workers is not None:
            variables = dict(config.get("environment_variables") or {})
            variables.setdefault("WORKER_COUNT", str(workers))
            config["environment_variables"] = variables
        config["instance_count"] = 1
        conn.execute("UPDATE deployments SET config=? WHERE name=?", (json.dumps(config), name))


_VERSION_5 = (
    """CREATE TABLE computes (
        name TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        scheduler_address TEXT,
        description TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL
    )""",
    """CREATE TABLE batch_endpoints (
        name TEXT PRIMARY KEY,
        description TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        default_deployment TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL
    )""",
    """CREATE TABLE batch_deployments (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        endpoint TEXT NOT NULL REFERENCES batch_endpoints(name),
        model_uri TEXT,
        dir TEXT NOT NULL,
        config TEXT NOT NULL,
        state TEXT NOT NULL,
        files TEXT NOT NULL DEFAULT '{}',
        environment TEXT NOT NULL DEFAULT '{}',
        revision INTEGER NOT NULL DEFAULT 1,
        error TEXT,
        description TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        created REAL NOT NULL,
        updated REAL NOT NULL
    )""",
    """CREATE TABLE jobs (
        name TEXT PRIMARY KEY,
        endpoint TEXT NOT NULL,
        deployment TEXT NOT NULL,
        status TEXT NOT NULL,
        input TEXT NOT NULL,
        output_path TEXT NOT NULL,
        dir TEXT NOT NULL,
        log_path TEXT NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}',
        counts TEXT NOT NULL DEFAULT '{}',
        pid INTEGER,
        error TEXT,
        started REAL,
        finished REAL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    )""",
)


def _to_version_5(conn: sqlite3.Connection) -> None:
    """Batch: computes, batch endpoints and their deployments, and jobs."""
    for statement in _VERSION_5:
        conn.execute(statement)


#: MIGRATIONS[n] brings a store at schema version n to n + 1, inside the transaction that then
#: sets the new version. Append only: stores out there were made by the released ones.
MIGRATIONS: Tuple[Callable[[sqlite3.Connection], None], ...] = (
    _to_version_1, _to_version_2, _to_version_3, _to_version_4, _to_version_5)
SCHEMA_VERSION = len(MIGRATIONS)


def _schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


class Store:
    """Rows in, rows out. Callers hold ``lock()`` around read-modify-write sequences, and make
    a change of several rows one ``transaction()``."""

    def __init__(self, home: Optional[os.PathLike] = None):
        self.home = Path(home).expanduser().resolve() if home is not None else home_dir()
        for sub in ("deployments", "logs"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.path = self.home / "state.db"
        self._local = threading.local()  # the transaction open in this thread, if any
        self._migrate()

    def deployment_dir(self, name: str) -> Path:
        return self.home / "deployments" / name

    def batch_deployment_dir(self, endpoint: str, name: str) -> Path:
        return self.home / "batch" / endpoint / name

    def job_dir(self, name: str) -> Path:
        """A job's input list, parts, log and (by default) outputs."""
        return self.home / "jobs" / name

    def endpoint_dir(self, name: str) -> Path:
        """Owner-only: it holds the endpoint's keys and its gateway's admin socket."""
        path = self.home / "endpoints" / name
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        return path

    # connections and transactions

    def _open(self) -> sqlite3.Connection:
        # autocommit: transactions are begun explicitly (BEGIN IMMEDIATE in transaction())
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One state change: what the store writes in the block (in this thread) is committed
        together when it ends, or rolled back if it raises. A transaction opened inside another
        is part of it. It starts by taking SQLite's write lock (BEGIN IMMEDIATE), so what the
        block reads stays true until it commits."""
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        conn = self._open()
        self._local.conn = conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            with conn:  # commit on success, roll back on error
                yield conn
        finally:
            self._local.conn = None
            conn.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The open transaction's connection (it sees its own writes), else a fresh one."""
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        conn = self._open()
        try:
            yield conn
        finally:
            conn.close()

    def _migrate(self) -> None:
        with self._reading() as conn:
            version = _schema_version(conn)
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise InvalidState(
                "The deployment store (state.db in $MLFLOW_DEPLOY_HOME) was written by a newer "
                "mlflow-deploy; upgrade mlflow-deploy to use it."
            )
        with self.transaction() as conn:
            version = _schema_version(conn)  # another process may have migrated it meanwhile
            for migrate in MIGRATIONS[version:]:
                migrate(conn)
            conn.execute("PRAGMA user_version = {:d}".format(SCHEMA_VERSION))

    # locks

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise state changes across processes (CLI calls, tests, the Python API). Held
        for the changes only, never while an environment builds: every command on the home
        waits for it."""
        with file_lock(self.home / "lock"):
            yield

    @contextmanager
    def lock_row(self, table: Table, key: str) -> Iterator[None]:
        """Serialise the commands on one row across processes (the create, updates and delete of
        one deployment) for the whole of their work, an environment build included; commands on
        other rows do not wait. Take it before ``lock()``, never while holding it. ``key`` must
        be a validated name (it names a file). The file goes with the row: when the row does not
        exist at the end, it is removed while still held (file_lock then has any waiter lock the
        next file at that path)."""
        if not key or os.sep in key or key.startswith("."):
            raise ValueError("a row lock needs a plain name")
        path = self.home / "locks" / table.name / key
        with file_lock(path):
            try:
                yield
            finally:
                try:
                    gone = self.find(table, key) is None
                except sqlite3.Error:
                    gone = False
                if gone:
                    path.unlink(missing_ok=True)

    # rows of any table: the batch layer uses these with its tables directly

    def add(self, table: Table[R], item: R, taken: Union[str, AlreadyExists]) -> R:
        """Insert ``item``; ``taken`` is the error (or its message) if its key is (name_taken)."""
        item.created = item.updated = time.time()
        try:
            with self.transaction() as conn:
                table.insert(conn, item)
        except sqlite3.IntegrityError:
            raise (AlreadyExists(taken) if isinstance(taken, str) else taken) from None
        return item

    def save(self, table: Table[R], item: R) -> R:
        item.updated = time.time()
        with self.transaction() as conn:
            table.update(conn, item)
        return item

    def find(self, table: Table[R], key: str) -> Optional[R]:
        with self._reading() as conn:
            return table.get(conn, key)

    def select(self, table: Table[R], **equal: Any) -> List[R]:
        with self._reading() as conn:
            return table.select(conn, order_by="created", **equal)

    def remove(self, table: Table[R], key: str) -> None:
        with self.transaction() as conn:
            table.delete(conn, key)

    # endpoints

    def add_endpoint(self, endpoint: Endpoint) -> Endpoint:
        return self.add(ENDPOINTS, endpoint, name_taken("An endpoint", "endpoint"))

    def save_endpoint(self, endpoint: Endpoint) -> Endpoint:
        return self.save(ENDPOINTS, endpoint)

    def find_endpoint(self, name: str) -> Optional[Endpoint]:
        return self.find(ENDPOINTS, name)

    def get_endpoint(self, name: str) -> Endpoint:
        endpoint = self.find_endpoint(name)
        if endpoint is None:
            raise NotFound("No endpoint with this name.", argument="endpoint")
        return endpoint

    def list_endpoints(self) -> List[Endpoint]:
        return self.select(ENDPOINTS)

    def remove_endpoint(self, name: str) -> None:
        self.remove(ENDPOINTS, name)

    # deployments

    def add_deployment(self, deployment: Deployment) -> Deployment:
        return self.add(DEPLOYMENTS, deployment, name_taken("A deployment", "name"))

    def save_deployment(self, deployment: Deployment) -> Deployment:
        return self.save(DEPLOYMENTS, deployment)

    def find_deployment(self, name: str) -> Optional[Deployment]:
        return self.find(DEPLOYMENTS, name)

    def get_deployment(self, name: str) -> Deployment:
        deployment = self.find_deployment(name)
        if deployment is None:
            raise NotFound("No deployment with this name.", argument="name")
        return deployment

    def list_deployments(self, endpoint: Optional[str] = None) -> List[Deployment]:
        if endpoint is None:
            return self.select(DEPLOYMENTS)
        return self.select(DEPLOYMENTS, endpoint=endpoint)

    def remove_deployment(self, name: str) -> None:
        self.remove(DEPLOYMENTS, name)
