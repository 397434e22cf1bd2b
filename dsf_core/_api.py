"""``factorize``: the one entry point shared by every method."""

from __future__ import annotations

import time
import warnings

import torch

from . import plan
from ._registry import get_method
from ._result import Factorization
from ._scaling import times_power_of_two, to_unit_scale
from ._validation import (
    check_callback,
    check_density,
    check_device,
    check_gram,
    check_row_weights,
    check_seed,
    check_weight,
)
from .exceptions import BudgetError
from .limits import check_bytes
from .methods._common import Progress


def factorize(
    weight: torch.Tensor,
    method: str,
    *,
    density: float,
    gram: torch.Tensor | None = None,
    row_weights: torch.Tensor | None = None,
    device=None,
    seed: int = 0,
    callback=None,
    heartbeat=None,
    **options,
) -> Factorization:
    """Approximate ``weight`` by ``method`` within ``density * weight.numel()`` stored parameters.

    ``weight`` is 2-D (``out x in``) or a 4-D conv kernel (read as ``out x in*kh*kw``); ``gram`` is
    an optional ``in x in`` input Gram matrix for activation-aware methods; ``row_weights`` (``out``
    positive numbers; ``METHODS[method].takes_row_weights``: all but tt and wanda) weigh the output rows in the
    objective: the method approximates ``diag(row_weights) W`` and the first factor's rows are
    divided back, so the supports follow the weighted objective; ``callback(step,
    objective)`` is called after each step and may return ``False`` to stop early; ``heartbeat(step,
    fraction)`` is called inside long steps (DSF: after each ADMM step, several times a second on a
    2048 x 2048 matrix) with the fraction of the step done, and may return ``False`` to stop at once
    (the best finished step is kept). Method options
    are listed in ``METHODS[method].options``. The work runs on ``device`` (default: the weight's),
    where the result's factors stay; ``seed`` fixes the random starts of methods that have them
    (PALM4MSA's power iterations), the others are deterministic. The input tensors are never
    modified.
    """
    spec = get_method(method)
    matrix = check_weight(weight)
    density = check_density(density)
    gram = check_gram(gram, matrix.shape[1])
    row_weights = check_row_weights(row_weights, matrix.shape[0])
    device = check_device(device, weight.device)
    seed = check_seed(seed)
    callback = check_callback(callback)
    heartbeat = check_callback(heartbeat, "heartbeat")
    resolved = spec.resolve_options(options)
    if gram is not None and spec.uses_gram == "no":
        warnings.warn(f"Method {method!r} does not use gram; it is ignored.", UserWarning, stacklevel=2)
        gram = None
    if row_weights is not None and not spec.takes_row_weights:
        raise ValueError(f"Method {method!r} does not take row_weights.")
    dtype = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
    _check_work_size(spec, tuple(matrix.shape), resolved, gram is not None, dtype)

    # Every method is equivariant to the weight's scale and invariant to the Gram's: solve at unit
    # scale, so that no input can overflow or underflow inside a solver, and scale back at the end.
    # Powers of two keep the scaling exact (pruned weights keep their values bit for bit), and they
    # are applied in half steps, so that no factor overflows even for weights near the dtype's limit.
    work, exponent = to_unit_scale(matrix.to(device=device, dtype=dtype))
    rows = None
    if row_weights is not None:  # normalised to at most 1, so that weighing cannot overflow
        rows = row_weights.to(device=device, dtype=torch.float64)
        rows = (rows / rows.max()).to(dtype)[:, None]
        work, extra = to_unit_scale(work * rows)
        exponent += extra
    work_gram = None if gram is None else to_unit_scale(gram.to(device=device))[0].to(dtype)
    m, n = work.shape
    budget = plan.budget((m, n), density)
    if budget < 1:
        raise BudgetError(
            f"density {density} of a {m} x {n} matrix leaves a budget of 0 parameters; raise the density.",
            needed=1,
            budget=0,
            what="one stored parameter",
        )

    generator = torch.Generator(device=device).manual_seed(seed)
    progress = Progress(callback, heartbeat)
    start = time.perf_counter()
    fit = spec.fit(work, budget=budget, gram=work_gram, generator=generator, progress=progress, **resolved)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start

    factors = list(fit.factors)
    factors[0] = times_power_of_two(factors[0], exponent)
    if rows is not None:
        factors[0] = factors[0] / rows
        if spec.structure == "pruned" and not fit.info.get("updates_weights"):
            # pruning: the kept weights are W's own, bit for bit
            factors[0] = torch.where(factors[0] != 0, matrix.to(factors[0]), 0)
    overflow = ValueError(
        f"The {method!r} approximation does not fit in {dtype} (its values overflow); pass the weight as float64."
    )
    if not all(bool(torch.isfinite(f).all()) for f in factors):
        raise overflow
    result = Factorization(
        method=method,
        options=resolved,
        factors=factors,
        sparse=fit.sparse,
        kind=fit.kind,
        weight_shape=tuple(weight.shape),
        history=progress.history,
        seconds=seconds,
        info={
            **fit.info,
            "chosen": dict(fit.chosen),
            "budget": budget,
            "stopped_early": progress.stopped,
            "row_weighted": rows is not None,
        },
    )
    if len(factors) > 1 and not bool(torch.isfinite(result.to_matrix()).all()):  # finite factors, overflowing product
        raise overflow
    if result.n_params > budget:
        raise RuntimeError(
            f"internal error: {method!r} stored {result.n_params} parameters, over the budget {budget}."
        )
    return result


def _check_work_size(spec, shape, options: dict, has_gram: bool, dtype) -> None:
    """Size options within the weight's sides, and the estimated working memory within
    ``DSF_MAX_WORK_BYTES``: checked before anything is allocated."""
    for name, option in spec.options.items():
        option.check_size(spec.name, name, options[name], shape)
    elements = spec.work_elements(*shape, options, has_gram)
    check_bytes(elements * dtype.itemsize, "DSF_MAX_WORK_BYTES", f"Method {spec.name!r} on a {shape[0]} x {shape[1]} weight (estimated)")
