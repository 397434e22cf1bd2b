"""What a density means for one matrix under each method's default options, without running it."""

from __future__ import annotations

from .methods import dsf, palm4msa, svd, tt


def budget(shape: tuple[int, int], density: float) -> int:
    """Stored parameters that ``density`` allows an ``m x n`` matrix (what ``factorize`` counts)."""
    m, n = shape
    return int(density * m * n + 1e-9)


def budget_plan(shape: tuple[int, int], density: float) -> dict[str, str]:
    """For each method, a short description of the sizes its defaults choose for an ``m x n``
    matrix at ``density`` (e.g. ``"rank 12"``), or why the budget is below its minimum."""
    m, n = shape
    allowed = budget((m, n), density)
    r = min(m, n)
    if allowed < 1:
        reason = f"not possible: density {density} of a {m} x {n} matrix leaves a budget of 0 parameters"
        return {name: reason for name in ("dsf", "palm4msa", "hierarchical", "svd", "tt", "magnitude", "wanda")}
    plans = {}

    def plan(name, describe):
        try:
            plans[name] = describe()
        except ValueError as exc:
            plans[name] = f"not possible: {exc}"

    def dsf_plan():
        small, large = dsf._split_budget(allowed, m, n, r, None)
        a, b = (small, large) if m <= n else (large, small)
        return f"A {m}x{r} with {a:,} nonzeros ({a / (m * r):.1%}), B {r}x{n} with {b:,} ({b / (r * n):.1%})"

    def palm_plan(method):
        shapes = palm4msa._factor_shapes(m, n, r, 2)
        k = palm4msa._choose_k(shapes, "splincol", None, None, budget=allowed, method=method, weight_shape=(m, n))
        return f"2 factors ({m}x{r}, {r}x{n}), k = {k} nonzeros per row and column"

    def tt_plan():
        m_modes = sorted(tt._balanced_factors(m, tt._DEFAULT_CORES))
        n_modes = sorted(tt._balanced_factors(n, tt._DEFAULT_CORES), reverse=True)
        sizes = [a * b for a, b in zip(m_modes, n_modes)]
        rank = tt._choose_rank(sizes, allowed, None, (m, n))
        return f"modes {tuple(m_modes)} x {tuple(n_modes)}, TT rank up to {rank}"

    plan("dsf", dsf_plan)
    plan("palm4msa", lambda: palm_plan("palm4msa"))
    plan("hierarchical", lambda: palm_plan("hierarchical"))
    plan("svd", lambda: f"rank {svd._choose_rank(allowed, m, n, None)} of {r}")
    plan("tt", tt_plan)
    plans["magnitude"] = f"the {allowed:,} largest |W_ij| of {m * n:,}"
    plans["wanda"] = f"{allowed / m:.1f} weights per output row on average (of {n:,}), scored by |W_ij| * ||x_j||"
    return plans
