"""What a density means for one matrix under each method, without running it (the methods' plans)."""

from __future__ import annotations

from ._registry import METHODS, Plan, get_method
from .exceptions import BudgetError


def budget(shape: tuple[int, int], density: float) -> int:
    """Stored parameters that ``density`` allows an ``m x n`` matrix (what ``factorize`` counts)."""
    m, n = shape
    return int(density * m * n + 1e-9)


def method_plan(method: str, shape: tuple[int, int], density: float, **options) -> Plan:
    """What ``method`` would do with ``options`` (the rest at their defaults) for an ``m x n``
    matrix at ``density``: the options it picks, whether it can run, its minimum budget."""
    return get_method(method).plan(shape, budget(shape, density), **options)


def infeasible_layers(method: str, layers, **options) -> list[tuple[str, tuple[int, int], float, Plan]]:
    """``(name, shape, density, plan)`` of each of ``layers`` (``(name, shape, density)`` triples,
    in order) that ``method`` cannot compress with ``options``; each shape and density is planned
    once, so a whole model's layers are checked before any work."""
    plans, refused = {}, []
    for name, shape, density in layers:
        key = (tuple(shape), density)
        if key not in plans:
            plans[key] = method_plan(method, *key, **options)
        if not plans[key].feasible:
            refused.append((name, key[0], density, plans[key]))
    return refused


def automatic_options(method: str, shape: tuple[int, int], density: float, **options) -> dict:
    """The values ``method`` picks itself for its automatic options (default None) left automatic,
    e.g. ``{"rank": 12}`` for ``"svd"``. Raises ``BudgetError`` when the budget is below the
    method's minimum."""
    spec = get_method(method)
    allowed = budget(shape, density)
    plan = spec.plan(shape, allowed, **options)
    if not plan.feasible:
        raise BudgetError(plan.reason, needed=plan.min_budget, budget=allowed, what=f"{method}'s smallest size")
    automatic = [name for name, option in spec.options.items() if option.default is None and options.get(name) is None]
    return {name: plan.options[name] for name in automatic if plan.options[name] is not None}


def budget_plan(shape: tuple[int, int], density: float) -> dict[str, Plan]:
    """Every method's plan, with its default options, for an ``m x n`` matrix at ``density``."""
    return {name: spec.plan(shape, budget(shape, density)) for name, spec in METHODS.items()}

