"""`mlflow-deploy env build|list|show|prune` on real environments.

list/show/prune run in-process (click's CliRunner) on a home whose cache holds hard-linked copies
of two session envs; `env build` runs as a real subprocess, timed, for the reuse path.
"""
import json
import os
import re
import subprocess
import threading
import time

import pytest
from click.testing import CliRunner

from mlflow_deploy.cli import cli
from mlflow_deploy.envs.cache import (BUILD_CACHE_ENV, CACHE_ENV, HOME_ENV, BuildCache, EnvCache,
                                      tree_size)
from mlflow_deploy.envs.managers import find_conda
from mlflow_deploy.envs.wheel import source_hash
from mlflow_deploy.online import forkserver
from mlflow_deploy.store import (BATCH_DEPLOYMENTS, BATCH_ENDPOINTS, BatchDeployment,
                                 BatchEndpoint, Deployment, Store)

from tests.envs.conftest import link_env, run_cli, summary

DAY = 86400


def invoke(args, home, cache=None, build=None):
    """The CLI in-process; the build cache is one of the test's own unless ``build`` says."""
    result = CliRunner().invoke(cli, [str(a) for a in args],
                                env={HOME_ENV: str(home), CACHE_ENV: cache and str(cache),
                                     BUILD_CACHE_ENV: str(build or str(home) + "-build-cache")})
    assert "Traceback" not in result.output, result.output
    return result


def deploy(home, name, key, model_dir=None):
    """A deployment row that records its environment, as create_deployment writes it."""
    directory = home / "deployments" / name
    return Store(home).add_deployment(Deployment(
        name=name, endpoint=name, model_uri="models:/m/1", flavor="python_function", config={},
        port=5999, dir=str(directory), log_path=str(directory / "server.log"),
        pidfile=str(directory / "gunicorn.pid"), state="Succeeded",
        environment={"key": key, "python": str(home / "envs" / key / "bin" / "python")}))


def deploy_batch(home, endpoint, name, key):
    """A batch deployment row that records its environment, as create_batch_deployment does."""
    store = Store(home)
    store.add(BATCH_ENDPOINTS, BatchEndpoint(name=endpoint), "taken")
    return store.add(BATCH_DEPLOYMENTS, BatchDeployment(
        key=BatchDeployment.key_of(endpoint, name), name=name, endpoint=endpoint,
        model_uri="models:/m/1", dir=str(store.batch_deployment_dir(endpoint, name)), config={},
        state="Succeeded",
        environment={"key": key, "python": str(home / "envs" / key / "bin" / "python")}), "taken")


def age(home, key, days):
    """Pretend the env was last used ``days`` ago."""
    path = home / "envs" / (key + ".json")
    meta = json.loads(path.read_text())
    meta["last_used"] = time.time() - days * DAY
    path.write_text(json.dumps(meta))


@pytest.fixture
def home(tmp_path, built, env_home):
    """A home with two real envs (old_sklearn, conda_only) in its cache; returns (home, a, b)."""
    a, b = built("old_sklearn").key, built("conda_only").key
    target = tmp_path / "home"
    for key in (a, b):
        link_env(env_home, target, key)
    return target, a, b


@pytest.mark.slow
def test_env_build_reuse_from_the_cli_is_fast(built, models, env_home):
    env = built("old_sklearn")
    started = time.monotonic()
    proc = run_cli(["env", "build", models["old_sklearn"]], home=env_home)
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    result = summary(proc.stdout)
    assert result["key"] == env.key and result["status"] == "reused"
    assert result["python"] == env.python and result["python_version"] == env.python_version
    assert float(result["seconds"]) < 0.5
    assert "mlflow-deploy: reusing env " + env.key in proc.stderr
    print("mlflow-deploy env build (reuse) wall time: {:.2f} s".format(wall))
    assert wall < 20  # the process: mostly importing mlflow (the CLI's own imports)


