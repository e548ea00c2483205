"""Azure ML CLI v2 YAML specs (``az ml online-endpoint create -f``, ``az ml online-deployment
create -f``, and their batch counterparts ``az ml batch-endpoint create -f``, ``az ml
batch-deployment create -f``) read into frozen dataclasses, so a file written for Azure deploys
here unchanged.

Each schema is one table of its keys, in three classes: keys implemented locally (a parser each);
Azure keys that mean nothing on one machine (recorded and ignored, with one warning each, so the
same file still works in the cloud); anything else is an error, as a typo would be in Azure. An
error names the file and line of the key at fault (or ``--set``, ``--name``, ...) and never
quotes the value, which may be a secret. Whether a path exists is checked by the caller, not here:
a spec can be read, shown and validated before its folders exist.

This module imports no mlflow: the CLI parses specs before it knows whether it needs mlflow.
"""

import json
import os
import re
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

import yaml
from yaml.constructor import SafeConstructor

from mlflow_deploy.errors import InvalidParameter

__all__ = ["SpecError", "RequestSettings", "ProbeSettings", "PROBE_LIMITS", "EndpointSpec", "DeploymentSpec",
           "RetrySettings", "BatchSettings", "BatchEndpointSpec", "BatchDeploymentSpec",
           "load_endpoint_spec", "load_deployment_spec", "load_batch_endpoint_spec",
           "load_batch_deployment_spec", "parse_share_map", "set_path"]


class SpecError(InvalidParameter):
    """A spec the user gave is not acceptable: ``<file>:<line>: <what is wrong with key 'a.b'>``."""


@dataclass(frozen=True)
class RequestSettings:
    """Azure's defaults; 180000 ms is the longest request timeout Azure accepts."""
    request_timeout_ms: int = 5000
    max_concurrent_requests_per_instance: int = 1
    max_queue_wait_ms: Optional[int] = None


@dataclass(frozen=True)
class ProbeSettings:
    """Probe timings in seconds. The defaults are LOCAL ones, not Azure's (10 s initial delay and
    period): a local instance starts in about a second, so waiting 10 s would only slow every
    deployment. These defaults are the readiness probe's; the liveness probe gives up after 3
    failures (``LIVENESS``)."""
    initial_delay: int = 0
    period: int = 1
    timeout: int = 2
    failure_threshold: int = 30
    success_threshold: int = 1


READINESS = ProbeSettings()
LIVENESS = ProbeSettings(failure_threshold=3)
# each probe field's lowest and highest value, for the YAML and for `-C` alike
PROBE_LIMITS = {"initial_delay": (0, 3600), "period": (1, 3600), "timeout": (1, 3600),
                "failure_threshold": (1, 1000), "success_threshold": (1, 1000)}


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    auth_mode: str = "key"
    description: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    traffic: Dict[str, int] = field(default_factory=dict)
    mirror_traffic: Dict[str, int] = field(default_factory=dict)
    warnings: Tuple[str, ...] = ()


@dataclass(frozen=True)
class _ModelDeploymentSpec:
    """What an online and a batch deployment have alike. Paths (``model`` when local, ``code``,
    ``conda_file``) are absolute; ``scoring_script`` stays relative to ``code``; ``settings``
    are the local extensions given as ``mlflow-deploy/<setting>`` tags, unchecked here (the
    control plane knows them)."""
    name: str
    endpoint_name: str
    model: Optional[str] = None
    code: Optional[str] = None
    scoring_script: Optional[str] = None
    conda_file: Optional[str] = None
    image: Optional[str] = None
    instance_count: int = 1
    description: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    settings: Dict[str, Any] = field(default_factory=dict)
    warnings: Tuple[str, ...] = ()


