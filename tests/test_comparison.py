"""dsf_app.comparison: every method at one budget, and across densities, against direct factorize calls."""

import math

import pytest
import torch

from dsf_app.comparison import Row, best, progress_text, run_all, sweep, sweep_figure, table, why_not, winners
from dsf_app.session import Target
from dsf_core import METHODS, BudgetError, damp_gram, factorize
from dsf_core.examples import synthetic_matrix

CPU = torch.device("cpu")
ALL = list(METHODS)


def make_target(m=48, n=64, with_gram=True) -> Target:
    weight, gram = synthetic_matrix(m, n)
    return Target(f"synthetic {m} x {n}", ("synthetic", m, n), weight, weight, gram if with_gram else None, "test")


@pytest.fixture(scope="module")
def target():
    return make_target()


def direct(target, method, density, *, aware, quick):
    """The same factorization, called directly."""
    options = METHODS[method].presets.get("quick", {}) if quick else {}
    gram = damp_gram(target.gram, 0.01) if aware and METHODS[method].uses_gram != "no" else None
    return factorize(target.weight, method, density=density, gram=gram, device=CPU, **options)


@pytest.mark.parametrize("aware", [False, True])
def test_run_all_matches_direct_factorize(target, aware):
    rows = run_all(target, 0.3, ALL, aware=aware, quick=True, device=CPU)
    assert [row.method for row in rows] == ALL
    for row in rows:
        expected = direct(target, row.method, 0.3, aware=aware, quick=True)
        assert row.error == pytest.approx(expected.error(target.matrix), rel=1e-5)
        assert row.output_error == pytest.approx(expected.error(target.matrix, target.gram), rel=1e-5)
        assert (row.n_params, row.n_bytes, row.flops) == (expected.n_params, expected.n_bytes, expected.flops)
        assert row.device == "cpu" and row.n_params <= int(0.3 * 48 * 64)


def test_activation_aware_changes_only_methods_that_read_a_gram(target):
    free = {r.method: r for r in run_all(target, 0.2, ALL, aware=False, quick=True, device=CPU)}
    aware = {r.method: r for r in run_all(target, 0.2, ALL, aware=True, quick=True, device=CPU)}
    for method in ALL:
        if METHODS[method].uses_gram == "no":
            assert aware[method].error == free[method].error
            assert aware[method].note == "data-free (the method reads no Gram)"
        else:  # aimed at the outputs, it does better there
            assert aware[method].output_error < free[method].output_error


def test_conv_kernel_is_compared_as_its_matrix():
    kernel = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    matrix = kernel.reshape(8, 36)
    target = Target("conv", ("conv",), kernel, matrix, None, "none")
    (row,) = run_all(target, 0.5, ["svd"], aware=False, quick=True, device=CPU)
    expected = factorize(matrix, "svd", density=0.5)
    assert row.error == pytest.approx(expected.error(matrix), rel=1e-6)
    assert row.output_error is None


def test_budget_below_a_method_minimum_is_a_note_not_an_exception():
    target = make_target(10, 128)
    rows = {r.method: r for r in run_all(target, 0.01, ALL, aware=False, quick=True, device=CPU)}
    assert rows["svd"].note == "below the method's minimum: it needs 138 parameters (rank 1), the budget is 12"
    assert rows["svd"].error is None and rows["svd"].n_params is None and not rows["svd"].ok
    assert rows["magnitude"].ok and rows["magnitude"].n_params == 12
    with pytest.raises(BudgetError) as zero:
        factorize(torch.ones(3, 3), "magnitude", density=0.001)
    assert "0 parameters" in why_not(zero.value)
    assert why_not(RuntimeError("boom")) == "failed: boom"


def test_stop_between_methods_keeps_the_rows_done(target):
    reports = []

    def report(item=None, fraction=None):
        if item is not None:
            reports.append((item, fraction))
        return not reports  # stop once the first method is done

    rows = run_all(target, 0.3, ["svd", "magnitude", "dsf"], aware=False, quick=True, device=CPU, report=report)
    assert [r.method for r in rows] == ["svd"]
    assert reports == [(rows[0], pytest.approx(1 / 3))]


def test_stop_inside_a_method_drops_its_unfinished_result(target):
    rows = run_all(target, 0.3, ["dsf"], aware=False, quick=True, device=CPU, report=lambda *args: False)
    assert rows == []


def test_sweep_runs_every_method_at_every_density_in_order(target):
    fractions = []
    rows = sweep(target, [0.5, 0.1], ["svd", "wanda"], aware=False, quick=True, device=CPU,
                 report=lambda item=None, fraction=None: fractions.append(fraction) is None)
    assert [(r.density, r.method) for r in rows] == [(0.1, "svd"), (0.1, "wanda"), (0.5, "svd"), (0.5, "wanda")]
    assert [f for f in fractions if f is not None] == [0.25, 0.5, 0.75, 1.0]
    for row in rows:
        assert row.error == pytest.approx(direct(target, row.method, row.density, aware=False, quick=True)
                                          .error(target.matrix), rel=1e-6)
    svd = [r.error for r in rows if r.method == "svd"]
    assert svd[1] < svd[0]  # more budget, less error


def test_table_and_figure():
    rows = [Row("svd", 0.1, 0.5, 0.2, 10, 40, 20, 0.01, "cpu"), Row("tt", 0.1, note="below the method's minimum")]
    frame = table(rows, with_output_error=True)
    assert list(frame["method"]) == ["svd", "tt"] and frame["note"][1] == "below the method's minimum"
    assert math.isnan(frame["relative error"][1])
    assert "output error" not in table(rows, with_output_error=False).columns
    tried = table(rows, with_output_error=True, in_model=("accuracy in the model", {"svd": 0.9}))
    assert list(tried.columns[:4]) == ["method", "relative error", "output error", "accuracy in the model"]
    assert tried["accuracy in the model"][0] == 0.9 and math.isnan(tried["accuracy in the model"][1])  # tt did not run
    assert best(rows, "error") is rows[0] and best(rows[1:], "output_error") is None
    assert progress_text(rows, 4) == "2 of 4 done; last: svd at 0.10: 0.5, tt at 0.10: no result"
    assert progress_text([], 4) == "0 of 4 done"
    assert winners(rows) == "Best here: lowest relative error: **svd** (0.5); lowest output error: **svd** (0.2)."
    fig = sweep_figure(rows, ["svd", "tt"], output_error=True)
    assert [trace.name for trace in fig.data] == ["svd", "tt"]
    assert list(fig.data[0].y) == [0.2] and len(fig.data[1].x) == 0
