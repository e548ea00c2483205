"""Real env builds (uv, the user's uv cache); each scenario env is built once per session."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
import requests

from mlflow_deploy.envs import BuildFailed, prepare_environment
from mlflow_deploy.envs.cache import BUILD_CACHE_ENV, EnvCache
from mlflow_deploy.envs.indexes import IndexOptions
from mlflow_deploy.envs.lock import resolve
from mlflow_deploy.envs.pythons import choose_interpreter

from .conftest import (OLD_SKLEARN, make_wheel, prepare_in_subprocess, result_of, run_python, save_model,
                       seed_home)

pytestmark = pytest.mark.slow

SERVER_IMPORTS = "import flask, gunicorn, mlflow.pyfunc, mlflow_deploy.scoring.app"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_env_model_serves_with_its_pinned_scikit_learn(built, models, env_home, tmp_path):
    """python_env.yaml model, Python 3.10, scikit-learn 1.5.2 while the dev env has a newer one:
    the scoring server started with env.python answers with the pinned version."""
    import sklearn

    assert sklearn.__version__ != OLD_SKLEARN.split("==")[1]
    env = built("old_sklearn")
    assert os.path.isfile(env.python) and env.root == str(env_home / "envs" / env.key)
    assert env.python_version.startswith("3.10.")
    out = run_python(env.python, "import sys, sklearn; " + SERVER_IMPORTS + "; "
                     "print(sklearn.__version__, sys.version_info[:2])")
    assert out.split()[0] == "1.5.2" and "(3, 10)" in out

    from mlflow_deploy.scoring.config import CONFIG_ENV, ServerConfig

    port = free_port()
    config = ServerConfig(model_dir=str(models["old_sklearn"]), bind="127.0.0.1:{}".format(port))
    config.write(str(tmp_path / "server.json"))
    log = open(str(tmp_path / "server.log"), "wb")
    server = subprocess.Popen(
        [env.python, "-m", "gunicorn", "-c", "python:mlflow_deploy.scoring.gunicorn_conf",
         "mlflow_deploy.scoring.wsgi:app"], env=dict(os.environ, **{CONFIG_ENV: str(tmp_path /
                                                                                 "server.json")}),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if requests.get("http://127.0.0.1:{}/".format(port), timeout=2).ok:
                    break
            # a worker still loading on a busy machine accepts, then answers late
            except (requests.ConnectionError, requests.Timeout):
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        answer = requests.post("http://127.0.0.1:{}/score".format(port), timeout=30,
                               json={"input_data": {"columns": ["x"], "index": [0, 1],
                                                     "data": [[1], [2]]}})
        assert answer.status_code == 200, answer.text
        assert answer.json() == ["1.5.2", "1.5.2"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_cache_layout_lock_and_metadata(built, models, env_home):
    env = built("old_sklearn")
    envs = env_home / "envs"
    lock = (envs / (env.key + ".lock")).read_text()
    assert "scikit-learn==1.5.2" in lock and "--hash=sha256:" in lock
    assert "mlflow-skinny==" in lock and "flask==" in lock and "gunicorn==" in lock
    assert "mlflow-deploy" not in lock  # the project wheel goes in separately, --no-deps
    meta = json.loads((envs / (env.key + ".json")).read_text())
    assert meta["python"] == env.python and meta["manager"] == "uv"
    assert meta["python_version"] == env.python_version
    assert str(models["old_sklearn"]) in meta["models"]
    assert meta["created"] <= meta["last_used"]
    # console scripts point at the final folder, not where the venv was built
    assert open(os.path.join(env.root, "bin", "gunicorn")).readline().strip() == \
        "#!" + env.python
    assert not list((envs / ".building").iterdir())


def test_conda_only_model(built):
    env = built("conda_only")
    out = run_python(env.python, "import sys, sklearn, cloudpickle; " + SERVER_IMPORTS + "; "
                     "print(sys.version_info[:2])")
    assert "(3, 11)" in out


def test_seed_model_logged_with_mlflow_2_builds_and_predicts(seed_model, env_home):
    """The seed's stack (Python 3.10, mlflow 2.7.1, numpy 1.23.5, scikit-learn 1.1.2): mlflow 2
    imports pkg_resources, which uv venvs lack; the builder adds a setuptools that has it, the
    smoke test loads the model, and it predicts."""
    requirements = (seed_model / "requirements.txt").read_text()
    assert "mlflow==2.7.1" in requirements and "scikit-learn==1.1.2" in requirements
    env = prepare_environment(seed_model, home=env_home)
    out = run_python(env.python, "import pkg_resources, mlflow.pyfunc, numpy, sklearn; "
                     + SERVER_IMPORTS + "; m = mlflow.pyfunc.load_model({!r}); "
                     "print(mlflow.__version__, numpy.__version__, sklearn.__version__, "
                     "round(float(m.predict(numpy.array([[1.0, 1.0, 1.0]]))[0]), 6))".format(
                         str(seed_model)))
    assert out.split() == ["2.7.1", "1.23.5", "1.1.2", "6.0"]


def test_reuse_is_fast_and_offline(built, models, env_home):
    """A second prepare for the same model reuses the env with the network disabled."""
    env = built("old_sklearn")
    again = prepare_environment(models["old_sklearn"], home=env_home)
    assert (again.key, again.built, again.resolved) == (env.key, False, False)
    assert again.seconds < 0.5
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not available")
    probe = subprocess.run(["unshare", "-rn", "true"])
    if probe.returncode != 0:
        pytest.skip("cannot make a network namespace here")
    result = result_of(prepare_in_subprocess(models["old_sklearn"], env_home,
                                             wrapper=("unshare", "-rn")))
    assert result["key"] == env.key and not result["built"] and not result["resolved"]
    assert result["seconds"] < 0.5


def test_another_model_with_the_same_lock_shares_the_env(built, models, env_home, tmp_path):
    env = built("old_sklearn")
    twin = save_model(tmp_path / "twin", [OLD_SKLEARN], python="3.10")
    again = prepare_environment(twin, home=env_home)
    assert again.key == env.key and not again.built
    meta = EnvCache(env_home).read_metadata(env.key)
    assert {str(models["old_sklearn"]), str(twin.resolve())} <= set(meta["models"])


def test_refresh_re_resolves(built, models, env_home):
    env = built("conda_only")
    again = prepare_environment(models["conda_only"], home=env_home, refresh=True)
    assert again.resolved and again.key == env.key  # nothing new was published meanwhile


def test_refresh_picks_up_a_release_published_since(tmp_path):
    """The memo answers until asked to refresh; then the new release is locked. The release is
    published by the test into a local folder (resolved with --no-index and no exclude_newer:
    uv drops local files, which have no upload time, under it)."""
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "mdtiny", "1.0")
    indexes = IndexOptions(find_links=(str(wheels),), no_index=True)
    cache = EnvCache(tmp_path / "home")
    interpreter = choose_interpreter((3, 11), "exact")
    first = resolve("mdtiny\n", interpreter, indexes, cache)
    assert "mdtiny==1.0" in first.text and first.resolved
    make_wheel(wheels, "mdtiny", "1.1")
    again = resolve("mdtiny\n", interpreter, indexes, cache)
    assert again.text == first.text and not again.resolved
    refreshed = resolve("mdtiny\n", interpreter, indexes, cache, refresh=True)
    assert "mdtiny==1.1" in refreshed.text and refreshed.resolved
    assert refreshed.inputs_hash == first.inputs_hash


def test_two_concurrent_builds_of_one_env(built, env_home, models, tmp_path):
    """Two processes prepare the same new env at once: one builds, the other waits and reuses."""
    env = built("conda_only")
    home = seed_home(env_home, tmp_path / "home")
    procs = [prepare_in_subprocess(models["conda_only"], home) for _ in range(2)]
    results = [result_of(p) for p in procs]
    assert {r["key"] for r in results} == {env.key}
    assert sorted(r["built"] for r in results) == [False, True]
    run_python(results[0]["python"], SERVER_IMPORTS)
    assert not list((home / "envs" / ".building").iterdir())


def test_killed_build_leaves_nothing_and_next_build_succeeds(built, env_home, models, tmp_path):
    env = built("conda_only")
    home = seed_home(env_home, tmp_path / "home")
    building = home / "envs" / ".building"
    proc = prepare_in_subprocess(models["conda_only"], home, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(building.glob("*/lib/python3.*/site-packages/*")):  # mid-install
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "the build never started installing"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (home / "envs" / env.key).exists()  # no half env where envs are looked up
    again = prepare_environment(models["conda_only"], home=home)
    assert again.key == env.key and again.built
    run_python(again.python, SERVER_IMPORTS)
    assert not list(building.iterdir())  # the killed build's leftovers are gone


def test_failed_build_reports_the_installer_error_and_leaves_nothing(tmp_path, env_home):
    """Pins that cannot all hold: uv's own explanation reaches the user; no env is left."""
    model = save_model(tmp_path / "clash", ["scikit-learn==1.5.2"], python="3.11")
    # MLflow refuses to save clashing pins; a hand-edited requirements.txt has them all the same
    (model / "requirements.txt").write_text("scikit-learn==1.5.2\nscikit-learn==1.6.0\n")
    home = seed_home(env_home, tmp_path / "home")
    with pytest.raises(BuildFailed) as info:
        prepare_environment(model, home=home)
    message = str(info.value)
    assert "uv pip compile" in message and "scikit-learn==1.5.2" in message \
        and "scikit-learn==1.6.0" in message
    envs = home / "envs"
    assert not [p for p in envs.iterdir() if not p.name.startswith(".")]


