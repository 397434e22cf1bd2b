"""dsf_app.toys: each toy has the structure it claims, and a seed reproduces it."""

import numpy as np
import pytest
import scipy.linalg
import torch

from dsf_app import toys


@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_hadamard_is_orthogonal_and_matches_scipy(n):
    H = toys.hadamard(n)
    assert torch.equal(H @ H.T, n * torch.eye(n, dtype=torch.float64))
    np.testing.assert_array_equal(H.numpy(), scipy.linalg.hadamard(n))


def test_hadamard_toy_fits_in_its_butterflies():
    toy = toys.make(toys.spec_for("hadamard", 16))
    assert toys.butterfly_params(16) == 2 * 16 * 4  # 4 butterfly factors, 2 nonzeros in each of 16 rows
    assert toy.natural_density == 128 / 16**2 and "128 numbers instead of 256" in toy.note


@pytest.mark.parametrize("n", [0, 3, 12])
def test_hadamard_needs_a_power_of_two(n):
    with pytest.raises(ValueError, match="power of two"):
        toys.hadamard(n)


@pytest.mark.parametrize("n", [2, 5, 16])
def test_dft_real_form_is_orthogonal_and_acts_like_the_unitary_dft(n):
    R = toys.dft_real(n)
    assert R.shape == (2 * n, 2 * n)
    torch.testing.assert_close(R @ R.T, torch.eye(2 * n, dtype=torch.float64), atol=1e-12, rtol=0)
    z = np.random.default_rng(n).standard_normal(n) + 1j * np.random.default_rng(n + 1).standard_normal(n)
    Fz = np.fft.fft(z, norm="ortho")
    out = R.numpy() @ np.concatenate([z.real, z.imag])
    np.testing.assert_allclose(out, np.concatenate([Fz.real, Fz.imag]), atol=1e-12)


@pytest.mark.parametrize("rank", [1, 3, 8])
def test_low_rank_without_noise_has_exactly_that_rank(rank):
    toy = toys.make(toys.spec_for("low_rank", 32, seed=4, rank=rank, noise=0.0))
    assert np.linalg.matrix_rank(toy.matrix.numpy()) == rank
    assert toy.natural_density == pytest.approx(rank * (32 + 32) / 32**2)


def test_low_rank_noise_is_what_svd_at_that_rank_leaves():
    toy = toys.make(toys.spec_for("low_rank", 64, seed=1, rank=4, noise=0.1))
    s = np.linalg.svd(toy.matrix.numpy(), compute_uv=False)
    dropped = np.sqrt(np.sum(s[4:] ** 2) / 64**2)  # per-entry RMS of what rank 4 leaves
    assert 0.07 < dropped < 0.1


@pytest.mark.parametrize("density_a, density_b", [(0.05, 0.2), (0.1, 0.1), (1.0, 0.01)])
def test_planted_product_has_factors_of_the_asked_sparsity(density_a, density_b):
    toy = toys.make(toys.spec_for("planted", 32, seed=2, density_a=density_a, density_b=density_b))
    A, B = toy.factors
    assert A.shape == (32, 8) and B.shape == (8, 32)  # inner dimension a quarter of the size
    assert int(torch.count_nonzero(A)) == max(1, round(density_a * 32 * 8))
    assert int(torch.count_nonzero(B)) == max(1, round(density_b * 8 * 32))
    torch.testing.assert_close(toy.matrix, A @ B, rtol=0, atol=0)
    assert toy.natural_density == (int(torch.count_nonzero(A)) + int(torch.count_nonzero(B))) / 32**2


def test_planted_product_is_dense_and_of_full_inner_rank_as_its_note_says():
    toy = toys.make(toys.spec_for("planted", 64))
    nonzero = float((toy.matrix != 0).double().mean())
    assert nonzero > 0.5 and f"{nonzero:.0%} of W is nonzero" in toy.note
    assert np.linalg.matrix_rank(toy.matrix.numpy()) == 16 and "W has rank 16" in toy.note
    assert "in 2,048 numbers, 4.0 times as many" in toy.note  # SVD: 16 x (64 + 64) against 512


def test_sparse_factor_rejects_a_density_outside_the_unit_interval():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        toys.sparse_factor(4, 4, 0.0, torch.Generator())


@pytest.mark.parametrize("kind", list(toys.KINDS))
def test_every_kind_is_square_float64_and_reproducible_by_seed(kind):
    spec = toys.spec_for(kind, 16, seed=7, rank=3, noise=0.2, density_a=0.3, density_b=0.3)
    first, again = toys.make(spec), toys.make(spec)
    assert first.matrix.shape == (16, 16) and first.matrix.dtype == torch.float64
    assert torch.equal(first.matrix, again.matrix)
    if kind in ("low_rank", "planted", "gaussian"):
        other = toys.make(toys.spec_for(kind, 16, seed=8, rank=3, noise=0.2, density_a=0.3, density_b=0.3))
        assert not torch.equal(first.matrix, other.matrix)


def test_spec_keeps_only_what_the_kind_uses():
    assert toys.spec_for("hadamard", 8, seed=5, rank=3) == toys.spec_for("hadamard", 8)
    assert toys.spec_for("gaussian", 8, seed=5, noise=0.3) == toys.ToySpec("gaussian", 8, 5)
    assert toys.spec_for("low_rank", 8, rank=2, noise=0.5).rank == 2
    with pytest.raises(ValueError, match="Unknown toy"):
        toys.spec_for("circulant", 8)