@pytest.mark.slow
def test_env_list_table_and_json(home):
    home, a, b = home
    deploy(home, "blue", a)
    table = invoke(["env", "list", "-o", "table"], home)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["HASH", "PYTHON", "SIZE", "LAST", "USED", "MODELS", "DEPLOYMENTS"]
    assert set(lines[1]) == {"-", " "}  # the dashes under the headers
    row_a = next(l for l in lines if l.startswith(a))
    row_b = next(l for l in lines if l.startswith(b))
    assert " 3.10." in row_a and row_a.endswith("blue") and re.search(r" (MB|GB) ", row_a)
    assert " 3.11." in row_b and row_b.endswith("-")

    rows = json.loads(invoke(["env", "list"], home).stdout)  # JSON, as az ml's lists
    by_key = {r["key"]: r for r in rows}
    assert set(by_key) == {a, b}
    assert by_key[a]["deployments"] == ["blue"] and by_key[b]["deployments"] == []
    assert by_key[a]["size_bytes"] > 20 * 2 ** 20 and by_key[a]["models"]
    assert by_key[a]["python"] == str(home / "envs" / a / "bin" / "python")


@pytest.mark.slow
def test_env_show_by_prefix_unknown_and_ambiguous(home):
    home, a, _b = home
    shown = invoke(["env", "show", a[:6]], home)
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.stdout)
    assert info["key"] == a and info["lock"] == str(home / "envs" / (a + ".lock"))
    assert info["python"] == str(home / "envs" / a / "bin" / "python")
    assert info["python_version"].startswith("3.10.")
    assert "scikit-learn==1.5.2" in info["requirements"]
    assert all("--hash" not in r for r in info["requirements"])

    unknown = invoke(["env", "show", "zzzz"], home)
    assert unknown.exit_code == 3
    assert unknown.stderr == ("Error: No cached environment has a hash starting with the given "
                              "prefix.\n")
    ambiguous = invoke(["env", "show", ""], home)
    assert ambiguous.exit_code == 2
    assert ambiguous.stderr.startswith("Error: The hash prefix matches")


@pytest.mark.slow
def test_prune_never_removes_an_env_in_use_and_honours_older_than(home):
    home, a, b = home
    envs = home / "envs"
    age(home, a, 40)
    age(home, b, 10)
    deploy(home, "blue", a)

    dry = invoke(["env", "prune", "--older-than", "5", "--dry-run"], home)
    assert dry.exit_code == 0, dry.output
    assert "kept {}: in use by blue".format(a) in dry.stdout
    assert "would remove {} (".format(b) in dry.stdout and (envs / b).is_dir()

    assert "freed 0 B (0 environments)" in invoke(["env", "prune", "--older-than", "20"],
                                                  home).stdout
    assert (envs / b).is_dir()

    deploy_batch(home, "scores", "nightly", b)  # a batch deployment keeps its env just as well
    assert "kept {}: in use by scores:nightly".format(b) in invoke(
        ["env", "prune", "--older-than", "5", "--dry-run"], home).stdout
    Store(home).remove(BATCH_DEPLOYMENTS, "scores:nightly")

    pruned = invoke(["env", "prune", "--older-than", "5"], home)
    assert "removed {} (last used ".format(b) in pruned.stdout
    assert re.fullmatch(r"freed [\d.]+ (B|KB|MB|GB) \(1 environment\)",
                        pruned.stdout.splitlines()[-1])
    assert not [p for p in envs.iterdir() if p.name.startswith(b)]
    assert not list((envs / ".building").iterdir())

    everything = invoke(["env", "prune"], home)  # default: every unused env
    assert "kept {}: in use by blue".format(a) in everything.stdout
    assert (envs / a / "bin" / "python").exists() and (envs / (a + ".lock")).is_file()

    Store(home).remove_deployment("blue")
    assert "removed {}".format(a) in invoke(["env", "prune"], home).stdout
    assert EnvCache(home).keys() == []


