"""`mlflow-deploy batch-endpoint ui`: the real command in a process of its own, its URL read from
its output, stopped by Ctrl-C. One real job (a good file and a corrupt one, a mini-batch each)
runs while the page starts; its data routes under the page's token, then the page in headless
Chromium (tests/browser.py: when it skips; screenshots in test-artifacts/ui/)."""
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from mlflow_deploy.batch import jobs
from mlflow_deploy.batch.ui import MISSING_TOKEN
from mlflow_deploy.cli import cli
from mlflow_deploy.store import HOME_ENV
from tests import prometheus
from tests.batch.job_fixtures import (ENDPOINT, ROWS, jobs_home, wait_job,  # noqa: F401
                                      write_inputs)
from tests.browser import ARTIFACTS, browser  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

CORRUPT = "corrupt-0.parquet"


@pytest.fixture(scope="module")
def job(jobs_home, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """The job, started: its name and input folder."""
    data = write_inputs(tmp_path_factory.mktemp("ui") / "data", [CORRUPT, "a.csv"])
    started = jobs.invoke(ENDPOINT, str(data), store=jobs_home,
                          overrides=jobs.parse_overrides([], mini_batch_size=1))
    return started["name"], data


@pytest.fixture(scope="module")
def page(jobs_home, job):  # noqa: F811 - the fixture imported above
    """The command serving the endpoint's page while the job runs: (base URL, token). It must
    end quietly, with 0, on Ctrl-C."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow_deploy.cli", "batch-endpoint", "ui", "--name", ENDPOINT],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, HOME_ENV: str(jobs_home.home)})
    lines = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        url = lines.get(timeout=60).strip()
        assert url.startswith("http://127.0.0.1:"), (url, proc.poll())
        base, _, token = url.partition("/?token=")
        assert len(token) >= 32
        yield base, token
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        code = proc.wait(timeout=30)
        errors = proc.stderr.read()
        assert code == 0 and errors == "", errors
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def bearer(token):
    return {"Authorization": "Bearer " + token}


def test_the_data_routes_under_the_token(jobs_home, job, page):  # noqa: F811
    name, data = job
    base, token = page
    shown = requests.get(base + "/", timeout=30)
    assert shown.status_code == 200 and "<script" in shown.text and "src=" not in shown.text
    assert "default-src 'none'" in shown.headers["Content-Security-Policy"]
    for method, path in (("GET", "/api/jobs"), ("GET", "/api/log?job=" + name),
                         ("POST", "/api/cancel?job=" + name), ("POST", "/api/resume?job=" + name)):
        for headers in ({}, bearer("wrong-token"), {"Authorization": token}):
            refused = requests.request(method, base + path, headers=headers, timeout=30)
            assert refused.status_code == 401 and refused.json() == {"message": MISSING_TOKEN}

    wait_job(jobs_home, name)
    state = requests.get(base + "/api/jobs", headers=bearer(token), timeout=30).json()
    assert [e["name"] for e in state["endpoints"]] == [ENDPOINT]  # --name: that endpoint only
    endpoint = state["endpoints"][0]
    assert {d["name"] for d in endpoint["deployments"]} == {"mlflow", "script"}
    shown = {j["name"]: j for j in endpoint["jobs"]}[name]
    assert shown["status"] == "Completed" and shown["output_file"]
    progress = shown["progress"]
    assert {key: progress[key] for key in ("files", "files_done", "files_failed", "mini_batches",
                                           "mini_batches_done", "retries", "rows")} == {
        "files": 2, "files_done": 1, "files_failed": 1, "mini_batches": 2,
        "mini_batches_done": 2, "retries": 0, "rows": ROWS}
    assert progress["rows_per_second"] > 0 and progress["elapsed"].startswith("0:00:")
    scraped = prometheus.parse(Path(shown["metrics_file"]).read_text())  # the page's Metrics
    assert prometheus.value(scraped, "mlflow_deploy_job_files_failed_total", job=shown["name"]) == 1
    # the corrupt file's mini-batch (the second: files sorted by path) and its one-line reason
    [failure] = shown["failures"]
    assert (failure["mini_batch"], failure["files"], failure["failed"], failure["files_failed"]) \
        == (2, [str(data / CORRUPT)], False, 1)
    [reason] = failure["reasons"]
    assert CORRUPT in reason and "\n" not in reason

    log = requests.get(base + "/api/log?job={}&lines=3".format(name), headers=bearer(token),
                       timeout=30)
    assert log.status_code == 200 and len(log.json()["lines"]) == 3
    assert "Completed" in log.json()["lines"][-1]
    for query, status in (("job=ghost", 404), ("job={}&lines=0".format(name), 400)):
        answer = requests.get(base + "/api/log?" + query, headers=bearer(token), timeout=30)
        assert answer.status_code == status and "ghost" not in answer.text
    # the buttons: job cancel and job resume, refused as the commands refuse an ended job
    for verb in ("cancel", "resume"):
        answer = requests.post(base + "/api/{}?job={}".format(verb, name), headers=bearer(token),
                               timeout=30)
        assert answer.status_code == 409 and "has" in answer.json()["message"]


def test_an_unknown_endpoint_or_a_busy_port_is_one_line(jobs_home, monkeypatch):  # noqa: F811
    monkeypatch.setenv(HOME_ENV, str(jobs_home.home))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        for args, line in ((["--name", "ghost"], "No batch endpoint with this name (--name)."),
                           (["--port", busy.getsockname()[1]],
                            "The port is in use or cannot be bound (--port)."),
                           (["--port", 99999], "must be a port number from 0 to 65535.")):
            result = CliRunner().invoke(cli, ["batch-endpoint", "ui", *map(str, args)])
            assert result.exit_code != 0 and "Traceback" not in result.output
            assert result.output.strip().splitlines()[-1].endswith(line)


def test_the_page_in_a_browser(browser, jobs_home, job, page):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    name, _ = job
    base, token = page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.get(base + "/")  # without its token: no data, and it says where the URL is
    wait = WebDriverWait(browser, 60)
    wait.until(lambda _: browser.find_element(By.ID, "no-token").is_displayed())
    assert not browser.find_elements(By.CSS_SELECTOR, "tr.job")

    wait_job(jobs_home, name)
    browser.get("{}/?token={}".format(base, token))
    # read in one script: the page redraws every 2 s, which leaves elements found one by one
    # stale
    read = ("const row = document.querySelector('tr.job[data-job=\"' + arguments[0] + '\"]');"
            "if (!row) return null; row.click();"
            "return {state: row.querySelector('.state').textContent,"
            " files: row.querySelector('.files').textContent,"
            " selected: document.getElementById('job-name').textContent,"
            " reasons: [...document.querySelectorAll('#failures td.reason')]"
            "  .map(c => c.textContent)}")
    shown = wait.until(lambda _: (lambda s: s if s and s["selected"] == name and s["reasons"]
                                  else None)(browser.execute_script(read, name)))
    assert shown["state"] == "Completed" and shown["files"] == "1/2 (1 failed)"
    assert len(shown["reasons"]) == 1 and CORRUPT in shown["reasons"][0]
    wait.until(lambda _: "Completed" in browser.find_element(By.ID, "log-text").text)
    assert browser.execute_script("return window.localStorage.length + document.cookie.length") \
        == 0  # the token lives in the page's memory only
    browser.save_screenshot(str(ARTIFACTS / "batch-jobs.png"))
