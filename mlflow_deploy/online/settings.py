"""Deployment settings: the ``-C key=value`` config of ``mlflow deployments create/update``.

Values arrive as strings from the CLI or as Python values from the API; each key is parsed and
checked on its own, and an error names the key (never its value).
"""

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional

from mlflow_deploy.envs import MANAGERS, POLICIES
from mlflow_deploy.errors import InvalidParameter
from mlflow_deploy.scoring.options import DEFAULTS, ScoringOptions, Validation
from mlflow_deploy.specs import LIVENESS, PROBE_LIMITS, READINESS, ProbeSettings

if TYPE_CHECKING:
    from mlflow_deploy.specs import DeploymentSpec

__all__ = ["DeploymentSettings", "parse_settings", "check_script_settings", "SETTING_HELP",
           "config_from_spec", "boolean"]

MAX_REQUEST_TIMEOUT_MS = 180_000
WORKER_COUNT = "WORKER_COUNT"
MAX_INSTANCES = 20
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # Azure's maximum request_settings.request_timeout_ms


@dataclass(frozen=True)
class DeploymentSettings:
    instance_count: int = 1  # independent server instances (Azure's); workers: WORKER_COUNT
    env_manager: str = "uv"  # how the model's own environment is built (envs/)
    python_version_policy: str = "exact"  # or "nearest": the closest Python, with a warning
    package: Optional[str] = None  # a `mlflow-deploy package` folder: build offline from it
    exclude_newer: Optional[str] = None  # resolve as the package indexes were on that date
    # Azure's code_configuration and environment.conda_file: a user scoring script (init/run)
    code: Optional[str] = None  # folder, copied into the deployment at each revision
    scoring_script: Optional[str] = None  # file inside `code`
    conda_file: Optional[str] = None  # the script's environment
    # how the server scores: defaults from scoring.options (ScoringOptions), declared there once
    validation: str = DEFAULTS.validation.value
    request_timeout_ms: int = DEFAULTS.request_timeout_ms
    max_request_mb: float = DEFAULTS.max_request_mb
    error_details: bool = DEFAULTS.error_details
    port: Optional[int] = None  # None: pick a free one
    # Azure's request_settings: the endpoint's gateway answers 429 past twice this many
    # requests in flight per instance (Azure's default 1, kept: set it for loaded endpoints)
    max_concurrent_requests_per_instance: int = 1
    # set in the server before it loads the model; WORKER_COUNT (azmlinfsrv's knob) is the number
    # of workers per instance
    environment_variables: Dict[str, str] = field(default_factory=dict)
    # Azure's probes, run by the endpoint's gateway: readiness decides whether an instance gets
    # requests, liveness when it is restarted (fields of specs.ProbeSettings, in seconds)
    liveness_probe: Dict[str, int] = field(default_factory=lambda: asdict(LIVENESS))
    readiness_probe: Dict[str, int] = field(default_factory=lambda: asdict(READINESS))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @property
    def workers(self) -> int:
        return int(self.environment_variables.get(WORKER_COUNT, DEFAULTS.workers))

    @property
    def scoring_options(self) -> ScoringOptions:
        return ScoringOptions.taken_from(self, workers=self.workers)


