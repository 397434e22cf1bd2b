"""SparseGPT (Frantar & Alistarh, ICML 2023): one-shot pruning that updates the weights it keeps.

It minimises ``tr((W - Q) H (W - Q)^T)`` over ``Q`` with at most ``budget`` nonzeros, where ``H`` is
the layer's input Gram plus ``damp`` times its mean diagonal (the identity data-free). The rows are
independent problems sharing ``H``. Columns are eliminated left to right: with ``H^-1 = U^T U``
(``U`` upper triangular), pruning column ``j`` of a row leaves the error ``e = w_j / U_jj``; the
optimal brain surgeon update of the columns not yet eliminated is ``w_k -= e U_jk`` (``k > j``) and
costs ``e^2`` of the objective. The mask is chosen per block of ``blocksize`` columns from the
weights as updated so far (adaptive mask selection): the block keeps its share of the budget at the
largest ``w^2 / U_jj^2``; with an ``n:m`` pattern, each group of ``m`` columns keeps its ``n`` best
once the elimination reaches it. Inside a block the updates are rank-1; the block's errors update
the columns to its right in one product.
"""

from __future__ import annotations

import warnings

import torch

from ..exceptions import DataFreeWarning
from ._common import Fit, check_pattern_budget, nm_mask, nm_pattern, topk_mask
from ._spec import MAX_STEPS, MethodSpec, Option, Plan, fixed_names, pattern_option
from .pruning import kept_count, min_kept


def fit(W, *, budget, gram, generator, progress, pattern, damp, blocksize):
    m, n = W.shape
    group = nm_pattern(pattern)
    if group is not None:
        check_pattern_budget("sparsegpt", group, budget, (m, n))
    blocksize = _block_columns(blocksize, group)
    if gram is None:
        warnings.warn(
            "sparsegpt got no gram: it prunes against the identity Gram (data-free), where it keeps "
            "the largest weights of each block and updates none; pass gram= for activation-aware pruning.",
            DataFreeWarning,
            stacklevel=3,
        )
    W = W.clone()
    hessian = _damped_hessian(W, gram, damp)
    total = float(((W @ hessian) * W).sum().clamp_min(torch.finfo(W.dtype).tiny))
    U = _upper_inverse_cholesky(hessian)
    scale = U.diagonal()
    cost = 0.0
    for step, start in enumerate(range(0, n, blocksize)):
        end = min(start + blocksize, n)
        block = W[:, start:end]
        share = budget * end // n - budget * start // n
        if progress.stopped:  # asked to stop: prune the rest by its scores, without updates
            keep = _block_mask(block, scale[start:end], share, group)
            block.mul_(keep)
            continue
        errors, block_cost = _eliminate_block(block, U[start:end, start:end], share, group)
        W[:, end:] -= errors @ U[start:end, end:]
        cost += block_cost
        progress(step, (cost / total) ** 0.5)
    return Fit(factors=[W], sparse=[True], info={"updates_weights": True, "pattern": pattern})


def _damped_hessian(W, gram, damp):
    """``G + damp * mean(diag G) I`` (``G = I`` data-free); a dead input (``G_jj = 0``) gets
    ``G_jj = 1`` and its column of ``W`` is zeroed: it never reaches the output."""
    if gram is None:
        hessian = torch.eye(W.shape[1], dtype=W.dtype, device=W.device)
    else:
        hessian = gram.clone()
        dead = hessian.diagonal() == 0
        hessian.diagonal()[dead] = 1.0
        W[:, dead] = 0.0
    hessian.diagonal().add_(damp * float(hessian.diagonal().mean()))
    return hessian


def _upper_inverse_cholesky(hessian):
    """Upper triangular ``U`` with ``U^T U = hessian^-1``."""
    lower, info = torch.linalg.cholesky_ex(hessian)
    if int(info) == 0:
        upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
    if int(info) != 0:
        raise ValueError("sparsegpt: the damped Gram is not positive definite; raise the option 'damp'.")
    return upper


def _block_mask(block, scale, share, group):
    """Which entries of ``block`` to keep: ``share`` of them, or the ``n:m`` pattern's."""
    scores = (block / scale).square()
    return topk_mask(scores, share) if group is None else nm_mask(scores, *group)


def _eliminate_block(block, U, share, group):
    """Prune ``block`` in place column by column with OBS updates of its later columns; return the
    errors ``e`` (one column per block column) and their cost ``sum e^2``."""
    errors = torch.zeros_like(block)
    scale = U.diagonal()
    keep = _block_mask(block, scale, share, None) if group is None else None
    for i in range(block.shape[1]):
        if group is not None and i % group[1] == 0:  # adaptive N:M: choose the group from updated weights
            width = min(group[1], block.shape[1] - i)
            keep_group = nm_mask((block[:, i : i + width] / scale[i : i + width]).square(), *group)
        column = block[:, i]
        kept = column * (keep[:, i] if group is None else keep_group[:, i % group[1]])
        error = (column - kept) / scale[i]
        block[:, i + 1 :] -= error[:, None] * U[i, i + 1 :]
        block[:, i] = kept  # exactly: the update would leave rounding residue where it prunes
        errors[:, i] = error
    return errors, float(errors.square().sum())


def _block_columns(blocksize: int, group) -> int:
    """Columns per block: ``blocksize``, rounded up to a multiple of m for an n:m pattern (a group
    never straddles two blocks)."""
    return blocksize if group is None else -(-blocksize // group[1]) * group[1]


def _steps(shape, options) -> int:
    """One progress step per block of columns."""
    return -(-shape[1] // _block_columns(options["blocksize"], nm_pattern(options["pattern"])))


def _plan(shape, budget, options) -> Plan:
    m, n = shape
    kept = kept_count("sparsegpt", shape, budget, options["pattern"])
    block = _block_columns(options["blocksize"], nm_pattern(options["pattern"]))
    summary = f"keeps {kept:,} of {m * n:,} weights, chosen per block of {block} columns and updated to compensate"
    return Plan(True, options, min_kept(shape, options["pattern"]), summary)


SPECS = (
    MethodSpec(
        "sparsegpt",
        "SparseGPT: prune column block by column block, updating the weights not yet pruned to "
        "compensate (optimal brain surgeon updates with the input Gram; the identity data-free).",
        "optional",
        {
            "pattern": pattern_option(),
            "damp": Option(
                float, 0.01, "Added to the Gram's diagonal, times its mean diagonal (as the paper's code).", low=0.0
            ),
            "blocksize": Option(
                int, 128, "Columns per block: the mask is chosen per block (rounded up to a multiple of m for n:m).",
                low=1, high=MAX_STEPS,
            ),
        },
        fit,
        _plan,
        "pruned",
        factor_names=fixed_names("Pruned W"),
        steps=_steps,
    ),
)