def test_virtualenv_manager_builds_with_venv_and_pip(built, env_home, models, tmp_path):
    env = built("conda_only")
    home = seed_home(env_home, tmp_path / "home")
    venv_env = prepare_environment(models["conda_only"], home=home, manager="virtualenv")
    assert venv_env.key == env.key and venv_env.built
    run_python(venv_env.python, "import pip, sklearn; " + SERVER_IMPORTS)
    assert EnvCache(home).read_metadata(venv_env.key)["manager"] == "virtualenv"


def test_fresh_homes_share_one_wheel_build(built, env_home, models, tmp_path, monkeypatch):
    """The project wheel belongs to the sources, not to a home: it is built once into the build
    cache, and a second fresh home installs the same wheel without building it again."""
    built("conda_only")  # the session's resolution memos: the homes below resolve nothing
    monkeypatch.setenv(BUILD_CACHE_ENV, str(tmp_path / "build"))
    said, envs = {}, {}
    for name in ("one", "two"):
        said[name] = []
        envs[name] = prepare_environment(models["conda_only"],
                                         home=seed_home(env_home, tmp_path / name),
                                         progress=said[name].append)
    assert [m for m in said["one"] if m.startswith("building the mlflow-deploy wheel")]
    assert not [m for m in said["two"] if "wheel" in m], said["two"]
    assert envs["one"].key == envs["two"].key and envs["two"].built
    hashes = {EnvCache(tmp_path / n).read_metadata(envs[n].key)["wheel_hash"] for n in envs}
    assert [p.name for p in (tmp_path / "build" / "wheels").iterdir()] == list(hashes)
    assert not (tmp_path / "one" / "envs" / ".wheels").exists()  # nothing of it in the homes
    # installed in the same call as the lock, with its hash: the env runs our scoring package
    out = run_python(envs["two"].python, "import mlflow_deploy.scoring.app, importlib.metadata as "
                     "m; print(m.version('mlflow-deploy'))")
    assert out.strip()
    assert not (tmp_path / "two" / "envs" / envs["two"].key / "mlflow-deploy-wheel.txt").exists()