@pytest.mark.slow
def test_prune_keeps_envs_of_other_homes_and_of_running_processes(home, tmp_path):
    """A cache shared by several homes ($MLFLOW_DEPLOY_ENV_CACHE): a deployment of another home
    keeps its env; so does a live process started from an env's interpreter (a foreground serve)."""
    cache_home, a, b = home
    shared = cache_home / "envs"
    other = tmp_path / "other-home"
    model_dir = other / "deployments" / "green" / "model" / "1"
    model_dir.mkdir(parents=True)
    deploy(other, "green", a)
    with EnvCache(cache_home).mutex(a):
        EnvCache(cache_home).record_use(a, [str(model_dir)])
    proc = subprocess.Popen([str(shared / b / "bin" / "python"), "-c",
                             "import time; time.sleep(120)"])
    try:
        here = tmp_path / "this-home"
        result = invoke(["env", "prune"], here, cache=shared)
        assert result.exit_code == 0, result.output
        assert "kept {}: in use by green".format(a) in result.stdout
        assert "kept {}: in use by process {}".format(b, proc.pid) in result.stdout
        assert (shared / a).is_dir() and (shared / b).is_dir()
    finally:
        proc.kill()
        proc.wait()
    assert "removed {}".format(b) in invoke(["env", "prune"], here, cache=shared).stdout
    assert (shared / a).is_dir()


@pytest.mark.slow
def test_prune_stops_the_fork_server_of_an_env_it_removes(home, tmp_path, monkeypatch):
    """An env's fork server (online/forkserver.py) is no user of it: prune stops it, then removes
    the env; a fork server of an env that is kept keeps running."""
    cache_home, a, b = home
    shared = cache_home / "envs"
    monkeypatch.setenv(forkserver.RUN_DIR_ENV, str(tmp_path / "run"))
    deploy(cache_home, "green", a)
    started = []
    for key in (a, b):
        python, env = str(shared / key / "bin" / "python"), dict(os.environ)
        assert forkserver._start(python, forkserver.socket_path(python, env), env, 120)
        started.append(python)
    servers = {python: pid for pid, python in forkserver.running().items()}
    assert sorted(servers) == sorted(started)
    try:
        result = invoke(["env", "prune"], cache_home, cache=shared)
        assert "kept {}: in use by green".format(a) in result.stdout
        assert "removed {}".format(b) in result.stdout and not (shared / b).exists()
        deadline = time.monotonic() + 10
        while forkserver.running() != {servers[started[0]]: started[0]}:
            assert time.monotonic() < deadline, forkserver.running()
            time.sleep(0.1)
    finally:
        forkserver.stop_all()


@pytest.mark.slow
def test_prune_waits_for_the_env_lock_and_spares_an_env_just_used(home):
    """A build holds the env's lock and stamps it used: prune waits, then looks again."""
    home, _a, b = home
    age(home, b, 10)
    cache = EnvCache(home)
    results = []
    with cache.mutex(b):
        worker = threading.Thread(target=lambda: results.append(
            invoke(["env", "prune", "--older-than", "5"], home)))
        worker.start()
        time.sleep(1.0)
        assert worker.is_alive()  # blocked on the lock
        cache.record_use(b, [])  # what a build reusing the env does under its lock
    worker.join(timeout=60)
    assert results[0].exit_code == 0, results[0].output
    assert "removed {}".format(b) not in results[0].stdout and (home / "envs" / b).is_dir()
    assert results[0].stdout.splitlines()[-1] == "freed 0 B (0 environments)"


def test_env_build_of_a_missing_model_is_one_line(tmp_path):
    result = invoke(["env", "build", tmp_path / "no-such-model"], tmp_path)
    assert result.exit_code == 3
    assert result.stderr == ("Error: No model directory at the path given as the model URI "
                             "(local path).\n")


