"""A model together with what is needed to calibrate and evaluate it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn


@dataclass
class ModelBundle:
    """A loaded model (eval mode, float32) with its calibration data and its metric.

    ``calibration_inputs(n)`` returns a list of batches holding ``n`` samples in all;
    ``forward(model, batch)`` runs any model of this architecture (the original or a compressed
    copy) on one batch and returns its output tensor; ``evaluate(model)`` returns a dict holding at
    least ``metric_name`` (the headline number on the fixed evaluation set, or agreement with the
    original model when there is no data set). ``compress_defaults`` (keywords of
    :func:`dsf_core.compress.compress_model`) and ``method_options`` (per method) are the settings
    this model compresses best with, used where the caller gives none.
    """

    name: str
    model: nn.Module
    task: str  # "classifier", "language-model" or "encoder"
    metric_name: str  # e.g. "accuracy", "perplexity", "mean_cosine", "top1_agreement"
    higher_is_better: bool
    calibration_inputs: Callable[[int], list]
    forward: Callable[[nn.Module, Any], Any]
    evaluate: Callable[[nn.Module], dict]
    description: str = ""
    source: str = ""  # where the weights came from (file path, directory, package)
    extras: dict = field(default_factory=dict)
    compress_defaults: dict = field(default_factory=dict)
    method_options: dict = field(default_factory=dict)
