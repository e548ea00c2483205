"""The endpoint's page (GET /ui): its data routes under the endpoint's key, then the page itself
in a real headless Chromium, against one endpoint of two real deployments (test_gateway's
doublers, 90/10). Screenshots of each tab go to test-artifacts/ui/; the browser, and when its
test skips: tests/browser.py."""
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from mlflow_deploy import online
from mlflow_deploy.errors import ServerFailed
from mlflow_deploy.online import endpoints as _endpoints
from mlflow_deploy.online.routes import MISSING_KEY
from tests.browser import ARTIFACTS, browser  # noqa: F401 - the fixture
from tests.online.fixtures import private_home
from tests.online.test_gateway import auth, body, models, two_deployments  # noqa: F401

pytestmark = pytest.mark.slow

INVALID = {"input_data": {"columns": ["y"], "data": [[1.0]]}}


@pytest.fixture(scope="module")
def endpoint(models, tmp_path_factory):  # noqa: F811 - the module-scoped fixture imported above
    """The 90/10 endpoint of test_gateway, made once for the module: (base URL, key)."""
    with pytest.MonkeyPatch.context() as patch:
        home = private_home(tmp_path_factory.mktemp("ui"), patch)
        next(home)
        try:
            created = two_deployments(models)
            base = created["scoring_uri"].rsplit("/", 1)[0]
            yield base, _endpoints.get_credentials("ept")["primaryKey"]
        finally:
            next(home, None)


