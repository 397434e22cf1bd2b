"""PALM4MSA and hierarchical PALM4MSA: Hadamard butterflies, pyfaust as oracle, constraints, budget."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from dsf_core import factorize
from dsf_core.methods.palm4msa import _Constraint, _support


def _random(m=48, n=40, seed=0, dtype=torch.float64):
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("n", [5, 6, 7])  # 128 x 128 also runs the sparse products
def test_hierarchical_recovers_hadamard_as_butterflies(n):
    N = 2**n
    H = torch.tensor(scipy.linalg.hadamard(N), dtype=torch.float64)
    density = n * (4 * N - 4) / N**2  # the worst case of n splincol(2) factors
    result = factorize(H, "hierarchical", density=density, n_factors=n, projection="splincol", k=2)
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


def test_default_k_is_the_largest_that_fits():
    # two 64 x 64 splincol(k) factors hold at most 2 (128 k - k^2): 750 for k=3, 992 for k=4
    result = factorize(_random(64, 64), "palm4msa", density=0.2, n_iter=20)
    assert result.info["k"] == 3
    assert result.n_params <= result.info["budget"] == 819


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
        ("palm4msa", {"k": 32}, 0.1, "needs 6144 parameters"),
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
