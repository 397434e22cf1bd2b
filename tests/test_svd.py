"""Truncated SVD: Eckart-Young oracle, the activation-aware optimum, rank and budget checks."""

import pytest
import torch

import dsf_core
from dsf_core import weighted_relative_error


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _activation_gram(n, n_samples, seed=1, dtype=torch.float64):
    """Inputs with very unequal column scales and correlations, and their Gram matrix."""
    X = _randn(n_samples, n, seed=seed, dtype=dtype) @ _randn(n, n, seed=seed + 1, dtype=dtype)
    X = X * torch.linspace(0.05, 3.0, n, dtype=dtype)
    return X, X.T @ X


def _eckart_young(W, r):
    s = torch.linalg.svdvals(W.double())
    return float(s[r:].square().sum().sqrt() / s.square().sum().sqrt())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (40, 40)])
@pytest.mark.parametrize("density", [0.1, 0.3, 0.7])
def test_error_is_eckart_young(shape, density, dtype):
    W = _randn(*shape, dtype=dtype)
    result = dsf_core.factorize(W, "svd", density=density)
    m, n = shape
    r = result.info["rank"]
    budget = int(density * m * n)
    assert r == budget // (m + n)
    assert result.n_params == r * (m + n) <= budget
    assert [tuple(f.shape) for f in result.factors] == [(m, r), (r, n)]
    assert result.error(W) == pytest.approx(_eckart_young(W, r), abs=1e-5)
    assert result.history == pytest.approx([_eckart_young(W, r)], abs=1e-5)


def test_planted_low_rank_is_recovered():
    W = _randn(40, 5, seed=2) @ _randn(5, 60, seed=3)
    result = dsf_core.factorize(W, "svd", density=0.3)  # rank 720 // 100 = 7 >= 5
    assert result.error(W) < 1e-12


def test_rank_option_sets_the_rank():
    W = _randn(30, 50)
    result = dsf_core.factorize(W, "svd", density=0.5, rank=3)
    assert result.info["rank"] == 3
    assert result.error(W) == pytest.approx(_eckart_young(W, 3), abs=1e-10)


def test_rank_over_budget_raises():
    with pytest.raises(ValueError, match="rank 10"):
        dsf_core.factorize(_randn(30, 50), "svd", density=0.2, rank=10)  # 800 > 300


def test_budget_below_rank_one_raises():
    with pytest.raises(ValueError, match="rank 1"):
        dsf_core.factorize(_randn(30, 50), "svd", density=0.05)  # budget 75 < 80


@pytest.mark.parametrize("n_samples", [200, 12])  # full-rank and singular Gram
def test_activation_aware_is_the_weighted_optimum(n_samples):
    W = _randn(24, 32)
    X, G = _activation_gram(32, n_samples)
    plain = dsf_core.factorize(W, "svd", density=0.4)
    aware = dsf_core.factorize(W, "svd", density=0.4, gram=G)
    r = aware.info["rank"]
    # tr(D G D^T) = ||D X^T||^2: the optimum drops the smallest singular values of W X^T.
    optimum = _eckart_young(W @ X.T, r)
    assert aware.error(W, G) == pytest.approx(optimum, abs=1e-8)
    assert aware.history == pytest.approx([optimum], abs=1e-8)
    assert aware.error(W, G) < plain.error(W, G) - 0.05
    assert aware.error(W) > plain.error(W)  # plain SVD stays the unweighted optimum


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_plain_svd_never_beats_activation_aware_on_weighted_error(rank):
    W = _randn(24, 32, seed=5)
    _, G = _activation_gram(32, 64, seed=6)
    plain = dsf_core.factorize(W, "svd", density=0.5, rank=rank)
    aware = dsf_core.factorize(W, "svd", density=0.5, rank=rank, gram=G)
    assert aware.error(W, G) <= plain.error(W, G) + 1e-12


def test_activation_aware_float32_matches_float64():
    W = _randn(24, 32, seed=7)
    _, G = _activation_gram(32, 64, seed=8)
    exact = dsf_core.factorize(W, "svd", density=0.4, gram=G)
    single = dsf_core.factorize(W.float(), "svd", density=0.4, gram=G.float())
    assert single.factors[0].dtype == torch.float32
    assert weighted_relative_error(W, single.to_matrix().double(), G) == pytest.approx(
        exact.error(W, G), abs=1e-4
    )


def test_float64_in_float64_out_and_input_untouched():
    W = _randn(20, 30)
    before = W.clone()
    result = dsf_core.factorize(W, "svd", density=0.5)
    assert all(f.dtype == torch.float64 for f in result.factors)
    assert result.to_matrix().dtype == torch.float64
    assert torch.equal(W, before)
