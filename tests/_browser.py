"""Serve the app and drive Chromium: shared by the browser test and benchmarks/bench_app.py."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, process, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the Streamlit server did not come up within {timeout:.0f} s")


@contextmanager
def running_app(log_file: Path, timeout: float = 60, env: dict | None = None):
    """``streamlit run app.py`` on a free port (``env`` added to the environment); yields its URL
    once its health check answers."""
    port = _free_port()
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(port), "--server.fileWatcherType", "none"]
    with open(log_file, "w") as log:
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=full_env)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, process, timeout)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=20)


@contextmanager
def chromium_tab(timeout_ms: int = 60_000):
    """A headless Chromium tab (the system browser; playwright downloads nothing)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1440, "height": 1100})
        tab.set_default_timeout(timeout_ms)
        try:
            yield tab
        finally:
            browser.close()


def settle(tab) -> None:
    """Wait until the script run is over (Streamlit's 'running' indicator is gone)."""
    from playwright.sync_api import expect

    tab.wait_for_timeout(300)
    expect(tab.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=60_000)


def open_page(tab, title: str) -> None:
    """Follow the sidebar link to page ``title`` (same session, so the choices persist)."""
    tab.get_by_test_id("stSidebar").get_by_role("link", name=title, exact=True).click()
    settle(tab)
