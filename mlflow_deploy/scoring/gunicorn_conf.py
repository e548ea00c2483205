"""gunicorn settings for a scoring server, read from the ServerConfig file.

Used as `gunicorn -c python:mlflow_deploy.scoring.gunicorn_conf mlflow_deploy.scoring.wsgi:app`.
A USR2 re-exec imports this module again in the new master, which is how an update picks up the
new revision while keeping the listening socket: no request is refused during an update.
"""
import os

from mlflow_deploy.scoring import metrics
from mlflow_deploy.scoring.config import CONFIG_ENV, ServerConfig

_config = ServerConfig.from_env()
# before the app (and any metric) is loaded: the workers' metrics files go to the server's own
# folder, beside its config
metrics.open_directory(os.path.dirname(os.path.abspath(os.environ[CONFIG_ENV])))

# a USR2 re-exec keeps the listening sockets it inherits (GUNICORN_FD) and binds nothing new
bind = ([_config.bind] if _config.bind else []) + (
    ["unix:" + _config.unix_socket] if _config.unix_socket else [])
workers = max(1, int(_config.workers))
# gunicorn's sync worker, whose own refusals (a malformed header, a request line too long) are
# answered as the app answers: JSON, request ids, a 4xx
worker_class = "mlflow_deploy.scoring.worker.ScoringWorker"
preload_app = True
pidfile = _config.pidfile
# gunicorn kills a worker that is silent this long: a backstop behind our own 504, which fires
# first and recycles the worker cleanly
timeout = max(30, int(_config.request_timeout_ms / 1000.0 * 2) + 5)
graceful_timeout = 30
accesslog = None
# gunicorn >= 25 opens a control socket at one fixed path per user: several servers would clash
control_socket_disable = True
# gunicorn takes the scheme from X-Forwarded-* when the peer is local or any Unix socket peer
# (the gateway's hop): a client could have a request refused for scheme headers that contradict
# each other. Nothing here reads the scheme. (SCRIPT_NAME and PATH_INFO headers: worker.py.)
secure_scheme_headers = {}
errorlog = "-"
loglevel = "info"
proc_name = "mlflow-deploy:{}".format(_config.deployment or "serve")


def when_ready(server):
    from mlflow_deploy.scoring import logfile, wsgi
    from mlflow_deploy.scoring.forkserver import report_modules

    report_modules()  # a master forked by the env's fork server: what to import there next time
    if not _config.bind:
        _drop_tcp_listeners(server)
    wsgi.watchdog.start()
    logfile.keep_rotated()  # the log every process of this server appends to


def _drop_tcp_listeners(server):
    """A master re-exec'd by an update from one an earlier version started inherits its TCP
    listener too: that port is the endpoint's gateway's now, so this master closes its copy
    before any worker is forked, and the port is free once the old master has drained."""
    from gunicorn.sock import TCPSocket

    for listener in [each for each in server.LISTENERS if isinstance(each, TCPSocket)]:
        listener.close()
        server.LISTENERS.remove(listener)


def pre_fork(server, worker):
    """In the master: the worker about to be forked gets its row in the watchdog's table."""
    from mlflow_deploy.scoring import wsgi

    wsgi.watchdog.assign(worker)


def child_exit(server, worker):
    from mlflow_deploy.scoring import wsgi

    wsgi.watchdog.release(worker)
    metrics.worker_exited(worker.pid)


def post_fork(server, worker):
    """After a 504 the worker finishes that response and exits; the master forks a fresh one."""
    from mlflow_deploy.scoring import wsgi

    wsgi.watchdog.attach(worker)
    app = worker.app.wsgi()

    def recycle():
        worker.alive = False

    app.config["ON_TIMEOUT"] = recycle


def post_worker_init(worker):
    """Each worker prepares itself here (a model's warm-up, a script's init()), before it takes
    traffic; the last one through reports the revision ready."""
    from mlflow_deploy.scoring.wsgi import init_worker

    init_worker(worker.notify, worker.ppid)


def pre_exec(server):
    """A USR2 re-exec starts the new master with the interpreter of the new revision's
    environment (an update may move a deployment to another env); the listening socket is kept."""
    new = ServerConfig.from_env()
    if new.python and new.python != server.START_CTX[0]:
        script = os.path.join(os.path.dirname(new.python), "gunicorn")
        server.START_CTX[0] = new.python
        server.START_CTX["args"] = [new.python, script] + server.START_CTX["args"][2:]