@dataclass(frozen=True)
class DeploymentSpec(_ModelDeploymentSpec):
    instance_type: Optional[str] = None
    request_settings: RequestSettings = field(default_factory=RequestSettings)
    liveness_probe: ProbeSettings = LIVENESS
    readiness_probe: ProbeSettings = READINESS
    environment_variables: Dict[str, str] = field(default_factory=dict)

    @property
    def worker_count(self) -> int:
        """Server worker processes per instance: ``WORKER_COUNT``, else 1 as in Azure."""
        return int(self.environment_variables.get("WORKER_COUNT", 1))


@dataclass(frozen=True)
class BatchEndpointSpec:
    """``default_deployment`` is Azure's ``defaults.deployment_name``: the deployment an
    invocation that names none runs."""
    name: str
    description: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    default_deployment: Optional[str] = None
    warnings: Tuple[str, ...] = ()


@dataclass(frozen=True)
class RetrySettings:
    """Azure's defaults: a failed mini-batch is tried 3 more times, each ``run()`` given 30 s."""
    max_retries: int = 3
    timeout: int = 30


@dataclass(frozen=True)
class BatchSettings:
    """How a batch job runs the scoring script, with Azure's defaults. ``mini_batch_size``
    counts files; ``error_threshold`` counts failed files, -1 for no limit;
    ``output_file_name`` is where ``append_row`` gathers what every ``run()`` returned."""
    mini_batch_size: int = 10
    max_concurrency_per_instance: int = 1
    output_action: str = "append_row"
    output_file_name: str = "predictions.csv"
    retry_settings: RetrySettings = field(default_factory=RetrySettings)
    error_threshold: int = -1
    logging_level: str = "info"
    environment_variables: Dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchDeploymentSpec(_ModelDeploymentSpec):
    """A ``modelBatchDeployment`` (or the older ``batchDeployment``). ``compute`` is the
    compute's bare name, resolved by the caller; ``batch_settings`` is Azure's ``settings``
    block (or the same keys at the top level)."""
    compute: Optional[str] = None
    batch_settings: BatchSettings = field(default_factory=BatchSettings)


# ---- documents that remember where each key came from ----------------------------------------

Path = Tuple[str, ...]
SETTING_TAG = "mlflow-deploy/"
# Azure's rule for endpoint and deployment names, the one mlflow_deploy.names checks the control
# plane's names with (test_specs holds the two to the same answers).
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")
_NAME_RULE = ("use 3-32 letters, digits or hyphens, starting with a letter and not ending with a "
              "hyphen")
# a URI (azureml:, models:/, runs:/, azureml://...), kept as is; two letters at least, so a
# Windows drive is a path
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
_WHOLE = re.compile(r"[0-9]+")  # not str.isdigit(), which takes digits int() does not


def _dotted(path: Path) -> str:
    return ".".join(path)


@dataclass(frozen=True)
class _Origin:
    label: str  # "<file>:<line>", "--set", "--name", ...
    base: str  # the folder relative paths from there resolve against


class _Document:
    """Plain values of one spec plus, per key path, its origin and its source text (kept so that
    a tag or an environment variable written ``true`` or ``1.50`` stays exactly that)."""

    def __init__(self, schema: str, file: Optional[str]):
        self.schema, self.file = schema, file
        self.values: Dict[str, Any] = {}
        self.origins: Dict[Path, _Origin] = {}
        self.texts: Dict[Path, str] = {}
        self.warnings: List[str] = []
        base = os.path.dirname(os.path.abspath(file)) if file else os.getcwd()
        self.whole = _Origin(file or "--set", base)

    def origin(self, path: Path) -> _Origin:
        while path and path not in self.origins:
            path = path[:-1]
        return self.origins.get(path, self.whole)

    def fail(self, path: Path, what: str):
        raise SpecError(f"{self.origin(path).label}: {what}")

    def warn(self, path: Path, what: str) -> None:
        self.warnings.append(f"{self.origin(path).label}: key '{_dotted(path)}' {what}")

    def text(self, path: Path, value: Any) -> str:
        if value is None or isinstance(value, (dict, list)):
            self.fail(path, f"key '{_dotted(path)}' must be a single value")
        return self.texts.get(path, str(value))

    def put(self, path: Path, value: Any, text: str, origin: _Origin) -> None:
        """Set one key path, as ``--set`` and the CLI's flags do, creating mappings on the way."""
        node = self.values
        for depth in range(1, len(path)):
            child = node.get(path[depth - 1])
            if child is None:
                child = node[path[depth - 1]] = {}
                self.origins[path[:depth]] = origin
            elif not isinstance(child, dict):
                self.fail(path[:depth], f"key '{_dotted(path[:depth])}' is not a mapping, so "
                          f"{origin.label} cannot set key '{_dotted(path)}'")
            node = child
        node[path[-1]] = value
        for stale in [p for p in {**self.origins, **self.texts} if p[:len(path)] == path]:
            self.origins.pop(stale, None)
            self.texts.pop(stale, None)
        self.origins[path], self.texts[path] = origin, text


