"""A scoring server in the foreground: ``mlflow deployments run-local`` and ``mlflow-deploy serve``.

Nothing is recorded in the store; the model is fetched into a temporary directory that goes away
with the server. Ctrl-C stops it.
"""

import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

from mlflow_deploy.errors import InvalidState, ServerFailed
from mlflow_deploy.online import supervisor
from mlflow_deploy.errors import InvalidParameter
from mlflow_deploy.online.deployments import check_flavor, server_config_for
from mlflow_deploy.online.revision import stage_revision
from mlflow_deploy.online.settings import parse_settings

__all__ = ["serve", "DEFAULT_PORT"]

DEFAULT_PORT = 5001  # azmlinfsrv's default


def serve(
    model_uri: str,
    config: Optional[Mapping[str, Any]] = None,
    name: Optional[str] = None,
    flavor: Optional[str] = None,
) -> None:
    """Run the model's scoring server on 127.0.0.1 until Ctrl-C; raise if it fails."""
    check_flavor(flavor)
    settings = parse_settings(config)
    if settings.instance_count != 1:
        raise InvalidParameter("A foreground server is one instance: give it more workers with "
                               "WORKER_COUNT in environment_variables, not instance_count.")
    port = settings.port or DEFAULT_PORT
    if not supervisor.port_is_free(port):
        raise InvalidState("The port is already in use (--port / config 'port').")
    with tempfile.TemporaryDirectory(prefix="mlflow-deploy-serve-") as tmp:
        files, env = stage_revision(Path(tmp), 1, model_uri, settings)
        config_path = Path(tmp) / "server.json"
        server_config = server_config_for(
            name or "serve",
            files,
            model_uri,
            settings,
            port,
            revision=1,
            deployment_dir=None,
            python=env.python,
        )
        server_config.write(str(config_path))
        print(
            f"Serving the model at http://{supervisor.HOST}:{port}/score (Ctrl-C stops it)",
            flush=True,
        )
        code = supervisor.run_foreground(config_path, python=env.python)
    # 0: stopped normally; gunicorn exits 0 on SIGINT/SIGTERM too
    if code not in (0, -2, -15, 130):
        raise ServerFailed(f"The scoring server exited with code {code}; see its output above.")
