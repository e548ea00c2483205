"""The server's settings: one JSON file named by MLFLOW_DEPLOY_SERVER_CONFIG.

The control plane writes it; gunicorn_conf.py and wsgi.py read it. A file (not argv) so that a
gunicorn USR2 re-exec picks up a new revision of the deployment without a new listening socket.
"""
import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Optional

from .options import DEFAULTS, ScoringOptions

CONFIG_ENV = "MLFLOW_DEPLOY_SERVER_CONFIG"


@dataclass
class ServerConfig:
    model_dir: str  # a local directory holding MLmodel
    # host:port, or None for none: a deployment's server listens only on its Unix socket, and
    # its port is its gateway's, so no client reaches a synchronous worker before its whole
    # request is read (a slow one would hold the worker)
    bind: Optional[str] = "127.0.0.1:5001"
    # listen on this Unix socket, a path relative to the server's folder (a deployment's) or
    # absolute: its gateway forwards over it, sparing a TCP handshake per request
    unix_socket: Optional[str] = None
    # how it scores (options.ScoringOptions, where the defaults are), flat in the file
    workers: int = DEFAULTS.workers
    validation: str = DEFAULTS.validation.value
    request_timeout_ms: int = DEFAULTS.request_timeout_ms
    max_request_mb: float = DEFAULTS.max_request_mb
    error_details: bool = DEFAULTS.error_details
    model_uri: Optional[str] = None  # what the user asked for, shown by /version
    deployment: Optional[str] = None
    revision: int = 1
    pidfile: Optional[str] = None  # gunicorn pidfile: the master's pid across USR2 re-execs
    ready_file: Optional[str] = None  # JSON {"revision", "pid", "ok", "error"} once loaded / failed
    # the interpreter of the environment this revision runs in: a USR2 re-exec switches to it
    python: Optional[str] = None
    # a user scoring script (Azure's code_configuration): code folder, script file inside it, and
    # the folder given to the script as AZUREML_MODEL_DIR; model_dir then may be no MLflow model
    code_dir: Optional[str] = None
    scoring_script: Optional[str] = None
    azureml_model_dir: Optional[str] = None
    # set in the server's environment before the model loads (Azure's environment_variables)
    environment_variables: Dict[str, str] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ServerConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_env(cls) -> "ServerConfig":
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise RuntimeError(CONFIG_ENV + " is not set: start the server through mlflow-deploy")
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def write(self, path: str) -> None:
        """Write atomically, so a re-exec never reads half a file."""
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(asdict(self), f, indent=2)
        os.replace(tmp, path)

    @property
    def options(self) -> ScoringOptions:
        return ScoringOptions.taken_from(self)

    @property
    def port(self) -> Optional[int]:
        return int(self.bind.rsplit(":", 1)[1]) if self.bind else None
