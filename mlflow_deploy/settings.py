"""The checks of deployment settings that online and batch deployments share: how a model's
environment is built (``env_manager``, ``python_version_policy``, ``package``, ``exclude_newer``),
a scoring script's files (``code``, ``scoring_script``, ``conda_file``), and the value parsers
each kind's own settings are made of.

Values arrive as strings (``-C key=value``, ``mlflow-deploy/<setting>`` tags) or as Python values
(the API); each key is parsed on its own, and an error names the key, never its value.
"""

import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Protocol

from mlflow_deploy.envs import MANAGERS, POLICIES
from mlflow_deploy.errors import InvalidParameter

__all__ = ["integer", "boolean", "choice", "existing", "exclude_newer", "relative_file",
           "json_object", "environment_variables", "check_script_settings", "ScriptSettings",
           "with_script_and_tags",
           "ENVIRONMENT_PARSERS", "SCRIPT_PARSERS", "LOCAL_PARSERS", "ENVIRONMENT_HELP",
           "SCRIPT_HELP"]

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def integer(key: str, low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise InvalidParameter(f"Config '{key}' must be an integer.")
        try:
            number = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise InvalidParameter(f"Config '{key}' must be an integer.") from None
        if not low <= number <= high:
            raise InvalidParameter(f"Config '{key}' must be between {low} and {high}.")
        return number

    return parse


def boolean(key: str) -> Callable[[Any], bool]:
    def parse(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise InvalidParameter(f"Config '{key}' must be true or false.")

    return parse


def choice(key: str, choices) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise InvalidParameter(f"Config '{key}' must be one of: " + ", ".join(choices) + ".")
        return text

    return parse


def existing(key: str, kind: str) -> Callable[[Any], Optional[str]]:
    """An existing ``kind`` ("folder" or "file"), made absolute: servers and workers run
    elsewhere."""
    exists = Path.is_dir if kind == "folder" else Path.is_file

    def parse(value: Any) -> Optional[str]:
        text = str(value).strip() if value is not None else ""
        if not text:
            return None
        path = Path(text).expanduser().resolve()
        if not exists(path):
            raise InvalidParameter(f"Config '{key}' must name an existing {kind}.")
        return str(path)

    return parse


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?")


def exclude_newer(value: Any) -> Optional[str]:
    """A date or an RFC 3339 time, as uv's --exclude-newer takes it."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    if not _DATE.fullmatch(text):
        raise InvalidParameter(
            "Config 'exclude_newer' must be a date (YYYY-MM-DD) or a UTC time "
            "(YYYY-MM-DDTHH:MM:SSZ).")
    return text


def relative_file(key: str) -> Callable[[Any], Optional[str]]:
    """A path inside the code folder: relative, and never climbing out of it."""

    def parse(value: Any) -> Optional[str]:
        text = str(value).strip() if value is not None else ""
        if not text:
            return None
        path = Path(text)
        if path.is_absolute() or ".." in path.parts or path.suffix != ".py":
            raise InvalidParameter(
                f"Config '{key}' must be a .py file path relative to the code folder."
            )
        return path.as_posix()

    return parse


def json_object(key: str, value: Any, maps: str) -> Mapping[str, Any]:
    """A mapping, or its JSON text (what ``-C key='{...}'`` gives)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise InvalidParameter(f"Config '{key}' is not a JSON object.") from None
    if not isinstance(value, Mapping):
        raise InvalidParameter(f"Config '{key}' must map {maps}.")
    return value


def environment_variables(value: Any, key: str = "environment_variables") -> Dict[str, str]:
    """Names to string values (numbers and booleans as their text), from a mapping or JSON."""
    value = json_object(key, value, "names to values")
    variables = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _VARIABLE.fullmatch(name):
            raise InvalidParameter(f"Config '{key}': a name is not a valid "
                                   "environment variable name.")
        if isinstance(text, (dict, list)) or text is None:
            raise InvalidParameter(f"Config '{key}.{name}' must be a string "
                                   "or a number.")
        variables[name] = str(text).lower() if isinstance(text, bool) else str(text)
    return variables


class ScriptSettings(Protocol):
    """Where a scoring script comes from (its code folder, the script in it, its environment
    file), or the package an MLflow model's environment is built from: paths, or None."""

    @property
    def code(self) -> Optional[str]: ...
    @property
    def scoring_script(self) -> Optional[str]: ...
    @property
    def conda_file(self) -> Optional[str]: ...
    @property
    def package(self) -> Optional[str]: ...


def check_script_settings(settings: ScriptSettings) -> None:
    """The combinations Azure accepts: a script needs its code folder and the other way round;
    an environment is given only with a script (an MLflow model alone brings its own)."""
    if bool(settings.code) != bool(settings.scoring_script):
        raise InvalidParameter("Config 'code' and 'scoring_script' go together: give both.")
    if settings.scoring_script and not (Path(settings.code) / settings.scoring_script).is_file():
        raise InvalidParameter("Config 'scoring_script' must name a file inside 'code'.")
    if settings.conda_file and not settings.scoring_script:
        raise InvalidParameter(
            "Config 'conda_file' is the environment of a scoring script: give 'code' and "
            "'scoring_script' too (an MLflow model alone brings its own environment)."
        )
    if settings.package and settings.scoring_script:
        raise InvalidParameter("Config 'package' serves a packaged MLflow model without a script.")


def with_script_and_tags(config: Dict[str, Any], spec: Any) -> Dict[str, Any]:
    """``config``, then what a deployment's YAML spec (online or batch) says besides its own
    settings: its scoring script (code_configuration, environment.conda_file) and the local
    settings its ``mlflow-deploy/<setting>`` tags give."""
    if spec.code:
        config.update(code=spec.code, scoring_script=spec.scoring_script)
    if spec.conda_file:
        config["conda_file"] = spec.conda_file
    config.update(spec.settings)
    return config


#: how the model's environment is built, for every kind of deployment
ENVIRONMENT_PARSERS: Dict[str, Callable[[Any], Any]] = {
    "env_manager": choice("env_manager", MANAGERS),
    "python_version_policy": choice("python_version_policy", POLICIES),
    "package": existing("package", "folder"),
    "exclude_newer": exclude_newer,
}

#: a scoring script (Azure's code_configuration) and its environment (environment.conda_file)
SCRIPT_PARSERS: Dict[str, Callable[[Any], Any]] = {
    "code": existing("code", "folder"),
    "scoring_script": relative_file("scoring_script"),
    "conda_file": existing("conda_file", "file"),
}

#: both, as every kind of deployment takes them
LOCAL_PARSERS: Dict[str, Callable[[Any], Any]] = {**ENVIRONMENT_PARSERS, **SCRIPT_PARSERS}

ENVIRONMENT_HELP = {
    "env_manager": "uv (default: the model's own locked, cached environment), virtualenv, "
    "local (the current Python environment) or conda",
    "python_version_policy": "exact (default: the model's Python minor version) or nearest",
    "package": "folder written by `mlflow-deploy package`: build the environment offline from it",
    "exclude_newer": "a date (2026-11-01) or UTC time (2026-11-01T12:00:00Z): resolve the "
    "environment as the package indexes were then, for the same lock months later",
}

SCRIPT_HELP = {
    "code": "folder holding a scoring script (Azure's code_configuration.code)",
    "scoring_script": "the script in `code` whose init() and run(raw_data) serve requests",
    "conda_file": "conda YAML of the scoring script's environment (else code/requirements.txt, "
    "else the MLflow model's own environment)",
}