def test_the_page_is_public_and_its_data_under_the_endpoint_key(
        endpoint, models, tmp_path):  # noqa: F811 - models: the fixture imported above
    base, key = endpoint
    # the example is made in a child process that imports mlflow (seconds): asked first, read last
    pool = ThreadPoolExecutor(1)
    asked = pool.submit(requests.get, base + "/ui/api/example?deployment=blue",
                        headers=auth(key), timeout=90)
    page = requests.get(base + "/ui", timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "<script" in page.text and "src=" not in page.text  # inline: nothing fetched elsewhere
    for path in ("/ui/api/endpoint", "/ui/api/logs?deployment=blue",
                 "/ui/api/example?deployment=blue"):
        for headers in ({}, auth("wrong-key")):
            refused = requests.get(base + path, headers=headers, timeout=30)
            assert refused.status_code == 401 and refused.json()["message"] == MISSING_KEY

    state = requests.get(base + "/ui/api/endpoint", headers=auth(key), timeout=30).json()
    assert state["endpoint"] == "ept" and state["traffic"] == {"blue": 90, "green": 10}
    shown = {d["name"]: (d["traffic"], d["state"], d["ready_instances"])
             for d in state["deployments"]}
    assert shown == {"blue": (90, "Running", 1), "green": (10, "Running", 1)}

    logs = requests.get(base + "/ui/api/logs?deployment=green&lines=5", headers=auth(key),
                        timeout=30)
    assert logs.status_code == 200 and 1 <= len(logs.json()["lines"]) <= 5
    for query, status in (("deployment=ghost", 404), ("deployment=blue&lines=many", 400),
                          ("deployment=blue&lines=0", 400)):
        answer = requests.get(base + "/ui/api/logs?" + query, headers=auth(key), timeout=30)
        assert answer.status_code == status and "ghost" not in answer.text
        assert "many" not in answer.text

    # a deployment that failed to start takes no traffic, yet shows, and its log says why
    broken = tmp_path / "broken"
    shutil.copytree(models["right"], broken)
    (broken / "doubler.py").write_text("raise RuntimeError('this model never loads')\n")
    with pytest.raises(ServerFailed):
        online.create_deployment("red", str(broken), endpoint="ept")
    try:
        state = requests.get(base + "/ui/api/endpoint", headers=auth(key), timeout=30).json()
        red = [d for d in state["deployments"] if d["name"] == "red"]
        assert [(d["state"], d["routed"], d["traffic"]) for d in red] == [("Failed", False, 0)]
        logs = requests.get(base + "/ui/api/logs?deployment=red&lines=200", headers=auth(key),
                            timeout=30)
        assert "this model never loads" in "\n".join(logs.json()["lines"])
    finally:
        online.delete_deployment("red")

    example = asked.result().json()
    pool.shutdown()
    # the doublers have a signature and no input example: the self-test's made-up row
    assert example["kind"] == "generated"
    assert example["body"]["input_data"]["columns"] == ["x"]


# no browser: skipped before the endpoint is made
def test_the_page_in_a_browser(browser, endpoint):  # noqa: F811 - the fixture imported above
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base, key = endpoint
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, 60)
    find = browser.find_element

    def shoot(tab):
        browser.save_screenshot(str(ARTIFACTS / "{}.png".format(tab)))

    def open_tab(tab):
        find(By.CSS_SELECTOR, "nav button[data-tab='{}']".format(tab)).click()
        wait.until(lambda _: find(By.ID, "tab-" + tab).is_displayed())

    browser.get(base + "/ui")
    wait.until(lambda _: find(By.ID, "key").is_displayed())
    assert not find(By.ID, "tabs").is_displayed()  # nothing to show before the key
    find(By.ID, "key").send_keys("wrong-key")
    find(By.ID, "connect").click()
    wait.until(lambda _: find(By.ID, "key-error").text)
    find(By.ID, "key").send_keys(key)
    find(By.ID, "connect").click()
    wait.until(lambda _: find(By.ID, "tab-details").is_displayed())
    assert not find(By.ID, "key").is_displayed()
    # read in one script: the page redraws its tables and charts every few seconds, which
    # would leave elements found one by one stale
    rows = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#deployments tbody tr')]"
        ".map(r => [r.dataset.deployment, r.querySelector('.traffic').textContent]))")
    assert rows == {"blue": "90%", "green": "10%"}
    assert browser.execute_script("return window.localStorage.length + document.cookie.length") \
        == 0  # the key lives in the page's memory only
    shoot("details")

    open_tab("test")
    text = find(By.ID, "body")
    # the example, pre-filled as the gateway wrote it (0.5 for the double column)
    wait.until(lambda _: '"x"' in text.get_attribute("value"))
    assert json.loads(text.get_attribute("value"))["input_data"]["data"] == [[0.5]]
    Select(find(By.ID, "target")).select_by_value("blue")
    text.clear()
    text.send_keys('{"input_data": {"columns": ["x"], "data": [[1.5], [4]]}}')
    find(By.ID, "send").click()
    result = find(By.ID, "result")
    wait.until(lambda _: result.find_elements(By.CLASS_NAME, "status"))
    assert result.find_element(By.CLASS_NAME, "status").text.startswith("200")
    assert result.find_element(By.CLASS_NAME, "elapsed").text.endswith(" ms")
    assert json.loads(result.find_element(By.CLASS_NAME, "response-body").text) == [3.0, 8.0]
    assert "azureml-model-deployment" in result.find_element(By.CLASS_NAME,
                                                             "response-headers").text
    shoot("test")

    text.clear()
    text.send_keys('{"input_data": {"columns": ["y"], "data": [[1.0]]}}')
    find(By.ID, "send").click()
    wait.until(lambda _: result.find_elements(By.CLASS_NAME, "inner-error"))
    assert result.find_element(By.CLASS_NAME, "status").text.startswith("424")
    assert "answered 400" in result.find_element(By.CLASS_NAME, "inner-error").text
    # the deployment's own message
    assert "'x'" in result.find_element(By.CLASS_NAME, "inner-message").text
    shoot("test-invalid")

    open_tab("monitoring")
    charts = browser.execute_script(
        "return [...document.querySelectorAll('#charts .chart')].map(c => [c.dataset.deployment,"
        " c.dataset.kind, !!c.querySelector('.nodata, svg')])")
    # until the endpoint's /metrics has the gateway's series, each chart says so, never breaks
    assert sorted(map(tuple, charts)) == [(d, kind, True) for d in ("blue", "green")
                                          for kind in ("latency", "rate")]
    shoot("monitoring")

    open_tab("logs")
    wait.until(lambda _: find(By.ID, "log-text").text.strip())
    assert "gunicorn" in find(By.ID, "log-text").text
    assert "\x1b" not in find(By.ID, "log-text").text  # mlflow's coloured warnings, plain
    shoot("logs")

    open_tab("swagger")
    wait.until(lambda _: find(By.ID, "swagger").find_elements(By.CSS_SELECTOR, "details.op"))
    assert "/score" in find(By.ID, "swagger").text
    # its form is pre-filled too, and executes against the deployment shown
    find(By.CSS_SELECTOR, "#swagger details.op[open] button").click()
    tried = find(By.CSS_SELECTOR, "#swagger .try-result")
    wait.until(lambda _: tried.find_elements(By.CLASS_NAME, "status"))
    assert tried.find_element(By.CLASS_NAME, "status").text.startswith("200")
    shoot("swagger")
