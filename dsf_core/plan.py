"""What a density means for one matrix under each method's default options, without running it."""

from __future__ import annotations

from .methods import dsf, palm4msa, svd, tt


def budget(shape: tuple[int, int], density: float) -> int:
    """Stored parameters that ``density`` allows an ``m x n`` matrix (what ``factorize`` counts)."""
    m, n = shape
    return int(density * m * n + 1e-9)


def automatic_options(method: str, shape: tuple[int, int], density: float) -> dict:
    """The values ``method`` picks itself, with its other options at their defaults, for the
    options whose default is automatic (``None``), e.g. ``{"rank": 12}`` for ``"svd"``.
    Raises ``ValueError`` when the budget is below the method's minimum."""
    m, n = shape
    allowed = budget((m, n), density)
    r = min(m, n)
    if method == "dsf":
        small, _ = dsf._split_budget(allowed, m, n, r, None)
        return {"inner_dim": r, "split": small / allowed}
    if method in ("palm4msa", "hierarchical"):
        shapes = palm4msa._factor_shapes(m, n, r, 2)
        return {"k": palm4msa._choose_k(shapes, "splincol", None, None, budget=allowed, method=method, weight_shape=(m, n))}
    if method == "svd":
        return {"rank": svd._choose_rank(allowed, m, n, None)}
    if method == "tt":
        return {"ranks": tt._choose_rank(tt.core_sizes(*tt.modes(m, n)), allowed, None, (m, n))}
    return {}


def budget_plan(shape: tuple[int, int], density: float) -> dict[str, str]:
    """For each method, a short description of the sizes its defaults choose for an ``m x n``
    matrix at ``density`` (e.g. ``"rank 12"``), or why the budget is below its minimum."""
    m, n = shape
    allowed = budget((m, n), density)
    r = min(m, n)
    if allowed < 1:
        reason = f"not possible: density {density} of a {m} x {n} matrix leaves a budget of 0 parameters"
        return {name: reason for name in ("dsf", "palm4msa", "hierarchical", "svd", "tt", "magnitude", "wanda", "sparsegpt")}
    describe = {
        "dsf": lambda auto: _dsf_text(m, n, auto["inner_dim"], *dsf._split_budget(allowed, m, n, auto["inner_dim"], None)),
        "palm4msa": lambda auto: f"2 factors ({m}x{r}, {r}x{n}), k = {auto['k']} nonzeros per row and column",
        "svd": lambda auto: f"rank {auto['rank']} of {r}",
        "tt": lambda auto: "modes {} x {}, TT rank up to {}".format(*map(tuple, tt.modes(m, n)), auto["ranks"]),
    }
    describe["hierarchical"] = describe["palm4msa"]
    plans = {}
    for method in ("dsf", "palm4msa", "hierarchical", "svd", "tt"):
        try:
            plans[method] = describe[method](automatic_options(method, (m, n), density))
        except ValueError as exc:
            plans[method] = f"not possible: {exc}"
    plans["magnitude"] = f"the {allowed:,} largest |W_ij| of {m * n:,}"
    plans["wanda"] = f"{allowed / m:.1f} weights per output row on average (of {n:,}), scored by |W_ij| * ||x_j||"
    plans["sparsegpt"] = f"keeps {allowed:,} of {m * n:,} weights, chosen per block of 128 columns and updated to compensate"
    return plans


def _dsf_text(m: int, n: int, r: int, small: int, large: int) -> str:
    a, b = (small, large) if m < n else (large, small)
    return f"A {m}x{r} with {a:,} nonzeros ({a / (m * r):.1%}), B {r}x{n} with {b:,} ({b / (r * n):.1%})"
