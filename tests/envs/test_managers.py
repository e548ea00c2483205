"""The pieces every env manager shares: the registry prepare_environment picks from, build aside
then rename (cache.build_aside), and the module layout of envs/ (no import cycles)."""
import ast
import os
import stat
from pathlib import Path

import pytest

import mlflow_deploy.envs as envs
from mlflow_deploy.envs import MANAGERS
from mlflow_deploy.envs.cache import build_aside
from mlflow_deploy.envs.prepare import _MANAGERS


def test_every_env_manager_name_has_one_manager():
    assert sorted(_MANAGERS) == sorted(MANAGERS)
    for name, manager in _MANAGERS.items():
        assert manager.name == name and callable(manager().prepare)
    assert sorted(n for n, m in _MANAGERS.items() if m.installs_packages) == ["uv", "virtualenv"]


def test_build_aside_renames_the_finished_folder_into_place(tmp_path):
    target, scratch_dir = tmp_path / "envs" / "k1", tmp_path / "envs" / ".building"
    with build_aside(target, scratch_dir, "k1-") as scratch:
        assert scratch.parent == scratch_dir and scratch.name.startswith("k1-")
        assert not target.exists()  # nothing where it is looked up until it is whole
        (scratch / "bin").mkdir()
        (scratch / "bin" / "python").write_text("x")
    assert (target / "bin" / "python").read_text() == "x"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755  # others may use it, as any env
    assert not list(scratch_dir.iterdir())


def test_build_aside_leaves_nothing_when_the_build_fails(tmp_path):
    target, scratch_dir = tmp_path / "k1", tmp_path / ".building"
    with pytest.raises(RuntimeError, match="installer failed"):
        with build_aside(target, scratch_dir, "k1-") as scratch:
            (scratch / "half").write_text("x")
            raise RuntimeError("installer failed")
    assert not target.exists() and not list(scratch_dir.iterdir())


def test_build_aside_clears_a_killed_builds_leftovers_and_an_incomplete_target(tmp_path):
    target, scratch_dir = tmp_path / "k1", tmp_path / ".building"
    for name in ("k1-abc", "k1-removing-def", "k2-ghi"):  # k2's build may be running
        (scratch_dir / name).mkdir(parents=True)
    (target / "lib").mkdir(parents=True)  # a folder without what makes it complete
    with build_aside(target, scratch_dir, "k1-") as scratch:
        assert sorted(p.name for p in scratch_dir.iterdir()) == sorted(["k2-ghi", scratch.name])
        assert not target.exists()
        (scratch / "done").write_text("x")
    assert sorted(os.listdir(str(target))) == ["done"]
    assert [p.name for p in scratch_dir.iterdir()] == ["k2-ghi"]


def test_envs_modules_import_each_other_without_cycles():
    """Every import, lazy ones too: a module that needs another's type gets it from a module both
    import (environment.py), never by importing its caller inside a function."""
    root = Path(envs.__file__).parent
    graph = {}
    for path in root.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            deps.update(n.split(".")[2] for n in names if n.startswith("mlflow_deploy.envs."))
        graph[path.stem] = deps - {path.stem}

    def reaches(start, goal, seen):
        for dep in graph.get(start, ()):
            if dep == goal or (dep not in seen and not seen.add(dep) and reaches(dep, goal, seen)):
                return True
        return False

    assert [m for m in sorted(graph) if reaches(m, m, set())] == []
