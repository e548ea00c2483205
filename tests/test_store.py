"""store.py: rows survive a reopen, names are unique, a failed insert leaves nothing behind, a
change of several rows is one transaction, and stores written before the schema had a version
are read (and migrated) as they are."""

import dataclasses
import json
import sqlite3
import threading

import pytest

from mlflow_deploy.errors import AlreadyExists, InvalidState, NotFound
from mlflow_deploy.store import (
    DEPLOYMENTS,
    ENDPOINTS,
    HOME_ENV,
    SCHEMA_VERSION,
    Deployment,
    Endpoint,
    Store,
    home_dir,
)


def make_deployment(store, name="blue", endpoint="ep", port=5555):
    directory = store.deployment_dir(name)
    return Deployment(
        name=name,
        endpoint=endpoint,
        model_uri="models:/m/1",
        flavor="python_function",
        config={"instance_count": 2},
        port=port,
        dir=str(directory),
        log_path=str(directory / "server.log"),
        pidfile=str(directory / "gunicorn.pid"),
        state="Succeeded",
        pid=123,
    )


def test_layout_and_home_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "h"))
    assert home_dir() == (tmp_path / "h").resolve()
    store = Store()
    assert (tmp_path / "h" / "state.db").is_file()
    assert (tmp_path / "h" / "deployments").is_dir() and (tmp_path / "h" / "logs").is_dir()
    assert store.deployment_dir("blue") == (tmp_path / "h" / "deployments" / "blue").resolve()


def test_default_home(monkeypatch, tmp_path):
    monkeypatch.delenv(HOME_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert home_dir() == (tmp_path / ".mlflow-deploy").resolve()


def test_endpoint_round_trip(tmp_path):
    store = Store(tmp_path)
    store.add_endpoint(Endpoint(name="ep", traffic={"blue": 100}, auto_created=True))
    again = Store(tmp_path).get_endpoint("ep")
    assert again.traffic == {"blue": 100} and again.auto_created and again.created > 0
    again.traffic = {"blue": 0, "green": 100}
    store.save_endpoint(again)
    assert store.get_endpoint("ep").traffic == {"blue": 0, "green": 100}
    with pytest.raises(AlreadyExists):
        store.add_endpoint(Endpoint(name="ep"))
    store.remove_endpoint("ep")
    assert store.find_endpoint("ep") is None
    with pytest.raises(NotFound):
        store.get_endpoint("ep")


def test_deployment_round_trip(tmp_path):
    store = Store(tmp_path)
    store.add_endpoint(Endpoint(name="ep"))
    store.add_deployment(make_deployment(store))
    store.add_deployment(make_deployment(store, "green", port=5556))
    got = Store(tmp_path).get_deployment("blue")
    assert got.config == {"instance_count": 2} and got.pid == 123 and got.revision == 1
    assert got.ready_file.name == "ready.json" and got.model_dir().parts[-2:] == ("model", "1")
    got.revision, got.pid, got.state = 2, 456, "Failed"
    store.save_deployment(got)
    again = store.get_deployment("blue")
    assert (again.revision, again.pid, again.state) == (2, 456, "Failed")
    assert [d.name for d in store.list_deployments("ep")] == ["blue", "green"]
    assert store.list_deployments("other") == []


def test_duplicate_deployment_leaves_the_first_intact(tmp_path):
    store = Store(tmp_path)
    store.add_deployment(make_deployment(store))
    with pytest.raises(AlreadyExists, match="update it instead") as caught:
        store.add_deployment(make_deployment(store, port=9999))
    assert caught.value.argument == "name" and "--" not in caught.value.message
    assert store.get_deployment("blue").port == 5555
    store.remove_deployment("blue")
    assert store.find_deployment("blue") is None
    with pytest.raises(NotFound):
        store.get_deployment("blue")


def test_lock_is_exclusive_across_handles(tmp_path):
    import threading

    store, order = Store(tmp_path), []

    def second():
        with Store(tmp_path).lock():
            order.append("second")

    with store.lock():
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.3)
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]


