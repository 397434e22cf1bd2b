"""End to end in a real browser: start the app, visit every page through its sidebar links (one
session), run a factorization on the default model, and save a screenshot of each page.

Needs Chromium (``apt-get install -y chromium``); ``.ci/run`` installs it and sets
``DSF_REQUIRE_BROWSER=1`` so that there it can only pass, never skip. Screenshots go to
``$DSF_SCREENSHOTS`` (default ``artifacts/screenshots``); the README's come from this test.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGES = ["Layer inspector", "Factorize", "Compare", "Trade-offs", "Learn"]
ERROR_SELECTORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'

if CHROMIUM is None:
    if os.environ.get("DSF_REQUIRE_BROWSER"):
        raise RuntimeError("The browser test needs Chromium: apt-get install -y chromium")
    pytest.skip("Chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, process, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("the Streamlit server did not come up")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    log = open(tmp_path_factory.mktemp("server") / "streamlit.log", "w")
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(port), "--server.fileWatcherType", "none"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def page(server):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.set_default_timeout(60_000)
        yield tab
        browser.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = Path(os.environ.get("DSF_SCREENSHOTS", ROOT / "artifacts" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _settle(tab) -> None:
    """Wait until the script run is over (Streamlit's 'running' indicator is gone)."""
    tab.wait_for_timeout(300)
    expect(tab.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=60_000)


def _assert_no_errors(tab) -> None:
    assert tab.locator(ERROR_SELECTORS).count() == 0, tab.locator(ERROR_SELECTORS).first.inner_text()
    assert "Traceback" not in tab.content()


def _file_name(title: str) -> str:
    return title.lower().replace(" ", "_").replace("-", "_") + ".png"


def test_home_renders_the_default_model(page, server, screenshots):
    start = time.perf_counter()
    page.goto(server)
    expect(page.get_by_text("Factorizable layers")).to_be_visible()
    expect(page.get_by_role("heading", name="digits-cnn")).to_be_visible()
    seconds = time.perf_counter() - start
    print(f"\nHome with digits-cnn rendered {seconds:.2f} s after the server was up")
    _settle(page)
    _assert_no_errors(page)
    page.screenshot(path=str(screenshots / "home.png"), full_page=True)


@pytest.mark.parametrize("title", PAGES)
def test_every_page_renders_without_errors(page, server, screenshots, title):
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title).first).to_be_visible()
    _settle(page)
    _assert_no_errors(page)
    page.screenshot(path=str(screenshots / _file_name(title)), full_page=True)


def test_factorize_shows_the_result_and_the_sparsity_pattern(page, server, screenshots):
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Factorize").click()
    _settle(page)
    start = time.perf_counter()
    page.get_by_role("button", name="Factorize").click()
    expect(page.get_by_text("Relative error").first).to_be_visible()
    seconds = time.perf_counter() - start
    print(f"\nFactorize (DSF, default layer) result shown {seconds:.2f} s after the click")
    expect(page.locator(".js-plotly-plot", has_text="nonzeros").first).to_be_visible()
    _settle(page)
    _assert_no_errors(page)
    page.screenshot(path=str(screenshots / "factorize_result.png"), full_page=True)
