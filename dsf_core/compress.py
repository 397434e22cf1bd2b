"""Compress a whole model: factorize chosen layers with one method at one density."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

from torch import nn

from ._api import factorize
from ._registry import get_method
from ._result import Factorization
from .calibration import collect_grams, sequential_groups
from .layers import LayerInfo, select_layers, set_module, weight_matrix
from .models import ModelBundle


@dataclass
class LayerReport:
    """What compressing one layer did."""

    name: str
    shape: tuple[int, int]
    n_params_dense: int  # weight entries
    n_params: int
    error: float  # relative error of the weight
    weighted_error: float | None  # activation-weighted, on this layer's calibration Gram
    seconds: float


@dataclass
class CompressionResult:
    """A compressed copy of a model with per-layer reports and, if evaluated, its metric."""

    model: nn.Module
    method: str
    density: float
    options: dict
    layers: list[LayerReport]
    factorizations: dict[str, Factorization] = field(repr=False)
    metric_name: str = ""
    dense_metric: float | None = None
    compressed_metric: float | None = None
    seconds: float = 0.0

    @property
    def n_params_dense(self) -> int:
        """Weight entries of the compressed layers before compression."""
        return sum(layer.n_params_dense for layer in self.layers)

    @property
    def n_params_compressed(self) -> int:
        return sum(layer.n_params for layer in self.layers)


def compress_model(
    bundle: ModelBundle,
    method: str,
    density: float,
    *,
    layers: str | None = None,
    calibration: int = 128,
    sequential: bool = True,
    damp: float = 0.01,
    evaluate: bool = True,
    callback=None,
    **options,
) -> CompressionResult:
    """Factorize the layers matching ``layers`` (glob patterns, all by default) of a copy of
    ``bundle.model`` by ``method`` at ``density``; the original model is never modified.

    With ``calibration`` > 0 samples and a method that reads Gram matrices, each layer's input
    Gram is collected (damped by ``damp`` times its mean diagonal). ``sequential`` collects it on
    the partly compressed copy, so later layers see earlier layers' errors (as SparseGPT and DSF
    do); otherwise all Grams come from one pass over the original model (faster).
    ``callback(done, total, report)`` is called after each layer; returning ``False`` stops
    (the result then holds the layers done so far).
    """
    spec = get_method(method)
    start = time.perf_counter()
    model = copy.deepcopy(bundle.model).eval()
    chosen = select_layers(model, layers)
    use_data = calibration > 0 and spec.uses_gram != "no"
    batches = bundle.calibration_inputs(calibration) if use_data else []
    reports, factorizations = [], {}
    for layer, gram in _layers_and_grams(model, bundle.forward, chosen, batches, sequential, damp):
        factorizations[layer.name], report = _compress_layer(model, layer, method, density, gram, options)
        reports.append(report)
        if callback is not None and callback(len(reports), len(chosen), report) is False:
            break

    outcome = CompressionResult(model, method, density, dict(options), reports, factorizations)
    if evaluate:
        outcome.metric_name = bundle.metric_name
        outcome.dense_metric = float(bundle.evaluate(bundle.model)[bundle.metric_name])
        outcome.compressed_metric = float(bundle.evaluate(model)[bundle.metric_name])
    outcome.seconds = time.perf_counter() - start
    return outcome


def _layers_and_grams(model, forward, chosen: list[LayerInfo], batches, sequential: bool, damp: float):
    """Each chosen layer with its input Gram (None without calibration batches). Sequentially, a
    group's Grams are collected when the group comes up, on the model as compressed so far."""
    names = [layer.name for layer in chosen]
    if not batches:
        grams = dict.fromkeys(names)
    elif not sequential:
        grams = collect_grams(model, forward, batches, names, damp=damp)
    else:
        by_name = {layer.name: layer for layer in chosen}
        for group, called_once in sequential_groups(model, forward, batches[0], names):
            grams = collect_grams(model, forward, batches, group, damp=damp, stop_early=called_once)
            for name in group:
                yield by_name[name], grams[name]
        return
    for layer in chosen:
        yield layer, grams[layer.name]


def _compress_layer(model, layer: LayerInfo, method, density, gram, options):
    """Factorize one layer's weight, put the factorized module in its place, and report."""
    module = model.get_submodule(layer.name)
    matrix = weight_matrix(module)
    if module.weight.ndim == 4:  # a conv kernel: the result keeps the kernel shape
        result = factorize(module.weight.detach(), method, density=density, gram=gram, **options)
        new = result.to_module(module.bias, stride=module.stride, padding=module.padding, dilation=module.dilation)
    else:
        result = factorize(matrix, method, density=density, gram=gram, **options)
        new = result.to_module(module.bias)
    report = LayerReport(
        name=layer.name,
        shape=layer.shape,
        n_params_dense=matrix.numel(),
        n_params=result.n_params,
        error=result.error(matrix),
        weighted_error=None if gram is None else result.error(matrix, gram),
        seconds=result.seconds,
    )
    set_module(model, layer.name, new)
    return result, report