def _read(file: str, schema: str) -> _Document:
    doc = _Document(schema, file)
    try:
        with open(file, encoding="utf-8") as stream:
            source = stream.read()
    except FileNotFoundError:
        raise SpecError(f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError):
        raise SpecError(f"{file}: cannot be read as UTF-8 text") from None
    try:
        root = yaml.compose(source, Loader=yaml.SafeLoader)
        if root is None:
            raise SpecError(f"{file}: the file is empty")
        if not isinstance(root, yaml.MappingNode):
            raise SpecError(f"{file}:{root.start_mark.line + 1}: the top level must be a mapping")
        doc.values = _walk(doc, SafeConstructor(), (), root)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        # PyYAML quotes the offending text in its messages: keep the sentence, drop the quote
        problem = re.sub(r"\s*('[^']*'|\"[^\"]*\")", "", error.problem or "").strip()
        where = f"{file}:{mark.line + 1}" if mark else file
        raise SpecError(f"{where}: not valid YAML" + (f" ({problem})" if problem else "")) from None
    except yaml.YAMLError:
        raise SpecError(f"{file}: not valid YAML") from None
    return doc


def _walk(doc: _Document, constructor: SafeConstructor, path: Path, node: yaml.Node) -> Any:
    """Plain values of a composed node, recording each key's line (and each scalar's text)."""
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)  # YAML merge keys (<<)
        values: Dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = f"{doc.file}:{key_node.start_mark.line + 1}"
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError(f"{line}: a key under '{_dotted(path) or 'the top level'}' "
                                "is not a single value")
            if key_node.value[:1].isspace():  # YAML indents with ASCII spaces only
                raise SpecError(f"{line}: a key is indented with a no-break space (text copied "
                                "from a web page?): indent with plain spaces")
            child = path + (key_node.value,)  # its text: a key `on:` is the word, not a bool
            if key_node.value in values:
                raise SpecError(f"{line}: key '{_dotted(child)}' is given twice")
            doc.origins[child] = _Origin(line, doc.whole.base)
            values[key_node.value] = _walk(doc, constructor, child, value_node)
        return values
    if isinstance(node, yaml.SequenceNode):
        return [_walk(doc, constructor, path + (str(index),), item)
                for index, item in enumerate(node.value)]
    doc.texts[path] = node.value
    return constructor.construct_object(node, deep=True)


def set_path(item: str) -> Path:
    """The key path a ``--set a.b=value`` item names: the spec holds only the values, and an
    update by ``--set`` alone changes only what its paths name."""
    return tuple(str(item).partition("=")[0].strip().split("."))


def _document(file: Optional[str], schema: str, set_values: Sequence[str]) -> _Document:
    doc = _read(file, schema) if file else _Document(schema, None)
    at_set = _Origin("--set", os.getcwd())  # a path given on the command line is the shell's
    for number, item in enumerate(set_values, 1):
        path, (_, equals, text) = set_path(item), str(item).partition("=")
        if not equals or "" in path:
            raise SpecError(f"--set item {number}: expected key=value, the key a dotted path")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise SpecError(f"--set: the value of key '{_dotted(path)}' is not valid YAML") \
                from None
        doc.put(path, value, text.strip(), at_set)
    return doc


