"""Long work in a background thread, so the page stays live: progress, a Stop button, a result.

A page starts a :class:`Job` with a function ``work(job)``; the function reports through
``job.report(...)`` and checks ``job.stopped``. While the job runs, :func:`show_running` redraws
the page's progress view once a second (a Streamlit fragment) and reruns the page once the
job is over, so the page then draws the result.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import streamlit as st
import torch

from .messages import plain_message

REFRESH_SECONDS = 1.0  # each redraw holds the GIL; faster redraws slow the job itself down several-fold
STOP_WAIT_SECONDS = 0.8  # how long a Stop click waits for the work to say it stopped (a solver step is shorter)

Report = Callable[..., bool]  # Job.report(item=None, fraction=None): False once the user pressed Stop


class Job:
    """One piece of work running in a thread, with its progress, result or error."""

    def __init__(self, work: Callable[["Job"], Any], label: str = ""):
        self.label = label
        self.progress: list = []  # whatever the work reports, in order
        self.fraction: float | None = None  # 0..1 once the work says how far it is
        self.result: Any = None
        self.error: str | None = None
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._halted = threading.Event()
        self.halted_text: str | None = None  # what the work said when it stopped computing (see halt)
        threads = torch.get_num_threads()

        def run():
            torch.set_num_threads(threads)  # a new thread starts with torch's default
            try:
                self.result = work(self)
            except Exception as exc:  # shown on the page, never as a traceback
                self.error = plain_message(exc)
            finally:
                self._done.set()

        self._thread = threading.Thread(target=run, name=f"dsf-job {label}", daemon=True)
        self._thread.start()

    def report(self, item=None, fraction: float | None = None) -> bool:
        """Record progress; returns ``False`` once Stop was pressed (library callbacks use it)."""
        if item is not None:
            self.progress.append(item)
        if fraction is not None:
            self.fraction = min(max(float(fraction), 0.0), 1.0)
        return not self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def halt(self, text: str) -> None:
        """The work has stopped computing after Stop (it may still be summing up): ``text`` says so
        on the page at once, before the job ends."""
        self.halted_text = text
        self._halted.set()

    def wait_for_halt(self, timeout: float) -> bool:
        """Block until the work says it stopped computing (see :meth:`halt`), at most ``timeout`` s."""
        return self._halted.wait(timeout)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (tests use it); returns whether it ended."""
        return self._done.wait(timeout)


def start(key: str, work: Callable[[Job], Any], label: str = "") -> Job:
    """Start ``work`` as the page's job ``key`` (stopping any job still running under that key)."""
    old = st.session_state.get(key)
    if isinstance(old, Job) and old.running:
        old.stop()
    job = Job(work, label)
    st.session_state[key] = job
    return job


def current(key: str) -> Job | None:
    job = st.session_state.get(key)
    return job if isinstance(job, Job) else None


def show_running(key: str, draw_progress: Callable[[Job], None]) -> bool:
    """If job ``key`` is running, draw its live progress with a Stop button and return True."""
    job = current(key)
    if job is None or not job.running:
        return False

    @st.fragment(run_every=REFRESH_SECONDS)
    def live():
        if not job.running:
            st.rerun()  # the whole page, which now draws the result
        elapsed = time.perf_counter() - job.started
        text = f"{job.label}: running for {elapsed:.0f} s"
        if job.fraction is None:  # the work does not know how far it is: no bar that would sit at 0%
            st.caption(f":material/hourglass_top: {text}")
        else:
            st.progress(job.fraction, text=text)
        if not job.stopped and st.button("Stop", key=f"{key}_stop", type="secondary", icon=":material/stop:"):
            job.stop()
            job.wait_for_halt(STOP_WAIT_SECONDS)  # a solver honours Stop within a step: say it stopped at once
        if job.stopped:
            st.info(job.halted_text or "Stopping at the next step...")
        draw_progress(job)

    live()
    return True
