"""The contract every method shares: budget, result type, modules, devices, bad input."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dsf_core
from dsf_core import METHODS, factorize

ALL = list(METHODS)
ITERATIVE = ["dsf", "palm4msa", "hierarchical"]


def _matrix(m=24, n=32, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g, dtype=dtype)


def _gram(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(4 * n, n, generator=g) * torch.linspace(0.2, 2.0, n)
    return X.T @ X / (4 * n)


def _gram_for(method, n):
    return _gram(n) if METHODS[method].uses_gram != "no" else None


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("density", [0.35, 0.7])
def test_budget_result_and_module(method, density):
    W = _matrix()
    result = factorize(W, method, density=density, gram=_gram_for(method, 32))
    assert isinstance(result, dsf_core.Factorization)
    assert result.method == method and result.shape == (24, 32)
    assert 0 < result.n_params <= math.floor(density * W.numel())
    assert result.density == pytest.approx(result.n_params / W.numel())
    assert result.history and all(math.isfinite(h) for h in result.history)
    assert result.seconds > 0 and result.n_bytes > 0 and result.flops > 0
    assert result.to_dense().shape == W.shape
    assert result.error(W) < 1.0

    bias = torch.randn(24)
    x = torch.randn(5, 3, 32)
    module = result.to_module(bias)
    expected = x @ result.to_matrix().T + bias
    torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ALL)
def test_conv_kernel_module_matches_conv2d(method):
    g = torch.Generator().manual_seed(3)
    kernel = torch.randn(8, 4, 3, 3, generator=g)
    result = factorize(kernel, method, density=0.6)
    assert result.shape == (8, 36) and result.to_dense().shape == kernel.shape
    x = torch.randn(2, 4, 9, 7, generator=g)
    module = result.to_module(stride=2, padding=1)
    expected = F.conv2d(x, result.to_dense(), stride=2, padding=1)
    torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ALL)
def test_inputs_are_never_modified(method):
    W = _matrix()
    gram = _gram_for(method, 32)
    W_copy = W.clone()
    gram_copy = None if gram is None else gram.clone()
    factorize(W, method, density=0.5, gram=gram)
    assert torch.equal(W, W_copy)
    if gram is not None:
        assert torch.equal(gram, gram_copy)


@pytest.mark.parametrize("method", ALL)
def test_float64_stays_float64(method):
    result = factorize(_matrix(dtype=torch.float64), method, density=0.5)
    assert all(f.dtype == torch.float64 for f in result.factors)


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("factor", [2.0**-100, 2.0**100])
def test_extreme_scales_neither_crash_nor_change_the_error(method, factor):
    # Powers of two scale exactly: with bfloat16-based products (DSF's "medium" on CPUs with
    # AVX512-BF16), 1e-30 rounds differently and sends a 24 x 32 fit down another path (9% apart).
    W, gram = _matrix(), _gram_for(method, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaled = factorize(W * factor, method, density=0.5, gram=None if gram is None else gram * factor)
    plain = factorize(W, method, density=0.5, gram=gram)
    assert scaled.error(W * factor, None if gram is None else gram * factor) == pytest.approx(
        plain.error(W, gram), rel=1e-3, abs=1e-6
    )


@pytest.mark.parametrize("method", ALL)
def test_all_zero_weight_gives_a_zero_approximation(method):
    result = factorize(torch.zeros(8, 12), method, density=0.5)
    assert result.n_params <= 48 and not result.to_matrix().any()


def test_half_precision_is_computed_in_float32():
    result = factorize(_matrix().to(torch.bfloat16), "svd", density=0.5)
    assert result.factors[0].dtype == torch.float32


@pytest.mark.parametrize("method", ITERATIVE)
def test_callback_can_stop_early(method):
    calls = []

    def stop_at_second_step(step, objective):
        calls.append((step, objective))
        return len(calls) < 2

    result = factorize(_matrix(), method, density=0.5, callback=stop_at_second_step)
    assert len(calls) == 2 and len(result.history) == 2
    assert result.info["stopped_early"] is True
    assert result.n_params <= 0.5 * 24 * 32 and math.isfinite(result.error(_matrix()))


@pytest.mark.parametrize("method", ALL)
def test_callback_receives_steps_and_objectives(method):
    seen = []
    result = factorize(_matrix(), method, density=0.5, callback=lambda s, o: seen.append((s, o)))
    assert [o for _, o in seen] == result.history
    assert all(isinstance(s, int) for s, _ in seen)


def test_error_matches_independent_formulas():
    W, gram = _matrix(), _gram(32)
    result = factorize(W, "magnitude", density=0.4)
    W_np, D = W.double().numpy(), (W - result.to_matrix()).double().numpy()
    G = gram.double().numpy()
    assert result.error(W) == pytest.approx(np.linalg.norm(D) / np.linalg.norm(W_np), rel=1e-5)
    weighted = np.sqrt(np.trace(D @ G @ D.T) / np.trace(W_np @ G @ W_np.T))
    assert result.error(W, gram) == pytest.approx(weighted, rel=1e-4)


def test_results_follow_the_input_device():
    result = factorize(_matrix(), "dsf", density=0.5, device="cpu")
    assert result.device.type == "cpu" and all(f.device.type == "cpu" for f in result.factors)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        factorize(_matrix(), "svd", density=0.5, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ALL)
def test_every_method_runs_on_cuda(method):
    W = _matrix()
    result = factorize(W, method, density=0.5, device="cuda")
    assert result.device.type == "cuda"
    cpu = factorize(W, method, density=0.5)
    assert result.error(W) == pytest.approx(cpu.error(W), rel=0.1, abs=1e-3)


def test_registry_is_self_consistent():
    for name, spec in METHODS.items():
        assert spec.name == name and spec.description and spec.uses_gram in ("no", "optional")
        defaults = spec.resolve_options({})
        assert set(defaults) == set(spec.options)
        for option_name, option in spec.options.items():
            assert option.help, (name, option_name)
        for preset in spec.presets.values():
            spec.resolve_options(preset)  # every preset is a valid set of options


@pytest.mark.parametrize("method", [m for m in ALL if METHODS[m].presets])
def test_quick_preset_does_less_work_at_a_modest_cost(method):
    W = _matrix(48, 64)
    full = factorize(W, method, density=0.4)
    quick = factorize(W, method, density=0.4, **METHODS[method].presets["quick"])
    assert len(quick.history) < len(full.history)
    assert quick.error(W) < 1.25 * full.error(W)


BAD_INPUTS = [
    (dict(weight=torch.tensor([[1.0, float("nan")], [0.0, 1.0]])), ValueError, "NaN or Inf"),
    (dict(weight=torch.tensor([[1.0, float("inf")], [0.0, 1.0]])), ValueError, "NaN or Inf"),
    (dict(weight=torch.ones(5)), ValueError, "got a 1-D tensor"),
    (dict(weight=torch.ones(2, 3, 4)), ValueError, "got a 3-D tensor"),
    (dict(weight=torch.ones(0, 4)), ValueError, "must not be empty"),
    (dict(weight=torch.ones(4, 4, dtype=torch.int64)), TypeError, "floating-point dtype"),
    (dict(weight=np.ones((4, 4))), TypeError, "must be a torch.Tensor; got ndarray"),
    (dict(density=0.0), ValueError, r"density must be in the range \(0, 1\]; got 0.0"),
    (dict(density=1.5), ValueError, r"range \(0, 1\]; got 1.5"),
    (dict(density=-0.1), ValueError, r"range \(0, 1\]"),
    (dict(density=float("nan")), ValueError, r"range \(0, 1\]"),
    (dict(density="0.5"), TypeError, "density must be a real number"),
    (dict(gram=torch.eye(5)), ValueError, r"gram must be a 32 x 32 matrix.*got shape \(5, 5\)"),
    (dict(gram=torch.triu(torch.ones(32, 32))), ValueError, "gram must be symmetric"),
    (dict(gram=torch.full((32, 32), float("nan"))), ValueError, "gram contains NaN or Inf"),
    (dict(gram=-torch.eye(32)), ValueError, "positive semi-definite"),
    (dict(gram=torch.zeros(32, 32)), ValueError, "gram is all zeros"),
    (dict(method="qr"), ValueError, "Unknown method 'qr'; expected one of"),
    (dict(method="svd", rank2=3), TypeError, r"Unknown option\(s\) \['rank2'\] for method 'svd'"),
    (dict(method="svd", rank=0), ValueError, r"'rank' of method 'svd' must be in the range \[1, inf\)"),
    (dict(method="svd", rank=2.5), TypeError, "'rank' of method 'svd' must be an int"),
    (dict(method="svd", rank=30), ValueError, "more than the budget"),
    (dict(method="svd", density=0.01), ValueError, "more than the budget"),
    (dict(method="dsf", split=1.0), ValueError, r"'split' of method 'dsf' must be in the range \(0.0, 1.0\)"),
    (dict(method="palm4msa", projection="l1"), ValueError, "must be one of"),
    (dict(callback=3), TypeError, "callback must be callable"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(device="tpu"), ValueError, "device must be"),
    (dict(row_weights=torch.ones(23)), ValueError, "row_weights must hold 24 numbers"),
    (dict(row_weights=torch.zeros(24)), ValueError, "row_weights must be finite and positive"),
    (dict(row_weights=torch.full((24,), float("inf"))), ValueError, "row_weights must be finite and positive"),
    (dict(row_weights=torch.ones(24, dtype=torch.int64)), TypeError, "row_weights must be a floating-point"),
    (dict(method="tt", row_weights=torch.ones(24)), ValueError, "does not take row_weights"),
    (dict(method="wanda", row_weights=torch.ones(24)), ValueError, "does not take row_weights"),
]


@pytest.mark.parametrize("changes, error, match", BAD_INPUTS)
def test_bad_input_is_a_clear_error(changes, error, match):
    kwargs = dict(weight=_matrix(), method="dsf", density=0.5)
    kwargs.update(changes)
    weight, method = kwargs.pop("weight"), kwargs.pop("method")
    with pytest.raises(error, match=match):
        factorize(weight, method, **kwargs)


@pytest.mark.parametrize(
    "method, density, needed, what",
    [("svd", 0.01, 56, "rank 1"), ("tt", 0.01, None, "TT rank 1"), ("magnitude", 0.0001, 1, "one stored parameter")],
)
def test_a_budget_below_the_minimum_says_what_was_needed(method, density, needed, what):
    with pytest.raises(dsf_core.BudgetError) as raised:
        factorize(_matrix(), method, density=density)
    assert raised.value.what == what and raised.value.budget == int(density * 24 * 32 + 1e-9)
    assert raised.value.needed > raised.value.budget and needed in (None, raised.value.needed)


def test_gram_ignored_by_data_free_method_warns():
    with pytest.warns(UserWarning, match="does not use gram"):
        factorize(_matrix(), "tt", density=0.5, gram=_gram(32))


def _row_weights(m=24, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, generator=g) * 4 + 0.25


def test_row_weighted_svd_is_the_weighted_eckart_young_optimum():
    W, d, G = _matrix(), _row_weights(), _gram(32)
    result = factorize(W, "svd", density=0.5, gram=G, row_weights=d)
    # Oracle: the best rank-r approximation of D W L (G = L L^T), mapped back by D^-1 and L^-1.
    L = torch.linalg.cholesky(G.double())
    U, S, Vh = torch.linalg.svd(d.double()[:, None] * W.double() @ L)
    r = result.info["rank"]
    best = (U[:, :r] * S[:r]) @ Vh[:r] @ torch.linalg.inv(L) / d.double()[:, None]
    assert torch.allclose(result.to_matrix().double(), best, atol=1e-4)
    assert result.info["row_weighted"] and not factorize(W, "svd", density=0.5).info["row_weighted"]


def test_row_weighted_magnitude_keeps_the_largest_weighted_entries_exactly():
    W, d = _matrix(), _row_weights()
    pruned = factorize(W, "magnitude", density=0.25, row_weights=d).to_matrix()
    kept = pruned != 0
    weighted = (d[:, None] * W).abs()
    assert kept.sum() == int(0.25 * W.numel())
    assert weighted[kept].min() >= weighted[~kept].max()
    assert torch.equal(pruned[kept], W[kept])  # W's own values, bit for bit


def test_inputs_that_require_grad_give_plain_results():
    W, d, G = _matrix().requires_grad_(), _row_weights().requires_grad_(), _gram(32).requires_grad_()
    for method in ("dsf", "svd", "magnitude"):
        result = factorize(W, method, density=0.5, gram=G, row_weights=d)
        assert not any(f.requires_grad for f in result.factors)


@pytest.mark.parametrize("method", [m for m in ALL if METHODS[m].takes_row_weights])
def test_row_weights_move_the_error_to_the_light_rows(method):
    W = _matrix(48, 32)
    d = torch.ones(48)
    d[:12] = 8.0  # the first rows matter most

    def heavy_rows_error(row_weights):
        approx = factorize(W, method, density=0.3, row_weights=row_weights).to_matrix()
        return float(torch.linalg.norm(W[:12] - approx[:12]))

    assert heavy_rows_error(d) < 0.9 * heavy_rows_error(None)