@pytest.mark.skipif(find_conda() is not None, reason="conda is on PATH: it would build")
def test_env_build_with_conda_and_no_conda_is_one_line(models, tmp_path):
    result = run_cli(["env", "build", "--env-manager", "conda", models["conda_only"]], tmp_path)
    assert result.returncode == 7 and result.stdout == ""
    assert result.stderr.startswith("Error: env_manager conda needs conda, mamba or micromamba")
    assert "env_manager: uv" in result.stderr and len(result.stderr.splitlines()) == 1


def test_space_freed_leaves_out_files_shared_by_hard_links(tmp_path):
    """uv hard-links installed files from its cache: deleting an env frees only its own files."""
    tree = tmp_path / "env"
    tree.mkdir()
    (tree / "own.pyc").write_bytes(b"x" * 100_000)
    (tmp_path / "uv-cache-file").write_bytes(b"y" * 300_000)
    os.link(str(tmp_path / "uv-cache-file"), str(tree / "linked.py"))
    assert tree_size(tree) >= 400_000
    assert 100_000 <= tree_size(tree, exclusive=True) < 200_000


def fake_wheel(build, digest, days_ago=0.0):
    folder = build / "wheels" / digest
    folder.mkdir(parents=True)
    (folder / "mlflow_deploy-0.1.0-py3-none-any.whl").write_bytes(b"w" * 50_000)
    stamp = time.time() - days_ago * DAY
    os.utime(str(folder), (stamp, stamp))
    return folder


