"""Deployment settings: the ``-C key=value`` config of ``mlflow deployments create/update``.

Values arrive as strings from the CLI or as Python values from the API; each key is parsed and
checked on its own, and an error names the key (never its value).
"""

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Mapping, Optional, Tuple

from mlflow_deploy.errors import InvalidParameter
from mlflow_deploy.online.routes import BATCH_TIME_MS, NO_BATCHING
from mlflow_deploy.scoring.options import DEFAULTS, ScoringOptions, Validation
from mlflow_deploy.settings import (
    ENVIRONMENT_HELP,
    LOCAL_PARSERS,
    SCRIPT_HELP,
    boolean,
    check_script_settings,
    with_script_and_tags,
)
from mlflow_deploy.settings import environment_variables as _variables
from mlflow_deploy.settings import integer as _integer
from mlflow_deploy.settings import json_object as _json_object
from mlflow_deploy.specs import LIVENESS, PROBE_LIMITS, READINESS, ProbeSettings

if TYPE_CHECKING:
    from mlflow_deploy.specs import DeploymentSpec

__all__ = ["DeploymentSettings", "parse_settings", "check_script_settings", "SETTING_HELP",
           "GATEWAY_ONLY", "only_gateway_changed", "only_scaled",
           "SPEC_PATHS", "config_from_spec", "config_from_set", "boolean"]

MAX_REQUEST_TIMEOUT_MS = 180_000  # Azure's maximum request_settings.request_timeout_ms
WORKER_COUNT = "WORKER_COUNT"
MAX_INSTANCES = 20
MAX_BATCH_SIZE = 1024
MAX_BATCH_TIME_MS = 10_000


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
    # the endpoint's gateway joins concurrent requests' rows into one call (online/batching.py):
    # at most max_batch_size rows, sent once the first has waited max_batch_time_ms (1: off)
    max_batch_size: int = NO_BATCHING
    max_batch_time_ms: int = BATCH_TIME_MS
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
    **ENVIRONMENT_HELP,
    **SCRIPT_HELP,
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
    "max_batch_size": f"most rows the endpoint joins from concurrent /score requests into "
    f"one call (1-{MAX_BATCH_SIZE}, default {NO_BATCHING}: off); only for an MLflow model whose "
    "predictions are row-wise (a row's prediction depends on that row alone): requests of "
    "the same form, columns and params are joined, the answer split back by rows; the 429 "
    "bound is multiplied by it",
    "max_batch_time_ms": f"longest a request waits for others to join its batch, 0-"
    f"{MAX_BATCH_TIME_MS} ms (default {BATCH_TIME_MS}); below request_timeout_ms",
    "liveness_probe": "a JSON object of Azure's probe fields (initial_delay, period, timeout, "
    "failure_threshold, success_threshold; seconds): an instance failing it is restarted "
    f"(default {json.dumps(asdict(LIVENESS))})",
    "readiness_probe": "the same fields: an instance failing it gets no requests until it passes "
    f"again (default {json.dumps(asdict(READINESS))})",
}


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


def _environment_variables(value: Any) -> Dict[str, str]:
    variables = _variables(value)
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


def _validation(value: Any) -> str:
    try:
        return Validation.parse(value).value
    except ValueError:
        raise InvalidParameter("Config 'validation' must be 'compatible' or 'strict'.") from None