def test_a_change_of_several_rows_is_one_transaction(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_endpoint(Endpoint(name="ep"))
            store.add_deployment(make_deployment(store))
            # reads inside the transaction see its writes; other connections do not, yet
            assert store.get_deployment("blue").endpoint == "ep"
            assert Store(tmp_path).find_deployment("blue") is None
            raise RuntimeError("crash between two writes")
    assert store.list_endpoints() == [] and store.list_deployments() == []

    with store.transaction():
        store.add_endpoint(Endpoint(name="ep"))
        with store.transaction():  # an inner one is part of the outer
            store.add_deployment(make_deployment(store))
    assert store.find_endpoint("ep") and store.find_deployment("blue")


def test_a_duplicate_inside_a_transaction_undoes_all_of_it(tmp_path):
    store = Store(tmp_path)
    store.add_deployment(make_deployment(store))
    with pytest.raises(AlreadyExists):
        with store.transaction():
            store.add_endpoint(Endpoint(name="ep"))
            store.add_deployment(make_deployment(store, port=9999))
    assert store.find_endpoint("ep") is None and store.get_deployment("blue").port == 5555


def test_transactions_of_threads_sharing_a_store_are_apart(tmp_path):
    store, inside, done = Store(tmp_path), threading.Event(), threading.Event()

    def other():
        inside.wait(5)
        store.add_endpoint(Endpoint(name="other"))  # waits for the first one's commit
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_endpoint(Endpoint(name="ep"))
            inside.set()
            assert not done.wait(0.2)
            raise RuntimeError("rolled back")
    thread.join(10)
    assert [e.name for e in store.list_endpoints()] == ["other"]


def test_columns_are_the_dataclass_fields(tmp_path):
    """The migrations make the tables the dataclasses describe: a field added without a
    migration fails here."""
    store = Store(tmp_path)
    conn = sqlite3.connect(store.path)
    try:
        for table in (ENDPOINTS, DEPLOYMENTS):
            columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table.name})")}
            assert columns == {f.name for f in dataclasses.fields(table.row_type)}
            assert table.columns == tuple(f.name for f in dataclasses.fields(table.row_type))
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
    # bools, dicts and NULLs come back as they went in
    store.add_endpoint(Endpoint(name="ep", description=None, auto_created=True))
    endpoint = store.get_endpoint("ep")
    assert endpoint.auto_created is True and endpoint.description is None
    assert endpoint.traffic == {}


