"""Imports point one way (DESIGN §2): scoring/ is a leaf that runs inside model environments,
and the control plane's layers never import the ones above them."""
import ast
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "mlflow_deploy"
SCORING_THIRD_PARTY = {"numpy", "pandas", "mlflow", "flask", "werkzeug", "orjson"}
# what each layer may not import (its callers)
FORBIDDEN = {
    "errors": {"model", "store", "online", "batch", "envs", "specs", "cli", "client"},
    "model": {"store", "online", "batch", "cli", "client"},
    "store": {"online", "batch", "cli", "client"},
    "envs": {"online", "batch", "cli", "client"},
    "specs": {"online", "batch", "cli", "client"},
    "online": {"cli"},
    "batch": {"cli"},
}


def imported(path):
    """Top-level names imported by a module, with relative imports resolved to mlflow_deploy.*"""
    tree = ast.parse(path.read_text())
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
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
            assert path.name == "gunicorn_conf.py"
        else:
            assert top in SCORING_THIRD_PARTY or top in sys.stdlib_module_names, \
                "{} imports {}: scoring/ runs inside model envs with few packages".format(
                    path.name, name)
    if path.name != "app.py":
        assert not any(n.split(".")[0] in ("flask", "werkzeug") for n in imported(path)), \
            "only app.py may import flask"


def layer_of(path):
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    return rel[0]


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py")
                                        if "scoring" not in p.parts),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_control_plane_layers(path):
    forbidden = FORBIDDEN.get(layer_of(path), set())
    for name in imported(path):
        parts = name.split(".")
        if parts[0] == "mlflow_deploy" and len(parts) > 1:
            assert parts[1] not in forbidden, "{} imports {}".format(path, name)
