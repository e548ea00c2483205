"""supervisor.py against real processes: zombies are dead, strangers are not ours, SIGTERM is
followed by SIGKILL, the telling log line is found."""

import os
import subprocess
import sys
import time

import pytest

from mlflow_deploy import processes
from mlflow_deploy.online import supervisor
from mlflow_deploy.scoring.config import CONFIG_ENV


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_zombie_is_dead():
    # a child that forks one which exits at once, and never reaps it: a zombie that is not our
    # child, so only /proc tells the truth (a shell's `sleep 0 &` was reaped by the shell itself
    # when the shell ran after its child had exited)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import os, time\n"
         "pid = os.fork()\n"
         "if pid == 0:\n    os._exit(0)\n"
         "print(pid, flush=True)\n"
         "time.sleep(30)\n"], stdout=subprocess.PIPE, text=True
    )
    try:
        zombie = int(proc.stdout.readline())
        wait_until(lambda: processes.state(zombie) == "Z", timeout=5)
        assert not supervisor.is_alive(zombie)
        assert supervisor.is_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert not supervisor.is_alive(proc.pid)
    assert not supervisor.is_alive(None)


def test_our_own_child_is_reaped(tmp_path):
    pid = subprocess.Popen(["true"]).pid  # a child nobody waits for
    # it has exited: a zombie, or gone already if subprocess reaped it (a Popen dropped while its
    # child runs is reaped when any thread of this process starts another)
    wait_until(lambda: processes.state(pid) in ("Z", None))
    assert not supervisor.is_alive(pid)  # waitpid(WNOHANG) reaps it: no zombie left
    assert processes.state(pid) is None


def test_identity_is_checked_through_the_environment(tmp_path):
    config = tmp_path / "server.json"
    env = dict(os.environ, **{CONFIG_ENV: str(config)})
    proc = subprocess.Popen(["sleep", "30"], env=env)
    try:
        # until the child has exec'd, /proc shows the parent's environment
        wait_until(lambda: supervisor.is_alive(proc.pid, config))
        assert not supervisor.is_alive(proc.pid, tmp_path / "other.json")
    finally:
        proc.kill()
        proc.wait()


def test_stop_escalates_to_sigkill():
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "up"
        started = time.monotonic()
        supervisor.stop(proc.pid, grace=0.5)
        assert 0.5 <= time.monotonic() - started < 5  # waited the grace, then killed
        assert not supervisor.is_alive(proc.pid)  # and reaped it (waitpid), so Popen sees 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_last_log_line(tmp_path):
    log = tmp_path / "server.log"
    log.write_text(
        "[INFO] Starting gunicorn 26\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "mlflow.exceptions.MlflowException: could not load the model\n"
        "[INFO] Worker exiting (pid: 12)\n"
        "[INFO] Shutting down: Master\n\n"
    )
    assert (
        supervisor.last_log_line(log)
        == "mlflow.exceptions.MlflowException: could not load the model"
    )
    log.write_text(
        "[INFO] Starting gunicorn\n[ERROR] Connection in use: ('127.0.0.1', 5)\n"
        "[INFO] Shutting down: Master\n"
    )
    assert supervisor.last_log_line(log) == "[ERROR] Connection in use: ('127.0.0.1', 5)"
    assert supervisor.last_log_line(tmp_path / "missing.log") is None


def test_ports():
    port = supervisor.free_port()
    assert supervisor.port_is_free(port)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not supervisor.port_is_free(port)


def test_gunicorn_is_started_through_its_script():
    command = supervisor.gunicorn_command()
    assert command[0] == sys.executable and command[1].endswith("/gunicorn")
    assert "-m" not in command


@pytest.mark.slow
def test_early_death_is_reported_with_the_log_line(tmp_path):
    from mlflow_deploy.errors import ServerFailed
    from mlflow_deploy.scoring.config import ServerConfig

    config = ServerConfig(
        model_dir=str(tmp_path / "no-model"),
        bind=f"127.0.0.1:{supervisor.free_port()}",
        pidfile=str(tmp_path / "gunicorn.pid"),
        ready_file=str(tmp_path / "ready.json"),
    )
    config.write(str(tmp_path / "server.json"))
    pid = supervisor.start_server(tmp_path / "server.json", tmp_path / "server.log")
    with pytest.raises(ServerFailed, match="could not be loaded|failed to load|exited") as caught:
        supervisor.wait_ready(
            config, tmp_path / "server.log", supervisor.started_alive(pid), timeout=120
        )
    assert "(log: " in str(caught.value)
    supervisor.stop(pid, grace=5)
    assert not supervisor.is_alive(pid)


def test_free_ports_lie_below_the_range_of_outgoing_connections():
    """A stopped endpoint's port cannot become some client's local port meanwhile."""
    low = supervisor._first_ephemeral_port()
    ports = [supervisor.free_port(exclude=[supervisor.PORTS_FROM]) for _ in range(20)]
    assert all(supervisor.PORTS_FROM < port < low for port in ports) and len(set(ports)) > 1
