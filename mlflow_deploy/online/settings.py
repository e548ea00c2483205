"""Deployment settings: the ``-C key=value`` config of ``mlflow deployments create/update``.

Values arrive as strings from the CLI or as Python values from the API; each key is parsed and
checked on its own, and an error names the key (never its value).
"""

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Dict, Mapping, Optional

from mlflow_deploy.errors import InvalidParameter

__all__ = ["DeploymentSettings", "parse_settings", "SETTING_HELP"]

VALIDATION_MODES = ("compatible", "strict")
ENV_MANAGERS = ("local", "virtualenv", "uv", "conda")
MAX_REQUEST_TIMEOUT_MS = 180_000  # Azure's maximum request_settings.request_timeout_ms


@dataclass(frozen=True)
class DeploymentSettings:
    instance_count: int = 1  # gunicorn worker processes
    env_manager: str = "local"
    validation: str = "compatible"
    request_timeout_ms: int = 5000
    max_request_mb: float = 100.0
    error_details: bool = True
    port: Optional[int] = None  # None: pick a free one

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


SETTING_HELP = {
    "instance_count": "number of worker processes (1-64, default 1)",
    "env_manager": "local (default; the current Python environment)",
    "validation": "compatible (default: coerce like Azure, report coercions) or strict",
    "request_timeout_ms": f"scoring timeout per request, 1-{MAX_REQUEST_TIMEOUT_MS} (default 5000)",
    "max_request_mb": "largest request body in MiB (default 100)",
    "error_details": "true (default) or false: show the model's own error line in 400 answers",
    "port": "TCP port on 127.0.0.1 (default: a free one)",
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


def _boolean(key: str) -> Callable[[Any], bool]:
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


def _env_manager(value: Any) -> str:
    text = str(value).strip().lower()
    if text == "local":
        return text
    if text in ENV_MANAGERS:
        raise InvalidParameter(
            "Config 'env_manager': only 'local' is available yet; the other managers come with "
            "environment building."
        )
    raise InvalidParameter("Config 'env_manager' must be one of: " + ", ".join(ENV_MANAGERS) + ".")


def _validation(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in VALIDATION_MODES:
        raise InvalidParameter("Config 'validation' must be 'compatible' or 'strict'.")
    return text


_PARSERS: Dict[str, Callable[[Any], Any]] = {
    "instance_count": _integer("instance_count", 1, 64),
    "env_manager": _env_manager,
    "validation": _validation,
    "request_timeout_ms": _integer("request_timeout_ms", 1, MAX_REQUEST_TIMEOUT_MS),
    "max_request_mb": _max_request_mb,
    "error_details": _boolean("error_details"),
    "port": _integer("port", 1024, 65535),
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
    return DeploymentSettings(**values)
