"""Read what a model needs from its own files, the way MLflow does.

Source of truth, in order, as MLflow reads them: ``python_env.yaml`` (+ the ``requirements.txt`` it names),
else ``conda.yaml`` (its ``pip:`` list, conda packages mapped to PyPI names through
``conda_names``, ``python=`` and ``pip`` understood), else a bare ``requirements.txt`` with the
Python version from MLmodel. Anything that cannot be used is a RequirementsError naming it.
"""
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml
from packaging.requirements import InvalidRequirement, Requirement

from mlflow_deploy.envs.conda_names import CONDA_ONLY, CONDA_TO_PYPI
from mlflow_deploy.envs.errors import RequirementsError
from mlflow_deploy.envs.pythons import parse_python_version

__all__ = ["ModelRequirements", "read_model_requirements", "conda_to_pip", "canonical_name",
           "load_yaml", "requirement_lines", "mlmodel_python"]

#: Installer-only packages a python_env.yaml lists as build dependencies: uv and venv bring their own.
_INSTALLER_TOOLS = {"pip", "wheel"}


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class ModelRequirements:
    """The model's own requirements, normalised; ``lines`` go verbatim into the resolver's input."""

    python: Optional[Tuple[int, int]]  # (major, minor) asked for; None: no preference
    lines: List[str] = field(default_factory=list)  # requirement strings and pip option lines
    source: str = ""  # the file(s) they came from, for messages
    mlflow_version: Optional[str] = None  # MLmodel's: the mlflow the model was logged with

    @property
    def requirements(self) -> List[Requirement]:
        """The lines that are named requirements (URLs without a name and options are skipped)."""
        parsed = []
        for line in self.lines:
            if line.startswith("-"):
                continue
            try:
                parsed.append(Requirement(line))
            except InvalidRequirement:
                continue
        return parsed

    def named(self, name: str) -> List[Requirement]:
        wanted = canonical_name(name)
        return [r for r in self.requirements if canonical_name(r.name) == wanted]


def read_model_requirements(model_dir) -> ModelRequirements:
    model = _read_model_requirements(Path(model_dir))
    model.mlflow_version = mlmodel_mlflow_version(Path(model_dir))
    return model


def _read_model_requirements(model_dir: Path) -> ModelRequirements:
    python_env = model_dir / "python_env.yaml"
    conda = model_dir / "conda.yaml"
    requirements_txt = model_dir / "requirements.txt"
    if python_env.is_file():
        return _from_python_env(python_env)
    if conda.is_file():
        return _from_conda(conda)
    if requirements_txt.is_file():
        return ModelRequirements(python=mlmodel_python(model_dir),
                                 lines=_read_requirements_file(requirements_txt),
                                 source=requirements_txt.name)
    raise RequirementsError("the model folder has no python_env.yaml, conda.yaml or "
                            "requirements.txt: cannot tell which packages it needs")


def load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RequirementsError("{}: not readable YAML ({})".format(
            path.name, str(exc).splitlines()[0])) from exc
    if not isinstance(data, dict):
        raise RequirementsError("{}: expected a mapping at the top level".format(path.name))
    return data


def _from_python_env(path: Path) -> ModelRequirements:
    data = load_yaml(path)
    python = data.get("python")
    if not python:
        raise RequirementsError("{}: no 'python' version".format(path.name))
    lines: List[str] = []
    for dep in data.get("build_dependencies") or []:
        dep = str(dep).strip()
        try:
            if canonical_name(Requirement(dep).name) in _INSTALLER_TOOLS:
                continue
        except InvalidRequirement:
            pass
        lines.extend(requirement_lines([dep], path.parent, path.name))
    lines.extend(requirement_lines([str(d) for d in data.get("dependencies") or []],
                                    path.parent, path.name))
    names = [path.name] + sorted({n for n in _referenced_files(data) if (path.parent / n).exists()})
    return ModelRequirements(python=parse_python_version(python, path.name),
                             lines=_dedupe(lines), source=" + ".join(names))


def _referenced_files(data: dict) -> List[str]:
    deps = [str(d).strip() for d in data.get("dependencies") or []]
    return [d.split(None, 1)[1] for d in deps if d.startswith("-r ") and " " in d]