def _flag(doc: _Document, key: str, value: Any, flag: str) -> None:
    """A CLI flag (``--name``, ``--traffic``, ...) overrides the file and ``--set``."""
    if value is not None:
        doc.put((key,), value, str(value), _Origin(flag, os.getcwd()))


def _require(doc: _Document, fields: Dict[str, Any], key: str, flag: str) -> None:
    if key not in fields:
        if doc.file is None:
            raise SpecError(f"{flag}: required when no YAML file is given")
        doc.fail((), f"key '{key}' is missing (give it in the file or with {flag})")


# ---- schemas: one table of keys each ------------------------------------------------------------

Parser = Callable[[_Document, Path, Any], Any]


@dataclass(frozen=True)
class _Schema:
    keys: Dict[str, Parser]  # implemented locally
    ignored: FrozenSet[str] = frozenset()  # Azure's, meaningless here: recorded and ignored
    notes: Dict[str, str] = field(default_factory=dict)  # implemented keys that warn anyway
    silent: FrozenSet[str] = frozenset()
    required: Tuple[str, ...] = ()


def _fields(doc: _Document, schema: _Schema, path: Path, value: Any) -> Dict[str, Any]:
    """The parsed implemented keys of one mapping; a key given with no value keeps its default."""
    mapping = _mapping(doc, path, value)
    fields = {}
    for key, item in mapping.items():
        child = path + (key,)
        if key in schema.silent:
            continue
        if key in schema.ignored:
            doc.warn(child, "is recorded and ignored locally")
            continue
        if key not in schema.keys:
            doc.fail(child, f"unknown key '{_dotted(child)}' for a {doc.schema}")
        if item is not None:
            fields[key] = schema.keys[key](doc, child, item)
            if key in schema.notes:
                doc.warn(child, schema.notes[key])
    for key in schema.required:
        if key not in fields:
            doc.fail(path, f"key '{_dotted(path + (key,))}' is missing")
    return fields


def _nested(schema: _Schema, build: Callable[..., Any] = dict) -> Parser:
    return lambda doc, path, value: build(**_fields(doc, schema, path, value))


def _check(ok: Callable[[Any], Any], must: str) -> Parser:
    """A parser that keeps a value ``ok`` accepts; the error says what the key must be, not what
    it was."""
    def parse(doc: _Document, path: Path, value: Any) -> Any:
        if not ok(value):
            doc.fail(path, f"key '{_dotted(path)}' {must}")
        return value
    return parse


def _integer(low: int, high: Optional[int] = None) -> Parser:
    bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
    return _check(lambda v: type(v) is int and low <= v <= (high if high is not None else v),
                  f"must be a whole number {bounds}")  # type(): a bool is no number here


def _choice(*allowed: str) -> Parser:
    return _check(lambda v: v in allowed, f"must be one of: {', '.join(allowed)}")


def _name(kind: str) -> Parser:
    return _check(lambda v: isinstance(v, str) and _NAME.match(v),
                  f"is not a valid {kind} name: {_NAME_RULE}")


_mapping = _check(lambda v: isinstance(v, dict), "must be a mapping")
_text = _check(lambda v: isinstance(v, str), "must be a string")
_share = _integer(0, 100)


def _refuse(reason: str) -> Parser:
    return _check(lambda v: False, f"cannot be used locally: {reason}")


def _local_path(doc: _Document, path: Path, value: Any) -> str:
    """Relative to the YAML file's folder, as ``az ml`` resolves it (the shell's for ``--set``)."""
    if _SCHEME.match(_text(doc, path, value)):
        doc.fail(path, f"key '{_dotted(path)}' must be a local path: registered assets are not "
                       "supported locally")
    return os.path.normpath(os.path.join(doc.origin(path).base, value))