SETTING_HELP = {
    "instance_count": "number of server instances, each its own process tree behind the "
    f"endpoint (1-{MAX_INSTANCES}, default 1); workers per instance: WORKER_COUNT in "
    f"environment_variables (1-64, default {DEFAULTS.workers})",
    "env_manager": "uv (default: the model's own locked, cached environment), virtualenv, "
    "local (the current Python environment) or conda",
    "python_version_policy": "exact (default: the model's Python minor version) or nearest",
    "package": "folder written by `mlflow-deploy package`: build the environment offline from it",
    "exclude_newer": "a date (2026-11-01) or UTC time (2026-11-01T12:00:00Z): resolve the "
    "environment as the package indexes were then, for the same lock months later",
    "code": "folder holding a scoring script (Azure's code_configuration.code)",
    "scoring_script": "the script in `code` whose init() and run(raw_data) serve requests",
    "conda_file": "conda YAML of the scoring script's environment (else code/requirements.txt, "
    "else the MLflow model's own environment)",
    "validation": "compatible (default: coerce like Azure, report coercions) or strict",
    "request_timeout_ms": f"scoring timeout per request, 1-{MAX_REQUEST_TIMEOUT_MS} "
    f"(default {DEFAULTS.request_timeout_ms})",
    "max_request_mb": f"largest request body in MiB (default {DEFAULTS.max_request_mb:g})",
    "error_details": "true (default) or false: show the model's own error line in 400 answers",
    "port": "TCP port on 127.0.0.1 (default: a free one)",
    "environment_variables": "a JSON object of environment variables for the server; "
    "WORKER_COUNT sets the number of workers (as on Azure)",
    "max_concurrent_requests_per_instance": "requests one instance takes at once; the "
    "endpoint answers 429 past twice that (1-1000, default 1, as on Azure)",
    "liveness_probe": "a JSON object of Azure's probe fields (initial_delay, period, timeout, "
    "failure_threshold, success_threshold; seconds): an instance failing it is restarted "
    f"(default {json.dumps(asdict(LIVENESS))})",
    "readiness_probe": "the same fields: an instance failing it gets no requests until it passes "
    f"again (default {json.dumps(asdict(READINESS))})",
}


def _integer(key: str, low: int, high: int) -> Callable[[Any], int]:
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


def _max_request_mb(value: Any) -> float:
    try:
        number = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
    except ValueError:
        raise InvalidParameter("Config 'max_request_mb' must be a number.") from None
    if isinstance(value, bool) or not 0 < number <= 10_240:
        raise InvalidParameter(
            "Config 'max_request_mb' must be a number above 0 and at most 10240."
        )
    return number


def _json_object(key: str, value: Any, maps: str) -> Mapping[str, Any]:
    """A mapping, or its JSON text (what ``-C key='{...}'`` gives)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise InvalidParameter(f"Config '{key}' is not a JSON object.") from None
    if not isinstance(value, Mapping):
        raise InvalidParameter(f"Config '{key}' must map {maps}.")
    return value


def _environment_variables(value: Any) -> Dict[str, str]:
    value = _json_object("environment_variables", value, "names to values")
    variables = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _VARIABLE.fullmatch(name):
            raise InvalidParameter("Config 'environment_variables': a name is not a valid "
                                   "environment variable name.")
        if isinstance(text, (dict, list)) or text is None:
            raise InvalidParameter(f"Config 'environment_variables.{name}' must be a string "
                                   "or a number.")
        variables[name] = str(text).lower() if isinstance(text, bool) else str(text)
    if WORKER_COUNT in variables:
        _integer(f"environment_variables.{WORKER_COUNT}", 1, 64)(variables[WORKER_COUNT])
    return variables


def _probe(key: str, defaults: ProbeSettings) -> Callable[[Any], Dict[str, int]]:
    """Azure's probe fields, laid over the local defaults."""

    def parse(value: Any) -> Dict[str, int]:
        probe = asdict(defaults)
        for name, number in _json_object(key, value, "probe fields to numbers").items():
            if name not in PROBE_LIMITS:
                raise InvalidParameter(f"Config '{key}' takes only: "
                                       + ", ".join(PROBE_LIMITS) + ".")
            probe[name] = _integer(f"{key}.{name}", *PROBE_LIMITS[name])(number)
        if key == "liveness_probe" and probe["success_threshold"] != 1:
            # as Kubernetes and Azure have it: one answer shows a process is alive
            raise InvalidParameter("Config 'liveness_probe.success_threshold' must be 1.")
        return probe

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


def _choice(key: str, choices) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise InvalidParameter(f"Config '{key}' must be one of: " + ", ".join(choices) + ".")
        return text

    return parse


