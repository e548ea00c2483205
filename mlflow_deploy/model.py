"""Resolve a model URI to a local directory and read its MLmodel.

Accepted URIs: a local path, ``file:``, ``runs:/<run_id>/<path>``, ``models:/<name>/<version>``,
``models:/<name>@<alias>`` and Azure's ``azureml:<name>:<version>`` / ``azureml:<name>@latest``
(looked up in the local MLflow registry as ``models:/<name>/<version>``). Remote ones are fetched
with ``mlflow.artifacts.download_artifacts``; everything is read with MLflow's public ``Model`` API.

mlflow is imported inside the functions that use it, never at the top: the CLI imports this module's
callers on every command, and importing mlflow takes about 1.7 s.
"""

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional
from urllib.parse import urlparse

from mlflow_deploy.errors import DeployError, InvalidParameter, NotFound

if TYPE_CHECKING:
    from mlflow.exceptions import MlflowException
    from mlflow.models.signature import ModelSignature

__all__ = [
    "ModelInfo",
    "to_mlflow_uri",
    "resolve_model_dir",
    "read_model",
    "load_mlmodel",
    "load_model",
    "place_model",
    "is_mlflow_model",
]

PYFUNC = "python_function"
REGISTRY_SCHEMES = ("runs", "models")
SUPPORTED = "a local path, file:, runs:/, models:/ or azureml: URI"


@dataclass(frozen=True)
class ModelInfo:
    """What the control plane and the server need to know about a model, read from MLmodel."""

    uri: str  # what the user gave
    path: Path  # local directory holding MLmodel
    flavors: Dict[str, Dict[str, Any]]
    loader_module: str  # python_function's loader (mlflow.sklearn, mlflow.pyfunc.model, ...)
    signature: Optional["ModelSignature"]
    input_example_info: Optional[Dict[str, Any]]  # MLmodel's saved_input_example_info
    env_files: Dict[str, Path] = field(default_factory=dict)  # conda / virtualenv / requirements
    mlflow_version: Optional[str] = None
    python_version: Optional[str] = None

    @property
    def inputs(self):
        return self.signature.inputs if self.signature else None

    @property
    def outputs(self):
        return self.signature.outputs if self.signature else None

    @property
    def params(self):
        return self.signature.params if self.signature else None

    @property
    def input_example_path(self) -> Optional[Path]:
        info = self.input_example_info or {}
        name = info.get("artifact_path")
        return self.path / name if name else None


def _scheme(uri: str) -> str:
    """The URI's scheme, '' for a plain path (including Windows drive letters)."""
    if uri.startswith(("/", ".", "~")):
        return ""
    scheme = urlparse(uri).scheme
    return "" if len(scheme) == 1 else scheme.lower()


def to_mlflow_uri(uri: str) -> str:
    """Map ``azureml:<name>:<version>`` (and ``azureml:<name>@latest``) to a ``models:/`` URI;
    return other URIs unchanged after checking their scheme is one we accept."""
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidParameter(f"A model URI is required: {SUPPORTED}.")
    uri = uri.strip()
    scheme = _scheme(uri)
    if scheme == "azureml":
        rest = uri[len("azureml:") :]
        if rest.startswith("//"):
            raise InvalidParameter(
                "Only azureml:<name>:<version> model references can be resolved locally; "
                "workspace asset IDs (azureml://...) are not supported."
            )
        name, sep, version = rest.rpartition(":")
        if sep and name and version:
            return f"models:/{name}/{version}"
        name, sep, label = rest.partition("@")
        if sep and name and label == "latest":
            return f"models:/{name}/latest"
        raise InvalidParameter(
            "An azureml: model URI must look like azureml:<name>:<version> "
            "or azureml:<name>@latest."
        )
    if scheme not in ("", "file") + REGISTRY_SCHEMES:
        raise InvalidParameter(f"Unsupported model URI scheme '{scheme}': use {SUPPORTED}.")
    return uri


def names_fixed_version(uri: str) -> bool:
    """Whether ``uri`` names files that cannot change under it: a registered model's version
    number (``models:/NAME/3``, ``azureml:NAME:3``) or a run's artifacts (``runs:/``). A local
    path, an alias or ``latest`` may name other files tomorrow."""
    try:
        mlflow_uri = to_mlflow_uri(uri)
    except InvalidParameter:
        return False
    if mlflow_uri.startswith("runs:/"):
        return True
    if mlflow_uri.startswith("models:/"):
        name, _, version = mlflow_uri[len("models:/"):].rpartition("/")
        return bool(name) and version.isdigit()
    return False


def _local_path(uri: str) -> Optional[Path]:
    scheme = _scheme(uri)
    if scheme == "":
        return Path(uri).expanduser()
    if scheme == "file":
        return Path(urlparse(uri).path)
    return None