def _model_location(doc: _Document, path: Path, value: Any) -> str:
    """A URI (``azureml:name:version``, ``models:/...``, ``runs:/...``) is resolved by the caller;
    anything else is a local path."""
    return value if _SCHEME.match(_text(doc, path, value)) else _local_path(doc, path, value)


def _auth_mode(doc: _Document, path: Path, value: Any) -> str:
    if value in ("aml_token", "aad_token"):
        doc.fail(path, "key 'auth_mode': token auth is not supported locally; use key or none")
    return _choice("key", "none")(doc, path, value)


def _tags(doc: _Document, path: Path, value: Any) -> Dict[str, str]:
    return {key: doc.text(path + (key,), item) for key, item in _mapping(doc, path, value).items()}


def _shares(doc: _Document, path: Path, value: Any) -> Dict[str, int]:
    for name, share in _mapping(doc, path, value).items():
        if not _NAME.match(name):
            doc.fail(path + (name,), f"a deployment name in key '{_dotted(path)}' is not valid: "
                                     f"{_NAME_RULE}")
        _share(doc, path + (name,), share)
    return dict(value)


def _environment_variables(doc: _Document, path: Path, value: Any) -> Dict[str, str]:
    variables = _tags(doc, path, value)
    count = variables.get("WORKER_COUNT")
    if count is not None and not (_WHOLE.fullmatch(count) and 1 <= int(count) <= 64):
        doc.fail(path + ("WORKER_COUNT",), f"key '{_dotted(path)}.WORKER_COUNT' must be a whole "
                                           "number from 1 to 64")
    return variables


_INLINE_MODEL = _Schema(
    {"path": _model_location, "name": _text, "version": lambda d, p, v: d.text(p, v),
     "type": _choice("mlflow_model", "custom_model"), "description": _text}, required=("path",))


def _model(doc: _Document, path: Path, value: Any) -> str:
    if isinstance(value, str):
        return _model_location(doc, path, value)
    return _fields(doc, _INLINE_MODEL, path, value)["path"]


_NO_DOCKER = "no Docker here: give environment.conda_file"
_ENVIRONMENT = _Schema(
    {"conda_file": _local_path, "image": _text, "build": _refuse(_NO_DOCKER)},
    ignored=frozenset({"name", "version", "description", "tags", "os_type", "inference_config"}))


def _environment(doc: _Document, path: Path, value: Any) -> Dict[str, str]:
    if isinstance(value, str) and value.startswith("azureml:"):
        doc.fail(path, "key 'environment' names a registered environment: registered environments "
                       "are not supported yet; give environment.conda_file")
    fields = _fields(doc, _ENVIRONMENT, path, value)
    if "conda_file" not in fields:
        doc.fail(path + ("image",) if "image" in fields else path,
                 f"key 'environment': {_NO_DOCKER}")
    if "image" in fields:
        doc.warn(path + ("image",), "is recorded and ignored locally: no Docker here, the "
                                    "environment is built from environment.conda_file")
    return fields


_CODE = _Schema({"code": _local_path, "scoring_script": _text},
                required=("code", "scoring_script"))
_REQUEST = _Schema({"request_timeout_ms": _integer(1, 180000),
                    "max_concurrent_requests_per_instance": _integer(1),
                    "max_queue_wait_ms": _integer(1)})
_PROBE = _Schema({key: _integer(low, high) for key, (low, high) in PROBE_LIMITS.items()})


ENDPOINT = _Schema(
    {"name": _name("endpoint"), "auth_mode": _auth_mode, "description": _text, "tags": _tags,
     "traffic": _shares, "mirror_traffic": _shares},
    ignored=frozenset({"identity", "public_network_access", "kind", "properties"}),
    silent=frozenset({"$schema"}))

