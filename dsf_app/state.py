"""Choices that outlive a page: the URL carries them (a reload or a shared link restores them), and
the choices that only make sense for one model are kept per model across model switches."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import streamlit as st

# Session keys whose values name things of one model (its layers, its recommended settings): saved
# when the user switches to another model, restored when they come back, else left to the page's
# defaults for the new model.
PER_MODEL_KEYS = (
    "layer", "_layer_picker", "trade_layers", "trade_calibration", "trade_sequential",
    "trade_output_weighting", "trade_pick", "trade_keep_below", "trade_overrides",
)
SAVED = "_per_model_choices"  # model label -> {key: value}


def switch_model(old_label: str, new_label: str) -> None:
    """Keep ``old_label``'s per-model choices and bring back ``new_label``'s (or its defaults)."""
    saved = st.session_state.setdefault(SAVED, {})
    saved[old_label] = {key: st.session_state[key] for key in PER_MODEL_KEYS if key in st.session_state}
    for key in PER_MODEL_KEYS:
        st.session_state.pop(key, None)
    st.session_state.update(saved.get(new_label, {}))


def from_url(key: str, parse: Callable[[str], Any], param: str | None = None) -> None:
    """Before a widget (or a shared value) is first set in this session, take it from the URL's
    ``param`` (default: ``key``); a value ``parse`` refuses is ignored, and a warning says so."""
    param = param or key
    if key in st.session_state or param not in st.query_params:
        return
    text = st.query_params[param]
    try:
        st.session_state[key] = parse(text)
    except (ValueError, TypeError) as exc:
        st.warning(f"Ignored from the link: {param} = {text!r} ({exc}).")


def to_url(param: str, value, default=None) -> None:
    """Show ``value`` in the URL as ``param`` (removed when it is the default), so that a reload or
    a shared link of this page restores it."""
    text = url_text(value)
    if value is None or value == default:
        st.query_params.pop(param, None)
    elif st.query_params.get(param) != text:
        st.query_params[param] = text


def url_text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def parse_bool(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError("expected 0 or 1")
    return text == "1"


def parse_density(text: str) -> float:
    value = round(float(text), 2)
    if not 0.01 <= value <= 1.0:
        raise ValueError("expected a density in [0.01, 1]")
    return value


def parse_choice(choices) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {list(choices)}")
        return text
    return parse


def parse_choices(choices) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        return [parse_choice(choices)(part) for part in text.split(",") if part]
    return parse


def model_parameter(kind: str, name: str, path: str) -> str | None:
    """The URL's ``model`` value for a model that a link can name: a built-in one by name, a
    Hugging Face directory on this server by ``hf:`` and its path; None for uploads and weight files."""
    if kind == "builtin":
        return name
    if kind == "hf":
        return f"hf:{path}"
    return None


def parse_model(text: str, builtin_names) -> tuple[str, str, str]:
    """``(kind, name, path)`` of a URL's ``model`` value; a ValueError for anything else."""
    if text in builtin_names:
        return "builtin", text, ""
    if text.startswith("hf:") and Path(text[3:]).is_dir():
        return "hf", "", text[3:]
    raise ValueError(f"expected a built-in model ({', '.join(builtin_names)}) or hf:<directory on this server>")
