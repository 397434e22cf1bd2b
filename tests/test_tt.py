"""Tensor-train matrices: agreement with tensorly, budgets, awkward shapes, modules and conv kernels."""

import numpy as np
import pytest
import tensorly as tl
import torch
import torch.nn.functional as F
from tensorly.decomposition import tensor_train_matrix

import dsf_core


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _tensorly_matrix(W, modes, ranks):
    """The same TT-matrix computed by tensorly directly, on numpy (its default backend)."""
    m_modes, n_modes = modes
    tensor = W.numpy().reshape(*m_modes, *n_modes)
    return tl.tt_matrix_to_matrix(tensor_train_matrix(tensor, list(ranks)))


@pytest.mark.parametrize("n_cores", [None, 3, 4])
@pytest.mark.parametrize("density", [0.1, 0.3])
def test_agrees_with_tensorly(n_cores, density):
    W = _randn(48, 72)
    result = dsf_core.factorize(W, "tt", density=density, n_cores=n_cores)
    expected = _tensorly_matrix(W, result.info["modes"], result.info["ranks"])
    np.testing.assert_allclose(result.to_matrix().numpy(), expected, atol=1e-10)
    assert result.history == pytest.approx([result.error(W)], abs=1e-10)


@pytest.mark.parametrize("n_cores", [2, 3])
def test_cores_fit_the_budget_at_the_largest_rank(n_cores):
    W = _randn(48, 72)
    result = dsf_core.factorize(W, "tt", density=0.2, n_cores=n_cores)
    (m_modes, n_modes), ranks = result.info["modes"], result.info["ranks"]
    assert int(np.prod(m_modes)) == 48 and int(np.prod(n_modes)) == 72
    assert ranks[0] == ranks[-1] == 1 and len(ranks) == n_cores + 1
    shapes = [tuple(core.shape) for core in result.factors]
    assert shapes == [(ranks[k], m_modes[k], n_modes[k], ranks[k + 1]) for k in range(n_cores)]
    assert result.kind == "tt" and result.sparse == [False] * n_cores
    assert result.n_params == sum(core.numel() for core in result.factors) <= result.info["budget"]
    with pytest.raises(ValueError, match=f"TT rank {max(ranks) + 1}"):
        dsf_core.factorize(W, "tt", density=0.2, n_cores=n_cores, ranks=max(ranks) + 1)


def test_ranks_option():
    W = _randn(48, 72)
    result = dsf_core.factorize(W, "tt", density=0.5, ranks=3)
    assert result.info["ranks"] == (1, 3, 1)
    assert result.to_matrix() == pytest.approx(_tensorly_matrix(W, result.info["modes"], (1, 3, 1)))


def test_budget_below_rank_one_raises():
    with pytest.raises(ValueError, match="TT rank 1"):
        dsf_core.factorize(_randn(48, 72), "tt", density=0.005)


@pytest.mark.parametrize(
    "shape, n_cores, density",
    [((384, 1536), None, 0.1), ((10, 7), None, 0.3), ((7, 10), 3, 0.3), ((1, 12), None, 1.0),
     ((12, 1), 3, 1.0)],
)
def test_awkward_sizes(shape, n_cores, density):
    W = _randn(*shape, dtype=torch.float32)
    result = dsf_core.factorize(W, "tt", density=density, n_cores=n_cores)
    m_modes, n_modes = result.info["modes"]
    assert (int(np.prod(m_modes)), int(np.prod(n_modes))) == shape
    approx = result.to_matrix()
    assert approx.shape == shape
    assert result.n_params <= result.info["budget"]
    assert 0 <= dsf_core.relative_error(W, approx) < 1


def test_prime_vector_cannot_be_compressed():
    # modes (1, 13) x (1, 1): rank 1 already stores 13 + 1 entries
    with pytest.raises(ValueError, match="TT rank 1"):
        dsf_core.factorize(_randn(13, 1), "tt", density=1.0)


def test_balanced_modes():
    result = dsf_core.factorize(_randn(384, 1536, dtype=torch.float32), "tt", density=0.1)
    assert result.info["modes"] == ((16, 24), (48, 32))


def test_planted_kronecker_sum_is_recovered():
    # with modes (6, 8) x (12, 6), a sum of two Kronecker products is a TT-matrix of rank 2
    W = sum(torch.kron(_randn(6, 12, seed=s), _randn(8, 6, seed=s + 10)) for s in (1, 2))
    result = dsf_core.factorize(W, "tt", density=0.1)  # budget 345 >= 2 * (48 + 72)
    assert result.info["modes"] == ((6, 8), (12, 6))
    assert result.info["ranks"] == (1, 2, 1)
    assert result.error(W) < 1e-12


@pytest.mark.parametrize("n_cores", [2, 3])
def test_module_matches_the_matrix(n_cores):
    W = _randn(48, 72)
    result = dsf_core.factorize(W, "tt", density=0.3, n_cores=n_cores)
    x = _randn(5, 3, 72, seed=1)
    bias = _randn(48, seed=2)
    module = result.to_module(bias)
    torch.testing.assert_close(module(x), x @ result.to_matrix().T + bias)


def test_flops_count_the_contraction():
    result = dsf_core.factorize(_randn(48, 72), "tt", density=0.3)
    (m1, _), (_, n2) = result.info["modes"]
    r = result.info["ranks"][1]
    # core 1 runs once per trailing input index (n2), core 2 once per produced output index (m1)
    assert result.flops == 2 * r * (m1 * 72 + 48 * n2)
    assert (m1, n2) == (6, 6)  # the cheap order: small m_1 first, small n_2 last


def test_conv_kernel():
    W = _randn(16, 8, 3, 3, dtype=torch.float32)
    result = dsf_core.factorize(W, "tt", density=0.5)
    assert result.to_dense().shape == W.shape
    x = _randn(2, 8, 9, 9, seed=3, dtype=torch.float32)
    out = result.to_module(padding=1)(x)
    torch.testing.assert_close(out, F.conv2d(x, result.to_dense(), padding=1), atol=1e-5, rtol=1e-5)


def test_gram_is_ignored_with_a_warning():
    W = _randn(12, 20)
    with pytest.warns(UserWarning, match="does not use gram"):
        result = dsf_core.factorize(W, "tt", density=0.5, gram=torch.eye(20, dtype=torch.float64))
    assert torch.equal(result.to_matrix(), dsf_core.factorize(W, "tt", density=0.5).to_matrix())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    result = dsf_core.factorize(_randn(12, 20, dtype=dtype), "tt", density=0.5)
    assert all(core.dtype == dtype for core in result.factors)
    assert tl.get_backend() == "numpy"  # the pytorch backend was only set locally
