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


def is_factorizable(module: nn.Module) -> bool:
    """Linear, transformers' ``Conv1D``, and Conv2d that is ungrouped with numeric zero padding
    (what unfolding into patches can reproduce)."""
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.padding_mode == "zeros" and not isinstance(module.padding, str)
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
