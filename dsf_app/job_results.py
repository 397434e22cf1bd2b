"""Results of finished jobs, kept in bounded session caches keyed by everything that determined them;
a full cache drops its least recently used entry."""

from __future__ import annotations

from typing import Any, Callable

import streamlit as st

from . import jobs

LIMIT = 16


def remember(cache: dict, key, value, limit: int = LIMIT) -> None:
    """Store ``value`` under ``key`` as the most recently used entry, dropping the least recently
    used beyond ``limit`` entries."""
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > limit:
        cache.pop(next(iter(cache)))


def recall(cache: dict, key):
    """The value cached under ``key`` (now the most recently used), or None."""
    if key not in cache:
        return None
    value = cache.pop(key)
    cache[key] = value  # re-inserted last: the most recently used
    return value


def start(job_key: str, made_for, work: Callable[[jobs.Job], Any], label: str) -> jobs.Job:
    """Start job ``job_key`` computing the result that the key ``made_for`` identifies."""
    job = jobs.start(job_key, work, label)
    st.session_state[f"{job_key}_for"] = made_for
    return job


def reporting(function: Callable, *args, **kwargs) -> Callable[[jobs.Job], Any]:
    """A job's work: ``function(*args, **kwargs, report=job.report)``, its arguments bound now."""
    return lambda job: function(*args, **kwargs, report=job.report)


def result_for(job_key: str, cache: dict, key) -> tuple[Any, jobs.Job | None]:
    """The cached result for ``key`` (after storing job ``job_key``'s, if it finished in full), and
    the finished job if it was started for ``key`` (to show its error or its partial result)."""
    job = jobs.current(job_key)
    if job is None or job.running:
        return recall(cache, key), None
    made_for = result_key(job_key)
    if job.error is None and not job.stopped and made_for not in cache:
        remember(cache, made_for, job.result)
    return recall(cache, key), job if made_for == key else None


def result_key(job_key: str):
    """The key of the result job ``job_key`` was started for."""
    return st.session_state.get(f"{job_key}_for")


def take_once(job_key: str) -> jobs.Job | None:
    """Job ``job_key`` the first time this is asked after it finished; ``None`` otherwise."""
    job = jobs.current(job_key)
    if job is None or job.running or st.session_state.get(f"{job_key}_taken") is job:
        return None
    st.session_state[f"{job_key}_taken"] = job
    return job