DEPLOYMENT = _Schema(
    {"name": _name("deployment"), "endpoint_name": _name("endpoint"), "model": _model,
     "code_configuration": _nested(_CODE), "environment": _environment,
     "instance_type": _text, "instance_count": _integer(1, 20),
     "request_settings": _nested(_REQUEST, RequestSettings),
     "liveness_probe": _nested(_PROBE, partial(replace, LIVENESS)),
     "readiness_probe": _nested(_PROBE, partial(replace, READINESS)),
     "environment_variables": _environment_variables, "description": _text, "tags": _tags},
    ignored=frozenset({"app_insights_enabled", "scale_settings", "data_collector",
                       "egress_public_network_access", "model_mount_path",
                       "private_network_connection", "properties", "with_package"}),
    notes={"instance_type": "is recorded, not enforced locally"},
    silent=frozenset({"$schema"}))


def _spelled(forms: Dict[str, str], *shown: str) -> Parser:
    """A choice taken in any letter case and in any of its spellings (``forms``, lower case),
    kept in the one form it maps to."""
    def parse(doc: _Document, path: Path, value: Any) -> str:
        form = forms.get(value.lower()) if isinstance(value, str) else None
        if form is None:
            doc.fail(path, f"key '{_dotted(path)}' must be one of: {', '.join(shown)}")
        return form
    return parse


# older files spell the actions as the REST API does (AppendRow, SummaryOnly)
_output_action = _spelled({"append_row": "append_row", "appendrow": "append_row",
                           "summary_only": "summary_only", "summaryonly": "summary_only"},
                          "append_row", "summary_only")
_LEVELS = ("debug", "info", "warning", "error", "critical")
_logging_level = _spelled({level: level for level in _LEVELS}, *_LEVELS)
# the bare name the caller looks up: no ':' or '/' (an ARM id or a versioned asset names no
# compute), and no dots, so that it is safe as a file name too
_COMPUTE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _compute(doc: _Document, path: Path, value: Any) -> str:
    """``azureml:NAME`` or a bare ``NAME``, kept as ``NAME``: the caller looks the compute up."""
    name = _text(doc, path, value)
    if name.startswith("azureml:"):
        name = name[len("azureml:"):]
    if not _COMPUTE.fullmatch(name):
        doc.fail(path, f"key '{_dotted(path)}' must be azureml:NAME or NAME, the name letters, "
                       "digits, hyphens or underscores")
    return name


def _file_name(doc: _Document, path: Path, value: Any) -> str:
    """A file name inside the job's output folder, never a path that leaves it."""
    name = _text(doc, path, value)
    if name in ("", ".", "..") or any(char in name for char in "/\\\0"):
        doc.fail(path, f"key '{_dotted(path)}' must be a plain file name, with no folder")
    return name


_ONLY_MODELS = "only model deployments are supported"
_RETRY = _Schema({"max_retries": _integer(0), "timeout": _integer(1)})
# a modelBatchDeployment has these under `settings:`, the older batchDeployment at the top level
_BATCH_SETTINGS = {
    "mini_batch_size": _integer(1), "max_concurrency_per_instance": _integer(1),
    "output_action": _output_action, "output_file_name": _file_name,
    "retry_settings": _nested(_RETRY, RetrySettings), "error_threshold": _integer(-1),
    "logging_level": _logging_level, "environment_variables": _environment_variables}
# Azure takes settings.instance_count as another spelling of resources.instance_count
_SETTINGS_BLOCK = _Schema({**_BATCH_SETTINGS, "instance_count": _integer(1)})
_RESOURCES = _Schema({"instance_count": _integer(1)},
                     ignored=frozenset({"instance_type", "properties", "shm_size", "docker_args",
                                        "locations", "max_instance_count"}))

BATCH_ENDPOINT = _Schema(
    {"name": _name("endpoint"), "description": _text, "tags": _tags,
     "defaults": _nested(_Schema({"deployment_name": _name("deployment")})),
     # aad_token is Azure's only mode for a batch endpoint: Entra ID tokens mean nothing here
     "auth_mode": _choice("aad_token")},
    ignored=frozenset({"identity", "properties"}),
    notes={"auth_mode": "is recorded and ignored locally"},
    silent=frozenset({"$schema"}))

