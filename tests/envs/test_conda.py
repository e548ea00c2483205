"""env_manager conda: conda.yaml locked with conda-lock and installed from the lock.

This machine has no conda (and conda channels are unreachable), so the real build runs only where a
conda, mamba or micromamba is on PATH and is skipped with that reason elsewhere. What runs here: the
conda-lock input made from a model's conda.yaml, the lock memo, the errors, the prefix relocation
that lets a conda env be built aside and renamed, and a failed build leaving nothing behind.
"""
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from mlflow_deploy.envs import (BuildFailed, ManagerUnavailable, RequirementConflict,
                                RequirementsError, prepare_environment, read_model_requirements)
from mlflow_deploy.envs.build import build_env
from mlflow_deploy.envs.cache import EnvCache
from mlflow_deploy.envs.conda import (CondaManager, conda_lock_input, conda_subdir,
                                      find_conda_lock, lock_conda, relocate_prefix,
                                      require_conda_lock)
from mlflow_deploy.envs.environment import BuildContext, Request
from mlflow_deploy.envs.indexes import IndexOptions
from mlflow_deploy.envs.managers import find_conda
from mlflow_deploy.envs.wheel import ProjectWheel

from .conftest import run_python, seed_home

#: the project wheel's Requires-Dist (pyproject.toml), as inference_requirements receives them
WHEEL_REQUIRES = ["mlflow-skinny>=2.0", "pandas>=1.5", "numpy>=1.23", "flask>=2.2",
                  "gunicorn>=20.1", "pyyaml>=6.0", "click>=8.0"]
SERVER_IMPORTS = "import flask, gunicorn, mlflow.pyfunc, mlflow_deploy.scoring.app"


def write(folder: Path, **files) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_yaml", ".yaml").replace("_txt", ".txt")).write_text(
            textwrap.dedent(text))
    return folder


def pip_list(data):
    return next(d["pip"] for d in data["dependencies"] if isinstance(d, dict))


def conda_specs(data):
    return [d for d in data["dependencies"] if isinstance(d, str)]


def named(lines, name):
    return [Requirement(l) for l in lines if Requirement(l).name.lower() == name]


def tool(path: Path, script: str) -> Path:
    """A stand-in for an external program (conda-lock), as a shell script."""
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    path.chmod(0o755)
    return path


# --- the conda-lock input ------------------------------------------------------------------------

def test_input_is_the_models_conda_yaml_with_the_servers_packages_in_pip(models):
    spec = conda_lock_input(models["conda_only"], WHEEL_REQUIRES)
    data = spec.data
    assert spec.text.startswith("# conda-lock input written by mlflow-deploy")
    assert data["channels"] == ["conda-forge"]
    # the conda packages stay conda packages, python as the model asks
    assert conda_specs(data) == ["python=3.11", "scikit-learn", "pip"]
    pip = pip_list(data)
    assert pip[0] == "cloudpickle"  # the model's own pip: list first
    assert pip[1:] == ["mlflow-skinny>=2.0", "pandas>=1.5", "numpy>=1.23", "flask>=2.2",
                       "gunicorn>=20.1", "pyyaml>=6.0", "click>=8.0"]
    assert spec.added == pip[1:]


