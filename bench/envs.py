"""Environment benchmark (issue 3): our model environments side by side with MLflow's, one run.

    .venv/bin/python bench/envs.py [--runs 3] [--skip-cold] [--no-virtualenv]

Same model for both tools: example_models.build.save_all()'s ``diabetes`` (Ridge, 10 double
columns; requirements: the mlflow, cloudpickle, numpy, pandas, scikit-learn, scipy pins of this
venv), saved into a temporary folder. Four scenarios, each a median of ``--runs`` repetitions in
which every contender runs once, round-robin (the starting contender rotates each repetition),
so that ours and MLflow's share the machine's load:

1. reuse      an env that is already built: ``prepare_environment`` in-process, ``mlflow-deploy
              env build MODEL_DIR``, against ``mlflow models prepare-env -m MODEL_DIR
              --env-manager uv|virtualenv`` (private MLFLOW_ENV_ROOT, env built before).
              Two diagnostic rows beside them: a bare `python -c` calling prepare_environment,
              and the same with ``mlflow`` stubbed in sys.modules (the floor without its import).
2. warm       a new env with a warm package cache: ``mlflow-deploy env build`` with a fresh
              MLFLOW_DEPLOY_HOME, against ``prepare-env`` with a fresh MLFLOW_ENV_ROOT; the uv cache
              is the user's (warm; the warm-up builds fill it), pip's a private warmed one, and
              our build cache (the project wheel, per source hash) the user's default one
              (``~/.cache/mlflow-deploy``, warm: the warm-up builds the wheel). The fresh home
              has no resolution memo, so each cell resolves (``uv pip compile``), as a new env does.
3. cold       as 2 with an empty UV_CACHE_DIR (and PIP_CACHE_DIR) each time, and for ours an empty
              MLFLOW_DEPLOY_BUILD_CACHE too (the wheel is built in the cell): network-bound.
4. serve      ``create_deployment`` (in-process) until the first 200 to a POST of the payload,
              env cached, against ``mlflow models serve --env-manager uv`` until /ping answers and
              until the first 200 of /invocations, env reused, and again with a second MLflow env
              built with UV_COMPILE_BYTECODE=1 (ours are byte-compiled; MLflow's are not by
              default); every server binds 127.0.0.1 on a free port and is stopped after its cell.
              Ours twice: ``ours-create``, forked from the env's fork server (online/forkserver.py;
              the warm-up's create started it, as a user's first deployment of the env does), and
              ``ours-create-exec`` with fork servers off (MLFLOW_DEPLOY_FORKSERVER_IDLE_S=0), i.e.
              the first deployment of an env. The bench's fork servers live in its own run folder
              and are stopped at exit.

Our code runs from a snapshot of this checkout's ``pyproject.toml``/``README.md``/
``mlflow_deploy/`` taken at start (byte-compiled, as an installed package is), so that edits made
to the working tree during the run do not change the wheel hash and force rebuilds half way.
Every cell records whether an env was (re)built; a "reuse" cell that built is reported as such.

Prints the tables; writes the raw numbers to bench/out/envs-<UTC stamp>.json. Everything else
(homes, env roots, caches, the model, the snapshot) lives in one temporary folder, removed at exit.
"""
import argparse
import contextlib
import io
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
MLFLOW = VENV / "bin" / "mlflow"
OURS_CLI = VENV / "bin" / "mlflow-deploy"
PAYLOAD_FILE = ROOT / "example_models" / "payloads" / "diabetes-split.json"
HOST = "127.0.0.1"
POLL_S = 0.02
CELL_TIMEOUT_S = 1800

# variables that would redirect a tool's state away from the folders this benchmark gives it
_SCRUB = ("MLFLOW_DEPLOY_HOME", "MLFLOW_DEPLOY_ENV_CACHE", "MLFLOW_DEPLOY_BUILD_CACHE",
          "MLFLOW_ENV_ROOT", "UV_CACHE_DIR", "PIP_CACHE_DIR", "UV_COMPILE_BYTECODE", "PYTHONPATH",
          "MLFLOW_TRACKING_URI")


# -- machine ----------------------------------------------------------------------------------------
def uptime() -> str:
    return subprocess.run(["uptime"], stdout=subprocess.PIPE, text=True).stdout.strip()


def _cpu_busy() -> float:
    """Seconds of CPU the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    """CPU of this process and of the children it has waited for (their descendants too)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@contextlib.contextmanager
def load_probe(record: Dict[str, Any]):
    """Adds the 1-min load average at start, the machine's busy cores during the cell and (where
    the cell's processes were waited for) our own cores, so 'other' = busy - own."""
    record["loadavg_1m"] = float(open("/proc/loadavg").read().split()[0])
    busy0, own0, t0 = _cpu_busy(), _own_cpu(), time.monotonic()
    try:
        yield
    finally:
        wall = max(time.monotonic() - t0, 1e-6)
        record["machine_busy_cores"] = round((_cpu_busy() - busy0) / wall, 2)
        record["own_cores"] = round((_own_cpu() - own0) / wall, 2)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def base_env(**extra: Optional[str]) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["PATH"] = "{}:{}".format(VENV / "bin", env.get("PATH", ""))  # mlflow's `uv`, ours
    for key, value in extra.items():
        if value is not None:
            env[key] = value
    return env