BATCH_DEPLOYMENT = _Schema(
    {"name": _name("deployment"), "endpoint_name": _name("endpoint"),
     "type": _check(lambda v: v == "model",
                    "must be model: pipeline component deployments are not supported locally"),
     "model": _model, "code_configuration": _nested(_CODE), "environment": _environment,
     "compute": _compute, "resources": _nested(_RESOURCES), "settings": _nested(_SETTINGS_BLOCK),
     "description": _text, "tags": _tags, **_BATCH_SETTINGS,
     "component": _refuse(_ONLY_MODELS), "job_definition": _refuse(_ONLY_MODELS)},
    ignored=frozenset({"properties"}),
    silent=frozenset({"$schema"}))


def _flatten_assets(fields: Dict[str, Any]) -> None:
    """A deployment's ``code_configuration`` and ``environment`` become fields of its spec."""
    fields.update(fields.pop("code_configuration", {}))
    environment = fields.pop("environment", {})
    fields.update(conda_file=environment.get("conda_file"), image=environment.get("image"))


def _local_settings(doc: _Document, fields: Dict[str, Any]) -> Dict[str, Any]:
    """The local extensions, given as ``mlflow-deploy/<setting>`` tags so that the same file
    still passes ``az ml``."""
    settings = {}
    for tag, value in fields.get("tags", {}).items():
        if tag.startswith(SETTING_TAG):
            if tag == SETTING_TAG:
                doc.fail(("tags", tag), f"key 'tags.{tag}' names no setting")
            settings[tag[len(SETTING_TAG):]] = value
    return settings


# ---- the public functions -----------------------------------------------------------------------

def parse_share_map(value: str, key: str) -> Dict[str, int]:
    """``blue=90 green=10`` (spaces or commas) or a JSON object, as ``az ml``'s ``--traffic``
    takes it, into ``{"blue": 90, "green": 10}``; errors name ``key`` (the flag)."""
    text = str(value).strip()
    if text.startswith("{"):
        try:
            pairs = json.loads(text, object_pairs_hook=list)
        except ValueError:
            raise SpecError(f"{key}: not a valid JSON object") from None
    else:
        pairs = [part.partition("=")[::2] for part in re.split(r"[\s,]+", text) if part]
        if any(not _WHOLE.fullmatch(share) for _, share in pairs):
            raise SpecError(f"{key}: expected name=percent pairs (whole percents)")
        pairs = [(name, int(share)) for name, share in pairs]
    if not isinstance(pairs, list) or not pairs:
        raise SpecError(f"{key}: expected name=percent pairs or a JSON object")
    shares: Dict[str, int] = {}
    for name, share in pairs:
        if not _NAME.match(name):
            raise SpecError(f"{key}: a deployment name is not valid: {_NAME_RULE}")
        if name in shares:
            raise SpecError(f"{key}: a deployment is given twice")
        if isinstance(share, bool) or not isinstance(share, int) or not 0 <= share <= 100:
            raise SpecError(f"{key}: each share must be a whole percent from 0 to 100")
        shares[name] = share
    return shares


def load_endpoint_spec(path: Optional[str] = None, *, name: Optional[str] = None,
                       set_values: Sequence[str] = (), traffic: Optional[str] = None,
                       mirror_traffic: Optional[str] = None) -> EndpointSpec:
    """An online endpoint from its YAML, then ``--set`` items, then the flags. Of Azure's traffic
    rules only those that need no deployment are checked here: whole percents, at most 50 % of
    mirrored traffic, and no deployment both live and mirrored."""
    doc = _document(path, "managedOnlineEndpoint", set_values)
    _flag(doc, "name", name, "--name")
    for key, flag, shares in (("traffic", "--traffic", traffic),
                              ("mirror_traffic", "--mirror-traffic", mirror_traffic)):
        _flag(doc, key, None if shares is None else parse_share_map(shares, flag), flag)
    fields = _fields(doc, ENDPOINT, (), doc.values)
    _require(doc, fields, "name", "--name")
    mirror, live = fields.get("mirror_traffic", {}), fields.get("traffic", {})
    if sum(mirror.values()) > 50:
        doc.fail(("mirror_traffic",), "key 'mirror_traffic' must add up to 50 percent at most")
    for target in mirror:
        if live.get(target, 0) > 0:
            doc.fail(("mirror_traffic", target), "a deployment in key 'mirror_traffic' also has "
                                                 "live traffic in key 'traffic'")
    return EndpointSpec(**fields, warnings=tuple(doc.warnings))


