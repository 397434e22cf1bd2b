"""Error measures of algorithms.md, used by every method, the tests and the benchmarks."""

from __future__ import annotations

import math

import torch

from ._scaling import exponent_above, times_power_of_two, to_unit_scale


def relative_error(weight: torch.Tensor, approx: torch.Tensor) -> float:
    """``||W - W_hat||_F / ||W||_F`` (both read as matrices, in float64 and at unit scale, so that
    neither huge nor subnormal weights overflow or underflow; 0 for a zero weight approximated by
    zero, inf for a zero weight approximated by anything else)."""
    weight, approx, _ = _common_unit_scale(weight, approx)
    return _ratio(float(torch.linalg.norm(weight - approx)), float(torch.linalg.norm(weight)))


def weighted_relative_error(weight: torch.Tensor, approx: torch.Tensor, gram: torch.Tensor) -> float:
    """``sqrt(tr(D G D^T) / tr(W G W^T))`` with ``D = W - W_hat``: the output error on inputs of Gram G
    (in float64 at unit scale; 0 or inf when ``tr(W G W^T)`` is 0, as for :func:`relative_error`)."""
    weight, approx, _ = _common_unit_scale(weight, approx)
    gram, _ = to_unit_scale(gram.double())
    diff = weight - approx
    num = float(((diff @ gram) * diff).sum().clamp_min(0))
    den = float(((weight @ gram) * weight).sum().clamp_min(0))
    return _ratio(math.sqrt(num), math.sqrt(den))


def _common_unit_scale(weight: torch.Tensor, approx: torch.Tensor):
    """Both as float64 matrices divided by one power of two that brings the larger to unit scale."""
    weight = weight.reshape(weight.shape[0], -1).double()
    approx = approx.reshape(weight.shape).double()
    peak = max(float(weight.abs().max()), float(approx.abs().max()))
    exponent = exponent_above(peak) if math.isfinite(peak) else 0
    return times_power_of_two(weight, -exponent), times_power_of_two(approx, -exponent), exponent


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return 0.0 if num == 0 else math.inf


def damp_gram(gram: torch.Tensor, fraction: float = 0.01) -> torch.Tensor:
    """Add ``fraction`` of the mean diagonal to the diagonal (a Gram from few samples is singular)."""
    damped = gram.clone()
    damped.diagonal().add_(fraction * float(gram.diagonal().mean()))
    return damped