def run_stamped(cmd: List[str], env: Dict[str, str], timeout: float = CELL_TIMEOUT_S,
                cwd: Optional[str] = None) -> Dict[str, Any]:
    """Run a command to completion; every output line (stdout+stderr) stamped with the seconds
    since the start. Returns wall seconds, exit code and the stamped lines."""
    lines: List[List[Any]] = []
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    done = threading.Event()
    background(lambda: done.wait(timeout) or _kill_group(proc))
    try:
        for raw in proc.stdout:
            lines.append([round(time.monotonic() - t0, 3),
                          raw.decode("utf-8", "replace").rstrip()[:400]])
        rc = proc.wait()
    except BaseException:  # interrupted: leave nothing running
        _kill_group(proc)
        raise
    finally:
        done.set()
    return {"seconds": time.monotonic() - t0, "rc": rc, "lines": lines}


def background(target: Callable[[], Any]) -> threading.Thread:
    """A daemon thread that blocks SIGTERM/SIGINT, so that they reach the main thread even while
    it waits in a read (and the benchmark stops and cleans up at once)."""
    def run():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        target()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _kill_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a process we started in its own session, and everything in its process group."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def http(method: str, url: str, body: Optional[bytes] = None, timeout: float = 5.0) -> int:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, OSError):
        return 0


def poll_until_200(method: str, url: str, body: Optional[bytes], t0: float, deadline: float,
                   alive: Callable[[], bool] = lambda: True) -> Optional[float]:
    while time.monotonic() < deadline:
        if http(method, url, body, timeout=10) == 200:
            return time.monotonic() - t0
        if not alive():
            return None
        time.sleep(POLL_S)
    return None


def rmtree(path: Path) -> None:
    shutil.rmtree(str(path), ignore_errors=True)


def stats(values: List[float]) -> Optional[Dict[str, float]]:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