def resolve_model_dir(
    uri: str, dst_dir: Optional[os.PathLike] = None, copy_local: bool = False
) -> Path:
    """Return a local directory holding the model's MLmodel.

    Remote models (``runs:/``, ``models:/``, ``azureml:``) are downloaded into ``dst_dir`` (which
    must be given). Local ones are used in place, or copied into ``dst_dir`` when ``copy_local``,
    so a deployment keeps working if the user later moves or edits the original directory.
    """
    mlflow_uri = to_mlflow_uri(uri)
    local = _local_path(mlflow_uri)
    if local is not None:
        if not local.is_dir():
            raise NotFound(f"No model directory at the path given as the model URI ({_kind(uri)}).")
        _require_mlmodel(local, uri)
        if not copy_local:
            return local.resolve()
        if dst_dir is None:
            raise ValueError("copy_local needs dst_dir")
        dst = Path(dst_dir)
        shutil.copytree(local, dst, dirs_exist_ok=True)
        return dst
    if dst_dir is None:
        raise ValueError("a remote model URI needs dst_dir")
    Path(dst_dir).mkdir(parents=True, exist_ok=True)
    from mlflow.exceptions import MlflowException

    try:
        from mlflow.artifacts import download_artifacts

        downloaded = Path(download_artifacts(artifact_uri=mlflow_uri, dst_path=str(dst_dir)))
    except MlflowException as exc:
        raise _registry_error(uri, mlflow_uri, exc) from None
    except OSError as exc:  # the tracking server or artifact store is unreachable
        raise DeployError(
            f"The {_kind(uri)} model could not be fetched from {_store_of(mlflow_uri)} "
            f"({type(exc).__name__})."
        ) from None
    if not downloaded.is_dir():
        raise InvalidParameter(
            f"The {_kind(uri)} model URI points to a file, not a model directory."
        )
    _require_mlmodel(downloaded, uri)
    return downloaded


def _kind(uri: str) -> str:
    scheme = _scheme(uri.strip()) if isinstance(uri, str) else ""
    return f"{scheme}:" if scheme else "local path"


def _registry_error(uri: str, mlflow_uri: str, exc: "MlflowException") -> Exception:
    """Turn MLflow's lookup failures into one clear error that does not quote the user's values.

    MLflow raises the same RESOURCE_DOES_NOT_EXIST for a missing model, version, alias, run or
    artifact, so its message is not read: the lookups are made again, one at a time, and the first
    that fails names what is missing."""
    scheme = _scheme(uri.strip())
    missing = _first_missing(mlflow_uri)
    if missing is not None:
        return NotFound(f"The {missing} named by the {scheme}: model URI does not exist in "
                        f"{_store_of(mlflow_uri)}.")
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return NotFound(f"Nothing found for the {_kind(uri)} model URI in "
                        f"{_store_of(mlflow_uri)}.")
    return InvalidParameter(f"The {_kind(uri)} model URI could not be resolved: {exc.error_code}.")


def _store_of(mlflow_uri: str) -> str:
    """Where MLflow looked for a models:/ or runs:/ URI, and the variable that says so: the
    registry, or the tracking store, as its URI (without a password): a user outside the setup
    that exports it (the Makefile's) looks in a store of the current folder without knowing."""
    import mlflow

    if mlflow_uri.startswith("models:/"):
        where = "the model registry at " + _without_password(mlflow.get_registry_uri())
        variable = "MLFLOW_REGISTRY_URI, else MLFLOW_TRACKING_URI"
    else:
        where = "the tracking store at " + _without_password(mlflow.get_tracking_uri())
        variable = "MLFLOW_TRACKING_URI"
    return f"{where} ({variable})"


