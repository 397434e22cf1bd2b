"""dsf_app.layer_stats against independent definitions computed with numpy, and SVD's rank
against what factorize does."""

import math

import numpy as np
import pytest
import torch

from dsf_app import layer_stats
from dsf_core import factorize
from dsf_core.plan import budget


def _matrix(m=40, n=24, seed=0):
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _numpy_singular_values(W):
    return np.linalg.svd(W.numpy(), compute_uv=False)


@pytest.mark.parametrize("shape", [(40, 24), (24, 40), (16, 16)])
def test_singular_values_match_numpy(shape):
    W = _matrix(*shape)
    np.testing.assert_allclose(layer_stats.singular_values(W).numpy(), _numpy_singular_values(W), rtol=1e-10)


def test_effective_rank_is_exp_of_the_entropy():
    W = _matrix() @ torch.diag(torch.logspace(0, -3, 24, dtype=torch.float64))
    s = _numpy_singular_values(W)
    p = s / s.sum()
    expected = math.exp(-np.sum(p * np.log(p)))
    assert layer_stats.effective_rank(layer_stats.singular_values(W)) == pytest.approx(expected, rel=1e-10)


def test_effective_rank_of_identity_and_rank_one():
    assert layer_stats.effective_rank(layer_stats.singular_values(torch.eye(12))) == pytest.approx(12)
    rank_one = torch.outer(torch.arange(1.0, 9.0), torch.arange(1.0, 6.0))
    assert layer_stats.effective_rank(layer_stats.singular_values(rank_one)) == pytest.approx(1, abs=1e-6)


def test_stable_rank_is_frobenius_over_spectral_norm_squared():
    W = _matrix(30, 50, seed=3)
    expected = np.linalg.norm(W.numpy(), "fro") ** 2 / np.linalg.norm(W.numpy(), 2) ** 2
    assert layer_stats.stable_rank(layer_stats.singular_values(W)) == pytest.approx(expected, rel=1e-10)


def test_zero_matrix_has_rank_zero_everywhere():
    s = layer_stats.singular_values(torch.zeros(5, 7))
    assert layer_stats.effective_rank(s) == layer_stats.stable_rank(s) == layer_stats.numerical_rank(s, 7) == 0
    assert layer_stats.eckart_young_error(s, 1) == 0.0


@pytest.mark.parametrize("k", [1, 5, 24])
def test_energy_and_eckart_young_error_match_a_numpy_truncation(k):
    W = _matrix()
    U, S, Vt = np.linalg.svd(W.numpy(), full_matrices=False)
    truncated = (U[:, :k] * S[:k]) @ Vt[:k]
    s = layer_stats.singular_values(W)
    total = np.linalg.norm(W.numpy()) ** 2
    assert layer_stats.energy(s, k) == pytest.approx(np.linalg.norm(truncated) ** 2 / total, rel=1e-10)
    error = np.linalg.norm(W.numpy() - truncated) / np.linalg.norm(W.numpy())
    assert layer_stats.eckart_young_error(s, k) == pytest.approx(error, rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99, 1.0])
def test_rank_for_energy_is_the_smallest_k_that_reaches_the_fraction(fraction):
    s = layer_stats.singular_values(_matrix())
    squares = _numpy_singular_values(_matrix()) ** 2
    shares = np.cumsum(squares) / squares.sum()
    expected = next(k for k in range(1, len(shares) + 1) if shares[k - 1] >= fraction - 1e-12)
    assert layer_stats.rank_for_energy(s, fraction) == expected


def test_gram_eigenvalues_match_numpy_largest_first():
    X = _matrix(60, 20)
    G = X.T @ X / 60
    expected = np.sort(np.linalg.eigvalsh(G.numpy()))[::-1]
    np.testing.assert_allclose(layer_stats.gram_eigenvalues(G).numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("rank", [1, 4, 10])
def test_numerical_rank_of_a_low_rank_product(rank):
    g = torch.Generator().manual_seed(rank)
    left = torch.randn(30, rank, generator=g, dtype=torch.float64)
    W = left @ torch.randn(rank, 20, generator=g, dtype=torch.float64)
    assert layer_stats.numerical_rank(layer_stats.singular_values(W), 30) == rank == np.linalg.matrix_rank(W.numpy())


def test_numerical_rank_of_a_float32_product_uses_float32_roundoff():
    g = torch.Generator().manual_seed(0)
    low_rank = torch.randn(30, 5, generator=g) @ torch.randn(5, 20, generator=g)
    s = layer_stats.singular_values(low_rank)
    assert layer_stats.numerical_rank(s, 30, torch.float32) == 5
    assert layer_stats.numerical_rank(s, 30, torch.float64) > 5  # float32 round-off is not float64's
    assert layer_stats.numerical_rank(torch.zeros(4), 4, torch.float32) == 0
    assert layer_stats.numerical_rank(torch.ones(3), 3, torch.float32) == 3


@pytest.mark.parametrize("shape, density", [((40, 24), 0.3), ((30, 30), 0.03), ((58, 50), 0.01), ((100, 60), 0.29)])
def test_budget_is_what_factorize_allows(shape, density):
    kept = factorize(_matrix(*shape), "magnitude", density=density).n_params
    assert budget(shape, density) == kept


@pytest.mark.parametrize("shape, density", [((40, 24), 0.3), ((100, 60), 0.29), ((64, 64), 0.5), ((30, 30), 0.07)])
def test_svd_rank_is_what_factorize_keeps(shape, density):
    result = factorize(_matrix(*shape), "svd", density=density)
    assert layer_stats.svd_rank(shape, density) == result.info["rank"] == result.factors[1].shape[0]


def test_compute_spectra_reports_and_stops_before_the_gram():
    W, G = _matrix(), torch.eye(24, dtype=torch.float64) * 2
    reports = []
    full = layer_stats.compute_spectra(W, G, lambda item, fraction: reports.append((item, fraction)) or True)
    assert full.complete and reports == [("singular values", 0.5), ("Gram eigenvalues", 1.0)]
    assert torch.equal(full.gram_eigenvalues, torch.full((24,), 2.0, dtype=torch.float64))
    stopped = layer_stats.compute_spectra(W, G, lambda item, fraction: False)
    assert not stopped.complete and stopped.gram_eigenvalues is None
    assert torch.equal(stopped.singular_values, full.singular_values)
    without_gram = layer_stats.compute_spectra(W, None)
    assert without_gram.complete and without_gram.gram_eigenvalues is None