def _existing(key: str, kind: str) -> Callable[[Any], Optional[str]]:
    """An existing ``kind`` ("folder" or "file"), made absolute: servers run elsewhere."""
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


def _exclude_newer(value: Any) -> Optional[str]:
    """A date or an RFC 3339 time, as uv's --exclude-newer takes it."""
    text = str(value).strip() if value is not None else ""
    if not text:
        return None
    if not _DATE.fullmatch(text):
        raise InvalidParameter(
            "Config 'exclude_newer' must be a date (YYYY-MM-DD) or a UTC time "
            "(YYYY-MM-DDTHH:MM:SSZ).")
    return text


def _relative_file(key: str) -> Callable[[Any], Optional[str]]:
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


def check_script_settings(settings: DeploymentSettings) -> None:
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


def _validation(value: Any) -> str:
    try:
        return Validation.parse(value).value
    except ValueError:
        raise InvalidParameter("Config 'validation' must be 'compatible' or 'strict'.") from None


_PARSERS: Dict[str, Callable[[Any], Any]] = {
    "instance_count": _integer("instance_count", 1, MAX_INSTANCES),
    "env_manager": _choice("env_manager", MANAGERS),
    "python_version_policy": _choice("python_version_policy", POLICIES),
    "package": _existing("package", "folder"),
    "exclude_newer": _exclude_newer,
    "code": _existing("code", "folder"),
    "scoring_script": _relative_file("scoring_script"),
    "conda_file": _existing("conda_file", "file"),
    "validation": _validation,
    "request_timeout_ms": _integer("request_timeout_ms", 1, MAX_REQUEST_TIMEOUT_MS),
    "max_request_mb": _max_request_mb,
    "error_details": boolean("error_details"),
    "port": _integer("port", 1024, 65535),
    "max_concurrent_requests_per_instance": _integer(
        "max_concurrent_requests_per_instance", 1, 1000),
    "environment_variables": _environment_variables,
    "liveness_probe": _probe("liveness_probe", LIVENESS),
    "readiness_probe": _probe("readiness_probe", READINESS),
}
assert set(_PARSERS) == {f.name for f in fields(DeploymentSettings)}


def parse_settings(
    config: Optional[Mapping[str, Any]], base: Optional[DeploymentSettings] = None
) -> DeploymentSettings:
    """Validate ``config`` and lay it over ``base`` (the defaults, or a deployment's settings)."""
    values = (base or DeploymentSettings()).to_dict()
    for key, value in (config or {}).items():
        parser = _PARSERS.get(key)
        if parser is None:
            raise InvalidParameter(
                f"Unknown config key '{key}'. Known keys: " + ", ".join(_PARSERS) + "."
            )
        if key == "port" and (value is None or str(value).strip().lower() in ("", "auto")):
            values[key] = None
            continue
        values[key] = parser(value)
    settings = DeploymentSettings(**values)
    check_script_settings(settings)
    return settings


def config_from_spec(spec: "DeploymentSpec") -> Dict[str, Any]:
    """The ``-C`` config an ``az ml`` deployment YAML (specs.DeploymentSpec) asks for: its
    request settings, environment variables and scoring script, then the local settings given as
    ``mlflow-deploy/<setting>`` tags (checked by ``parse_settings`` like any other)."""
    config: Dict[str, Any] = {
        "instance_count": spec.instance_count,
        "request_timeout_ms": spec.request_settings.request_timeout_ms,
        "max_concurrent_requests_per_instance":
            spec.request_settings.max_concurrent_requests_per_instance,
        "environment_variables": dict(spec.environment_variables),
        "liveness_probe": asdict(spec.liveness_probe),
        "readiness_probe": asdict(spec.readiness_probe),
    }
    if spec.code:
        config.update(code=spec.code, scoring_script=spec.scoring_script)
    if spec.conda_file:
        config["conda_file"] = spec.conda_file
    config.update(spec.settings)
    return config
