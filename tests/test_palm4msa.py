"""PALM4MSA and hierarchical PALM4MSA: Hadamard butterflies, pyfaust as oracle, constraints, budget."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from dsf_core import METHODS, factorize
from dsf_core.exceptions import BudgetError
from dsf_core.plan import budget
from dsf_core.methods.palm4msa import _Constraint, _support


def _random(m=48, n=40, seed=0, dtype=torch.float64):
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("n", [3, 5, 7])  # 128 x 128 also runs the sparse products
def test_hierarchical_recovers_hadamard_within_the_butterfly_budget(n):
    pyfaust = pytest.importorskip("pyfaust")
    N = 2**n
    H = torch.tensor(scipy.linalg.hadamard(N), dtype=torch.float64)
    butterflies = pyfaust.wht(N, normed=False)  # the oracle: H_N as its n butterfly factors
    np.testing.assert_array_equal(butterflies.toarray(), H.numpy())
    density = butterflies.nnz_sum() / N**2  # exactly what they store: 2 N n
    result = factorize(H, "hierarchical", density=density, n_factors=n, projection="splincol", k=2)
    assert result.info["budget"] == butterflies.nnz_sum() == 2 * N * n
    assert result.error(H) <= 1e-10
    assert len(result.factors) == n
    for factor in result.factors:
        support = factor != 0
        assert support.sum(1).tolist() == [2] * N
        assert support.sum(0).tolist() == [2] * N
    assert result.n_params == 2 * N * n


@pytest.mark.parametrize("k", [4, 16])
def test_palm4msa_matches_pyfaust(query_weight, k):
    pytest.importorskip("pyfaust")
    from pyfaust.fact import palm4msa
    from pyfaust.factparams import ConstraintList, ParamsPalm4MSA, StoppingCriterion

    W = query_weight[:128, :128].double()
    M = W.numpy()
    params = ParamsPalm4MSA(
        ConstraintList("splincol", k, 128, 128, "splincol", k, 128, 128), StoppingCriterion(num_its=100)
    )
    reference = np.linalg.norm(palm4msa(M, params).toarray() - M) / np.linalg.norm(M)
    density = 2 * (2 * 128 * k - k * k) / 128**2  # the worst case of two splincol(k) factors
    ours = factorize(
        W, "palm4msa", density=density, n_factors=2, projection="splincol", k=k, n_iter=100, tol=0.0
    )
    assert ours.error(W) <= 1.05 * reference


@pytest.mark.parametrize("projection", ["sp", "splin", "spcol", "splincol"])
def test_projection_structure_budget_and_descent(projection):
    W, k = _random(), 3
    result = factorize(W, "palm4msa", density=0.5, n_factors=3, projection=projection, k=k, n_iter=60)
    assert [tuple(f.shape) for f in result.factors] == [(48, 40), (40, 40), (40, 40)]
    for factor in result.factors:
        rows, cols = factor.shape
        support = factor != 0
        if projection == "sp":
            assert support.sum() <= k * rows
        elif projection == "splin":
            assert support.sum(1).max() <= k
        elif projection == "spcol":
            assert support.sum(0).max() <= k
        else:
            assert support.sum() <= k * (rows + cols) - k * k
            assert support.sum(1).min() >= k and support.sum(0).min() >= k
    assert result.n_params <= result.info["budget"]
    history = np.array(result.history)
    assert history[-1] < 0.9 * history[0]
    # descent, up to small bumps (the splincol union is no exact projection)
    assert np.all(np.diff(history) <= 0.01 * history[0])
    assert history[-1] <= 1.01 * history.min()
    assert result.error(W) == pytest.approx(history[-1], rel=1e-9)


def test_sp_with_factor_density():
    result = factorize(_random(), "palm4msa", density=0.5, projection="sp", factor_density=0.2, n_iter=30)
    a, b = result.factors
    assert int(a.count_nonzero()) <= int(0.2 * 48 * 40) and int(b.count_nonzero()) <= int(0.2 * 40 * 40)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2, 5, 20])
def test_splincol_union_stays_within_its_bound_despite_ties(seed, k):
    scores = torch.randint(0, 3, (30, 20), generator=torch.Generator().manual_seed(seed)).double()
    mask = _support(scores, "splincol", k)
    assert int(mask.sum()) <= _Constraint("splincol", k).max_nnz(30, 20)
    assert mask.sum(1).min() >= min(k, 20) and mask.sum(0).min() >= min(k, 30)


def test_default_k_is_the_largest_that_fits_and_the_factors_fill_the_budget():
    # two 64 x 64 splincol(k) factors hold at most 2 (128 k - k^2): 750 for k=3, 992 for k=4;
    # each is then topped up with its largest other entries to its share of 819
    result = factorize(_random(64, 64), "palm4msa", density=0.2, n_iter=20)
    assert result.info["k"] == 3
    assert 0.99 * 819 <= result.n_params <= result.info["budget"] == 819
    for factor in result.factors:  # still at least k per row and column
        support = factor != 0
        assert support.sum(1).min() >= 3 and support.sum(0).min() >= 3


SHAPES = [(1, 1), (1, 6), (5, 1), (2, 3), (7, 4), (16, 16), (9, 30), (33, 12)]


@pytest.mark.parametrize("method", ["palm4msa", "hierarchical"])
def test_the_budget_always_holds_and_the_plan_says_what_the_fit_does(method):
    spec = METHODS[method]
    draw = np.random.default_rng(len(method))
    for m, n in SHAPES:
        W = _random(m, n, seed=m * n)
        for n_factors in (2, 3, 4):
            for density in draw.uniform(0.02, 1.0, size=2):
                projection = "splincol" if draw.random() < 0.5 else str(draw.choice(["sp", "splin", "spcol"]))
                options = {"n_factors": n_factors, "projection": projection, "n_iter": 3}
                if draw.random() < 0.3:
                    options["k"] = int(draw.integers(1, max(m, n) + 1))
                allowed = budget((m, n), density)
                plan = spec.plan((m, n), allowed, **options)
                case = (m, n, density, options)
                try:
                    result = factorize(W, method, density=density, **options)
                except BudgetError as exc:
                    assert not plan.feasible and plan.min_budget == exc.needed > allowed, case
                    continue
                assert plan.feasible and plan.min_budget <= allowed, case
                assert plan.options["k"] == result.info["k"], case
                assert result.n_params <= allowed, case
                # the plan's minimum is exact: it fits there, one less does not
                assert spec.plan((m, n), plan.min_budget, **options).feasible, case
                assert not spec.plan((m, n), plan.min_budget - 1, **options).feasible, case


@pytest.mark.parametrize("method", ["palm4msa", "hierarchical"])
@pytest.mark.parametrize("shape, density", [((64, 64), 0.1), ((128, 96), 0.2), ((48, 200), 0.4)])
def test_splincol_uses_most_of_its_budget(method, shape, density):
    W = _random(*shape)
    result = factorize(W, method, density=density, n_iter=30)
    assert 0.9 * result.info["budget"] <= result.n_params <= result.info["budget"]


@pytest.mark.parametrize("method", ["palm4msa", "hierarchical"])
def test_callback_false_stops_early_with_a_valid_result(method):
    W = _random()
    steps = []

    def callback(step, objective):
        steps.append(step)
        return step < 3

    result = factorize(W, method, density=0.5, n_factors=3, callback=callback)
    assert steps == [1, 2, 3] and len(result.history) == 3
    assert result.info["stopped_early"]
    assert result.n_params <= result.info["budget"]
    assert result.error(W) <= 1.0


@pytest.mark.parametrize("method", ["palm4msa", "hierarchical"])
def test_huge_entries_neither_overflow_nor_warn(method):
    W = _random(dtype=torch.float32)
    small = factorize(W, method, density=0.5, n_factors=3, n_iter=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        huge = factorize(W * 1e30, method, density=0.5, n_factors=3, n_iter=30)
    assert all(bool(torch.isfinite(f).all()) for f in huge.factors)
    exact = W.double() * 1e30
    error = float(torch.linalg.norm(huge.to_matrix().double() - exact) / torch.linalg.norm(exact))
    assert error == pytest.approx(small.error(W), rel=1e-4)


@pytest.mark.parametrize(
    "method, options, density, match",
    [
        ("palm4msa", {"k": 32}, 0.1, "needs 4096 parameters"),  # 32 per row of two 64 x 64 factors
        ("palm4msa", {}, 0.01, "k=1"),
        ("hierarchical", {"k": 20, "n_factors": 3}, 0.5, "k=20"),
        ("palm4msa", {"projection": "splin", "factor_density": 0.1}, 0.5, "factor_density"),
        ("palm4msa", {"projection": "sp", "factor_density": 0.6}, 0.5, "factor_density=0.6"),
    ],
)
def test_budget_too_small_or_option_too_large_raises(method, options, density, match):
    with pytest.raises(ValueError, match=match):
        factorize(_random(64, 64), method, density=density, **options)


@pytest.mark.parametrize("method", ["palm4msa", "hierarchical"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_factors_keep_the_input_dtype(method, dtype):
    result = factorize(_random(dtype=dtype), method, density=0.4, n_iter=10)
    assert all(f.dtype == dtype for f in result.factors)


@pytest.mark.parametrize("method", ["palm4msa", "hierarchical"])
def test_module_computes_through_the_factors(method):
    result = factorize(_random(), method, density=0.4, n_factors=3, n_iter=20)
    x = _random(5, 40, seed=1)
    torch.testing.assert_close(result.to_module()(x), x @ result.to_matrix().T)
