"""The app's two targets, measured in Chromium on a fresh server each repeat:

- Home rendered with the default model, counted from the moment the server answers its health check;
- Factorize page: seconds from the click on "Factorize" to the result, for DSF (quick preview, the
  page's default) on the synthetic 512x512 matrix and on the default model's default layer;
- a rerun after a change that needs no recomputation (the spectrum's log-axis toggle under a cached
  512x512 result), timed as the script run in Streamlit's AppTest.

    python benchmarks/bench_app.py [--threads 2] [--repeats 3]

Needs Chromium (apt-get install -y chromium). The server runs on the CPU with --threads threads.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _browser import chromium_tab, open_page, running_app, settle  # noqa: E402
from _tables import print_table  # noqa: E402


def seconds_until_visible(tab, locator) -> float:
    from playwright.sync_api import expect

    start = time.perf_counter()
    expect(locator).to_be_visible(timeout=120_000)
    return time.perf_counter() - start


def factorize_seconds(tab) -> float:
    tab.get_by_role("button", name="Factorize").click()
    seconds = seconds_until_visible(tab, tab.get_by_text("Relative error").first)
    settle(tab)
    return seconds


def one_repeat(threads: int) -> dict:
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as folder:
        with running_app(Path(folder) / "streamlit.log", env=env) as url, chromium_tab() as tab:
            start = time.perf_counter()
            tab.goto(url)
            tab.get_by_text("Factorizable layers").wait_for(timeout=120_000)
            times = {"home": time.perf_counter() - start}
            settle(tab)
            open_page(tab, "Factorize")
            times["layer"] = factorize_seconds(tab)
            tab.get_by_test_id("stSidebar").get_by_text("Synthetic matrix").click()
            settle(tab)
            times["512"] = factorize_seconds(tab)
    return times


def display_rerun_seconds(threads: int) -> float:
    """Seconds of the Factorize page's script run after toggling a display-only widget."""
    import torch
    from streamlit.testing.v1 import AppTest

    torch.set_num_threads(threads)
    at = AppTest.from_file(str(ROOT / "pages" / "2_Factorize.py"), default_timeout=120).run()
    at.radio(key="_target_source").set_value("Synthetic matrix").run()
    at.button(key="fact_run").click().run()
    at.session_state["fact_job"].wait(120)
    at.run()
    start = time.perf_counter()
    at.toggle(key="fact_spectrum_log").set_value(False).run()
    seconds = time.perf_counter() - start
    assert not at.exception and len(at.session_state["fact_results"]) == 1, "the toggle recomputed"
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"# DSF Explorer app benchmark: {args.threads} threads, device cpu, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Chromium headless, {args.repeats} fresh servers")
    runs = [one_repeat(args.threads) for _ in range(args.repeats)]
    for run in runs:
        run["rerun"] = display_rerun_seconds(args.threads)
    rows = []
    for key, what, target in [
        ("home", "Home rendered (digits-cnn), from server up", 5.0),
        ("512", "Factorize DSF quick, synthetic 512x512: click to result", 2.0),
        ("layer", "Factorize DSF quick, digits-cnn convs.2 (128x576): click to result", 2.0),
        ("rerun", "Rerun after a display-only change (512x512 result cached)", 2.0),
    ]:
        values = [run[key] for run in runs]
        rows.append([what, f"{statistics.median(values):.2f}", f"{max(values):.2f}", f"<= {target:g}"])
    print_table("App targets (seconds)", ["measure", "median", "worst", "target"], rows)


if __name__ == "__main__":
    main()
