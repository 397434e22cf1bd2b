"""N:M patterns: every method that takes ``pattern`` keeps at most n nonzeros in every group of m
consecutive entries along each sparse factor's input dimension, and says what a pattern needs."""

import pytest
import torch

from dsf_core import METHODS, BudgetError, factorize
from dsf_core.methods._common import PATTERNS

PATTERNED = [name for name, spec in METHODS.items() if spec.takes_pattern]
NM = [p for p in PATTERNS if p != "unstructured"]


def _weight(m=24, n=42):
    return torch.randn(m, n, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def _gram(n=42):
    X = torch.randn(4 * n, n, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    return X.T @ X / (4 * n)


def _worst_group(matrix, m):
    """The most nonzeros of any group of m consecutive entries along the columns."""
    nonzero = matrix != 0
    return max(int(nonzero[:, s : s + m].sum(1).max()) for s in range(0, matrix.shape[1], m))


def test_the_patterned_methods():
    assert {"magnitude", "wanda", "sparsegpt", "dsf"} <= set(PATTERNED)


@pytest.mark.parametrize("pattern", NM)
@pytest.mark.parametrize("method", PATTERNED)
@pytest.mark.parametrize("shape", [(24, 42), (42, 24)])
def test_every_sparse_factor_follows_the_pattern(method, pattern, shape):
    n_keep, m = map(int, pattern.split(":"))
    W, G = _weight(*shape), _gram(shape[1])
    options = {"n_rounds": 6} if method == "dsf" else {}
    result = factorize(W, method, density=1.0, gram=G, pattern=pattern, **options)
    sparse = [f for f, is_sparse in zip(result.factors, result.sparse) if is_sparse]
    assert sparse and len(sparse) == len(result.factors)
    for factor in sparse:
        assert _worst_group(factor, m) <= n_keep
        assert int((factor != 0).sum()) >= 0.9 * factor.shape[0] * min(n_keep, factor.shape[1])  # the pattern is used
    assert result.info.get("pattern", pattern) == pattern


@pytest.mark.parametrize("method", PATTERNED)
def test_a_budget_below_the_pattern_is_a_budget_error(method):
    # DSF lowers its inner dimension to fit; 24 x 42 at inner dimension 1 needs 24 + 21 > 40.
    density = 0.04 if method == "dsf" else 0.45
    with pytest.raises(BudgetError, match=r"2:4 pattern.*\(density 0\.\d+\)"):
        factorize(_weight(), method, density=density, gram=_gram(), pattern="2:4")


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_pruning_keeps_each_groups_best_scores(method):
    W, G = _weight(), _gram()
    scores = W.abs() * G.diagonal().sqrt()
    expected = torch.zeros_like(W)
    for s in range(0, 42, 8):
        block = scores[:, s : s + 8]
        keep = torch.zeros_like(block, dtype=torch.bool)
        keep.scatter_(1, block.topk(min(4, block.shape[1]), dim=1).indices, True)
        expected[:, s : s + 8] = torch.where(keep, W[:, s : s + 8], 0)
    result = factorize(W, method, density=0.6, gram=G, pattern="4:8")
    assert torch.equal(result.to_matrix(), expected)


def test_dsf_pattern_picks_the_inner_dimension_from_the_budget():
    W = _weight(48, 48)
    result = factorize(W, "dsf", density=0.5, pattern="2:4", n_rounds=6)
    # 2:4 keeps half of A (48 x r) and of B (r x 48): 48 r <= 1152 at most r = 24.
    assert result.info["inner_dim"] == 24 and result.n_params <= 1152
    with pytest.raises(BudgetError, match="inner dimension 30"):
        factorize(W, "dsf", density=0.5, pattern="2:4", inner_dim=30)
    with pytest.raises(ValueError, match="'split' does not apply"):
        factorize(W, "dsf", density=0.5, pattern="2:4", split=0.3)


def _two_four_layer(dtype=torch.float32, device="cpu"):
    W = torch.randn(64, 128, generator=torch.Generator().manual_seed(7))
    result = factorize(W, "dsf", density=0.5, pattern="2:4", n_rounds=4)
    result.factors = [f.to(device, dtype) for f in result.factors]
    return result


def test_semi_structured_falls_back_to_csr_with_the_reason_on_cpu():
    result = _two_four_layer()
    x = torch.randn(5, 128)
    with pytest.warns(UserWarning, match="need a CUDA GPU and the factor is on cpu"):
        module = result.to_module(semi_structured=True)
    assert all(f.layout == torch.sparse_csr for f in module.factors)
    torch.testing.assert_close(module(x), result.to_module()(x))


def test_semi_structured_names_a_factor_that_is_not_two_four():
    W = torch.randn(16, 32, generator=torch.Generator().manual_seed(8))
    result = factorize(W, "magnitude", density=0.6)  # unstructured: some group of 4 keeps 3 or 4
    with pytest.warns(UserWarning, match=r"factor 0 \(16, 32\) stays CSR: it is not 2:4"):
        result.to_module(semi_structured=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_semi_structured_runs_two_four_factors_on_the_gpu():
    if torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("sparse tensor cores need compute capability 8.0+")
    result = _two_four_layer(torch.float16, "cuda")
    module = result.to_module(semi_structured=True)
    assert all(isinstance(f, torch.sparse.SparseSemiStructuredTensor) for f in module.factors)
    x = torch.randn(32, 128, device="cuda", dtype=torch.float16)
    torch.testing.assert_close(module(x), x @ result.to_matrix().T, rtol=2e-2, atol=2e-2)
