"""Error measures of algorithms.md, used by every method, the tests and the benchmarks."""

from __future__ import annotations

import torch


def relative_error(weight: torch.Tensor, approx: torch.Tensor) -> float:
    """``||W - W_hat||_F / ||W||_F`` (both read as matrices; computed in float64, so that squares
    of very large or very small weights neither overflow nor underflow)."""
    weight = weight.reshape(weight.shape[0], -1).double()
    diff = weight - approx.reshape(weight.shape).double()
    return float(torch.linalg.norm(diff) / torch.linalg.norm(weight))


def weighted_relative_error(weight: torch.Tensor, approx: torch.Tensor, gram: torch.Tensor) -> float:
    """``sqrt(tr(D G D^T) / tr(W G W^T))`` with ``D = W - W_hat``: the output error on inputs of Gram G
    (computed in float64)."""
    weight = weight.reshape(weight.shape[0], -1).double()
    gram = gram.double()
    diff = weight - approx.reshape(weight.shape).double()
    num = ((diff @ gram) * diff).sum().clamp_min(0)
    den = ((weight @ gram) * weight).sum()
    return float(torch.sqrt(num / den))


def damp_gram(gram: torch.Tensor, fraction: float = 0.01) -> torch.Tensor:
    """Add ``fraction`` of the mean diagonal to the diagonal (a Gram from few samples is singular)."""
    damped = gram.clone()
    damped.diagonal().add_(fraction * float(gram.diagonal().mean()))
    return damped
