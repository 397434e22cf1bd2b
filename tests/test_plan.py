"""Each method's plan (``MethodSpec.plan``, ``dsf_core.plan``) against what the method really does:
whether it runs, the options it picks, and its minimum budget."""

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore::dsf_core.DataFreeWarning")

from dsf_core import METHODS, BudgetError, factorize
from dsf_core.plan import automatic_options, budget, budget_plan

# (shape, density): wide, tall, square, too small for some methods, a density whose product
# density * m * n rounds down in floating point (0.03 * 30 * 30 = 26.999...), a budget of 0.
CASES = [
    ((24, 40), 0.3),
    ((40, 24), 0.05),
    ((30, 30), 0.5),
    ((12, 36), 0.1),
    ((64, 48), 0.2),
    ((30, 30), 0.03),
    ((5, 5), 0.02),
]


def _weight(shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=torch.float64)


def _fit(W, method, density, **options):
    """The method's result at ``density``, or None when it raises BudgetError."""
    try:
        return factorize(W, method, density=density, **options)
    except BudgetError:
        return None


def test_the_plan_covers_every_method_with_its_defaults():
    plans = budget_plan((8, 8), 0.5)
    assert plans == {name: spec.plan((8, 8), 32) for name, spec in METHODS.items()}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("shape, density", CASES)
def test_plan_matches_what_the_method_does(shape, density, method):
    quick = METHODS[method].presets.get("quick", {})
    plan = METHODS[method].plan(shape, budget(shape, density), **quick)
    result = _fit(_weight(shape), method, density, **quick)
    assert plan.feasible == (result is not None), plan
    if result is None:
        assert plan.reason and not plan.summary and plan.min_budget > budget(shape, density)
        return
    assert plan.summary and not plan.reason and plan.min_budget <= budget(shape, density)
    assert {name: plan.options[name] for name in result.info["chosen"]} == result.info["chosen"]
    assert result.options == {**plan.options, **{name: result.options[name] for name in result.info["chosen"]}}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("shape", [(24, 40), (30, 30)])
def test_min_budget_is_the_smallest_that_runs(method, shape):
    """At the plan's minimum budget the method runs; one parameter fewer, it raises BudgetError."""
    spec = METHODS[method]
    fewest = spec.plan(shape, 10**9).min_budget
    assert spec.plan(shape, fewest).feasible and not spec.plan(shape, fewest - 1).feasible
    W = _weight(shape)
    options = dict(spec.presets.get("quick", {}))
    size = shape[0] * shape[1]
    assert _fit(W, method, fewest / size, **options) is not None
    if fewest > 1:  # below one parameter factorize itself refuses
        assert _fit(W, method, (fewest - 1) / size, **options) is None


def test_a_given_option_moves_the_minimum():
    assert METHODS["svd"].plan((24, 40), 10**9, rank=3).min_budget == 3 * 64
    assert METHODS["magnitude"].plan((24, 40), 10**9, pattern="2:4").min_budget == 24 * 20
    plan = METHODS["svd"].plan((24, 40), 100, rank=3)
    assert not plan.feasible and "rank 3" in plan.reason


def test_automatic_options_are_the_plans_choices():
    assert automatic_options("svd", (24, 40), 0.5) == {"rank": 480 // 64}
    assert automatic_options("svd", (24, 40), 0.5, rank=2) == {}  # nothing left automatic
    assert set(automatic_options("dsf", (24, 40), 0.5)) == {"inner_dim", "split"}
    with pytest.raises(BudgetError, match="rank 1"):
        automatic_options("svd", (24, 40), 0.01)
