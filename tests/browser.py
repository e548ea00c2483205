"""A headless Chromium for the pages' browser tests (tests/online/test_ui.py, the endpoint's
page; tests/batch/test_ui.py, the batch jobs' page), and the folder their screenshots go to.

Where no Chromium or chromedriver is found a browser test skips, saying so; under CI=true it
fails instead, so CI never passes without having run it."""
import os
import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "ui"


def _browser():
    """A headless Chromium under chromedriver, or the reason there is none."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed (the dev extra)"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        return None, ("chromium or chromedriver not found on PATH (Debian: apt-get install "
                      "chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options), None


@pytest.fixture(scope="module")
def browser():
    driver, missing = _browser()
    if driver is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and the browser tests cannot run: " + missing)
        pytest.skip(missing)
    yield driver
    driver.quit()
