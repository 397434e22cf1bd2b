"""Single-sparse baselines: magnitude pruning and Wanda (Sun et al. 2023). Kept weights keep their
values (no update); the result is one sparse factor ``W * mask``.

Both score ``|W_ij| * s_j`` with ``s_j = sqrt(G_jj)`` (``s = 1`` without a Gram matrix).
Magnitude keeps the ``budget`` best scores of the whole matrix, Wanda the best of each output row.
With an ``n:m`` pattern both keep the ``n`` best scores of every group of ``m`` consecutive inputs.
"""

from __future__ import annotations

import torch

from ._common import Fit, check_pattern_budget, nm_count, nm_mask, nm_pattern, rowwise_topk_mask, topk_mask
from ._spec import MethodSpec, Plan, fixed_names, pattern_option


def fit_magnitude(W, *, budget, gram, generator, progress, pattern):
    """The ``budget`` best scores of the whole matrix."""
    scores = _scores(W, gram)
    if nm_pattern(pattern) is not None:
        return _pruned(W, scores, _pattern_mask("magnitude", scores, pattern, budget), progress)
    return _pruned(W, scores, topk_mask(scores, budget), progress)


def fit_wanda(W, *, budget, gram, generator, progress, pattern):
    """``budget // m`` entries per row; the ``budget % m`` left over go, one each, to the rows whose
    next-best score is highest (so exactly ``budget`` are kept, also when ``budget < m``)."""
    scores = _scores(W, gram)
    if nm_pattern(pattern) is not None:
        return _pruned(W, scores, _pattern_mask("wanda", scores, pattern, budget), progress)
    per_row, extra = divmod(budget, W.shape[0])
    mask = rowwise_topk_mask(scores, per_row)
    if extra:
        next_best, column = scores.masked_fill(mask, -1.0).max(dim=1)
        rows = topk_mask(next_best, extra)
        mask[rows, column[rows]] = True
    return _pruned(W, scores, mask, progress)


def _pattern_mask(method, scores, pattern, budget):
    """The ``n:m`` mask of the best scores; BudgetError when the pattern needs more than ``budget``."""
    kept_count(method, tuple(scores.shape), budget, pattern)
    return nm_mask(scores, *nm_pattern(pattern))


def _scores(W: torch.Tensor, gram: torch.Tensor | None) -> torch.Tensor:
    """``|W_ij| * sqrt(G_jj)``, or ``|W_ij|`` without a Gram matrix."""
    if gram is None:
        return W.abs()
    return W.abs() * gram.diagonal().sqrt()


def _pruned(W, scores, mask, progress) -> Fit:
    """The fit keeping ``W`` on ``mask``; reports the relative error of the scores (that is, of
    ``W diag(s)``, the objective the choice minimises)."""
    dropped = scores.masked_fill(mask, 0).square().sum()
    total = scores.square().sum().clamp_min(torch.finfo(W.dtype).tiny)
    progress(0, float((dropped / total).sqrt()))
    return Fit(factors=[torch.where(mask, W, 0)], sparse=[True])


def kept_count(method: str, shape, budget: int, pattern: str) -> int:
    """The weights a pruning method keeps: ``budget``, or what an ``n:m`` pattern keeps (which must
    fit the budget)."""
    group = nm_pattern(pattern)
    if group is None:
        return budget
    return check_pattern_budget(method, group, budget, shape)


def min_kept(shape, pattern: str) -> int:
    """The fewest weights a pruning method can keep under ``pattern``."""
    group = nm_pattern(pattern)
    return 1 if group is None else nm_count(shape, *group)


def _plan_magnitude(shape, budget, options) -> Plan:
    m, n = shape
    kept = kept_count("magnitude", shape, budget, options["pattern"])
    return Plan(True, options, min_kept(shape, options["pattern"]), f"the {kept:,} largest |W_ij| of {m * n:,}")


def _plan_wanda(shape, budget, options) -> Plan:
    m, n = shape
    kept = kept_count("wanda", shape, budget, options["pattern"])
    summary = f"{kept / m:.1f} weights per output row on average (of {n:,}), scored by |W_ij| * ||x_j||"
    return Plan(True, options, min_kept(shape, options["pattern"]), summary)


SPECS = (
    MethodSpec(
        "magnitude",
        "Magnitude pruning: keep the largest |W_ij| (scaled by sqrt(diag G) with a Gram matrix).",
        "optional",
        {"pattern": pattern_option()},
        fit_magnitude,
        _plan_magnitude,
        "pruned",
        factor_names=fixed_names("Pruned W"),
    ),
    MethodSpec(
        "wanda",
        "Wanda: in each output row keep the largest |W_ij| * sqrt(G_jj); no weight update "
        "(per-row magnitude without a Gram matrix).",
        "optional",
        {"pattern": pattern_option()},
        fit_wanda,
        _plan_wanda,
        "pruned",
        factor_names=fixed_names("Pruned W"),
        takes_row_weights=False,  # a fixed share of every row: row weights cannot move it
    ),
)
