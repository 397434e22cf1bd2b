"""The honest size and cost of a model: stored values, bytes on disk, FLOPs, measured latency."""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch
from safetensors.torch import save_file
from torch import nn

from ._modules import FactorizedLinear, conv_output_size
from .checkpoint import unshared
from .layers import is_factorizable, weight_matrix


def stored_values(model: nn.Module) -> int:
    """Numbers the model stores: every entry of dense tensors, the nonzeros of CSR factors."""
    return sum(
        value.values().numel() if value.layout == torch.sparse_csr else value.numel()
        for value in model.state_dict().values()
    )


def dense_file_bytes(model: nn.Module) -> int:
    """Size of the model's state saved as a plain safetensors file (measured, not estimated)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "dense.safetensors")
        save_file(unshared(model.state_dict()), path)
        return os.path.getsize(path)


@torch.no_grad()
def flops_per_sample(model: nn.Module, forward, batch, n_samples: int) -> int:
    """FLOPs of the factorizable (dense) and factorized layers in one forward pass, per sample:
    ``2 * m * n`` per input row for a dense layer, ``2 * nnz`` (through the factors) otherwise."""
    total = 0

    def count(module, args):
        nonlocal total
        x = args[0]
        if isinstance(module, FactorizedLinear):
            total += x.numel() // x.shape[-1] * module.flops_per_row()
        elif isinstance(module, nn.Conv2d):
            h, w = conv_output_size(x.shape[2:], module.kernel_size, module.stride, module.padding, module.dilation)
            total += x.shape[0] * h * w * 2 * weight_matrix(module).numel()
        else:
            total += x.numel() // x.shape[-1] * 2 * weight_matrix(module).numel()

    handles = [
        m.register_forward_pre_hook(count)
        for m in model.modules()
        if isinstance(m, FactorizedLinear) or is_factorizable(m)
    ]
    try:
        forward(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return total // n_samples


@torch.no_grad()
def latency_seconds(module: nn.Module, x, repeats: int = 20, forward=None) -> float:
    """Median wall time of ``module(x)`` (or ``forward(module, x)``, e.g. a bundle's forward on
    its batch) over ``repeats`` calls, after one warm-up."""
    run = (lambda: module(x)) if forward is None else (lambda: forward(module, x))
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
