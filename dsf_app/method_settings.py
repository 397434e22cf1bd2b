"""How every page runs a method: its options with or without the "quick" preset, and the damped
Gram that an activation-aware fit reads."""

from __future__ import annotations

import torch

from dsf_core import METHODS, damp_gram

GRAM_DAMPING = 0.01  # activation-aware fits add 1% of the Gram's mean diagonal to its diagonal


def options(method: str, quick: bool) -> dict:
    """The options a run passes to ``factorize``: the method's "quick" preset when ``quick`` (none
    if it has no preset), else none, so the method uses its defaults (whole-model compression:
    the model's recommended options, if it has any)."""
    return dict(METHODS[method].presets.get("quick", {})) if quick else {}


def reads_gram(method: str) -> bool:
    """Whether ``method`` can fit the outputs on calibration inputs (it reads an input Gram)."""
    return METHODS[method].uses_gram != "no"


def fit_gram(gram: torch.Tensor | None, method: str, aware: bool) -> torch.Tensor | None:
    """The Gram that ``method`` fits with: the undamped ``gram`` damped by :data:`GRAM_DAMPING` for an
    activation-aware run; None for a data-free run, a method that reads no Gram, or no ``gram``."""
    if not (aware and reads_gram(method)) or gram is None:
        return None
    return damp_gram(gram, GRAM_DAMPING)
