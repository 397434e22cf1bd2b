"""Turn exceptions the user can cause into plain-words messages on the page."""

from __future__ import annotations

import streamlit as st

# Exceptions that come from what the user chose or brought; anything else is a bug in the app.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, OSError, RuntimeError, KeyError)


def plain_message(exc: BaseException) -> str:
    """One readable line (or a few) for ``exc``, without a traceback."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError):
        text = f"Not found: {text}"
    if isinstance(exc, MemoryError):
        text = "Out of memory: try a smaller layer, a lower density or fewer samples."
    if "CUDA out of memory" in text:
        text = "The GPU ran out of memory: try a smaller layer, a lower density, or the CPU."
    return text


def or_stop(what: str, function, *args, **kwargs):
    """``function(*args, **kwargs)``; if it fails, show why and end this page run quietly."""
    try:
        return function(*args, **kwargs)
    except (*USER_ERRORS, MemoryError) as exc:
        st.error(f"Could not {what}: {plain_message(exc)}")
        st.stop()