def _from_conda(path: Path) -> ModelRequirements:
    data = load_yaml(path)
    python = None
    lines: List[str] = []
    unmappable = []
    for dep in data.get("dependencies") or []:
        if isinstance(dep, dict):
            if set(dep) - {"pip"}:
                raise RequirementsError("{}: unexpected entry {} in dependencies".format(
                    path.name, ", ".join("'{}'".format(k) for k in dep)))
            lines.extend(requirement_lines([str(d) for d in dep.get("pip") or []],
                                            path.parent, path.name))
            continue
        name, spec = conda_to_pip(str(dep))
        if name == "python":
            python = parse_python_version(spec or "", path.name) if spec else None
        elif name in CONDA_ONLY:
            continue
        elif name in CONDA_TO_PYPI:
            lines.append(CONDA_TO_PYPI[name] + spec)
        else:
            unmappable.append(name)
    if unmappable:
        raise RequirementsError(
            "{}: no PyPI package is known for the conda package(s) {}; move them to the pip: "
            "list under their PyPI names, or use env_manager: conda where conda is installed"
            .format(path.name, ", ".join("'{}'".format(n) for n in unmappable)))
    return ModelRequirements(python=python, lines=_dedupe(lines), source=path.name)


_CONDA_SPEC = re.compile(r"^(?:[\w.-]+::)?([A-Za-z0-9_.-]+)\s*(.*)$")


def conda_to_pip(dep: str) -> Tuple[str, str]:
    """'numpy=1.23.5' -> ('numpy', '==1.23.5.*'); 'numpy 1.23.5 py310_0' -> ('numpy', '==1.23.5');
    'conda-forge::scipy>=1.9' -> ('scipy', '>=1.9'). The name is lower-cased."""
    match = _CONDA_SPEC.match(dep.strip())
    if not match:
        raise RequirementsError("conda.yaml: cannot read dependency '{}'".format(dep))
    name, rest = match.group(1).lower(), match.group(2).strip()
    if not rest:
        return name, ""
    if re.match(r"^[\d*]", rest):  # 'numpy 1.23.5 py310_0': version then build string
        version = rest.split()[0]
        return name, "==" + version
    if rest.startswith("=") and not rest.startswith("=="):  # 'numpy=1.23' means 1.23.*
        version = rest[1:].split("=")[0]
        if version.endswith("*"):
            return name, "==" + version
        return name, "==" + version + ".*"
    return name, rest.replace(" ", "")


def requirement_lines(entries: List[str], base: Path, source: str, depth: int = 0) -> List[str]:
    """Expand ``-r file`` (relative to the model folder), drop comments and blanks, and reject
    what cannot be installed into a locked, hashed environment (editables)."""
    lines: List[str] = []
    for raw in entries:
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ", "-r", "--requirement=")):
            name = re.split(r"[\s=]+", line, maxsplit=1)[1] if " " in line or "=" in line \
                else line[2:]
            target = base / name.strip()
            if depth > 5 or not target.is_file():
                raise RequirementsError("{}: '-r {}' names no file in the model folder".format(
                    source, name.strip()))
            lines.extend(_read_requirements_file(target, depth + 1))
        elif line.startswith(("-e", "--editable")):
            raise RequirementsError("{}: editable requirements cannot be installed into a "
                                    "locked environment".format(source))
        elif line.startswith("-"):
            lines.append(line)  # index options (--extra-index-url ...) go to the resolver as is
        else:
            try:
                Requirement(line)
            except InvalidRequirement as exc:
                if "://" not in line and not line.startswith((".", "/")):
                    raise RequirementsError("{}: invalid requirement '{}' ({})".format(
                        source, line, str(exc).splitlines()[0])) from exc
            lines.append(line)
    return lines


def _read_requirements_file(path: Path, depth: int = 0) -> List[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RequirementsError("{}: not readable".format(path.name)) from exc
    return requirement_lines(text.splitlines(), path.parent, path.name, depth)


def mlmodel_python(model_dir: Path) -> Optional[Tuple[int, int]]:
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        return None
    flavors: Dict = load_yaml(mlmodel).get("flavors") or {}
    version = (flavors.get("python_function") or {}).get("python_version")
    return parse_python_version(version, "MLmodel") if version else None


def mlmodel_mlflow_version(model_dir: Path) -> Optional[str]:
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        return None
    version = load_yaml(mlmodel).get("mlflow_version")
    return str(version) if version else None


def _dedupe(lines: List[str]) -> List[str]:
    seen, out = set(), []
    for line in lines:
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out
