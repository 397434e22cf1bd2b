"""The what-if at model level, shared by Factorize and Compare: one factorized layer swapped into a
copy of the model (every other layer dense), evaluated on request and cached by run."""

from __future__ import annotations

import streamlit as st

from dsf_core import Factorization
from dsf_core.compress import with_factorized_layer

from . import job_results, session
from .numbers import readable


def model_metrics(bundle, layer_name: str, result: Factorization) -> dict:
    """The model's evaluation with layer ``layer_name`` alone replaced by ``result`` (on a copy)."""
    model = with_factorized_layer(bundle.model, layer_name, result)
    return {name: float(value) for name, value in bundle.evaluate(model).items()}


def model_layer(target: session.Target) -> tuple[session.ModelChoice, str] | None:
    """The model and layer ``target`` was read from, once the whole model may be loaded; otherwise
    says why not (a synthetic matrix, or a lazily opened model not loaded yet) and returns None."""
    if target.key[0] == "synthetic":
        st.caption("A synthetic matrix belongs to no model: choose a model layer to try it in the model.")
        return None
    choice, layer_name = target.key[:2]  # a lazy layer's key also says whether its Gram was read
    if session.is_lazy(choice) and not session.whole_model_allowed("Trying the layer in the model loads the whole model"):
        return None
    return choice, layer_name


def cached_metrics(store: str, key) -> dict | None:
    """What was measured for run ``key`` in the session's cache ``store``, or None."""
    return job_results.recall(st.session_state.setdefault(store, {}), key)


def measure(store: str, key, bundle, layer_name: str, result: Factorization) -> dict:
    """:func:`model_metrics` of run ``key``, computed once and kept in the session's cache ``store``."""
    metrics = cached_metrics(store, key)
    if metrics is None:
        metrics = model_metrics(bundle, layer_name, result)
        job_results.remember(st.session_state[store], key, metrics)
    return metrics


def metric_label(bundle) -> str:
    """The headline metric in words, e.g. ``"mean cosine"``."""
    return bundle.metric_name.replace("_", " ")


def better_text(bundle) -> str:
    return "Higher is better." if bundle.higher_is_better else "Lower is better."


def dense_text(bundle, dense: dict) -> str:
    return f"dense model: {metric_label(bundle)} {readable(dense[bundle.metric_name], 4)}"