def fake_memo(home, name, text, days_ago=0.0):
    path = home / "envs" / ".resolved" / (name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = time.time() - days_ago * DAY
    os.utime(str(path), (stamp, stamp))
    return path


@pytest.mark.slow
def test_prune_removes_wheels_resolutions_and_lock_files_nothing_uses(home, tmp_path):
    """Besides envs: wheels of other sources that no kept env records (a wheel a build holds
    stays), resolution memos of no kept env, older layouts' wheels, unheld lock files."""
    home, a, b = home
    envs, build = home / "envs", tmp_path / "build"
    deploy(home, "blue", b)  # b stays; a is removed by the last prune
    for key, digest in ((a, "a0a0a0a0a0a0a0a0"), (b, "b0b0b0b0b0b0b0b0")):
        meta = json.loads((envs / (key + ".json")).read_text())
        meta["wheel_hash"] = digest  # as if built from older sources: their wheels stay with them
        (envs / (key + ".json")).write_text(json.dumps(meta))
    current = source_hash()  # the installed sources' wheel: always kept
    wheels = {name: fake_wheel(build, digest, days) for name, digest, days in (
        ("current", current, 40), ("of a", "a0a0a0a0a0a0a0a0", 40),
        ("of b", "b0b0b0b0b0b0b0b0", 40), ("old", "0123456789abcdef", 40),
        ("recent", "2222222222222222", 0), ("held", "1111111111111111", 40))}
    scratch = build / "wheels" / ".tmp-0123456789abcdef-killed"
    scratch.mkdir()
    memos = {"of a": fake_memo(home, "aaaaaaaaaaaaaaaa", (envs / (a + ".lock")).read_text(), 40),
             "of b": fake_memo(home, "bbbbbbbbbbbbbbbb", (envs / (b + ".lock")).read_text(), 40),
             "old": fake_memo(home, "cccccccccccccccc", "old==1.0 --hash=sha256:00\n", 40),
             "recent": fake_memo(home, "dddddddddddddddd", "new==1.0 --hash=sha256:00\n")}
    legacy = envs / ".wheels" / "3333333333333333"
    legacy.mkdir(parents=True)
    (legacy / "mlflow_deploy-0.0.1-py3-none-any.whl").write_bytes(b"l" * 10_000)
    (envs / ".mutex").mkdir(exist_ok=True)
    (envs / ".mutex" / "stale").touch()

    with BuildCache(build).wheel_mutex("1111111111111111", shared=True), \
            EnvCache(home).mutex("busy"):
        dry = invoke(["env", "prune", "--older-than", "5", "--dry-run"], home, build=build)
        assert dry.exit_code == 0, dry.output
        assert "would remove wheel 0123456789abcdef (last used " in dry.stdout
        assert "kept wheel 1111111111111111: in use by a build" in dry.stdout
        assert all(p.exists() for p in [*wheels.values(), *memos.values(), legacy, scratch])

        older = invoke(["env", "prune", "--older-than", "5"], home, build=build)
        assert older.exit_code == 0, older.output
        out = older.stdout
        assert "removed wheel 0123456789abcdef (last used " in out
        assert "removed wheel 3333333333333333 (in {}".format(envs / ".wheels") in out
        assert "kept wheel 1111111111111111: in use by a build" in out
        assert "removed 1 cached resolution" in out  # "old"; a's and b's envs are kept
        assert "removed 1 leftover of a killed build" in out
        assert re.search(r"removed \d+ unused lock files?", out)
        assert re.fullmatch(r"freed [\d.]+ KB \(0 environments, 2 wheels, 1 resolution\)",
                            out.splitlines()[-1]), out
    assert [name for name, path in wheels.items() if not path.exists()] == ["old"]
    assert [name for name, path in memos.items() if not path.exists()] == ["old"]
    assert not (envs / ".wheels").exists() and not scratch.exists()
    assert not (envs / ".mutex" / "stale").exists() and (envs / ".mutex" / "busy").exists()

    everything = invoke(["env", "prune"], home, build=build)  # a goes, and what only it used
    assert "removed {} (".format(a) in everything.stdout, everything.stdout
    for digest in ("a0a0a0a0a0a0a0a0", "2222222222222222", "1111111111111111"):
        assert "removed wheel {}".format(digest) in everything.stdout  # 1111: no build holds it
    assert sorted(p.name for p in (build / "wheels").iterdir()) == sorted(
        [current, "b0b0b0b0b0b0b0b0"])  # the installed sources' wheel, and b's
    assert sorted(p.name for p in memos.values() if p.exists()) == ["bbbbbbbbbbbbbbbb.lock"]
    assert (envs / b / "bin" / "python").exists()
    assert not list((envs / ".mutex").iterdir())  # nobody holds any


def test_env_list_weighs_hard_linked_files_once_and_names_models_as_given(tmp_path):
    """uv hard-links a file from its cache into every env that installs it: the disk holds it
    once. And the models are the URIs users gave, not the folders we staged them in."""
    home, cache = tmp_path / "home", tmp_path / "cache"
    for key in ("aaaa", "bbbb"):
        (cache / key).mkdir(parents=True)
    (cache / "aaaa" / "shared.so").write_bytes(b"s" * 300_000)
    os.link(str(cache / "aaaa" / "shared.so"), str(cache / "aaaa" / "again.so"))  # one file
    os.link(str(cache / "aaaa" / "shared.so"), str(cache / "bbbb" / "shared.so"))
    (cache / "bbbb" / "own.pyc").write_bytes(b"o" * 100_000)
    staged = str(home / "deployments" / "blue" / "model" / "1")
    (cache / "aaaa.json").write_text(json.dumps({"models": [staged, "models:/diabetes/1"],
                                                 "folders": [staged]}))
    result = invoke(["env", "list"], home, cache=cache)
    assert result.exit_code == 0, result.output
    rows = {row["key"]: row for row in json.loads(result.stdout)}
    assert rows["aaaa"]["size_bytes"] == 300_000 and rows["bbbb"]["size_bytes"] == 400_000
    assert rows["aaaa"]["models"] == ["models:/diabetes/1"] and rows["bbbb"]["models"] == []
    assert result.stderr == "mlflow-deploy: 2 environments: 390.6 KB on disk\n"  # 400,000 bytes
    table = invoke(["env", "list", "-o", "table"], home, cache=cache).stdout.splitlines()
    assert table[2].split()[:4] == ["aaaa", "?", "293.0", "KB"]
    assert table[2].split()[-2:] == ["models:/diabetes/1", "-"]