# The schema as the store wrote it before it had a version (user_version 0): these stores exist,
# and must be read as they are.
UNVERSIONED_SCHEMA = """
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


def write_unversioned_store(home, with_environment=True):
    """A state.db as the store wrote it before the schema had a version, with the statements
    it used; ``with_environment=False``: as it was before deployments recorded environments."""
    home.mkdir(parents=True, exist_ok=True)
    schema = UNVERSIONED_SCHEMA
    if not with_environment:
        schema = schema.replace("    environment TEXT NOT NULL DEFAULT '{}',\n", "")
    conn = sqlite3.connect(home / "state.db")
    with conn:
        conn.executescript(schema)
        conn.execute(
            "INSERT INTO endpoints (name, auth_mode, description, traffic, auto_created,"
            " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("ep", "none", "old", json.dumps({"blue": 100}), 1, 1.0, 2.0),
        )
        columns = ["name", "endpoint", "model_uri", "flavor", "config"]
        # instance_count counted workers then
        values = ["blue", "ep", "models:/m/1", "python_function",
                  json.dumps({"port": None, "instance_count": 3})]
        if with_environment:
            columns.append("environment")
            values.append(json.dumps({"key": "abc", "python": "/env/bin/python"}))
        columns += ["port", "pid", "revision", "dir", "log_path", "pidfile", "state", "error",
                    "created", "updated"]
        values += [5555, 123, 3, str(home / "deployments" / "blue"),
                   str(home / "deployments" / "blue" / "server.log"),
                   str(home / "deployments" / "blue" / "gunicorn.pid"), "Succeeded", None, 1.0,
                   2.0]
        conn.execute(
            "INSERT INTO deployments ({}) VALUES ({})".format(
                ", ".join(columns), ", ".join("?" * len(columns))
            ),
            values,
        )
    conn.close()


@pytest.mark.parametrize("with_environment", [True, False], ids=["current", "before-envs"])
def test_a_store_written_before_versions_is_read_and_migrated(tmp_path, with_environment):
    write_unversioned_store(tmp_path, with_environment)
    store = Store(tmp_path)
    endpoint = store.get_endpoint("ep")
    assert (endpoint.traffic, endpoint.auto_created, endpoint.description) == (
        {"blue": 100}, True, "old")
    blue = store.get_deployment("blue")
    # its workers became WORKER_COUNT, in one instance; the endpoint keeps no auth, no gateway yet
    assert (blue.port, blue.pid, blue.revision, blue.state, blue.config, blue.instances) == (
        5555, 123, 3, "Succeeded",
        {"port": None, "instance_count": 1, "environment_variables": {"WORKER_COUNT": "3"}}, [])
    assert (endpoint.auth_mode, endpoint.port, endpoint.pid, endpoint.mirror_traffic) == (
        "none", None, None, {})
    expected = {"key": "abc", "python": "/env/bin/python"} if with_environment else {}
    assert blue.environment == expected
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
    # and it keeps working: rows change, new ones are added, reopened
    blue.revision = 4
    store.save_deployment(blue)
    store.add_deployment(make_deployment(store, "green", port=5556))
    again = Store(tmp_path)
    assert again.get_deployment("blue").revision == 4
    assert [d.name for d in again.list_deployments("ep")] == ["blue", "green"]


def test_a_store_of_a_newer_version_is_refused(tmp_path):
    Store(tmp_path)
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(InvalidState, match="newer mlflow-deploy"):
        Store(tmp_path)


def test_row_lock_is_per_row_and_goes_with_its_row(tmp_path):
    store, order = Store(tmp_path), []
    path = tmp_path / "locks" / "deployments" / "blue"

    def same_row():
        with Store(tmp_path).lock_row(DEPLOYMENTS, "blue"):
            order.append("second")

    with store.lock_row(DEPLOYMENTS, "blue"):
        with Store(tmp_path).lock_row(DEPLOYMENTS, "green"):  # another row: no wait
            order.append("green")
        with store.lock():  # nor for the store's lock
            order.append("store")
        thread = threading.Thread(target=same_row)
        thread.start()
        thread.join(0.3)
        store.add_deployment(make_deployment(store))
        order.append("first")
    thread.join(5)
    assert order == ["green", "store", "first", "second"]
    assert path.is_file()  # the row exists: its lock file stays
    store.remove_deployment("blue")
    with store.lock_row(DEPLOYMENTS, "blue"):
        pass
    assert not path.exists() and not (tmp_path / "locks" / "deployments" / "green").exists()
    with pytest.raises(ValueError):
        with store.lock_row(DEPLOYMENTS, "../x"):
            pass


def test_batch_rows_survive_a_reopen_and_deployment_names_are_per_endpoint(tmp_path):
    """Schema 5: the batch tables. Two batch endpoints may each have a deployment of the same
    name, as on Azure; the row lock of such a deployment names one file."""
    from mlflow_deploy.store import (BATCH_DEPLOYMENTS, BATCH_ENDPOINTS, COMPUTES, JOBS,
                                     BatchDeployment, BatchEndpoint, Compute, Job)
    store = Store(tmp_path)
    store.add(COMPUTES, Compute(name="cluster", type="dask",
                                scheduler_address="tcp://127.0.0.1:8786"), "taken")
    for endpoint in ("one", "two"):
        store.add(BATCH_ENDPOINTS, BatchEndpoint(name=endpoint, default_deployment="d"), "taken")
        key = BatchDeployment.key_of(endpoint, "d")
        with store.lock_row(BATCH_DEPLOYMENTS, key):
            store.add(BATCH_DEPLOYMENTS, BatchDeployment(
                key=key, name="d", endpoint=endpoint, model_uri="models:/m/1",
                dir=str(store.batch_deployment_dir(endpoint, "d")),
                config={"mini_batch_size": 2}, state="Succeeded"), "taken")
    store.add(JOBS, Job(name="job-1", endpoint="one", deployment="d", status="Queued",
                        input="/data", output_path="/out", dir=str(store.job_dir("job-1")),
                        log_path="/log", counts={"files": 3}), "taken")
    again = Store(tmp_path)
    assert [d.endpoint for d in again.select(BATCH_DEPLOYMENTS, name="d")] == ["one", "two"]
    assert again.find(COMPUTES, "cluster").scheduler_address == "tcp://127.0.0.1:8786"
    assert again.find(JOBS, "job-1").counts == {"files": 3}
    with pytest.raises(AlreadyExists):
        again.add(BATCH_ENDPOINTS, BatchEndpoint(name="one"), "taken")