_PARSERS: Dict[str, Callable[[Any], Any]] = {
    "instance_count": _integer("instance_count", 1, MAX_INSTANCES),
    **LOCAL_PARSERS,
    "validation": _validation,
    "request_timeout_ms": _integer("request_timeout_ms", 1, MAX_REQUEST_TIMEOUT_MS),
    "max_request_mb": _max_request_mb,
    "error_details": boolean("error_details"),
    "port": _integer("port", 1024, 65535),
    "max_concurrent_requests_per_instance": _integer(
        "max_concurrent_requests_per_instance", 1, 1000),
    "max_batch_size": _integer("max_batch_size", 1, MAX_BATCH_SIZE),
    "max_batch_time_ms": _integer("max_batch_time_ms", 0, MAX_BATCH_TIME_MS),
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
    check_batching(settings)
    return settings


# what only the endpoint's gateway reads: a change of these alone needs no new server revision
GATEWAY_ONLY = ("max_batch_size", "max_batch_time_ms")


def only_gateway_changed(old: DeploymentSettings, new: DeploymentSettings) -> bool:
    """Whether ``new`` differs from ``old``, in GATEWAY_ONLY settings alone. An update that
    changes nothing is a new revision still: it is how a script's edited code folder is taken."""
    return new != old and replace(new, **{key: getattr(old, key) for key in GATEWAY_ONLY}) == old


def only_scaled(old: DeploymentSettings, new: DeploymentSettings) -> bool:
    """Whether ``new`` differs from ``old`` in instance_count (and GATEWAY_ONLY settings) alone:
    instances to add or remove, none to restart."""
    unchanged = {key: getattr(old, key) for key in ("instance_count",) + GATEWAY_ONLY}
    return new.instance_count != old.instance_count and replace(new, **unchanged) == old


def check_batching(settings: DeploymentSettings) -> None:
    """Joining requests needs Azure's ``input_data`` envelope, which only an MLflow model's
    server reads: a scoring script's run() takes any body. A batch that waits past the request
    timeout would answer 408 to every request in it."""
    if settings.max_batch_size == NO_BATCHING:
        return
    if settings.scoring_script:
        raise InvalidParameter("Config 'max_batch_size' joins the rows of an MLflow model's "
                               "requests; a scoring script's run() takes any body: leave it 1.")
    if settings.max_batch_time_ms >= settings.request_timeout_ms:
        raise InvalidParameter("Config 'max_batch_time_ms' must be below 'request_timeout_ms'.")


# where each config key an ``az ml`` deployment YAML gives is in it (specs.DeploymentSpec): the
# one table of both readings, the whole spec (create, update -f) and what --set items name
SPEC_PATHS: Dict[str, Tuple[str, ...]] = {
    "instance_count": ("instance_count",),
    "request_timeout_ms": ("request_settings", "request_timeout_ms"),
    "max_concurrent_requests_per_instance": ("request_settings",
                                             "max_concurrent_requests_per_instance"),
    "environment_variables": ("environment_variables",),
    "liveness_probe": ("liveness_probe",),
    "readiness_probe": ("readiness_probe",),
}


def _in_spec(spec: "DeploymentSpec", path: Tuple[str, ...]) -> Any:
    value: Any = spec
    for name in path:
        value = getattr(value, name)
    if is_dataclass(value):
        return asdict(value)
    return dict(value) if isinstance(value, Mapping) else value


def config_from_spec(spec: "DeploymentSpec") -> Dict[str, Any]:
    """The ``-C`` config an ``az ml`` deployment YAML (specs.DeploymentSpec) asks for: its
    request settings, environment variables, probes and scoring script, then the local settings
    given as ``mlflow-deploy/<setting>`` tags (checked by ``parse_settings`` like any other).
    Every key of SPEC_PATHS is in it, a default where the YAML says nothing: a file is the
    whole deployment, as ``az ml`` updates one from its file."""
    config = {key: _in_spec(spec, path) for key, path in SPEC_PATHS.items()}
    return with_script_and_tags(config, spec)


def config_from_set(spec: "DeploymentSpec", paths: Iterable[Tuple[str, ...]],
                    current: Mapping[str, Any]) -> Dict[str, Any]:
    """The config an update by ``--set`` items alone asks for, the items' key ``paths`` read
    into ``spec``: only the keys they name, as ``az ml`` sets them on the deployment it fetched
    and keeps the rest (the spec alone has a default for every other key). A path naming a
    block (``request_settings``) names each key in it; one naming an entry of a mapping
    (``environment_variables.K``, ``liveness_probe.period``) changes that entry over the
    deployment's ``current`` config. ``parse_settings`` replaces a mapping given whole, so that
    an API caller can drop a variable; the entries are merged here, where it is known which
    were given."""
    paths = list(paths)
    whole = config_from_spec(spec)
    config = with_script_and_tags({}, spec)  # a script or a tag only when the items give one
    for key, at in SPEC_PATHS.items():
        if any(at[:len(path)] == path for path in paths):
            config[key] = whole[key]
            continue
        entries = {path[len(at)] for path in paths if path[:len(at)] == at}
        if entries:
            config[key] = {**(current.get(key) or {}),
                           **{entry: whole[key][entry] for entry in entries}}
    return config
