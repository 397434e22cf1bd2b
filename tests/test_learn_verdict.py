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


@pytest.mark.parametrize("kind, size, params, winner", [
    ("hadamard", 32, {}, "tt"),  # a Kronecker product: tensor-train rank 1
    ("low_rank", 32, {"rank": 4, "noise": 0.01}, "svd"),
    ("planted", 64, {}, "dsf"),
])
def test_each_toys_own_method_wins_at_its_density(kind, size, params, winner):
    toy = toys.make(toys.spec_for(kind, size, 0, **params))
    assert winner in toy.built_for
    density = math.ceil(toy.natural_density * 100 - 1e-9) / 100  # what the page's button sets
    comparison = learn.compare(toy.matrix, density)
    best = min(comparison.rows, key=lambda row: row["relative error"])
    assert best["method"] == winner
    assert learn.verdict(comparison.rows, toy.built_for).startswith(f"Here **{winner}** comes out ahead")


def test_a_method_that_stores_less_than_its_budget_says_so():
    toy = toys.make(toys.spec_for("hadamard", 32))
    row = learn.run_method(toy.matrix, "palm4msa", 0.32, None, lambda: True)
    assert row["parameters"] < 0.95 * 327 and f"of its budget of 327" in row["note"]
    assert learn.run_method(toy.matrix, "magnitude", 0.32, None, lambda: True)["note"] == ""
