"""dsf_core.plan.budget_plan against what each method really does with its default options."""

import re

import pytest
import torch

from dsf_core import METHODS, factorize
from dsf_core.plan import budget_plan

# (shape, density): wide, tall, square, too small for some methods, a density whose product
# density * m * n rounds down in floating point (0.03 * 30 * 30 = 26.999...), a budget of 0.
CASES = [
    ((24, 40), 0.3),
    ((40, 24), 0.05),
    ((30, 30), 0.5),
    ((12, 36), 0.1),
    ((64, 48), 0.2),
    ((30, 30), 0.03),
    ((5, 5), 0.02),
]


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _factorized(shape, density, method):
    """The method's result with its defaults, or None when it raises ValueError."""
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=torch.float64)
    try:
        return factorize(W, method, density=density)
    except ValueError:
        return None


def _check_dsf(plan, result):
    found = re.fullmatch(r"A (\d+)x(\d+) with ([\d,]+) nonzeros .*, B (\d+)x(\d+) with ([\d,]+) .*", plan)
    a_shape, a_nnz = (int(found[1]), int(found[2])), _number(found[3])
    b_shape, b_nnz = (int(found[4]), int(found[5])), _number(found[6])
    A, B = result.factors
    assert (tuple(A.shape), tuple(B.shape)) == (a_shape, b_shape)
    assert (int(torch.count_nonzero(A)), int(torch.count_nonzero(B))) == (a_nnz, b_nnz)


def _check_palm(plan, result):
    found = re.fullmatch(r"(\d+) factors \((\d+)x(\d+), (\d+)x(\d+)\), k = (\d+) nonzeros per row and column", plan)
    assert len(result.factors) == int(found[1])
    assert [tuple(f.shape) for f in result.factors] == [(int(found[2]), int(found[3])), (int(found[4]), int(found[5]))]
    assert result.info["k"] == int(found[6])


def _check_svd(plan, result):
    found = re.fullmatch(r"rank (\d+) of (\d+)", plan)
    rank = int(found[1])
    assert result.info["rank"] == rank == result.factors[0].shape[1] == result.factors[1].shape[0]
    assert int(found[2]) == min(result.shape)


def _check_tt(plan, result):
    found = re.fullmatch(r"modes \(([\d, ]+)\) x \(([\d, ]+)\), TT rank up to (\d+)", plan)
    m_modes = tuple(int(v) for v in found[1].split(","))
    n_modes = tuple(int(v) for v in found[2].split(","))
    rank = int(found[3])
    assert result.info["modes"] == (m_modes, n_modes)
    sizes = [a * b for a, b in zip(m_modes, n_modes)]
    # every bond: the planned rank, clamped to the most that bond can have
    expected = [min(rank, _product(sizes[:k]), _product(sizes[k:])) for k in range(1, len(sizes))]
    assert list(result.info["ranks"][1:-1]) == expected
    assert [core.shape[1:3] for core in result.factors] == list(zip(m_modes, n_modes))


def _product(values):
    out = 1
    for v in values:
        out *= v
    return out


def _check_magnitude(plan, result):
    found = re.fullmatch(r"the ([\d,]+) largest \|W_ij\| of ([\d,]+)", plan)
    assert _number(found[1]) == int(torch.count_nonzero(result.factors[0]))
    assert _number(found[2]) == result.shape[0] * result.shape[1]


def _check_wanda(plan, result):
    found = re.match(r"([\d.]+) weights per output row on average \(of ([\d,]+)\)", plan)
    m, n = result.shape
    assert found[1] == f"{int(torch.count_nonzero(result.factors[0])) / m:.1f}"
    assert _number(found[2]) == n


def _check_sparsegpt(plan, result):
    found = re.fullmatch(r"keeps ([\d,]+) of ([\d,]+) weights, chosen per block of (\d+) columns and updated to compensate", plan)
    assert _number(found[1]) == int(torch.count_nonzero(result.factors[0]))
    assert _number(found[2]) == result.shape[0] * result.shape[1]
    assert int(found[3]) == result.options["blocksize"]


CHECKS = {
    "dsf": _check_dsf,
    "palm4msa": _check_palm,
    "hierarchical": _check_palm,
    "svd": _check_svd,
    "tt": _check_tt,
    "magnitude": _check_magnitude,
    "wanda": _check_wanda,
    "sparsegpt": _check_sparsegpt,
}


def test_the_plan_covers_every_method():
    assert set(budget_plan((8, 8), 0.5)) == set(METHODS) == set(CHECKS)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("shape, density", CASES)
def test_plan_matches_what_the_method_does(shape, density, method):
    plan = budget_plan(shape, density)[method]
    result = _factorized(shape, density, method)
    if result is None:
        assert plan.startswith("not possible"), plan
        return
    assert not plan.startswith("not possible"), plan
    CHECKS[method](plan, result)
