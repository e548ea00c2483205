"""Imports point one way: scoring/ is a leaf that runs inside model environments, the control
plane's layers never import the ones above them, online and batch stay apart, and the CLI is the
top: nothing imports it but its own ``__main__`` and the ``mlflow-deploy`` entry point. The CLI
starts without mlflow."""
import ast
import os
import pathlib
import sys

import pytest

from tests.imports import modules_after

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mlflow_deploy"
SCORING_THIRD_PARTY = {"numpy", "pandas", "mlflow", "flask", "werkzeug", "orjson",
                       "prometheus_client"}
# chooses its multiprocess mode when first imported, which must come after the server sets its
# directory: imported inside functions only (the fork server imports the modules long before)
LATE_IMPORTS = {"prometheus_client"}
# optional in a model env, imported inside the functions that need them (batch's readers and
# writers): a scoring server or a script's env without them still starts
SCORING_OPTIONAL = {"pyarrow", "PIL"}
# what each layer may not import (its callers); batch/ is held to its rule once it exists
FORBIDDEN = {
    "errors": {"model", "store", "envs", "online", "batch", "testing", "cli"},
    # where progress lines go: every layer says them, so it reaches none
    "progress": {"errors", "specs", "names", "settings", "model", "store", "envs", "revisions",
                 "online", "batch", "testing", "cli"},
    "specs": {"model", "store", "envs", "online", "batch", "testing", "cli"},
    "names": {"model", "store", "envs", "online", "batch", "testing", "cli"},
    "settings": {"model", "store", "online", "batch", "testing", "cli"},
    "model": {"store", "online", "batch", "cli"},
    "store": {"online", "batch", "cli"},
    "envs": {"online", "batch", "cli"},
    # what online and batch deployments share: it may reach neither
    "revisions": {"online", "batch", "testing", "cli"},
    # what the online endpoint's page and the batch jobs' page share: it may reach neither
    "pages": {"errors", "specs", "names", "settings", "model", "store", "envs", "revisions",
              "online", "batch", "testing", "cli"},
    "testing": {"store", "online", "batch", "cli"},
    "online": {"batch", "cli"},
    "batch": {"online", "cli"},
}
# narrow exceptions to FORBIDDEN: (module, the one module it may import from a layer above)
ALLOWED = {
    # the testing helpers' real server is started, awaited and stopped by the supervisor's own
    # process helpers (no second copy of them), and uses nothing of the deployments
    ("testing/served.py", "mlflow_deploy.online.supervisor"),
}


def imported(path):
    """Modules (and names from them) imported by a module, with relative imports resolved to
    mlflow_deploy.*: `from mlflow_deploy import cli` imports mlflow_deploy.cli."""
    tree = ast.parse(path.read_text())
    parts = path.relative_to(ROOT).with_suffix("").parts
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level]
                module = ".".join(base + ((node.module,) if node.module else ()))
                names.update([module] if node.module else
                             [module + "." + alias.name for alias in node.names])
            else:
                names.add(node.module)
                names.update(node.module + "." + alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted((PACKAGE / "scoring").glob("*.py")), ids=lambda p: p.name)
def test_scoring_is_a_leaf(path):
    for name in imported(path):
        top = name.split(".")[0]
        if top == "mlflow_deploy":
            assert name.startswith("mlflow_deploy.scoring") or name in (
                "mlflow_deploy", "mlflow_deploy.__version__"), \
                "{} imports {}: scoring/ must not reach the control plane".format(path.name, name)
        elif top == "gunicorn":
            # gunicorn's settings, its worker class, the fork server that runs gunicorn in a
            # forked child, and the build's smoke test that checks the env can import it
            assert path.name in ("gunicorn_conf.py", "worker.py", "forkserver.py", "smoke.py")
        elif top in LATE_IMPORTS:
            assert top not in module_level(path), \
                "{} imports {} at module level: it must be imported once the server's metrics " \
                "directory is set".format(path.name, top)
        elif top in SCORING_OPTIONAL:
            assert top not in module_level(path), \
                "{} imports {} at module level: it is optional in model envs".format(
                    path.name, top)
        else:
            assert top in SCORING_THIRD_PARTY or top in sys.stdlib_module_names, \
                "{} imports {}: scoring/ runs inside model envs with few packages".format(
                    path.name, name)
    if path.name not in ("app.py", "smoke.py"):
        assert not any(n.split(".")[0] in ("flask", "werkzeug") for n in imported(path)), \
            "only app.py may import flask"


