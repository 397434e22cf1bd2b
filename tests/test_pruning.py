"""Magnitude pruning and Wanda against numpy argsort oracles."""

import numpy as np
import pytest
import torch

import dsf_core


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _gram(n, seed=1):
    """A Gram matrix whose diagonal spans two orders of magnitude."""
    X = _randn(3 * n, n, seed=seed) * torch.logspace(-1, 1, n)
    return X.T @ X


def _scores(W, gram):
    scores = np.abs(W.numpy())
    return scores if gram is None else scores * np.sqrt(np.diag(gram.numpy()))


def _top_mask(scores, k):
    """Oracle: the k largest entries by a full argsort."""
    mask = np.zeros(scores.size, dtype=bool)
    mask[np.argsort(scores, axis=None)[scores.size - k :]] = True
    return mask.reshape(scores.shape)


def _kept(result):
    return result.to_matrix().numpy() != 0


@pytest.mark.parametrize("use_gram", [False, True])
@pytest.mark.parametrize("density", [0.01, 0.3, 0.5, 1.0])
def test_magnitude_keeps_the_largest_scores(density, use_gram):
    W = _randn(40, 60)
    gram = _gram(60) if use_gram else None
    result = dsf_core.factorize(W, "magnitude", density=density, gram=gram)
    budget = int(density * W.numel())
    assert result.n_params == budget
    assert result.sparse == [True]
    assert np.array_equal(_kept(result), _top_mask(_scores(W, gram), budget))


def test_values_are_not_modified():
    W = _randn(40, 60)
    for method in ("magnitude", "wanda"):
        approx = dsf_core.factorize(W, method, density=0.3, gram=_gram(60)).to_matrix()
        kept = approx != 0
        assert torch.equal(approx[kept], W[kept])


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_gram_scaling_changes_the_choice(method):
    W = _randn(40, 60)
    plain = dsf_core.factorize(W, method, density=0.3)
    scaled = dsf_core.factorize(W, method, density=0.3, gram=_gram(60))
    assert (_kept(plain) != _kept(scaled)).sum() > 100
    # the scaled choice is the better one on the activation-weighted error
    assert scaled.error(W, _gram(60)) < plain.error(W, _gram(60))


@pytest.mark.parametrize("use_gram", [False, True])
def test_wanda_keeps_the_largest_scores_of_each_row(use_gram):
    W = _randn(40, 60)
    gram = _gram(60) if use_gram else None
    result = dsf_core.factorize(W, "wanda", density=0.25, gram=gram)  # 600 = 15 per row
    kept = _kept(result)
    assert kept.sum(axis=1).tolist() == [15] * 40
    scores = _scores(W, gram)
    for row in range(40):
        assert np.array_equal(kept[row], _top_mask(scores[row], 15))


def test_wanda_gives_the_remainder_to_the_best_next_scores():
    W = _randn(40, 60)
    result = dsf_core.factorize(W, "wanda", density=0.26)  # 624 = 15 per row + 24 extra
    kept = _kept(result)
    counts = kept.sum(axis=1)
    assert kept.sum() == 624
    assert sorted(set(counts.tolist())) == [15, 16]
    next_best = np.sort(_scores(W, None), axis=1)[:, -16]  # each row's 16th largest
    assert np.array_equal(counts == 16, _top_mask(next_best, 24))
    for row in range(40):
        assert np.array_equal(kept[row], _top_mask(_scores(W, None)[row], counts[row]))


def test_wanda_budget_below_one_per_row():
    W = _randn(40, 60)
    result = dsf_core.factorize(W, "wanda", density=0.01)  # 24 entries for 40 rows
    kept = _kept(result)
    assert kept.sum() == 24
    assert kept.sum(axis=1).max() == 1


def test_pruning_progress_reports_the_error():
    W = _randn(40, 60)
    result = dsf_core.factorize(W, "magnitude", density=0.3)
    assert result.history == pytest.approx([result.error(W)], rel=1e-5)


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_float64_and_conv_kernels(method):
    W = _randn(16, 8, 3, 3, dtype=torch.float64)
    result = dsf_core.factorize(W, method, density=0.5)
    assert result.factors[0].dtype == torch.float64
    assert result.to_dense().shape == W.shape
    assert result.n_params == 576
