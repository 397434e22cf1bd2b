"""Input Gram matrices of layers, collected with forward hooks on calibration inputs."""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ._metrics import damp_gram


def layer_input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rows ``X`` the layer multiplies by ``W.T``: tokens for Linear/Conv1D, unfolded patches
    (``in*kh*kw`` columns, one row per output position) for Conv2d."""
    if isinstance(module, nn.Conv2d):
        patches = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return x.reshape(-1, x.shape[-1])


class GramAccumulator:
    """Streams ``X^T X`` (float64) and the row count; nothing else is kept."""

    def __init__(self):
        self.sum = None
        self.rows = 0

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.detach().double()
        product = rows.T @ rows
        self.sum = product if self.sum is None else self.sum + product
        self.rows += rows.shape[0]

    def gram(self, damp: float) -> torch.Tensor:
        """``X^T X / rows``, damped by ``damp`` times its mean diagonal (0: undamped)."""
        gram = (self.sum / max(self.rows, 1)).float()
        return damp_gram(gram, damp) if damp > 0 else gram


@contextmanager
def recording_inputs(model: nn.Module, names: list[str]):
    """Within the block, every forward call of the named layers adds its input rows to an
    accumulator; yields ``{name: GramAccumulator}``."""
    accumulators = {name: GramAccumulator() for name in names}
    handles = []
    for name in names:
        module = model.get_submodule(name)

        def hook(module, args, name=name):
            accumulators[name].add(layer_input_rows(module, args[0]))

        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield accumulators
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def collect_grams(model, forward, batches, names, *, damp: float = 0.01) -> dict[str, torch.Tensor]:
    """The damped input Gram ``G = X^T X / rows`` of each named layer over all ``batches``
    (``forward(model, batch)`` runs one). Memory: one ``in x in`` matrix per layer."""
    with recording_inputs(model, names) as accumulators:
        for batch in batches:
            forward(model, batch)
    missing = [name for name, acc in accumulators.items() if acc.rows == 0]
    if missing:
        raise ValueError(f"The calibration inputs never reached layer(s) {missing}.")
    return {name: acc.gram(damp) for name, acc in accumulators.items()}