def _without_password(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.password is None:
        return uri
    host = parsed.netloc.rpartition("@")[2]
    return parsed._replace(netloc=f"{parsed.username}:***@{host}").geturl()


def _first_missing(mlflow_uri: str) -> Optional[str]:
    """What of a models:/ or runs:/ URI does not exist: the first lookup MLflow fails, each asked
    on its own (a registered model, then its version or alias; a run, then the artifact path)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    path = mlflow_uri.split(":/", 1)[1].lstrip("/")
    if mlflow_uri.startswith("models:/"):
        name, _, version = path.partition("/")
        name, _, alias = name.partition("@")
        lookups = [("registered model", lambda: client.get_registered_model(name))]
        if alias:
            lookups.append(("registered model alias",
                            lambda: client.get_model_version_by_alias(name, alias)))
        elif version.isdigit():
            lookups.append(("registered model version",
                            lambda: client.get_model_version(name, version)))
    elif mlflow_uri.startswith("runs:/"):
        run_id, _, artifact = path.partition("/")
        lookups = [("run", lambda: client.get_run(run_id)),
                   ("artifact path", lambda: client.list_artifacts(run_id, artifact))]
    else:
        return None
    for what, lookup in lookups:
        try:
            if not lookup():  # an empty artifact listing: nothing at that path
                return what
        except MlflowException:
            return what
    return None


def _require_mlmodel(path: Path, uri: str) -> None:
    if not (path / "MLmodel").is_file():
        raise InvalidParameter(
            f"The directory named by the {_kind(uri)} model URI has no MLmodel file: "
            "it is not an MLflow model."
        )


def load_mlmodel(path: Path, uri: str):
    """MLflow's ``Model`` of the MLmodel file in ``path``; a file that is no valid YAML, or that
    MLflow cannot parse, is one error giving the line at fault (yaml's mark) but never the text
    there, which may be anything."""
    from mlflow.models import Model

    try:
        return Model.load(str(path / "MLmodel"))
    except Exception as exc:  # a corrupt YAML or a field MLflow cannot parse
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidParameter(
            f"The MLmodel file of the {_kind(uri)} model could not be read{where} "
            f"({type(exc).__name__})."
        ) from None


def read_model(path: os.PathLike, uri: Optional[str] = None) -> ModelInfo:
    """Read MLmodel in ``path``; refuse a model that MLflow cannot serve as a pyfunc."""
    path = Path(path)
    uri = uri if uri is not None else str(path)
    _require_mlmodel(path, uri)
    mlmodel = load_mlmodel(path, uri)
    pyfunc = mlmodel.flavors.get(PYFUNC)
    if pyfunc is None:
        raise InvalidParameter(
            "The model has no python_function flavor, so it cannot be served without code "
            f"(flavors: {', '.join(sorted(mlmodel.flavors)) or 'none'})."
        )
    env = pyfunc.get("env") or {}
    if isinstance(env, str):  # MLflow < 2.0 wrote only a conda file name
        env = {"conda": env}
    env_files = {kind: path / name for kind, name in env.items() if name}
    if (path / "requirements.txt").is_file():
        env_files["requirements"] = path / "requirements.txt"
    return ModelInfo(
        uri=uri,
        path=path,
        flavors=dict(mlmodel.flavors),
        loader_module=pyfunc.get("loader_module", ""),
        signature=mlmodel.signature,
        input_example_info=mlmodel.saved_input_example_info,
        env_files=env_files,
        mlflow_version=mlmodel.mlflow_version,
        python_version=pyfunc.get("python_version"),
    )


def load_model(
    uri: str, dst_dir: Optional[os.PathLike] = None, copy_local: bool = False
) -> ModelInfo:
    """resolve_model_dir + read_model."""
    return read_model(resolve_model_dir(uri, dst_dir, copy_local=copy_local), uri=uri)


def is_mlflow_model(path: os.PathLike) -> bool:
    return (Path(path) / "MLmodel").is_file()


def place_model(uri: str, azureml_model_dir: os.PathLike) -> Path:
    """Put the model named by ``uri`` into ``azureml_model_dir`` under its own name, the layout a
    scoring script finds in AZUREML_MODEL_DIR: a file ``m.pkl`` -> ``<dir>/m.pkl``, a folder
    ``models`` -> ``<dir>/models/...``, ``runs:/<id>/model`` and a registered model ->
    ``<dir>/model/...``.
    Any files, not only MLflow models. Returns the placed file or folder."""
    mlflow_uri = to_mlflow_uri(uri)
    root = Path(azureml_model_dir)
    root.mkdir(parents=True, exist_ok=True)
    local = _local_path(mlflow_uri)
    if local is not None:
        if not local.exists():
            raise NotFound(f"Nothing exists at the path given as the model ({_kind(uri)}).")
        local = local.resolve()
        target = root / local.name
        if local.is_dir():
            shutil.copytree(local, target)
        else:
            shutil.copy2(local, target)
        return target
    # runs:/<id>/<path> downloads as <dir>/<path's last folder>; a registered model downloads
    # its files themselves, so they go under `model`, the folder MLflow logs models to
    dst = root if _scheme(mlflow_uri) == "runs" else root / "model"
    from mlflow.exceptions import MlflowException

    try:
        from mlflow.artifacts import download_artifacts

        return Path(download_artifacts(artifact_uri=mlflow_uri, dst_path=str(dst)))
    except MlflowException as exc:
        raise _registry_error(uri, mlflow_uri, exc) from None
    except OSError as exc:
        raise DeployError(
            f"The {_kind(uri)} model could not be fetched ({type(exc).__name__}); "
            "check MLFLOW_TRACKING_URI."
        ) from None
