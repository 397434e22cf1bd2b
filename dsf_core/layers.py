"""Find the factorizable layers of a model and read their weights as matrices."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerInfo:
    """One factorizable layer: its weight read as an ``out x in`` matrix."""

    name: str
    type: str  # "Linear", "Conv2d" or "Conv1D" (transformers' GPT-2 style linear)
    shape: tuple[int, int]
    weight_shape: tuple[int, ...]
    n_params: int  # weight and bias


@dataclass(frozen=True)
class SkippedLayer:
    """A module with weights that is not factorizable, and why (see :func:`unfactorizable_reason`)."""

    name: str
    type: str
    weight_shape: tuple[int, ...]  # its largest weight's
    n_params: int  # its own parameters
    reason: str


def unfactorizable_reason(module: nn.Module) -> str | None:
    """Why a module's own weights cannot be replaced by one factorized matrix: a Conv2d that does
    not unfold into ``out x in*kh*kw`` patches, or weights held as tensors of 3 or more dimensions
    (a mixture of experts' stacked experts, a 1-D or 3-D convolution). None when it can be, or when
    the module holds no such weight."""
    if isinstance(module, nn.Conv2d):
        return _conv2d_reason(module)
    if is_factorizable(module):
        return None
    stacked = [f"{name} {'x'.join(map(str, p.shape))}" for name, p in module.named_parameters(recurse=False) if p.ndim >= 3]
    if not stacked:
        return None
    return (
        f"its weights are tensors of 3 or more dimensions ({', '.join(stacked)}; e.g. a mixture of experts' stacked "
        "expert matrices, or a 1-D or 3-D convolution), not one matrix that a factorized layer replaces"
    )


def _conv2d_reason(module: nn.Conv2d) -> str | None:
    if module.groups > 1:
        kind = "depthwise" if module.groups == module.in_channels else "grouped"
        per_group = module.in_channels // module.groups
        taps = module.weight[0, 0].numel()  # kh * kw
        return (
            f"{kind} convolution (groups={module.groups}): each output channel reads only its group's "
            f"{per_group} input channel(s), so the kernel is {module.groups} separate "
            f"{module.out_channels // module.groups} x {per_group * taps} matrices, not one "
            f"{module.out_channels} x {module.in_channels * taps} matrix"
        )
    if module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r}: only zero padding unfolds into patches"
    if isinstance(module.padding, str):
        return f"padding={module.padding!r}: only numeric padding unfolds into patches"
    if type(module).forward is not nn.Conv2d.forward:
        return (
            f"{type(module).__name__} has its own forward (e.g. it pads its input itself), which a factorized "
            "module would not repeat"
        )
    return None


def is_factorizable(module: nn.Module) -> bool:
    """Linear, transformers' ``Conv1D``, and Conv2d that :func:`unfactorizable_reason` accepts
    (ungrouped, numeric zero padding, Conv2d's own forward: what unfolding into patches reproduces)."""
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.Conv2d):
        return _conv2d_reason(module) is None
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def list_layers(model: nn.Module) -> list[LayerInfo]:
    """Every factorizable layer, in the order ``named_modules`` visits them."""
    layers = []
    for name, module in model.named_modules():
        if is_factorizable(module):
            matrix = weight_matrix(module)
            bias = getattr(module, "bias", None)
            n_params = module.weight.numel() + (0 if bias is None else bias.numel())
            layers.append(
                LayerInfo(name, type(module).__name__, tuple(matrix.shape), tuple(module.weight.shape), n_params)
            )
    return layers


def skipped_layers(model: nn.Module) -> list[SkippedLayer]:
    """Every module with weights that :func:`list_layers` leaves out, with the reason."""
    skipped = []
    for name, module in model.named_modules():
        reason = unfactorizable_reason(module)
        if reason is not None:
            own = list(module.parameters(recurse=False))
            largest = max(own, key=lambda p: p.numel())
            skipped.append(SkippedLayer(name, type(module).__name__, tuple(largest.shape), sum(p.numel() for p in own), reason))
    return skipped


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The layer's weight as the ``out x in`` matrix ``W`` with ``y = x @ W.T + b``."""
    weight = module.weight.detach()
    if type(module).__name__ == "Conv1D":  # stores (in, out) and computes x @ W + b
        return weight.T
    return weight.reshape(weight.shape[0], -1)


def select_layers(model: nn.Module, pattern: str | None = None) -> list[LayerInfo]:
    """The layers whose names match any of the comma-separated glob ``pattern``s (all if None)."""
    layers = list_layers(model)
    if not pattern:
        return layers
    patterns = [p.strip() for p in pattern.split(",") if p.strip()]
    chosen = [layer for layer in layers if any(fnmatch.fnmatchcase(layer.name, p) for p in patterns)]
    if not chosen:
        names = ", ".join(layer.name for layer in layers[:8])
        raise ValueError(f"No factorizable layer matches {pattern!r}; layers are named like: {names}, ...")
    return chosen


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted path) by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