def module_level(path):
    """Top-level packages a module imports when it is imported (not inside a function)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def layer_of(path):
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    return rel[0]


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py")
                                        if "scoring" not in p.parts),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_control_plane_layers(path):
    forbidden = FORBIDDEN.get(layer_of(path), set())
    allowed = [module for where, module in ALLOWED
               if path.relative_to(PACKAGE).as_posix() == where]
    for name in imported(path):
        parts = name.split(".")
        if any(name == module or name.startswith(module + ".") for module in allowed):
            continue
        if parts[0] == "mlflow_deploy" and len(parts) > 1:
            assert parts[1] not in forbidden, "{} imports {}".format(path, name)


def _outside_the_cli():
    inside = PACKAGE / "cli"
    plugins = sorted((ROOT / "plugins").rglob("*.py"))
    return sorted(p for p in PACKAGE.rglob("*.py") if inside not in p.parents) + plugins


@pytest.mark.parametrize("path", _outside_the_cli(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_imports_the_cli(path):
    """The CLI is the top layer: only its console script and `python -m` reach it (its
    ``__main__``), so a command can change without breaking a library caller."""
    for name in imported(path):
        assert name != "mlflow_deploy.cli" and not name.startswith("mlflow_deploy.cli."), \
            "{} imports {}".format(path.relative_to(ROOT), name)


# The control plane's CLI must start without mlflow (about 1.7 s to import): its error tree names
# MLflow's codes as strings, and the modules that need mlflow import it inside their functions.
# Every command module is imported, so a new noun is held to it too.
NO_MLFLOW_AT_START = sorted(
    ["mlflow_deploy.cli." + p.stem for p in (PACKAGE / "cli").glob("*.py") if p.stem != "__init__"]
) + ["mlflow_deploy.cli", "mlflow_deploy.errors", "mlflow_deploy.specs", "mlflow_deploy.envs",
     "mlflow_deploy.envs.errors", "mlflow_deploy.model", "mlflow_deploy.testing.check",
     "mlflow_deploy.testing.validate"]


def _mlflow_modules_after(code, env=None):
    return modules_after(code, ["mlflow"], env)


def test_the_cli_imports_no_mlflow():
    done, modules = _mlflow_modules_after("import " + ", ".join(NO_MLFLOW_AT_START))
    assert done.returncode == 0, done.stderr
    assert modules == [], "importing the CLI imported mlflow: {}".format(modules)


def test_env_commands_run_without_mlflow(tmp_path):
    env = dict(os.environ, MLFLOW_DEPLOY_HOME=str(tmp_path / "home"),
               MLFLOW_DEPLOY_ENV_CACHE=str(tmp_path / "envs"))
    done, modules = _mlflow_modules_after(
        "from mlflow_deploy.cli import main\nmain(['env', 'list', '--format', 'json'])", env)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
    assert modules == [], "`mlflow-deploy env list` imported mlflow: {}".format(modules)


@pytest.mark.slow
def test_env_build_of_a_local_folder_runs_without_mlflow(example_model_dirs, shared_env_cache):
    """`mlflow-deploy env build DIR` on a built env: well under a second, because nothing on its
    path imports mlflow (the first run may build the env into the suite's shared cache)."""
    command = "from mlflow_deploy.cli import main\nmain(['env', 'build', {!r}])".format(
        str(example_model_dirs["diabetes"]))
    for _ in range(2):  # build (or reuse), then certainly reuse
        done, modules = _mlflow_modules_after(command, dict(os.environ))
        assert done.returncode == 0, done.stderr
        assert modules == [], "`mlflow-deploy env build` imported mlflow: {}".format(modules)
    assert "status: reused" in done.stdout


def test_the_online_control_plane_imports_no_pandas_nor_the_env_builders():
    """Every `online-*` command imports mlflow_deploy.online: pandas' import was most of a
    scale-up's own time, the env builders (and packaging, through them) a quarter of the rest.
    Payloads import pandas where they are made, a new revision the builders when it builds."""
    builders = ["mlflow_deploy.envs." + name for name in (
        "prepare", "build", "lock", "wheel", "managers", "conda", "environment")]
    done, modules = modules_after("import mlflow_deploy.online",
                                  ["pandas", "numpy", "packaging"] + builders)
    assert done.returncode == 0, done.stderr
    assert modules == [], modules


def test_the_gateway_starts_without_pandas():
    """An endpoint's creation waits for its gateway to listen, and importing pandas and numpy
    (for the batching's look at a payload's form) was two thirds of the gateway's imports."""
    done, modules = modules_after("import mlflow_deploy.online.gateway", ["pandas", "numpy"])
    assert done.returncode == 0, done.stderr
    assert modules == [], modules