def test_the_models_pins_win(tmp_path):
    model = write(tmp_path / "m", conda_yaml="""\
        name: mlflow-env
        channels: [conda-forge, nodefaults]
        dependencies:
        - python=3.10
        - numpy=1.23.5
        - libfoo-not-on-pypi=1.0
        - pip
        - pip:
          - pandas==1.5.3
          - mlflow==2.7.1
          - flask[async]>=2.3
        """)
    # the uv path cannot map a conda-only package; conda installs it as it is
    with pytest.raises(RequirementsError, match="libfoo-not-on-pypi"):
        read_model_requirements(model)
    data = conda_lock_input(model, WHEEL_REQUIRES).data
    assert data["channels"] == ["conda-forge", "nodefaults"]
    assert conda_specs(data) == ["python=3.10", "numpy=1.23.5", "libfoo-not-on-pypi=1.0", "pip"]
    pip = pip_list(data)
    # one line per name (conda-lock keeps only the last one): the model's pin with our floor
    [pandas] = named(pip, "pandas")
    assert pandas.specifier.contains("1.5.3") and not pandas.specifier.contains("1.5.4")
    [flask] = named(pip, "flask")
    assert flask.extras == {"async"} and not flask.specifier.contains("2.2.5")
    # the model's mlflow pin stays, no mlflow-skinny beside it, and mlflow 2 gets its setuptools
    assert "mlflow==2.7.1" in pip and not named(pip, "mlflow-skinny")
    assert "setuptools<81" in pip
    # numpy comes from conda, pinned by the model: not again from pip
    assert not named(pip, "numpy")


def test_a_pin_the_server_cannot_run_on_is_a_conflict(tmp_path):
    model = write(tmp_path / "m", conda_yaml="""\
        dependencies: [python=3.11, pip, {pip: [flask==1.0]}]
        """)
    with pytest.raises(RequirementConflict) as info:
        conda_lock_input(model, WHEEL_REQUIRES)
    assert "flask==1.0" in str(info.value) and "flask>=2.2" in str(info.value)


def test_python_env_only_model_becomes_a_conda_input(tmp_path):
    model = write(tmp_path / "m", python_env_yaml="""\
        python: 3.10.11
        build_dependencies: [pip==23.0, setuptools, wheel]
        dependencies: [-r requirements.txt]
        """, requirements_txt="scikit-learn==1.5.2\n")
    data = conda_lock_input(model, WHEEL_REQUIRES).data
    assert data["channels"] == ["conda-forge"]
    assert conda_specs(data) == ["python=3.10", "pip"]
    assert pip_list(data)[:2] == ["setuptools", "scikit-learn==1.5.2"]
    assert "flask>=2.2" in pip_list(data)


def test_python_from_mlmodel_when_conda_yaml_names_none(tmp_path):
    model = write(tmp_path / "m", conda_yaml="dependencies: [pip, {pip: [cloudpickle]}]\n",
                  MLmodel="flavors:\n  python_function:\n    python_version: 3.10.4\n")
    assert conda_specs(conda_lock_input(model, WHEEL_REQUIRES).data) == ["python=3.10", "pip"]


def test_index_options_become_pip_repositories(tmp_path):
    model = write(tmp_path / "m", conda_yaml="""\
        dependencies:
        - python=3.11
        - pip:
          - --extra-index-url https://pypi.example.org/simple
          - cloudpickle
        """)
    data = conda_lock_input(model, WHEEL_REQUIRES).data
    assert data["pip-repositories"] == ["https://pypi.example.org/simple"]
    assert "allow-pypi-requests" not in data
    assert conda_specs(data) == ["python=3.11", "pip"]
    bad = write(tmp_path / "bad", conda_yaml="dependencies: [{pip: [--find-links /w, x]}]\n")
    with pytest.raises(RequirementsError, match="--find-links"):
        conda_lock_input(bad, WHEEL_REQUIRES)


# --- tools and errors ----------------------------------------------------------------------------

def test_conda_lock_missing_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "conda_lock", None)  # not importable in this interpreter
    monkeypatch.setenv("PATH", str(tmp_path))  # and not on PATH
    assert find_conda_lock() is None
    with pytest.raises(ManagerUnavailable, match=r"pip install 'mlflow-deploy\[conda\]'"):
        require_conda_lock()


def test_conda_lock_from_this_python_when_importable():
    pytest.importorskip("conda_lock")
    assert find_conda_lock() == [sys.executable, "-m", "conda_lock"]


def test_platform_is_a_conda_subdir():
    assert conda_subdir() in {"linux-64", "linux-aarch64", "linux-ppc64le", "linux-s390x",
                              "osx-64", "osx-arm64", "win-64"}


