"""Deployments run inside their model's own environment, and an update can move a running
deployment to another environment (another Python, other pins) with gunicorn's USR2 re-exec."""
import shutil

import pytest
import requests
import yaml

from mlflow_deploy import online
from mlflow_deploy.envs import BuildFailed, PythonNotFound
from mlflow_deploy.envs.cache import CACHE_ENV, EnvCache
from tests.envs.conftest import OLD_SKLEARN, save_model
from tests.online.fixtures import private_home

pytestmark = pytest.mark.slow

FRAME = {"input_data": {"columns": ["x"], "index": [0, 1], "data": [[1], [2]]}}


@pytest.fixture
def deploy_home(tmp_path, monkeypatch, env_home):
    """A private deployment store whose deployments take their envs from the session's builds."""
    monkeypatch.setenv(CACHE_ENV, str(env_home / "envs"))
    yield from private_home(tmp_path, monkeypatch)


def served_version(deployment):
    return requests.get(deployment["scoring_uri"].replace("/score", "/version"), timeout=10).json()


def test_update_moves_the_server_to_the_new_models_env(deploy_home, built, models):
    newer, older = built("conda_only"), built("old_sklearn")
    created = online.create_deployment("pins", str(models["conda_only"]))
    assert created["environment"]["key"] == newer.key
    assert created["environment"]["python"] == newer.python
    assert created["environment"]["manager"] == "uv"
    first = online.predict("pins", FRAME)
    assert first[0] != OLD_SKLEARN.split("==")[1]

    updated = online.update_deployment("pins", model_uri=str(models["old_sklearn"]))
    # the same socket, a new master running the old model's Python 3.10 and its pinned sklearn
    assert updated["port"] == created["port"] and updated["revision"] == 2
    assert updated["environment"]["key"] == older.key
    assert updated["environment"]["python_version"].startswith("3.10.")
    assert online.predict("pins", FRAME) == [OLD_SKLEARN.split("==")[1]] * 2
    assert served_version(updated)["revision"] == 2
    assert online.get_deployment("pins")["environment"]["key"] == older.key
    assert online.environments_in_use() == {older.key: ["pins"]}


def test_a_model_with_an_unpinned_mlflow_deploys_and_serves(deploy_home, tmp_path):
    """`pip_requirements=[...]` often leaves mlflow bare: it is held to the mlflow the model was
    logged with (MLmodel), not left for the resolver to pick an old one that cannot import."""
    import mlflow

    model = save_model(tmp_path / "free", [OLD_SKLEARN, "pandas"], python="3.11")
    with open(model / "requirements.txt", "a") as f:
        f.write("mlflow\n")
    created = online.create_deployment("free", str(model))
    lock = open(created["environment"]["lock"]).read()
    assert "\nmlflow=={}".format(mlflow.__version__) in lock
    assert online.predict("free", FRAME) == [OLD_SKLEARN.split("==")[1]] * 2


def test_an_env_that_cannot_import_fails_the_update_and_the_old_revision_serves(
        deploy_home, built, models, tmp_path):
    """pandas 1.5.3 was compiled against numpy 1.x: beside numpy 2 it resolves but does not
    import. The build's smoke test says so; the running deployment is untouched."""
    built("conda_only")
    created = online.create_deployment("keep", str(models["conda_only"]))
    before = online.predict("keep", FRAME)
    broken = save_model(tmp_path / "broken", ["pandas==1.5.3", "numpy==2.0.0"], python="3.11")
    with pytest.raises(BuildFailed) as info:
        online.update_deployment("keep", model_uri=str(broken))
    message = str(info.value)
    assert "cannot run the scoring server" in message and "numpy" in message
    assert "numpy==2.0.0" in message and "pandas==1.5.3" in message
    log = message.split("full output: ")[1].split(";")[0]
    assert "Traceback" in open(log).read()
    assert online.predict("keep", FRAME) == before
    after = online.get_deployment("keep")
    assert after["revision"] == created["revision"] and after["state"] == created["state"]
    cache = EnvCache()
    assert not [k for k in cache.keys() if "pandas==1.5.3" in
                (cache.lock_file(k).read_text() if cache.lock_file(k).exists() else "")]


def test_unavailable_python_fails_the_create_and_leaves_nothing(deploy_home, models, tmp_path):
    model = tmp_path / "py35"
    shutil.copytree(models["old_sklearn"], model)
    env = yaml.safe_load((model / "python_env.yaml").read_text())
    env["python"] = "3.5.10"
    (model / "python_env.yaml").write_text(yaml.safe_dump(env))
    with pytest.raises(PythonNotFound, match="3.5"):
        online.create_deployment("py35", str(model))
    assert deploy_home.list_deployments() == []
    assert list((deploy_home.home / "deployments").iterdir()) == []


def test_a_scoring_script_runs_in_the_env_of_its_own_conda_file(deploy_home, built, tmp_path):
    built("old_sklearn")  # Python 3.10 and scikit-learn 1.5.2, as the conda file asks: a warm cache
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text(
        "import sys\nimport sklearn\n\n\ndef init():\n    pass\n\n\n"
        "def run(raw_data):\n    return {'sklearn': sklearn.__version__,\n"
        "            'python': '%d.%d' % sys.version_info[:2]}\n"
    )
    conda = tmp_path / "env.yml"
    conda.write_text(yaml.safe_dump({
        "name": "script-env", "channels": ["conda-forge"],
        "dependencies": ["python=3.10", "pip", {"pip": [OLD_SKLEARN]}],
    }))
    (tmp_path / "weights.bin").write_bytes(b"\0")
    created = online.create_deployment(
        "own-env", str(tmp_path / "weights.bin"),
        config={"code": str(code), "scoring_script": "score.py", "conda_file": str(conda)},
    )
    assert created["environment"]["python_version"].startswith("3.10.")
    answer = requests.post(created["scoring_uri"], data="{}", timeout=30)
    assert answer.json() == {"sklearn": OLD_SKLEARN.split("==")[1], "python": "3.10"}
    built_from = deploy_home.deployment_dir("own-env") / "environment" / "1" / "conda.yaml"
    assert yaml.safe_load(built_from.read_text()) == yaml.safe_load(conda.read_text())
