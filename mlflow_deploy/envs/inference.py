"""What the scoring server needs in every model env, merged with the model's own pins.

The additions are the project wheel's own dependencies (flask, gunicorn, pandas, numpy, ...) so the
list has one source of truth (pyproject.toml). The model's pins always win: ours are only added
beside them, and when a model's exact pin falls outside what the server needs, that is a
RequirementConflict naming both, before any resolver runs. ``mlflow-skinny`` is added only when
the model names neither mlflow nor mlflow-skinny; a model's mlflow that is not pinned exactly
(``pip_requirements=[...]`` often leaves it bare) is held to the mlflow the model was logged with
(MLmodel's ``mlflow_version``) where that fits, else to the range scoring/ supports: left free, the
resolver picked mlflow 1.27 beside a protobuf it cannot import. An unversioned name (MLflow writes
``setuptools`` into python_env.yaml's build dependencies) is not a pin.
"""
from typing import List

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from mlflow_deploy.envs.errors import RequirementConflict
from mlflow_deploy.envs.requirements import ModelRequirements, canonical_name

__all__ = ["inference_requirements", "OLD_MLFLOW_SETUPTOOLS"]

_MLFLOW_NAMES = {"mlflow", "mlflow-skinny"}
#: mlflow < 3 imports pkg_resources at import time; venvs made by uv (and Python >= 3.12's venv)
#: have no setuptools, and setuptools >= 82 has no pkg_resources (measured: 81 works but warns,
#: and setuptools' own warning says to pin below 81).
OLD_MLFLOW_SETUPTOOLS = "setuptools<81"


def inference_requirements(model: ModelRequirements, wheel_requires: List[str]) -> List[str]:
    """The lines to add to the model's for the scoring server (the wheel itself goes --no-deps)."""
    added: List[str] = []
    model_mlflow = [r for r in model.requirements if canonical_name(r.name) in _MLFLOW_NAMES]
    for line in wheel_requires:
        ours = Requirement(line)
        name = canonical_name(ours.name)
        if ours.marker is not None and not ours.marker.evaluate():
            continue
        if name in _MLFLOW_NAMES:
            # the model's mlflow pin stays; it must still be a version scoring/ runs on
            for theirs in model_mlflow:
                _check_pin(theirs, ours, model.source, compare_specifier=ours.specifier)
            if not model_mlflow:
                added.append(line)
            if model_mlflow and not any(_exact(r.specifier) for r in model_mlflow):
                added.append(_mlflow_bound(model_mlflow[0].name, model, ours.specifier))
            continue
        for theirs in model.named(name):
            _check_pin(theirs, ours, model.source, compare_specifier=ours.specifier)
        added.append(line)
    mlflow_specs = [r.specifier for r in model_mlflow] + [
        Requirement(a).specifier for a in added if canonical_name(Requirement(a).name)
        in _MLFLOW_NAMES]
    if model_mlflow and any(_only_before_3(s) for s in mlflow_specs) \
            and not any(str(r.specifier) for r in model.named("setuptools")):
        added.append(OLD_MLFLOW_SETUPTOOLS)
    return added


def _exact(spec: SpecifierSet) -> bool:
    return any(c.operator in ("==", "===") and "*" not in c.version for c in spec)


def _mlflow_bound(name: str, model: ModelRequirements, supported: SpecifierSet) -> str:
    """``name==<the MLmodel's mlflow_version>`` when that release is one the model's own
    specifiers and scoring/ both accept, else ``name<the supported range>``."""
    try:
        logged = Version(model.mlflow_version or "")
    except InvalidVersion:
        logged = None
    if logged is not None and not logged.is_devrelease and not logged.local \
            and supported.contains(logged, prereleases=True) \
            and all(r.specifier.contains(logged, prereleases=True) for r in model.named(name)):
        return "{}=={}".format(name, logged)
    return "{}{}".format(name, supported)


def _only_before_3(spec: SpecifierSet) -> bool:
    """True when the specifier allows no mlflow 3.x (``==2.7.1``, ``~=2.9``, ``<3``)."""
    three = Version("3")
    for clause in spec:
        try:
            version = Version(clause.version.rstrip(".*"))
        except InvalidVersion:
            continue
        if clause.operator in ("==", "===", "~=") and version.major < 3:
            return True
        if (clause.operator == "<" and version <= three) or (clause.operator == "<=" and
                                                              version < three):
            return True
    return False


def _check_pin(theirs: Requirement, ours: Requirement, source: str,
               compare_specifier: SpecifierSet) -> None:
    """An exact pin of the model's (``==X``) must satisfy what the server needs."""
    if theirs.marker is not None and not theirs.marker.evaluate():
        return
    for spec in theirs.specifier:
        if spec.operator in ("==", "===") and "*" not in spec.version:
            if not compare_specifier.contains(spec.version, prereleases=True):
                raise RequirementConflict(
                    "the model requires '{}' ({}) but the scoring server needs '{}': pin a "
                    "version that satisfies both, or use env_manager: local with an environment "
                    "you control".format(theirs, source, ours))
