"""`mlflow-deploy package`, then the env built from the package with no network at all.

The packaged model pins an old scikit-learn and needs a requirement published only as an sdist, in
a folder that is deleted once the package is made: the wheelhouse must carry everything.
"""
import hashlib
import json
import re
import shutil
import time

import pytest
from click.testing import CliRunner
from packaging.utils import canonicalize_name, parse_wheel_filename

import mlflow_deploy
from mlflow_deploy.cli import cli
from mlflow_deploy.envs import PackageError, PythonNotFound, prepare_environment
from mlflow_deploy.envs.cache import CACHE_ENV, HOME_ENV, EnvCache

from .conftest import (OLD_SKLEARN, make_sdist, run_cli, run_python, save_model, summary,
                       unshare_available)

SDIST_ONLY = "mdeploy-sdist-only"
SERVER_IMPORTS = "import flask, gunicorn, mlflow.pyfunc, mlflow_deploy.scoring.app"


@pytest.fixture(scope="module")
def package(tmp_path_factory, env_home):
    """(package folder, the model it was made from, the CLI's result), made once."""
    root = tmp_path_factory.mktemp("package")
    links = root / "links"
    links.mkdir()
    make_sdist(links, SDIST_ONLY, "0.1")
    model = save_model(root / "model", [OLD_SKLEARN], python="3.10.11")
    with open(str(model / "requirements.txt"), "a") as f:
        f.write("--find-links {}\n{}==0.1\n".format(links, SDIST_ONLY))
    out = root / "pkg"
    proc = run_cli(["package", model, "--output", out], home=env_home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.rmtree(str(links))  # from now on the package alone must do
    return out, model, proc


def invoke(args, home):
    return CliRunner().invoke(cli, [str(a) for a in args],
                              env={HOME_ENV: str(home), CACHE_ENV: None})


@pytest.mark.slow
def test_package_holds_the_model_the_lock_a_wheel_per_requirement_and_a_manifest(package):
    out, model, proc = package
    assert (out / "model" / "MLmodel").is_file() and (out / "model" / "python_env.yaml").is_file()
    manifest = json.loads((out / "package.json").read_text())
    assert manifest["format"] == 1 and manifest["python"] == "3.10"
    assert manifest["python_version"].startswith("3.10.")
    assert manifest["model_uri"] == str(model)
    assert manifest["mlflow_deploy_version"] == mlflow_deploy.__version__
    assert re.fullmatch(r"[0-9a-f]{16}", manifest["env_key"])

    lock = (out / "requirements.lock").read_text()
    assert "scikit-learn==1.5.2" in lock and "--hash=sha256:" in lock
    assert not [l for l in lock.splitlines() if l.startswith("-")]  # the model's --find-links
    locked = {canonicalize_name(m) for m in re.findall(r"^([A-Za-z0-9][\w.-]*)==", lock, re.M)}
    wheels = {canonicalize_name(parse_wheel_filename(p.name)[0]): p
              for p in (out / "wheelhouse").glob("*.whl")}
    assert locked and locked <= set(wheels)
    assert set(wheels) - locked == {"mlflow-deploy"}
    assert (out / "wheelhouse" / manifest["project_wheel"]).is_file()
    # the sdist-only requirement was built into a wheel, and the lock checks that wheel's hash
    built = wheels[SDIST_ONLY]
    assert hashlib.sha256(built.read_bytes()).hexdigest() in lock

    assert summary(proc.stdout)["package"] == str(out)
    assert "pip wheel" in proc.stderr  # progress went to stderr
    assert not list(out.parent.glob(".pkg.partial-*"))


@pytest.mark.slow
def test_offline_build_from_the_package_with_empty_caches(package, tmp_path):
    """No network (a new network namespace), an empty env cache and an empty uv cache: the env is
    built from the wheelhouse alone, for a copy of the model, and serves imports."""
    if not unshare_available():
        pytest.skip("cannot make a network namespace here")
    out, _model, _proc = package
    copy = tmp_path / "elsewhere" / "model"
    shutil.copytree(str(out / "model"), str(copy))
    home, uv_cache = tmp_path / "home", tmp_path / "uv-cache"
    home.mkdir()
    uv_cache.mkdir()
    offline = dict(home=home, wrapper=("unshare", "-rn"), UV_CACHE_DIR=uv_cache)
    started = time.monotonic()
    proc = run_cli(["env", "build", copy, "--package", out], **offline)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = summary(proc.stdout)
    manifest = json.loads((out / "package.json").read_text())
    assert result["status"] == "built" and result["key"] == manifest["env_key"]
    assert any(uv_cache.iterdir())  # uv really started from this empty cache
    print("offline build from the package: {:.1f} s".format(seconds))
    version = run_python(result["python"], "import sklearn, mdeploy_sdist_only; " + SERVER_IMPORTS
                         + "; print(sklearn.__version__, mdeploy_sdist_only.SOURCE)")
    assert version.split(None, 1) == ["1.5.2", "built from the sdist\n"]
    assert EnvCache(home).read_metadata(result["key"])["package"] == str(out)

    again = run_cli(["env", "build", copy, "--package", out], **offline)
    assert again.returncode == 0 and summary(again.stdout)["status"] == "reused"


@pytest.mark.slow
def test_package_for_a_python_this_machine_lacks(package, tmp_path):
    out, _model, _proc = package
    other = tmp_path / "pkg"
    other.mkdir()
    manifest = json.loads((out / "package.json").read_text())
    manifest.update(python="3.99", python_version="3.99.0")
    (other / "package.json").write_text(json.dumps(manifest))
    shutil.copy2(str(out / "requirements.lock"), str(other / "requirements.lock"))
    (other / "wheelhouse").symlink_to(out / "wheelhouse")
    with pytest.raises(PythonNotFound, match=r"package was made for Python 3\.99"):
        prepare_environment(out / "model", package=other, home=tmp_path / "home")
    result = invoke(["env", "build", out / "model", "--package", other], tmp_path / "home")
    assert result.exit_code == 7
    assert result.stderr.startswith("Error: the package was made for Python 3.99")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.slow
def test_package_of_another_model_is_refused(package, models, tmp_path):
    out, _model, _proc = package
    with pytest.raises(PackageError, match="not those the package was made for"):
        prepare_environment(models["conda_only"], package=out, home=tmp_path / "home")


def test_a_folder_that_is_not_a_package(models, tmp_path):
    result = invoke(["env", "build", models["old_sklearn"], "--package", tmp_path], tmp_path)
    assert result.exit_code == 7
    assert result.stderr == ("Error: the package folder has no package.json: it was not written "
                             "by `mlflow-deploy package`\n")


def test_package_into_a_folder_that_is_not_empty(models, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result = invoke(["package", models["old_sklearn"], "--output", tmp_path / "out"], tmp_path)
    assert result.exit_code == 4
    assert result.stderr == "Error: The output folder already exists and is not empty (--output).\n"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


@pytest.mark.slow
def test_an_sdist_that_does_not_build_is_named(env_home, tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    make_sdist(links, "mdeploy-sdist-broken", "0.1", broken=True)
    model = save_model(tmp_path / "model", ["cloudpickle"], python="3.11")
    with open(str(model / "requirements.txt"), "a") as f:
        f.write("--find-links {}\nmdeploy-sdist-broken==0.1\n".format(links))
    proc = run_cli(["package", model, "--output", tmp_path / "pkg"], home=env_home)
    assert proc.returncode == 7, proc.stderr[-3000:]
    assert "Error: no wheel could be built for the locked requirement(s) 'mdeploy-sdist-broken'" \
        in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "pkg").exists() and not list(tmp_path.glob(".pkg.partial-*"))