def load_deployment_spec(path: Optional[str] = None, *, name: Optional[str] = None,
                         endpoint_name: Optional[str] = None,
                         set_values: Sequence[str] = ()) -> DeploymentSpec:
    """An online deployment from its YAML, then ``--set`` items, then the flags."""
    doc = _document(path, "managedOnlineDeployment", set_values)
    _flag(doc, "name", name, "--name")
    _flag(doc, "endpoint_name", endpoint_name, "--endpoint-name")
    fields = _fields(doc, DEPLOYMENT, (), doc.values)
    _require(doc, fields, "name", "--name")
    _require(doc, fields, "endpoint_name", "--endpoint-name")
    _flatten_assets(fields)
    return DeploymentSpec(**fields, settings=_local_settings(doc, fields),
                          warnings=tuple(doc.warnings))


def load_batch_endpoint_spec(path: Optional[str] = None, *, name: Optional[str] = None,
                             set_values: Sequence[str] = ()) -> BatchEndpointSpec:
    """A batch endpoint from its YAML, then ``--set`` items, then ``--name``."""
    doc = _document(path, "batchEndpoint", set_values)
    _flag(doc, "name", name, "--name")
    fields = _fields(doc, BATCH_ENDPOINT, (), doc.values)
    _require(doc, fields, "name", "--name")
    fields.pop("auth_mode", None)
    default = fields.pop("defaults", {}).get("deployment_name")
    return BatchEndpointSpec(**fields, default_deployment=default, warnings=tuple(doc.warnings))


def load_batch_deployment_spec(path: Optional[str] = None, *, name: Optional[str] = None,
                               endpoint_name: Optional[str] = None,
                               set_values: Sequence[str] = ()) -> BatchDeploymentSpec:
    """A batch deployment from its YAML, then ``--set`` items, then the flags. Its settings
    are read from a ``settings:`` block and from the top level alike; a setting given in both
    places is an error, as is an instance count given both as ``resources.instance_count`` and
    as ``settings.instance_count``."""
    doc = _document(path, "modelBatchDeployment", set_values)
    _flag(doc, "name", name, "--name")
    _flag(doc, "endpoint_name", endpoint_name, "--endpoint-name")
    fields = _fields(doc, BATCH_DEPLOYMENT, (), doc.values)
    _require(doc, fields, "name", "--name")
    _require(doc, fields, "endpoint_name", "--endpoint-name")
    fields.pop("type", None)
    block = fields.pop("settings", {})
    for key in _BATCH_SETTINGS:
        if key in fields:
            if key in block:
                doc.fail(("settings", key), f"key 'settings.{key}' is also given at the top "
                                            f"level as key '{key}': give it in one place")
            block[key] = fields.pop(key)
    resources = fields.pop("resources", {})
    if "instance_count" in block:
        if "instance_count" in resources:
            doc.fail(("settings", "instance_count"), "key 'settings.instance_count' is also "
                     "given as key 'resources.instance_count': give it in one place")
        resources["instance_count"] = block.pop("instance_count")
    fields.update(resources)
    _flatten_assets(fields)
    return BatchDeploymentSpec(**fields, batch_settings=BatchSettings(**block),
                               settings=_local_settings(doc, fields),
                               warnings=tuple(doc.warnings))

