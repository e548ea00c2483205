"""store.py: rows survive a reopen, names are unique, a failed insert leaves nothing behind."""

import pytest

from mlflow_deploy.errors import AlreadyExists, NotFound
from mlflow_deploy.store import HOME_ENV, Deployment, Endpoint, Store, home_dir


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
    assert sorted(store.used_ports()) == [5555, 5556]


def test_duplicate_deployment_leaves_the_first_intact(tmp_path):
    store = Store(tmp_path)
    store.add_deployment(make_deployment(store))
    with pytest.raises(AlreadyExists, match="--name"):
        store.add_deployment(make_deployment(store, port=9999))
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