# -- the benchmark ----------------------------------------------------------------------------------
class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="mlflow-deploy-bench-envs-"))
        self.snap = self.tmp / "src"  # byte-compiled snapshot of our package
        self.snap_nopyc = self.tmp / "src-nopyc"  # the same without .pyc, as the checkout runs
        self.home = self.tmp / "home-reuse"  # ours: envs built once, reused
        self.roots = {m: self.tmp / ("mlflow-" + m) for m in ("uv", "virtualenv", "uv-pyc")}
        self.pip_cache = self.tmp / "pip-cache"  # virtualenv's warm pip cache (private)
        self.model = self.tmp / "models" / "diabetes"
        self.payload = json.loads(PAYLOAD_FILE.read_text())
        self.results: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
        self.warmup: Dict[str, Any] = {}  # before anything asks mlflow_managers()
        self.profile: Dict[str, Any] = {}
        self._deployments: List[str] = []
        self._seq = 0

    def mlflow_managers(self) -> List[str]:
        managers = ["uv"] + ([] if self.args.no_virtualenv else ["virtualenv"])
        # a peer whose env could not be built is left out of the cells (the warm-up says why)
        return [m for m in managers if self.warmup.get("mlflow-" + m, {}).get("rc", 0) == 0]

    # setup ------------------------------------------------------------------------------------
    def snapshot(self) -> None:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
        for dest in (self.snap, self.snap_nopyc):
            dest.mkdir(parents=True)
            shutil.copytree(str(ROOT / "mlflow_deploy"), str(dest / "mlflow_deploy"), ignore=ignore)
            for name in ("pyproject.toml", "README.md"):
                shutil.copy2(str(ROOT / name), str(dest / name))
        subprocess.run([str(PY), "-m", "compileall", "-q", str(self.snap / "mlflow_deploy")],
                       check=True)
        sys.path.insert(0, str(self.snap))
        import mlflow_deploy
        assert Path(mlflow_deploy.__file__).resolve().is_relative_to(self.snap), \
            mlflow_deploy.__file__
        from mlflow_deploy.envs.wheel import source_hash
        self.source_hash = source_hash(self.snap)

    def make_model(self) -> None:
        code = ("import sys; from example_models.build import save_all; "
                "print(save_all(sys.argv[1])['diabetes'])")
        subprocess.run([str(PY), "-c", code, str(self.model.parent)], cwd=str(ROOT), check=True,
                       env=base_env(), stdout=subprocess.DEVNULL)
        for other in self.model.parent.iterdir():
            if other != self.model:
                rmtree(other)
        self.model_files = {p.name: p.read_text() for p in self.model.iterdir()
                            if p.name in ("MLmodel", "requirements.txt", "python_env.yaml")}

    def env_ours(self, home: Path, nopyc: bool = False, **extra) -> Dict[str, str]:
        return base_env(MLFLOW_DEPLOY_HOME=str(home),
                        PYTHONPATH=str(self.snap_nopyc if nopyc else self.snap), **extra)

    def env_mlflow(self, root: Path, manager: str, **extra) -> Dict[str, str]:
        if manager == "virtualenv":
            extra.setdefault("PIP_CACHE_DIR", str(self.pip_cache))
        return base_env(MLFLOW_ENV_ROOT=str(root), **extra)

    def warm_up(self) -> None:
        """Build each tool's reusable env once (and fill the package caches). Timed, reported as
        first builds, not used in the medians."""
        print("warm-up: building the envs that the reuse and serve cells reuse ...", flush=True)
        from mlflow_deploy.envs import prepare_environment
        t0 = time.monotonic()
        env = prepare_environment(self.model, manager="uv", home=self.home)
        self.warmup["ours-api"] = {"seconds": time.monotonic() - t0, "built": env.built,
                                   "key": env.key, "python": env.python}
        self.ours_key = env.key
        # the env's first deployment: writes the env's .pyc and starts its fork server, which
        # the "ours-create" cells then fork from
        first = self.cell_ours_create()
        self.warmup["ours-first-create"] = {k: first.get(k) for k in ("seconds", "ok", "error")}
        for name, manager, extra in (("mlflow-uv", "uv", {}),
                                     ("mlflow-uv-pyc", "uv", {"UV_COMPILE_BYTECODE": "1"}),
                                     ("mlflow-virtualenv", "virtualenv", {})):
            if manager not in self.mlflow_managers():
                continue
            root = self.roots["uv-pyc" if name.endswith("pyc") else manager]
            out = run_stamped([str(MLFLOW), "models", "prepare-env", "-m", str(self.model),
                               "--env-manager", manager], self.env_mlflow(root, manager, **extra))
            self.warmup[name] = {"seconds": out["seconds"], "rc": out["rc"],
                                 "tail": out["lines"][-15:]}
            if out["rc"] != 0:
                print("warm-up {} FAILED (rc {}):\n{}".format(
                    name, out["rc"], "\n".join(l for _, l in out["lines"][-15:])), flush=True)
        self.mlflow_env_size = {k: _du(v) for k, v in self.roots.items() if v.exists()}
        self.ours_env_size = _du(self.home / "envs" / self.ours_key)
        print("warm-up done: " + ", ".join("{} {:.1f}s".format(k, v.get("seconds") or float("nan"))
                                           for k, v in self.warmup.items()), flush=True)

    # cells ------------------------------------------------------------------------------------
    def cell_ours_api_reuse(self) -> Dict[str, Any]:
        from mlflow_deploy.envs import prepare_environment
        t0 = time.monotonic()
        env = prepare_environment(self.model, manager="uv", home=self.home)
        wall = time.monotonic() - t0
        return {"seconds": wall, "ok": True, "built": env.built, "resolved": env.resolved,
                "reported_seconds": env.seconds, "key": env.key}

    def cell_ours_cli(self, home: Path, nopyc: bool = False, **extra) -> Dict[str, Any]:
        out = run_stamped([str(OURS_CLI), "env", "build", str(self.model)],
                          self.env_ours(home, nopyc, **extra))
        text = "\n".join(l for _, l in out["lines"])
        status = re.search(r"^status: (\w+)", text, re.M)
        reported = re.search(r"^seconds: ([\d.]+)", text, re.M)
        steps = [[t, l[len("mlflow-deploy: "):]] for t, l in out["lines"]
                 if l.startswith("mlflow-deploy: ")]
        return {"seconds": out["seconds"], "ok": out["rc"] == 0 and status is not None,
                "built": status is not None and status.group(1) == "built",
                "reported_seconds": float(reported.group(1)) if reported else None,
                "steps": steps, "tail": None if out["rc"] == 0 else out["lines"][-20:]}

    def cell_ours_process(self, stub_mlflow: bool) -> Dict[str, Any]:
        """Not shipping commands: a plain process that calls prepare_environment (no click, no
        CLI), and the same with ``mlflow`` replaced by a stub in sys.modules, i.e. what `env build`
        would cost if nothing on its path imported mlflow (today mlflow_deploy.envs.errors and
        mlflow_deploy.errors import it for MlflowException and its error codes)."""
        code = ("import sys; from mlflow_deploy.envs import prepare_environment; "
                "e = prepare_environment(sys.argv[1]); print('built', e.built, 'mlflow', "
                "hasattr(sys.modules.get('mlflow'), '__version__'))")
        if stub_mlflow:
            code = _MLFLOW_STUB + code
        out = run_stamped([str(PY), "-c", code, str(self.model)], self.env_ours(self.home))
        text = "\n".join(l for _, l in out["lines"])
        return {"seconds": out["seconds"], "ok": out["rc"] == 0, "built": "built True" in text,
                "imported_mlflow": "mlflow True" in text,
                "tail": None if out["rc"] == 0 else out["lines"][-20:]}

    def cell_mlflow_prepare(self, root: Path, manager: str, **extra) -> Dict[str, Any]:
        out = run_stamped([str(MLFLOW), "models", "prepare-env", "-m", str(self.model),
                           "--env-manager", manager], self.env_mlflow(root, manager, **extra))
        text = "\n".join(l for _, l in out["lines"])
        return {"seconds": out["seconds"], "ok": out["rc"] == 0,
                "built": "already exists" not in text,
                "steps": [x for x in out["lines"] if " INFO " in x[1] or "Using CPython" in x[1]],
                "tail": None if out["rc"] == 0 else out["lines"][-20:]}

    def fresh(self, what: str) -> Path:
        self._seq += 1
        return self.tmp / "{}-{}".format(what, self._seq)

    def cell_ours_new(self, cold: bool) -> Dict[str, Any]:
        home = self.fresh("home-new")
        uv_cache = self.fresh("uv-cache") if cold else None
        build_cache = self.fresh("build-cache") if cold else None  # warm: the user's
        try:
            extra = {"UV_CACHE_DIR": str(uv_cache),
                     "MLFLOW_DEPLOY_BUILD_CACHE": str(build_cache)} if cold else {}
            result = self.cell_ours_cli(home, **extra)
            result["env_bytes"] = _du(home / "envs")
            return result
        finally:
            rmtree(home)
            for cache in (uv_cache, build_cache):
                if cache:
                    rmtree(cache)

    def cell_mlflow_new(self, manager: str, cold: bool) -> Dict[str, Any]:
        root = self.fresh("mlflow-root-new")
        cache = self.fresh("pkg-cache") if cold else None
        try:
            extra = {}
            if cold:
                extra = {"UV_CACHE_DIR": str(cache)} if manager == "uv" else \
                    {"PIP_CACHE_DIR": str(cache)}
            result = self.cell_mlflow_prepare(root, manager, **extra)
            result["env_bytes"] = _du(root)
            return result
        finally:
            rmtree(root)
            if cache:
                rmtree(cache)

    def cell_ours_create(self, fork_servers: bool = True) -> Dict[str, Any]:
        """create_deployment in this process (env cached under self.home) -> first 200; with
        ``fork_servers`` off, the server is started by exec (an env's first deployment)."""
        from mlflow_deploy.online import create_deployment, delete_deployment
        from mlflow_deploy.online.forkserver import IDLE_ENV
        if not fork_servers:
            os.environ[IDLE_ENV] = "0"
            try:
                return self.cell_ours_create()
            finally:
                os.environ.pop(IDLE_ENV, None)
        name = "bench-{}".format(self._seq)
        self._seq += 1
        body = json.dumps(self.payload).encode()
        stderr = _StampedStream()
        result: Dict[str, Any] = {"ok": False}
        t0 = time.monotonic()
        try:
            with contextlib.redirect_stderr(stderr):
                stderr.t0 = t0
                info = create_deployment(name, str(self.model), config={"instance_count": 1})
            self._deployments.append(name)
            returned = time.monotonic() - t0
            url = info["scoring_uri"]
            first = poll_until_200("POST", url, body, t0, t0 + 120)
            result = {"seconds": first, "ok": first is not None, "create_returned_s": returned,
                      "scoring_uri": url, "env_key": (info.get("environment") or {}).get("key"),
                      "steps": stderr.lines}
            result["built"] = any("built env" in l for _, l in stderr.lines) or (
                result["env_key"] not in (None, self.ours_key))
        except Exception as exc:  # recorded, the run goes on
            result.update(error=repr(exc)[:2000], steps=stderr.lines)
        finally:
            if name in self._deployments or _deployment_exists(name):
                with contextlib.suppress(Exception):
                    delete_deployment(name)
                with contextlib.suppress(ValueError):
                    self._deployments.remove(name)
        return result

    def cell_mlflow_serve(self, root: Path) -> Dict[str, Any]:
        port = free_port()
        body = json.dumps({"dataframe_split": {"columns": self.payload["input_data"]["columns"],
                                               "data": self.payload["input_data"]["data"]}})
        lines: List[List[Any]] = []
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [str(MLFLOW), "models", "serve", "-m", str(self.model), "--env-manager", "uv",
             "-h", HOST, "-p", str(port), "-w", "1"],
            env=self.env_mlflow(root, "uv"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)

        def read():
            for raw in proc.stdout:
                lines.append([round(time.monotonic() - t0, 3),
                              raw.decode("utf-8", "replace").rstrip()[:300]])
        reader = background(read)
        try:
            alive = lambda: proc.poll() is None
            base = "http://{}:{}".format(HOST, port)
            ping = poll_until_200("GET", base + "/ping", None, t0, t0 + 300, alive)
            first = poll_until_200("POST", base + "/invocations", body.encode(), t0, t0 + 120,
                                   alive) if ping is not None else None
            text = "\n".join(l for _, l in lines)
            return {"seconds": first, "ok": first is not None, "ping_s": ping, "port": port,
                    "built": "already exists" not in text, "steps": lines[:40],
                    "tail": None if first is not None else lines[-20:]}
        finally:
            _kill_group(proc)
            reader.join(5)

    # profiles ---------------------------------------------------------------------------------
    def profile_ours(self) -> None:
        """Where our reuse and create times go: timing wrappers around the steps (one extra run
        each, not in the medians), and the CLI's imports (python -X importtime)."""
        import mlflow_deploy.envs.build as build
        import mlflow_deploy.envs.lock as lock
        import mlflow_deploy.envs.prepare as prepare
        import mlflow_deploy.online.deployments as deployments
        import mlflow_deploy.revisions as revision
        import mlflow_deploy.online.supervisor as supervisor
        from mlflow_deploy.envs.cache import EnvCache

        steps = [(build, "read_model_requirements"), (lock, "choose_interpreter"),
                 (lock, "project_wheel"), (lock, "inference_requirements"),
                 (lock, "resolve"), (build, "build_env"), (EnvCache, "record_use")]
        with _timed(steps) as spent:
            t0 = time.monotonic()
            prepare.prepare_environment(self.model, manager="uv", home=self.home)
            total = time.monotonic() - t0
        self.profile["reuse_api_steps"] = dict(spent, total=total)

        create_steps = [(revision, "load_model"), (revision, "prepare_environment"),
                        (deployments, "_start"), (supervisor, "start_server"),
                        (supervisor, "wait_ready")]
        with _timed(create_steps) as spent:
            one = self.cell_ours_create()
        self.profile["create_steps"] = dict(spent, total_first_200=one.get("seconds"),
                                            create_returned=one.get("create_returned_s"))
        self.profile["server_start_steps"] = self.profile_server_start()
        imp = subprocess.run([str(PY), "-X", "importtime", "-c", "import mlflow_deploy.cli"],
                             env=self.env_ours(self.home), stderr=subprocess.PIPE, text=True)
        self.profile["cli_imports"] = _top_imports(imp.stderr)
        self.profile["cli_imports_modules"] = _module_times(
            imp.stderr, ["mlflow", "mlflow.exceptions", "click", "mlflow_deploy.envs",
                         "mlflow_deploy.cli.env", "mlflow_deploy.errors"])
        imp = subprocess.run([str(PY), "-X", "importtime", "-c", "import mlflow_deploy.cli"],
                             env=self.env_ours(self.home, nopyc=True), stderr=subprocess.PIPE,
                             text=True)
        self.profile["cli_imports_nopyc"] = _top_imports(imp.stderr)
        t0 = time.monotonic()
        subprocess.run([str(PY), "-c", "pass"], env=self.env_ours(self.home), check=True)
        self.profile["python_startup_s"] = time.monotonic() - t0
        imp = subprocess.run([str(PY), "-X", "importtime", "-c", "import mlflow.cli"],
                             env=base_env(), stderr=subprocess.PIPE, text=True)
        self.profile["mlflow_cli_imports"] = _top_imports(imp.stderr)
        self.profile["warm_build_steps"] = self.profile_warm_build()

    def profile_server_start(self) -> Dict[str, Any]:
        """What the scoring server does before it is ready, step by step, in the env's Python
        (same environment variables as the server): interpreter, gunicorn + flask + our scoring
        modules, mlflow.pyfunc, the model load. One run, not in the medians."""
        code = r"""
import json, sys, time
t = [time.monotonic()]
import gunicorn.app.wsgiapp, flask
t.append(time.monotonic())
import mlflow_deploy.scoring.app, mlflow_deploy.scoring.pipeline
t.append(time.monotonic())
import mlflow.pyfunc
t.append(time.monotonic())
from mlflow_deploy.scoring.predictor import Predictor
p = Predictor.load(sys.argv[1])
t.append(time.monotonic())
print(json.dumps({"gunicorn+flask": t[1]-t[0], "our scoring modules": t[2]-t[1],
                  "mlflow.pyfunc": t[3]-t[2], "model load": t[4]-t[3]}))
"""
        python = self.warmup["ours-api"]["python"]
        t0 = time.monotonic()
        out = subprocess.run([python, "-c", code, str(self.model)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=base_env(
                                 MLFLOW_DEPLOY_HOME=str(self.home)))
        wall = time.monotonic() - t0
        try:
            steps = json.loads(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": out.stderr[-2000:]}
        t0 = time.monotonic()
        subprocess.run([python, "-c", "pass"], check=True)
        steps["interpreter start"] = time.monotonic() - t0
        steps["process wall"] = wall
        return steps

    def profile_warm_build(self) -> Dict[str, Any]:
        """One new env (fresh home, warm uv cache and build cache) in-process, twice: as shipped,
        and with the installer's --compile-bytecode removed (a no-op since envs are installed
        without bytecode), with each installer call timed."""
        from mlflow_deploy.envs import build, prepare_environment
        result: Dict[str, Any] = {}
        original = build.run
        for label, strip in (("as shipped", False), ("without --compile-bytecode", True)):
            home = self.fresh("home-profile")
            calls: List[List[Any]] = []

            def timed_run(cmd, *a, **kw):
                if strip:
                    cmd = [c for c in cmd if c != "--compile-bytecode"]
                t0 = time.monotonic()
                try:
                    return original(cmd, *a, **kw)
                finally:
                    calls.append([" ".join(str(c) for c in cmd[:3]), time.monotonic() - t0])
            steps: List[List[Any]] = []
            t0 = time.monotonic()
            build.run = timed_run
            try:
                env = prepare_environment(self.model, manager="uv", home=home, progress=lambda m:
                                          steps.append([round(time.monotonic() - t0, 2), m]))
                result[label] = {"seconds": time.monotonic() - t0, "built": env.built,
                                 "progress": steps, "installer_calls": calls,
                                 "env_bytes": _du(Path(env.root))}
            except Exception as exc:
                result[label] = {"error": repr(exc)[:2000], "progress": steps}
            finally:
                build.run = original
                rmtree(home)
        return result

    # driver -----------------------------------------------------------------------------------
    def scenario(self, name: str, contenders: Dict[str, Callable[[], Dict[str, Any]]],
                 runs: int, retry_built: bool = False) -> None:
        """Round-robin: each repetition runs every contender once, starting one further on."""
        table = self.results.setdefault(name, {k: [] for k in contenders})
        keys = list(contenders)
        for rep in range(runs):
            order = keys[rep % len(keys):] + keys[:rep % len(keys)]
            for key in order:
                for attempt in range(3 if retry_built else 1):
                    record: Dict[str, Any] = {"rep": rep, "attempt": attempt}
                    with load_probe(record):
                        try:
                            record.update(contenders[key]())
                        except Exception as exc:
                            record.update(ok=False, error=repr(exc)[:2000])
                    table[key].append(record)
                    shown = record.get("seconds")
                    print("  {:9s} rep {} {:28s} {:>8s}  built={} load={:.2f} busy={:.2f}{}".format(
                        name, rep, key, "{:.2f}s".format(shown) if shown is not None else "FAIL",
                        record.get("built"), record["loadavg_1m"], record["machine_busy_cores"],
                        "" if record.get("ok") else "  " + str(record.get("error") or
                                                                record.get("tail"))[:300]),
                          flush=True)
                    if not (retry_built and record.get("built")):
                        break  # a reuse cell that rebuilt is kept, marked, and run again

    def run(self) -> Dict[str, Any]:
        args = self.args
        started = time.time()
        self.uptime_before = uptime()
        print("load before: " + self.uptime_before, flush=True)
        self.snapshot()
        # create_deployment and the Store read the home from the environment (the servers it
        # starts inherit it, which is harmless); no shared env cache may redirect the envs
        os.environ["MLFLOW_DEPLOY_HOME"] = str(self.home)
        os.environ.pop("MLFLOW_DEPLOY_ENV_CACHE", None)
        # the user's default build cache, as the CLI cells get it (base_env scrubs the variable)
        os.environ.pop("MLFLOW_DEPLOY_BUILD_CACHE", None)
        os.environ["MLFLOW_DEPLOY_RUN_DIR"] = str(self.tmp / "run")
        self.make_model()
        self.warm_up()

        reuse = {"ours-api": self.cell_ours_api_reuse,
                 "ours-cli": lambda: self.cell_ours_cli(self.home),
                 "ours-cli-nopyc": lambda: self.cell_ours_cli(self.home, nopyc=True),
                 "ours-process": lambda: self.cell_ours_process(stub_mlflow=False),
                 "ours-process-stub-mlflow": lambda: self.cell_ours_process(stub_mlflow=True),
                 "mlflow-uv": lambda: self.cell_mlflow_prepare(self.roots["uv"], "uv")}
        if "virtualenv" in self.mlflow_managers():
            reuse["mlflow-virtualenv"] = lambda: self.cell_mlflow_prepare(
                self.roots["virtualenv"], "virtualenv")
        self.scenario("reuse", reuse, args.runs, retry_built=True)

        serve = {"ours-create": self.cell_ours_create,
                 "ours-create-exec": lambda: self.cell_ours_create(fork_servers=False),
                 "mlflow-uv": lambda: self.cell_mlflow_serve(self.roots["uv"]),
                 "mlflow-uv-pyc": lambda: self.cell_mlflow_serve(self.roots["uv-pyc"])}
        self.scenario("serve", serve, args.runs, retry_built=True)

        warm = {"ours-cli": lambda: self.cell_ours_new(cold=False),
                "mlflow-uv": lambda: self.cell_mlflow_new("uv", cold=False)}
        if "virtualenv" in self.mlflow_managers():
            warm["mlflow-virtualenv"] = lambda: self.cell_mlflow_new("virtualenv", cold=False)
        self.scenario("warm", warm, args.runs)

        if not args.skip_cold:
            cold = {"ours-cli": lambda: self.cell_ours_new(cold=True),
                    "mlflow-uv": lambda: self.cell_mlflow_new("uv", cold=True)}
            if "virtualenv" in self.mlflow_managers() and args.cold_virtualenv:
                cold["mlflow-virtualenv"] = lambda: self.cell_mlflow_new("virtualenv", cold=True)
            self.scenario("cold", cold, args.runs)

        try:
            self.profile_ours()
        except Exception as exc:  # the medians are kept all the same
            self.profile["error"] = repr(exc)[:2000]
        self.uptime_after = uptime()
        print("load after:  " + self.uptime_after, flush=True)
        return {
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join([".venv/bin/python", "bench/envs.py"] + sys.argv[1:]),
            "machine": {"uname": " ".join(platform.uname()[:3] + platform.uname()[4:5]),
                        "cpus": os.cpu_count(), "python": platform.python_version(),
                        "uptime_before": self.uptime_before, "uptime_after": self.uptime_after,
                        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE")},
            "versions": _versions(),
            "model": {"name": "diabetes (example_models.build.save_all)",
                      "files": self.model_files},
            "ours_source_hash": self.source_hash,
            "env_bytes": {"ours": self.ours_env_size, "mlflow": self.mlflow_env_size},
            "warmup": self.warmup,
            "cells": self.results,
            "summary": self.summary(),
            "profile": self.profile,
        }

    def summary(self) -> Dict[str, Dict[str, Any]]:
        out: Dict[str, Dict[str, Any]] = {}
        for scenario, table in self.results.items():
            for key, records in table.items():
                good = [r for r in records if r.get("ok") and not
                        (scenario in ("reuse", "serve") and r.get("built"))]
                entry = {"seconds": stats([r.get("seconds") for r in good]),
                         "failed": sum(1 for r in records if not r.get("ok")),
                         "rebuilt_discarded": sum(1 for r in records if r.get("ok") and
                                                  scenario in ("reuse", "serve") and r.get("built"))}
                if scenario == "serve":
                    entry["ping"] = stats([r.get("ping_s") for r in good])
                    entry["create_returned"] = stats([r.get("create_returned_s") for r in good])
                out.setdefault(scenario, {})[key] = entry
        return out

    def cleanup(self) -> None:
        if self._deployments:
            from mlflow_deploy.online import delete_deployment
            for name in list(self._deployments):
                with contextlib.suppress(Exception):
                    delete_deployment(name)
        if self.tmp.exists():
            from mlflow_deploy.online.forkserver import stop_all
            stop_all(self.tmp / "run")
        rmtree(self.tmp)


class _StampedStream(io.TextIOBase):
    """A stderr stand-in that keeps each line with the seconds since ``t0`` (progress steps)."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.lines: List[List[Any]] = []
        self._buf = ""

    def write(self, text: str) -> int:
        self._buf += text
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self.lines.append([round(time.monotonic() - self.t0, 3), line[:400]])
        return len(text)


@contextlib.contextmanager
def _timed(targets):
    """Wrap ``owner.name`` callables so each call's wall time adds up under ``name``."""
    spent: Dict[str, float] = {}
    saved = []
    for owner, name in targets:
        original = getattr(owner, name)
        saved.append((owner, name, original))

        def wrapper(*a, __original=original, __name=name, **kw):
            t0 = time.monotonic()
            try:
                return __original(*a, **kw)
            finally:
                spent[__name] = spent.get(__name, 0.0) + time.monotonic() - t0
        setattr(owner, name, wrapper)
    try:
        yield spent
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def _top_imports(importtime: str, limit: int = 8) -> Dict[str, Any]:
    """Top-level (first-level) imports by cumulative microseconds, from -X importtime."""
    rows = []
    for line in importtime.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), len(m.group(3)), m.group(4)))
    top = [r for r in rows if r[1] <= 1]
    total = sum(r[0] for r in top)
    top.sort(reverse=True)
    return {"total_s": total / 1e6,
            "top": [[name, round(us / 1e6, 3)] for us, _, name in top[:limit]]}


