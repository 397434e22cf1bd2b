"""Input Gram matrices of layers, collected with forward hooks on calibration inputs."""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ._metrics import damp_gram
from .layers import weight_matrix


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


class _InputsSeen(BaseException):
    """Raised by a hook to end a forward pass once every recorded layer has had its input; not an
    ``Exception``, so that a model's own ``except Exception`` cannot swallow it."""


@contextmanager
def recording_inputs(model: nn.Module, names: list[str], *, stop_when_seen: bool = False):
    """Within the block, every forward call of the named layers adds its input rows to an
    accumulator; yields ``{name: GramAccumulator}``. With ``stop_when_seen``, the call that gives
    the last of the named layers its input raises ``_InputsSeen``, ending the pass there (only
    right for layers called once per pass; :func:`collect_grams` catches it)."""
    accumulators = {name: GramAccumulator() for name in names}
    seen: set[str] = set()
    handles = [model.register_forward_pre_hook(lambda module, args: seen.clear())]  # a new pass
    for name in names:
        module = model.get_submodule(name)

        def hook(module, args, name=name):
            accumulators[name].add(layer_input_rows(module, args[0]))
            seen.add(name)
            if stop_when_seen and len(seen) == len(accumulators):
                raise _InputsSeen

        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield accumulators
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def collect_grams(model, forward, batches, names, *, damp: float = 0.01, stop_early: bool = False) -> dict[str, torch.Tensor]:
    """The damped input Gram ``G = X^T X / rows`` of each named layer over all ``batches``
    (``forward(model, batch)`` runs one). Memory: one ``in x in`` matrix per layer. With
    ``stop_early`` (for layers called once per pass, see :func:`sequential_groups`), each pass
    ends as soon as every named layer has had its input."""
    accumulators = accumulate_inputs(model, forward, batches, names, stop_early=stop_early)
    missing = [name for name, acc in accumulators.items() if acc.rows == 0]
    if missing:
        raise ValueError(f"The calibration inputs never reached layer(s) {missing}.")
    return {name: acc.gram(damp) for name, acc in accumulators.items()}


@torch.no_grad()
def accumulate_inputs(model, forward, batches, names, *, stop_early: bool = False) -> dict[str, GramAccumulator]:
    """The raw accumulators behind :func:`collect_grams` (sums that several processes can add up)."""
    with recording_inputs(model, names, stop_when_seen=stop_early) as accumulators:
        for batch in batches:
            try:
                forward(model, batch)
            except _InputsSeen:
                pass
    return accumulators


@torch.no_grad()
def sequential_groups(model, forward, batch, names) -> list[tuple[list[str], bool]]:
    """``names`` split, in order, into groups whose Grams can be collected in one (shortened) pass
    when compressing layer by layer: ``(group, called_once)``.

    One forward pass on ``batch`` watches the layers' inputs. Consecutive layers, each called once,
    whose calls follow one another on the very same, unmodified input tensor (a transformer's
    query, key and value) form a group: compressing one cannot change the others' input. Layers
    called more than once (shared weights) stay alone, and their passes run to the end."""
    order: list[str] = []  # the watched layers' calls, in call order
    same_input: list[bool] = []  # per call: it read the previous call's input tensor, unchanged
    previous: list = [None, None]  # weak reference to the previous call's input, its version

    def hook(module, args, name):
        x = args[0]
        try:
            version = x._version  # counts in-place changes
        except RuntimeError:  # inference-mode tensors keep no count: never grouped
            version = None
        reference, last_version = previous
        same_input.append(reference is not None and reference() is x and version is not None and version == last_version)
        previous[:] = [weakref.ref(x), version]
        order.append(name)

    handles = [model.get_submodule(name).register_forward_pre_hook(partial(hook, name=name)) for name in names]
    try:
        forward(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    groups: list[tuple[list[str], bool]] = []
    for name in names:
        once = order.count(name) == 1
        if once and groups and groups[-1][1]:
            call = order.index(name)
            if call > 0 and order[call - 1] == groups[-1][0][-1] and same_input[call]:
                groups[-1][0].append(name)
                continue
        groups.append(([name], once))
    return groups


def output_sensitivity(model, forward, batches, names, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """How much each output unit of each named layer moves the model's output: the mean, over the
    positions the layer computes (tokens; conv: pixels), of the squared gradient of a random
    projection ``<r, forward(model, batch)>`` (``r`` standard normal, drawn per batch) with respect
    to the unit; its expectation is the squared norm of the unit's column of the output Jacobian.
    Zeros for a layer the output does not depend on. One forward and backward pass per batch;
    parameters get no ``.grad``."""
    generator = torch.Generator().manual_seed(seed)
    modules = {name: model.get_submodule(name) for name in names}
    sums = dict.fromkeys(names, 0.0)
    positions = dict.fromkeys(names, 0)
    outputs: list[tuple[str, torch.Tensor]] = []

    def record(module, args, out, name):
        outputs.append((name, out))
        return out.clone()  # what follows gets a copy: an in-place activation must not change ``out``

    handles = [module.register_forward_hook(partial(record, name=name)) for name, module in modules.items()]
    needed = [p for m in modules.values() for p in m.parameters(recurse=False) if not p.requires_grad]
    try:
        for parameter in needed:  # so that the layers' outputs carry gradients
            parameter.requires_grad_(True)
        with torch.enable_grad():
            for batch in batches:
                outputs.clear()
                out = forward(model, batch)
                if not all(o.requires_grad for _, o in outputs):
                    raise ValueError("The model's forward runs without gradients; output weighting needs them.")
                if not outputs or not out.requires_grad:  # the output depends on none of the layers
                    continue
                r = torch.randn(out.shape, generator=generator).to(out)
                grads = torch.autograd.grad((out * r).sum(), [o for _, o in outputs], allow_unused=True)
                for (name, _), grad in zip(outputs, grads):
                    if grad is not None:
                        if isinstance(modules[name], nn.Conv2d):
                            grad = grad.movedim(1, -1)
                        units = grad.detach().double().reshape(-1, grad.shape[-1])
                        sums[name] = sums[name] + units.pow(2).sum(0)
                        positions[name] += units.shape[0]
    finally:
        for parameter in needed:
            parameter.requires_grad_(False)
        for handle in handles:
            handle.remove()
    unused = {name: torch.zeros(weight_matrix(modules[name]).shape[0]) for name in names if not positions[name]}
    return {name: unused[name] if name in unused else (sums[name] / positions[name]).float() for name in names}
