"""A warm interpreter per model environment that starts scoring servers by forking.

A server's cold start is mostly imports: mlflow.pyfunc about 1.2 s, then the model's own libraries
(scikit-learn, scipy, skops: about 2 s) while it loads (bench/RESULTS.md). This process pays them
once per environment: it imports the server's stack, then forks one gunicorn master per request,
so a new deployment only loads its model. Each forked master reports the modules it imported
while loading its model (the ``.modules`` file beside the socket) and they are imported here too,
so the next deployment of that kind of model finds its libraries loaded.

Written by hand because multiprocessing's forkserver keeps its children as its own: a scoring
server must outlive this process and lead its own session, exactly like one started by exec.

    python -m mlflow_deploy.scoring.forkserver SOCKET IDLE_SECONDS

Protocol: a Unix socket; a request is one JSON line ``{"argv", "env", "cwd", "log"}`` (gunicorn's
argv without the interpreter, the server's whole environment, its folder and log file); the answer
is one JSON line ``{"pid": <the gunicorn master>}``. The master is a grandchild: reparented to init
at once, so this process never waits on servers and exits after IDLE_SECONDS without a request.
"""
import gc
import importlib
import json
import os
import signal
import socket
import sys
import time
import traceback
import warnings
from typing import Any, Dict, Iterable

#: what every scoring server imports before its model: gunicorn, Flask, ours, mlflow.pyfunc
STACK = (
    "gunicorn.app.wsgiapp",
    "gunicorn.arbiter",
    "gunicorn.workers.sync",
    "mlflow_deploy.scoring.worker",
    "flask",
    "mlflow_deploy.scoring.app",
    "mlflow_deploy.scoring.pipeline",
    "mlflow_deploy.scoring.script",
    "mlflow_deploy.scoring.predictor",
    "mlflow.pyfunc",
)
#: set in a forked master: where gunicorn_conf.when_ready writes the modules it imported
LEARN_ENV = "MLFLOW_DEPLOY_FORKSERVER_MODULES"
# modules whose import does work beyond defining things: wsgi loads a model, gunicorn_conf reads
# a server config; a user's scoring script is not importable here (no code folder on sys.path)
_NEVER = ("__main__", "__mp_main__", "mlflow_deploy.scoring.wsgi",
          "mlflow_deploy.scoring.gunicorn_conf")
_MAX_REQUEST = 1 << 20


def warm(names: Iterable[str]) -> None:
    """Import what is importable of ``names``; a module that fails is simply left to the server."""
    for name in names:
        if name in sys.modules or name in _NEVER:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(name)
        except BaseException:  # noqa: B036 - an import may even sys.exit(); the server will see it
            pass
    # the imported code lives as long as the servers forked from here: keep it out of collections
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()


def warm_requirement_check() -> None:
    """Build, once for every server forked from here, the map MLflow's model load reads.

    ``mlflow.pyfunc.load_model`` checks the model's requirements against the installed
    packages, and the first check in a process maps every installed distribution's files to
    the modules they hold: 0.1-0.6 s here (0.58 s of a new instance's 0.67 s under load),
    most of a new server's start once its imports are warm. The map is inherited across the
    fork, and stays true: a built env is not changed after its build (the project's own
    interpreter, which is, is never forked from here).
    MLflow builds it in a private function of ``mlflow.utils.requirements_utils`` (mlflow 2.7
    to 3.x alike): where that is missing, nothing is warmed and each server builds its own."""
    try:
        from mlflow.utils import requirements_utils

        requirements_utils._init_packages_to_modules_map()
    except Exception:  # noqa: BLE001 - only a start's speed depends on it
        pass


def report_modules() -> None:
    """In a forked master once its model is loaded: tell the fork server what it imported."""
    path = os.environ.pop(LEARN_ENV, None)
    if not path:
        return
    tmp = "{}.{}".format(path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(sorted(sys.modules)))
    os.replace(tmp, path)


def _warm_learned(path: str) -> None:
    try:
        with open(path, encoding="utf-8") as f:
            names = f.read().split()
        os.unlink(path)
    except OSError:
        return
    warm(names)


def _become_server(request: Dict[str, Any], learned: str) -> None:
    """In the grandchild: the gunicorn master of one deployment, as if started by exec."""
    os.setsid()  # its own session and process group, which `stop` kills as one
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    os.chdir(request["cwd"])
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[LEARN_ENV] = learned
    # gunicorn's default --chdir is the cwd when its config module was imported: this process's
    sys.argv = [request["argv"][0], "--chdir", request["cwd"]] + list(request["argv"][1:])
    from gunicorn.app.wsgiapp import run

    run()  # parses sys.argv like the `gunicorn` script; ends in sys.exit


def _fork_server(conn: socket.socket, listener: socket.socket, learned: str) -> None:
    data = b""
    while not data.endswith(b"\n") and len(data) < _MAX_REQUEST:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    request = json.loads(data.decode("utf-8"))
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        # 3.12+ warns when a process with threads forks: numpy's BLAS pool threads are here, as in
        # every gunicorn master that preloads a model, and OpenBLAS re-creates them after a fork
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
        if child == 0:
            code = 1
            try:
                listener.close()
                grandchild = os.fork()
                if grandchild:
                    conn.sendall(json.dumps({"pid": grandchild}).encode("utf-8") + b"\n")
                    code = 0
                else:
                    conn.close()
                    try:
                        _become_server(request, learned)
                        code = 0
                    except SystemExit as exc:
                        code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: B036 - a forked child must never return to the loop
                traceback.print_exc()
            finally:
                os._exit(code)
    os.waitpid(child, 0)


def main(argv=None) -> None:
    path, idle = (argv or sys.argv[1:])[:2]
    idle_s = float(idle)
    learned = path + ".modules"
    warm(STACK)
    warm_requirement_check()
    _warm_learned(learned)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = "{}.{}".format(path, os.getpid())
    listener.bind(tmp)
    listener.listen(16)
    os.replace(tmp, path)  # the socket appears once it is listening
    with open(path + ".pid", "w") as f:
        f.write(str(os.getpid()))
    inode = os.stat(path).st_ino
    print("mlflow-deploy fork server {} ready on {}".format(os.getpid(), path), flush=True)
    listener.settimeout(1.0)
    last = time.monotonic()
    while time.monotonic() - last < idle_s:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            _warm_learned(learned)
            continue
        with conn:
            conn.settimeout(30)
            try:
                _fork_server(conn, listener, learned)
            except (OSError, ValueError):
                traceback.print_exc()
        last = time.monotonic()
    try:
        if os.stat(path).st_ino == inode:  # a successor may already own the path
            os.unlink(path)
            os.unlink(path + ".pid")
    except OSError:
        pass


if __name__ == "__main__":
    main()