# What mlflow_deploy.errors and mlflow_deploy.envs.errors take from mlflow, without importing it:
# only to measure the reuse path's floor (the real fix is not to import mlflow on that path).
_MLFLOW_STUB = """import sys, types
class MlflowException(Exception):
    def __init__(self, message, error_code=None, **kw):
        super().__init__(message); self.message = message; self.error_code = error_code
def _package(name, **attrs):
    module = types.ModuleType(name); module.__path__ = []; module.__dict__.update(attrs)
    sys.modules[name] = module; return module
_package('mlflow'); _package('mlflow.protos')
_package('mlflow.exceptions', MlflowException=MlflowException)
_package('mlflow.protos.databricks_pb2', __getattr__=lambda name: name)
"""


def _module_times(importtime: str, names: List[str]) -> Dict[str, float]:
    """Cumulative seconds of the named modules where -X importtime shows them imported."""
    found: Dict[str, float] = {}
    for line in importtime.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| *(\S+)$", line)
        if m and m.group(3) in names:
            found[m.group(3)] = int(m.group(2)) / 1e6
    return found


def _deployment_exists(name: str) -> bool:
    with contextlib.suppress(Exception):
        from mlflow_deploy.store import Store
        return Store().find_deployment(name) is not None
    return False


def _du(path: Path) -> int:
    from mlflow_deploy.envs.cache import tree_size
    return tree_size(path) if path.exists() else 0


