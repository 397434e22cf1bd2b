"""Numbers that describe one weight matrix: its singular values, effective and stable rank, the
energy its top singular values capture, and the eigenvalues of its input Gram matrix."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from dsf_core.plan import budget

# A page waits this long for the spectra before it shows them as a job with progress and Stop.
INLINE_WAIT_SECONDS = 1.5


@dataclass(frozen=True)
class Spectra:
    """What :func:`compute_spectra` found; ``complete`` is False when it was stopped before the
    Gram's eigenvalues."""

    singular_values: torch.Tensor  # float64, decreasing
    gram_eigenvalues: torch.Tensor | None  # float64, decreasing, >= 0; None without a Gram
    complete: bool = True


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Singular values of ``matrix`` in float64, largest first."""
    return torch.linalg.svdvals(matrix.detach().double().cpu())


def gram_eigenvalues(gram: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a symmetric positive semi-definite Gram matrix, largest first; round-off
    negatives count as 0."""
    return torch.linalg.eigvalsh(gram.detach().double().cpu()).flip(0).clamp_min(0)


def compute_spectra(matrix: torch.Tensor, gram: torch.Tensor | None, report: Callable = lambda *a: True) -> Spectra:
    """The singular values of ``matrix`` and the eigenvalues of ``gram``. ``report(item, fraction)``
    (a job's) is told after each; when it returns False the work ends with what it has."""
    values = singular_values(matrix)
    if gram is None:
        report("singular values", 1.0)
        return Spectra(values, None)
    if not report("singular values", 0.5):
        return Spectra(values, None, complete=False)
    eigenvalues = gram_eigenvalues(gram)
    report("Gram eigenvalues", 1.0)
    return Spectra(values, eigenvalues)


def effective_rank(values: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank: ``exp(H(p))`` for ``p = s / sum(s)`` (0 for a zero matrix)."""
    values = values.double()
    total = values.sum()
    if total <= 0:
        return 0.0
    p = values[values > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


def stable_rank(values: torch.Tensor) -> float:
    """``||W||_F^2 / ||W||_2^2 = sum(s^2) / s_1^2`` (0 for a zero matrix)."""
    values = values.double()
    if values.numel() == 0 or values[0] <= 0:
        return 0.0
    return float(values.square().sum() / values[0].square())


def energy_curve(values: torch.Tensor) -> torch.Tensor:
    """Entry ``k - 1``: the fraction of ``||W||_F^2`` in the top ``k`` singular values."""
    squares = values.double().square()
    return squares.cumsum(0) / squares.sum().clamp_min(torch.finfo(torch.float64).tiny)


def energy(values: torch.Tensor, k: int) -> float:
    """The fraction of ``||W||_F^2`` captured by the top ``k`` singular values."""
    if k <= 0:
        return 0.0
    return float(energy_curve(values)[min(k, values.numel()) - 1])


def rank_for_energy(values: torch.Tensor, fraction: float) -> int:
    """The smallest ``k`` whose top ``k`` singular values capture ``fraction`` of the energy."""
    curve = energy_curve(values)
    return min(int(torch.searchsorted(curve, torch.tensor(fraction - 1e-12, dtype=curve.dtype))) + 1, values.numel())


def eckart_young_error(values: torch.Tensor, rank: int) -> float:
    """Relative Frobenius error of the best rank-``rank`` approximation:
    ``sqrt(sum of the dropped s^2 / sum of all s^2)``."""
    squares = values.double().square()
    total = squares.sum()
    if total <= 0:
        return 0.0
    return math.sqrt(float(squares[rank:].sum() / total))


def rank_threshold(values: torch.Tensor, size: int, dtype: torch.dtype = torch.float64) -> float:
    """The round-off level ``size * eps * max`` of ``values`` of a matrix computed in ``dtype``."""
    return size * torch.finfo(dtype).eps * float(values.max()) if values.numel() else 0.0


def numerical_rank(values: torch.Tensor, size: int, dtype: torch.dtype = torch.float64) -> int:
    """How many of ``values`` (singular values or PSD eigenvalues, largest first) exceed the
    round-off level :func:`rank_threshold` of a matrix computed in ``dtype``."""
    if values.numel() == 0:
        return 0
    return int((values > rank_threshold(values, size, dtype)).sum())


def svd_rank(shape: tuple[int, int], density: float) -> int:
    """The rank truncated SVD keeps at ``density``: the largest ``r`` with ``r (m + n) <= budget``."""
    m, n = shape
    return budget(shape, density) // (m + n)
