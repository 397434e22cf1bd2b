"""Truncated SVD: the best rank-``r`` approximation ``W ~ A B`` with ``r (m + n)`` stored entries.

Without a Gram matrix this is Eckart-Young: ``A = U_r S_r``, ``B = V_r^T``. With an input Gram
``G`` the activation-weighted error ``||(W - W_hat) G^{1/2}||_F`` is minimal for
``W_hat = trunc_r(W G^{1/2}) G^{-1/2} = U_r U_r^T W``, with ``U_r`` the top-``r`` left singular
vectors of ``W G^{1/2}``. The second form needs no inverse of ``G``, so a singular Gram is
handled exactly: on ``G``'s null space, which the weighted error cannot see, ``W_hat`` keeps the
projection of ``W`` onto the chosen output subspace (a pseudo-inverse would set it to zero).
"""

from __future__ import annotations

import torch

from ._common import Fit, budget_error
from ._spec import MethodSpec, Option, Plan, fixed_names


def fit(W, *, budget, gram, generator, progress, rank):
    m, n = W.shape
    r = _choose_rank(budget, m, n, rank)
    if gram is None:
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        factors = [U[:, :r] * S[:r], Vh[:r]]
    else:
        U, S, _ = torch.linalg.svd(W @ _gram_sqrt(gram), full_matrices=False)
        factors = [U[:, :r], U[:, :r].T @ W]
    progress(0, _dropped_fraction(S, r))
    return Fit(factors=factors, sparse=[False, False], info={"rank": r}, chosen={"rank": r})


def _choose_rank(budget: int, m: int, n: int, rank) -> int:
    """The requested rank (which must fit ``r (m + n) <= budget``), or the largest that fits."""
    if rank is None:
        if budget < m + n:
            raise budget_error("svd", m + n, budget, "rank 1", (m, n))
        return budget // (m + n)
    if rank * (m + n) > budget:
        raise budget_error("svd", rank * (m + n), budget, f"rank {rank}", (m, n))
    return rank


def _gram_sqrt(gram: torch.Tensor) -> torch.Tensor:
    """``G^{1/2}`` by a symmetric eigen-decomposition; round-off negative eigenvalues count as 0."""
    evals, evecs = torch.linalg.eigh(gram)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def _dropped_fraction(S: torch.Tensor, r: int) -> float:
    """``sqrt(sum of the dropped sigma^2 / sum of all sigma^2)``: the (weighted) relative error."""
    energy = S.square()
    return float((energy[r:].sum() / energy.sum().clamp_min(torch.finfo(S.dtype).tiny)).sqrt())


def plan(shape, budget, options) -> Plan:
    m, n = shape
    r = _choose_rank(budget, m, n, options["rank"])
    return Plan(True, {**options, "rank": r}, (options["rank"] or 1) * (m + n), f"rank {r} of {min(m, n)}")


SPECS = (
    MethodSpec(
        "svd",
        "Truncated SVD: the best rank-r approximation (activation-aware with a Gram matrix).",
        "optional",
        {"rank": Option(int, None, "Rank r; default: the largest r with r (m + n) <= budget.", low=1, at_most_largest_side=True)},
        fit,
        plan,
        "low-rank",
        factor_names=fixed_names("A", "B"),
    ),
)