# --- the lock memo -------------------------------------------------------------------------------

def test_lock_is_memoised_and_a_failed_lock_shows_conda_locks_output(tmp_path):
    cache = EnvCache(tmp_path / "home")
    input_text = "dependencies: [python=3.11]\n"
    failing = tool(tmp_path / "conda-lock", """\
        echo 'INFO:conda_lock:Locking dependencies for linux-64...'
        echo 'Could not solve for environment specs' >&2
        echo 'nothing provides libfoo-not-on-pypi' >&2
        exit 1
        """)
    with pytest.raises(BuildFailed) as info:
        lock_conda(input_text, "linux-64", cache, "/usr/bin/micromamba", [str(failing)])
    message = str(info.value)
    assert "conda-lock lock" in message and "nothing provides libfoo-not-on-pypi" in message
    resolved = cache.root / ".resolved"
    assert not list(resolved.iterdir())  # no memo, no scratch folder

    # a memo for the same input and platform is used as is: the tool is not run
    memo_text = "version: 1\npackage: [{name: python}]\n"
    writer = tool(tmp_path / "ok-conda-lock", """\
        while [ $# -gt 0 ]; do
          if [ "$1" = "--lockfile" ]; then
            printf 'version: 1\\npackage: [{name: python}]\\n' > "$2"
          fi
          shift
        done
        """)
    lock = lock_conda(input_text, "linux-64", cache, "/usr/bin/micromamba", [str(writer)])
    assert (lock.text, lock.resolved) == (memo_text, True)
    again = lock_conda(input_text, "linux-64", cache, "/usr/bin/micromamba", [str(failing)])
    assert (again.text, again.resolved, again.inputs_hash) == (memo_text, False, lock.inputs_hash)
    # another platform is another lock; refresh locks again (and fails here, keeping the memo)
    with pytest.raises(BuildFailed):
        lock_conda(input_text, "osx-arm64", cache, "/usr/bin/micromamba", [str(failing)])
    with pytest.raises(BuildFailed):
        lock_conda(input_text, "linux-64", cache, "/usr/bin/micromamba", [str(failing)],
                   refresh=True)
    assert lock_conda(input_text, "linux-64", cache, "x", [str(failing)]).text == memo_text


def test_a_lock_without_packages_is_refused(tmp_path):
    empty = tool(tmp_path / "conda-lock", "exit 0\n")  # writes no lock file
    with pytest.raises(BuildFailed, match="no usable lock file"):
        lock_conda("dependencies: []\n", "linux-64", EnvCache(tmp_path / "home"), "conda",
                   [str(empty)])


# --- build aside, then rename --------------------------------------------------------------------

def test_a_failed_build_leaves_nothing_behind(tmp_path):
    cache = EnvCache(tmp_path / "home")
    half = tool(tmp_path / "conda-lock", """\
        while [ $# -gt 0 ]; do
          if [ "$1" = "--prefix" ]; then mkdir -p "$2/bin" && touch "$2/bin/python"; fi
          shift
        done
        echo 'Transaction failed: nothing provides libfoo-not-on-pypi' >&2
        exit 1
        """)
    progress = []
    request = Request(model_dir=tmp_path, model_ref="m", progress=progress.append, started=0.0)
    ctx = BuildContext(request=request, cache=cache, key="0123456789abcdef",
                       lock_text="version: 1\n", wheel=ProjectWheel(tmp_path / "x.whl", "w", []),
                       indexes=IndexOptions(), interpreter=None, resolved=False,
                       requirements=(), metadata={})
    with pytest.raises(BuildFailed) as info:
        build_env(CondaManager("/opt/micromamba", [str(half)]), ctx)
    assert "conda-lock install" in str(info.value)
    assert "nothing provides libfoo-not-on-pypi" in str(info.value)
    assert not list(cache.building_dir().iterdir())
    assert not cache.env_dir("0123456789abcdef").exists()
    assert progress == ["creating the conda env from the lock (conda-lock install, with "
                        "micromamba)"]