def _versions() -> Dict[str, str]:
    code = ("import importlib.metadata as m;print(' '.join(d+'='+m.version(d) for d in "
            "('mlflow','scikit-learn','numpy','pandas')))")
    out = subprocess.run([str(PY), "-c", code], stdout=subprocess.PIPE, text=True).stdout.split()
    uv = subprocess.run(["uv", "--version"], stdout=subprocess.PIPE, text=True,
                        env=base_env()).stdout.strip()
    pyenv = subprocess.run(["pyenv", "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()
    return dict([kv.split("=", 1) for kv in out], uv=uv, pyenv=pyenv)


# -- report -----------------------------------------------------------------------------------------
def fmt(entry: Optional[Dict[str, Any]], field: str = "seconds") -> str:
    s = (entry or {}).get(field)
    if not s:
        return "n/a"
    return "{:.2f} ({:.2f}–{:.2f})".format(s["median"], s["min"], s["max"])


def ratio(ours: Optional[Dict[str, Any]], peer: Optional[Dict[str, Any]],
          field: str = "seconds") -> str:
    a, b = (ours or {}).get(field), (peer or {}).get(field)
    if not a or not b:
        return "n/a"
    return "{:.2f}x".format(a["median"] / b["median"])


def report(data: Dict[str, Any]) -> str:
    s = data["summary"]
    rows = []

    def row(label, ours_key, scenario, target="", peers=("mlflow-uv", "mlflow-virtualenv")):
        table = s.get(scenario, {})
        ours = table.get(ours_key)
        cells = [label, fmt(ours)]
        for peer in peers:
            cells += [fmt(table.get(peer)), ratio(ours, table.get(peer))]
        cells.append(target)
        rows.append(cells)

    row("1 reuse: prepare_environment() in-process", "ours-api", "reuse",
        target="≤ 0.5 s (MLflow 3.4 s)")
    row("1 reuse: `mlflow-deploy env build` CLI", "ours-cli", "reuse", target="≤ 0.5 s")
    row("1 reuse: CLI, checkout without .pyc", "ours-cli-nopyc", "reuse", target="")
    row("1 reuse: plain `python -c` calling prepare_environment", "ours-process", "reuse")
    row("1 reuse: the same with mlflow stubbed out (floor without the mlflow import)",
        "ours-process-stub-mlflow", "reuse")
    row("2 new env, warm package cache (CLI)", "ours-cli", "warm",
        target="≤ ½ MLflow+uv")
    if "cold" in s:
        row("3 cold: empty uv cache (CLI)", "ours-cli", "cold", target="≤ MLflow+uv")
    lines = ["| scenario | ours, s | MLflow+uv, s | ours/MLflow+uv | MLflow+virtualenv, s | "
             "ours/MLflow+virtualenv | issue target |",
             "|---|---:|---:|---:|---:|---:|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    serve = s.get("serve", {})
    ours = serve.get("ours-create")
    lines += ["", "| 4 create → first prediction, env cached | ours, s | MLflow+uv serve, s | "
              "ours/MLflow | MLflow+uv serve, env byte-compiled, s | ours/MLflow (pyc) | "
              "issue target |", "|---|---:|---:|---:|---:|---:|---|"]
    lines.append("| first successful prediction | {} | {} | {} | {} | {} | ≤ 3 s (MLflow 9.5–10 s)"
                 " |".format(fmt(ours), fmt(serve.get("mlflow-uv")),
                             ratio(ours, serve.get("mlflow-uv")),
                             fmt(serve.get("mlflow-uv-pyc")),
                             ratio(ours, serve.get("mlflow-uv-pyc"))))
    exec_start = serve.get("ours-create-exec")
    lines.append("| first successful prediction, fork servers off (an env's first deployment) | {} "
                 "| {} | {} | {} | {} | |".format(
                     fmt(exec_start), fmt(serve.get("mlflow-uv")),
                     ratio(exec_start, serve.get("mlflow-uv")), fmt(serve.get("mlflow-uv-pyc")),
                     ratio(exec_start, serve.get("mlflow-uv-pyc"))))
    lines.append("| server ready (ours: create_deployment returned; MLflow: /ping 200) | {} | {} | "
                 "| {} | | |".format(fmt(ours, "create_returned"),
                                     fmt(serve.get("mlflow-uv"), "ping"),
                                     fmt(serve.get("mlflow-uv-pyc"), "ping")))
    bad = ["{}/{}: {} failed, {} rebuilt (not in the medians)".format(
        sc, k, e["failed"], e["rebuilt_discarded"]) for sc, t in s.items() for k, e in t.items()
        if e["failed"] or e["rebuilt_discarded"]]
    if bad:
        lines += ["", "Cells left out: " + "; ".join(bad)]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions per scenario (≥ 3)")
    parser.add_argument("--skip-cold", action="store_true", help="skip scenario 3 (network)")
    parser.add_argument("--no-virtualenv", action="store_true",
                        help="leave out MLflow's --env-manager virtualenv (pip: minutes per env)")
    parser.add_argument("--cold-virtualenv", action="store_true",
                        help="also run MLflow+virtualenv cold (empty pip cache)")
    args = parser.parse_args(argv)
    if not MLFLOW.exists() or not OURS_CLI.exists():
        parser.error("run `make setup` first: {} / {} missing".format(MLFLOW, OURS_CLI))
    bench = Bench(args)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    try:
        data = bench.run()
    finally:
        bench.cleanup()
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "envs-{}.json".format(time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime()))
    path.write_text(json.dumps(data, indent=2) + "\n")
    print()
    print("model: {}; {} runs per cell, round-robin; load before: {}; after: {}".format(
        data["model"]["name"], args.runs, data["machine"]["uptime_before"],
        data["machine"]["uptime_after"]))
    print(report(data))
    print("\nraw numbers: {}".format(path.relative_to(ROOT)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
