"""The method registry's contract: every method (and one defined here, in this file alone) goes
through the same generic check, and a registered method reaches METHODS, the CLI and the app."""

import types

import pytest
import torch
from _apptest import open_page

import dsf_core
from dsf_core import METHODS, BudgetError, MethodSpec, Option, factorize
from dsf_core._registry import register, unregister
from dsf_core.cli import main
from dsf_core.methods._common import Fit, budget_error
from dsf_core.methods._spec import Plan, fixed_names
from dsf_core.plan import budget

SHAPE = (24, 16)
pytestmark = pytest.mark.filterwarnings("ignore::dsf_core.DataFreeWarning")


def _rank_one_fit(W, *, budget, gram, generator, progress, scale):
    """The best rank-1 approximation, times ``scale``: a method only this test file knows."""
    m, n = W.shape
    if budget < m + n:
        raise budget_error("rank-one-test", m + n, budget, "rank 1", (m, n))
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    progress(0, float((S[1:].square().sum() / S.square().sum()).sqrt()))
    return Fit([U[:, :1] * (S[0] * scale), Vh[:1].clone()], [False, False], chosen={})


def _rank_one_plan(shape, allowed, options):
    m, n = shape
    if allowed < m + n:
        raise budget_error("rank-one-test", m + n, allowed, "rank 1", shape)
    return Plan(True, options, m + n, "rank 1")


TEST_METHOD = types.ModuleType("rank_one_test_method")
TEST_METHOD.SPECS = (
    MethodSpec(
        "rank-one-test",
        "Rank one, defined in tests/test_registry.py alone.",
        "no",
        {"scale": Option(float, 1.0, "A factor on the result.", low=0.0, low_open=True)},
        _rank_one_fit,
        _rank_one_plan,
        "low-rank",
        factor_names=fixed_names("u", "v"),
    ),
)


@pytest.fixture
def test_method():
    names = register(TEST_METHOD)
    try:
        yield names[0]
    finally:
        for name in names:
            unregister(name)


def _inputs():
    g = torch.Generator().manual_seed(7)
    W = torch.randn(*SHAPE, generator=g, dtype=torch.float64)
    X = torch.randn(64, SHAPE[1], generator=g, dtype=torch.float64)
    return W, X.T @ X / 64


def check_contract(method: str) -> None:
    """One method through the generic check: the plan agrees with the fit (feasibility and chosen
    options), the budget holds, the module computes ``to_dense``, the inputs are untouched, the stop
    callback stops it."""
    spec = METHODS[method]
    W, G = _inputs()
    W_before, G_before = W.clone(), G.clone()
    gram = G if spec.uses_gram != "no" else None
    options = dict(spec.presets.get("quick", {}))
    for density in (0.5, 0.02):  # a budget of 192, and one of 7: below most methods' minimum
        allowed = budget(SHAPE, density)
        plan = spec.plan(SHAPE, allowed, **options)
        try:
            result = factorize(W, method, density=density, gram=gram, **options)
        except BudgetError as exc:
            assert not plan.feasible and plan.reason == str(exc) and plan.min_budget > allowed
            continue
        assert plan.feasible and plan.min_budget <= allowed, plan
        chosen = result.info["chosen"]
        assert set(chosen) <= {name for name, option in spec.options.items() if option.default is None}
        assert all(plan.options[name] in (None, value) for name, value in chosen.items()), (plan, chosen)
        assert result.n_params <= allowed
        x = torch.randn(5, SHAPE[1], generator=torch.Generator().manual_seed(8), dtype=torch.float64)
        torch.testing.assert_close(result.to_module()(x), x @ result.to_dense().T)
        assert len(result.history) <= spec.steps(SHAPE, spec.resolve_options(options))
        assert len(spec.factor_names(len(result.factors))) == len(result.factors)
    assert torch.equal(W, W_before) and torch.equal(G, G_before)

    calls = []
    stopped = factorize(W, method, density=0.5, gram=gram, callback=lambda *step: calls.append(step) or False, **options)
    assert len(calls) == 1 and stopped.info["stopped_early"] and stopped.n_params <= budget(SHAPE, 0.5)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_keeps_the_contract(method):
    check_contract(method)


def test_a_method_defined_here_keeps_the_contract_and_is_listed_everywhere(test_method, capsys):
    assert METHODS[test_method] is TEST_METHOD.SPECS[0] and test_method in dsf_core.METHODS
    check_contract(test_method)
    result = factorize(_inputs()[0], test_method, density=0.5, scale=2.0)
    assert result.options == {"scale": 2.0}

    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    assert test_method in capsys.readouterr().out
    assert main(["compress", "digits-cnn", "--method", "no-such-method", "--density", "0.5"]) == 2
    assert test_method in capsys.readouterr().err  # the choices the error lists

    at = open_page("3_Compare.py")
    assert test_method in at.multiselect(key="cmp_methods").options


def test_unregistered_methods_are_gone_and_names_are_unique(test_method):
    with pytest.raises(ValueError, match="already registered"):
        register(TEST_METHOD)
    with pytest.raises(TypeError, match="tuple SPECS"):
        register(types.ModuleType("no_specs"))
    unregister(test_method)
    assert test_method not in METHODS
    with pytest.raises(ValueError, match="Unknown method"):
        factorize(_inputs()[0], test_method, density=0.5)
    register(TEST_METHOD)  # for the fixture's cleanup


def test_specs_say_what_they_are():
    for name, spec in METHODS.items():
        plan = spec.plan(SHAPE, budget(SHAPE, 0.5))
        assert set(plan.options) == set(spec.options), name
        assert spec.takes_pattern == ("pattern" in spec.options)
    with pytest.raises(ValueError, match="structure must be one of"):
        MethodSpec("x", "x", "no", {}, _rank_one_fit, _rank_one_plan, "blob")