def test_relocation_rewrites_what_names_the_build_folder(tmp_path):
    """conda writes the install prefix into files (its placeholders, replaced at install); the
    rename must leave them naming the final folder, binaries at their former size."""
    root = tmp_path / "envs" / ".building" / "0123456789abcdef-k2j4x9q1"
    final = tmp_path / "envs" / "0123456789abcdef"
    old = str(root).encode()
    (root / "conda-meta").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "etc").mkdir()
    (root / "bin").mkdir()
    binary = b"\x7fELF\0\0" + old + b"/lib:" + old + b"/lib64\0tail\0" + b"\x01" * 8
    (root / "lib" / "libx.so").write_bytes(binary)
    (root / "etc" / "paths.txt").write_text("prefix={0}\nssl={0}/ssl\n".format(root))
    (root / "lib" / "untouched.txt").write_text("not recorded: {}\n".format(root))
    (root / "bin" / "gunicorn").write_text("#!{}/bin/python\nimport gunicorn\n".format(root))
    (root / "bin" / "gunicorn").chmod(0o755)
    (root / "bin" / "python3.11").write_bytes(b"\x7fELF\0" + old)  # unrecorded binary: left
    os.symlink(str(root / "bin" / "python3.11"), str(root / "bin" / "python"))
    (root / "conda-meta" / "history").write_text("# cmd: create --prefix {}\n".format(root))
    (root / "conda-meta" / "libx-1.0-0.json").write_text(json.dumps({"paths_data": {
        "paths": [
            {"_path": "lib/libx.so", "prefix_placeholder": "/opt/anaconda1anaconda2anaconda3",
             "file_mode": "binary"},
            {"_path": "etc/paths.txt", "prefix_placeholder": "/opt/anaconda1anaconda2anaconda3",
             "file_mode": "text"},
            {"_path": "lib/untouched.txt"}]}}))
    shared = tmp_path / "pkgs-cache-copy.txt"  # conda hard-links from its package cache
    os.link(str(root / "etc" / "paths.txt"), str(shared))

    relocate_prefix(root, final)

    new = str(final).encode()
    data = (root / "lib" / "libx.so").read_bytes()
    assert len(data) == len(binary) and old not in data
    padding = 2 * (len(old) - len(new))
    assert data == b"\x7fELF\0\0" + new + b"/lib:" + new + b"/lib64" + b"\0" * padding + \
        b"\0tail\0" + b"\x01" * 8
    assert (root / "etc" / "paths.txt").read_text() == "prefix={0}\nssl={0}/ssl\n".format(final)
    assert str(root) in shared.read_text()  # the cache's copy is not written through
    assert (root / "lib" / "untouched.txt").read_text() == "not recorded: {}\n".format(root)
    assert (root / "bin" / "gunicorn").read_text().startswith("#!{}/bin/python\n".format(final))
    assert os.access(str(root / "bin" / "gunicorn"), os.X_OK)
    assert (root / "bin" / "python3.11").read_bytes() == b"\x7fELF\0" + old
    assert os.readlink(str(root / "bin" / "python")) == str(final / "bin" / "python3.11")
    assert str(final) in (root / "conda-meta" / "history").read_text()


def test_relocation_refuses_a_longer_path(tmp_path):
    with pytest.raises(BuildFailed, match="longer path"):
        relocate_prefix(tmp_path / "a", tmp_path / "a-much-longer-name")


