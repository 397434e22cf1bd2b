"""Learn says who wins from the run itself, and each toy's own method wins where it should."""

import math

import pytest

from dsf_app import learn, toys


def _row(method, error):
    return {"method": method, "relative error": error}


def test_the_verdict_is_computed_from_the_rows():
    rows = [_row("dsf", 0.2), _row("svd", 0.01), _row("tt", math.nan), _row("magnitude", 0.05)]
    assert learn.verdict(rows, ("dsf",)) == (
        "Here **svd** comes out ahead, with relative error 0.01, 5 times lower than the next, **magnitude** (0.05)."
        " **dsf**, which can express this structure, comes third (0.2)."
    )
    assert "close to **b** (0.11)" in learn.verdict([_row("a", 0.1), _row("b", 0.11)])
    assert learn.verdict([_row("a", math.nan)]) == "No method could run at this budget."


def test_methods_at_rounding_level_are_named_as_equals():
    rows = [_row("tt", 8e-16), _row("hierarchical", 1e-11), _row("palm4msa", 0.7), _row("svd", 0.9)]
    assert learn.verdict(rows, ("tt", "hierarchical")) == (
        "Here **tt** (8e-16) and **hierarchical** (1e-11) both store it exactly (relative error below 1e-06),"
        " orders of magnitude lower than the next, **palm4msa** (0.7)."
    )
    assert learn.verdict([_row("tt", 1e-15), _row("svd", 0.5)], ("svd",)).startswith("Here **tt** comes out ahead")


def _compare_at_the_toys_density(kind, size, **params):
    toy = toys.make(toys.spec_for(kind, size, 0, **params))
    density = math.ceil(toy.natural_density * 100 - 1e-9) / 100  # what the page's button sets
    comparison = learn.compare(toy.matrix, density, method_options=toy.method_options)
    return toy, {row["method"]: row for row in comparison.rows}


def test_low_rank_toy_is_won_by_svd():
    toy, rows = _compare_at_the_toys_density("low_rank", 32, rank=4, noise=0.01)
    assert toy.built_for == ("svd",)
    assert min(rows, key=lambda name: rows[name]["relative error"]) == "svd"
    assert learn.verdict(list(rows.values()), toy.built_for).startswith("Here **svd** comes out ahead")


def test_planted_product_is_won_by_dsf_by_far():
    # A (64 x 16) and B (16 x 64) at density 0.25: W is 64% nonzero (pruning keeps a fifth of it)
    # and of rank 16 (SVD can keep 4); measured: DSF 0.022, the next (hierarchical) 0.38
    toy, rows = _compare_at_the_toys_density("planted", 64)
    assert toy.built_for == ("dsf",)
    dsf = rows.pop("dsf")["relative error"]
    assert dsf < 0.05
    for method, row in rows.items():
        assert row["relative error"] >= 5 * dsf, method
    sentence = learn.verdict([{"method": "dsf", "relative error": dsf}, *rows.values()], toy.built_for)
    assert sentence.startswith("Here **dsf** comes out ahead") and "times lower than the next" in sentence


def test_hadamard_is_exact_for_tensor_train_and_for_hierarchical_given_its_butterflies():
    toy, rows = _compare_at_the_toys_density("hadamard", 32)
    assert toy.method_options["hierarchical"] == {"n_factors": 5, "projection": "splincol", "k": 2}
    assert rows["hierarchical"]["parameters"] == toys.butterfly_params(32) == 320
    assert rows["hierarchical"]["relative error"] < 1e-8 and rows["tt"]["relative error"] < 1e-8
    others = [row["relative error"] for name, row in rows.items() if name not in ("tt", "hierarchical")]
    assert min(others) > 0.5  # nothing else comes near: H has all singular values equal
    assert "**hierarchical**" in learn.verdict(list(rows.values()), toy.built_for).split("store it exactly")[0]


@pytest.mark.parametrize("kind", list(toys.KINDS))
def test_palm4msa_fills_its_budget_at_the_learn_densities(kind):
    toy = toys.make(toys.spec_for(kind, 64, 0, rank=4, noise=0.01))
    densities = {0.3}  # the page's default
    if toy.natural_density is not None:
        densities.add(math.ceil(toy.natural_density * 100 - 1e-9) / 100)
    for density in densities:
        for method in ("palm4msa", "hierarchical"):
            row = learn.run_method(toy.matrix, method, density, None, lambda: True)
            assert row["possible"] and "budget" not in row["note"], (method, density, row)


def test_a_method_that_stores_less_than_its_budget_says_so():
    toy = toys.make(toys.spec_for("gaussian", 32))
    row = learn.run_method(toy.matrix, "svd", 0.1, None, lambda: True)  # rank 1: 64 of 102
    assert row["parameters"] == 64 and row["note"] == "stores 63% of its budget of 102"
    assert learn.run_method(toy.matrix, "magnitude", 0.1, None, lambda: True)["note"] == ""
