"""Turn exceptions the user can cause into plain-words messages on the page."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import streamlit as st

# Exceptions that come from what the user chose or brought; anything else is a bug in the app.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, OSError, RuntimeError, KeyError)


def plain_message(exc: BaseException) -> str:
    """One readable line for ``exc``: its first line (a TorchScript error carries a traceback after
    it), with this server's temporary paths (where uploads are written) shown as their file names."""
    text = (str(exc).strip().splitlines() or [""])[0].strip() or type(exc).__name__
    text = _SERVER_TEMP.sub(lambda found: Path(found.group()).name, text)
    if isinstance(exc, KeyError):
        text = f"Not found: {text}"
    if isinstance(exc, MemoryError):
        text = "Out of memory: try a smaller layer, a lower density or fewer samples."
    if "CUDA out of memory" in text:
        text = "The GPU ran out of memory: try a smaller layer, a lower density, or the CPU."
    return text


_SERVER_TEMP = re.compile(re.escape(str(Path(tempfile.gettempdir()))) + r"/[^\s'\"]*")


def or_stop(what: str, function, *args, **kwargs):
    """``function(*args, **kwargs)``; if it fails, show why and end this page run quietly."""
    try:
        return function(*args, **kwargs)
    except (*USER_ERRORS, MemoryError) as exc:
        st.error(f"Could not {what}: {plain_message(exc)}")
        st.stop()