@pytest.mark.slow
def test_the_whole_path_with_stand_ins_for_conda_and_conda_lock(tmp_path, monkeypatch, env_home):
    """prepare_environment(manager="conda") end to end, with shell scripts standing in for
    micromamba (it answers ``info --json``) and conda-lock (lock: writes a lock; install: makes a
    venv at --prefix): the project wheel goes in with --no-deps, the env is built aside, rewritten
    for its final folder and renamed, its metadata written, and the second call reuses it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool(bin_dir / "micromamba", """\
        echo '{"micromamba version": "1.5.8", "platform": "linux-64"}'
        """)
    tool(bin_dir / "conda-lock", """\
        cmd=$1; shift
        while [ $# -gt 0 ]; do
          case "$1" in --lockfile) out=$2 ;; --prefix) prefix=$2 ;; esac
          shift
        done
        echo "$cmd" >> "%s"
        if [ "$cmd" = lock ]; then
          printf 'version: 1\\npackage: [{name: python, manager: conda}]\\n' > "$out"
        else
          "%s" -m venv "$prefix"
        fi
        """ % (tmp_path / "calls", sys.executable))
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    monkeypatch.setitem(sys.modules, "conda_lock", None)  # so the conda-lock on PATH is used
    model = write(tmp_path / "m", conda_yaml="""\
        channels: [conda-forge]
        dependencies: [python=3.11, libfoo-not-on-pypi, pip, {pip: [cloudpickle]}]
        """)
    home = seed_home(env_home, tmp_path / "home")  # the session's wheel, when it has one
    said = []
    env = prepare_environment(model, manager="conda", home=home, progress=said.append)
    assert (env.manager, env.built, env.resolved) == ("conda", True, True)
    assert env.root == str(home / "envs" / env.key) and env.lock_path == env.root + ".lock"
    assert "cloudpickle" in env.requirements and "flask>=2.2" in env.requirements
    out = run_python(env.python, "import sys, mlflow_deploy.scoring; "
                     "print(sys.prefix, mlflow_deploy.scoring.__file__)", cwd=str(tmp_path))
    assert out.split()[0] == env.root and out.split()[1].startswith(env.root + "/")
    assert str(home / "envs" / ".building") not in (Path(env.root) / "bin" / "activate").read_text()
    assert not list((home / "envs" / ".building").iterdir())
    meta = EnvCache(home).read_metadata(env.key)
    assert (meta["manager"], meta["python_version"], meta["conda"]) == \
        ("conda", env.python_version, str(bin_dir / "micromamba"))
    assert meta["models"] == meta["folders"] == [str(model.resolve())]
    assert any(line.startswith("locking conda.yaml for linux-64") for line in said)
    assert said[-1].startswith("built env " + env.key)
    again = prepare_environment(model, manager="conda", home=home)
    assert (again.key, again.built, again.resolved, again.python_version) == \
        (env.key, False, False, env.python_version)
    assert (tmp_path / "calls").read_text().split() == ["lock", "install"]


# --- the real thing, where conda exists ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(find_conda() is None, reason="no conda, mamba or micromamba on PATH")
def test_conda_only_model_builds_with_conda(models, env_home, tmp_path):
    if find_conda_lock() is None:
        pytest.skip("conda-lock is not installed: pip install 'mlflow-deploy[conda]'")
    env = prepare_environment(models["conda_only"], manager="conda", home=env_home)
    assert env.manager == "conda" and env.built and env.python_version.startswith("3.11.")
    assert env.root == str(env_home / "envs" / env.key)
    out = run_python(env.python, "import sys, sklearn, cloudpickle; " + SERVER_IMPORTS + "; "
                     "print(sys.version_info[:2], sys.prefix)", cwd=str(tmp_path))
    assert "(3, 11)" in out and out.split()[-1] == env.root
    # console scripts name the final folder, not where the env was built
    assert open(os.path.join(env.root, "bin", "gunicorn")).readline().strip() == \
        "#!" + env.python
    meta = EnvCache(env_home).read_metadata(env.key)
    assert meta["manager"] == "conda" and meta["python_version"] == env.python_version
    assert not list((env_home / "envs" / ".building").iterdir())
    again = prepare_environment(models["conda_only"], manager="conda", home=env_home)
    assert (again.key, again.built, again.resolved) == (env.key, False, False)
