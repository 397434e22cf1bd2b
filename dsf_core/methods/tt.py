"""Tensor-train matrix (TT-matrix) by tensorly's ``tensor_train_matrix`` (TT-SVD).

``W`` (``m x n``) is read with ``m = m_1 ... m_d`` and ``n = n_1 ... n_d`` (row-major multi-indices,
tensorly's convention) and approximated by cores of shape ``(r_{k-1}, m_k, n_k, r_k)``,
``r_0 = r_d = 1``. The modes come from balanced groups of the prime factors of ``m`` and ``n``;
a size with fewer prime factors than ``d`` (a prime, or 1) gets modes of size 1, which is allowed
but limits the ranks at those bonds. The uniform internal rank is the largest that fits the
budget, each bond clamped to its maximal TT rank.
"""

from __future__ import annotations

import math
from bisect import bisect_right

from ._common import Fit, budget_error
from ._spec import MethodSpec, Option, Plan, numbered_names

# Default number of cores. At equal budget, 2 cores gave the lowest error of d = 2, 3, 4 on every
# MiniLM layer and synthetic matrix of algorithms.md tried (384..1536 a side, density 0.1..0.5).
_DEFAULT_CORES = 2


def fit(W, *, budget, gram, generator, progress, ranks, n_cores):
    m, n = W.shape
    d = n_cores or _DEFAULT_CORES
    m_modes, n_modes = modes(m, n, d)
    sizes = core_sizes(m_modes, n_modes)
    rank = _choose_rank(sizes, budget, ranks, (m, n))
    bonds = _bond_ranks(sizes, rank)
    import tensorly as tl  # imported on use: it takes a quarter second, and most runs never need it
    from tensorly.decomposition import tensor_train_matrix

    with tl.backend_context("pytorch"):
        tensor = W.reshape(*m_modes, *n_modes)
        cores = list(tensor_train_matrix(tensor, bonds).factors)
        approx = tl.tt_matrix_to_matrix(cores)
    progress(0, float((W - approx).norm() / W.norm().clamp_min(1e-30)))
    info = {
        "modes": (tuple(m_modes), tuple(n_modes)),
        "ranks": tuple(core.shape[0] for core in cores) + (1,),
    }
    return Fit(factors=cores, sparse=[False] * len(cores), kind="tt", info=info, chosen={"ranks": rank, "n_cores": d})


def modes(m: int, n: int, d: int = _DEFAULT_CORES) -> tuple[list[int], list[int]]:
    """The mode sizes ``m`` and ``n`` are factored into for ``d`` cores.

    Small m_k with large n_k keeps the bonds balanced, and small m_k early, small n_k late makes
    the matrix-vector product cheap (cores are applied first to last).
    """
    return sorted(_balanced_factors(m, d)), sorted(_balanced_factors(n, d), reverse=True)


def core_sizes(m_modes: list[int], n_modes: list[int]) -> list[int]:
    """``m_k * n_k`` per core: what each core's entries are counted against its bond ranks."""
    return [a * b for a, b in zip(m_modes, n_modes)]


def _primes(size: int) -> list[int]:
    """Prime factors of ``size`` with multiplicity, in increasing order."""
    factors, p = [], 2
    while p * p <= size:
        while size % p == 0:
            factors.append(p)
            size //= p
        p += 1
    return factors + ([size] if size > 1 else [])


def _balanced_factors(size: int, d: int) -> list[int]:
    """``d`` factors of ``size`` with products as equal as the primes allow (largest prime first,
    each to the currently smallest group); missing factors are 1."""
    groups = [1] * d
    for p in reversed(_primes(size)):
        groups[groups.index(min(groups))] *= p
    return groups


def _bond_ranks(sizes: list[int], rank: int) -> list[int]:
    """Ranks ``[1, r_1, ..., r_{d-1}, 1]``: ``rank`` clamped to each bond's maximal TT rank."""
    inner = [min(rank, math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, len(sizes))]
    return [1, *inner, 1]


def _n_params(sizes: list[int], rank: int) -> int:
    """Entries of the cores for a uniform internal ``rank``."""
    bonds = _bond_ranks(sizes, rank)
    return sum(bonds[k] * size * bonds[k + 1] for k, size in enumerate(sizes))


def _choose_rank(sizes: list[int], budget: int, ranks, shape) -> int:
    """The requested rank (which must fit the budget), or the largest uniform rank that does."""
    if ranks is not None:
        needed = _n_params(sizes, ranks)
        if needed > budget:
            raise budget_error("tt", needed, budget, f"TT rank {ranks}", shape)
        return ranks
    if _n_params(sizes, 1) > budget:
        raise budget_error("tt", _n_params(sizes, 1), budget, "TT rank 1", shape)
    max_rank = max(_bond_ranks(sizes, math.prod(sizes))[1:-1])
    # _n_params grows with the rank: the largest rank with _n_params <= budget
    return bisect_right(range(1, max_rank + 1), budget, key=lambda r: _n_params(sizes, r))


def plan(shape, budget, options) -> Plan:
    d = options["n_cores"] or _DEFAULT_CORES
    m_modes, n_modes = modes(*shape, d)
    sizes = core_sizes(m_modes, n_modes)
    rank = _choose_rank(sizes, budget, options["ranks"], shape)
    summary = f"modes {tuple(m_modes)} x {tuple(n_modes)}, TT rank up to {rank}"
    chosen = {**options, "ranks": rank, "n_cores": d}
    return Plan(True, chosen, _n_params(sizes, options["ranks"] or 1), summary)


SPECS = (
    MethodSpec(
        "tt",
        "Tensor-train matrix (TT-matrix) via tensorly, ranks chosen to fit the budget.",
        "no",
        {
            "ranks": Option(
                int,
                None,
                "Internal TT rank (same for every bond, clamped to each bond's maximal rank); "
                "default: the largest that fits the budget.",
                low=1,
                at_most_largest_side=True,
            ),
            "n_cores": Option(
                int,
                None,
                "Number of TT cores d; m and n are split into d balanced factors (a size with too "
                "few prime factors gets modes of size 1); default 2.",
                low=2,
                high=64,
            ),
        },
        fit,
        plan,
        "tensor-train",
        factor_names=numbered_names("G"),
        takes_row_weights=False,
    ),
)
