"""Double Sparse Factorization (Boza & Macko, ICLR 2025): ``W ~ A B`` with both factors sparse.

Alternating minimisation: fix one factor, solve the sparse least-squares problem for the other by
a few ADMM steps, swap. Works on ``W' = W diag(s)`` with ``s = sqrt(diag G)`` when a Gram matrix is
given, and finishes with refits of the factors' values against the full activation-weighted
objective. The budget split between the factors follows the matrix's shape and density (see
``_auto_split``).

With an ``n:m`` pattern, each factor's support search projects onto the pattern along the factor's
input dimension (the columns of ``A`` and of ``B``) instead of its top-k; the pattern fixes both
factors' nonzeros, so the budget decides the inner dimension instead of the split.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch

from .._metrics import relative_error, weighted_relative_error
from ..exceptions import ConvergenceWarning
from ._common import Fit, budget_error, largest_indicator, nm_count, nm_mask, nm_pattern, topk_mask
from ._spec import MAX_ROUNDS, MethodSpec, Option, Plan, fixed_names, inner_dim_option, pattern_option

_MASK_STEPS = 2  # ADMM steps per sub-problem that may re-choose the support; later ones keep it
_RIDGE = 1e-2  # ridge added to the normalised Gram of the fixed factor, times its mean diagonal


@dataclass
class _Sparse:
    """One factor's ADMM state: the sparse iterate ``Z`` and the scaled dual ``U``."""

    z: torch.Tensor
    u: torch.Tensor
    nnz: int
    group: tuple[int, int] | None = None  # an n:m pattern, which replaces the top-nnz support
    axis: int = 1  # the axis of z along which the pattern's groups run


def fit(
    W,
    *,
    budget,
    gram,
    generator,
    progress,
    inner_dim,
    split,
    n_rounds,
    admm_steps,
    tol,
    refit_steps,
    matmul_precision,
    pattern,
):
    with float32_matmul_precision(matmul_precision):
        m, n = W.shape
        group = nm_pattern(pattern)
        r, split, nnz_small, nnz_large = _factor_sizes(budget, m, n, inner_dim, split, group)
        run = _Run(W, gram, r, split, nnz_small, nnz_large, group)
        return _alternate(run, W, gram, progress, n_rounds, admm_steps, tol, refit_steps)


class _Run:
    """The alternation's state: the working orientation, both factors' ADMM states and the best
    round so far (by the relative error of the scaled, wide problem)."""

    def __init__(self, W, gram, r, split, nnz_small, nnz_large, group):
        m, n = W.shape
        self.transposed = m >= n
        self.split, self.scale = split, _input_scale(gram, W)
        self.info = {"inner_dim": r, "nnz_budget": (nnz_large, nnz_small) if self.transposed else (nnz_small, nnz_large)}
        # The "small" factor is the one along W's smaller side (square when r == min(m, n)); for a
        # square W it is the right factor B, on the input side, as in the reference: measured on
        # MiniLM query layers, activation-aware, this orientation is 3-8% more accurate at the same
        # split. Work on the wide orientation: wide ~ small (p x r) @ large (r x q), p <= q.
        target = W * self.scale  # W' = W diag(s)
        self.wide = target.T if self.transposed else target
        self.wide_norm = float(torch.linalg.norm(self.wide))
        # A's and B's input dimensions are the columns of small and large, or their rows when transposed.
        self.small, self.large = _initial_factors(self.wide, r, nnz_small, nnz_large, group, 0 if self.transposed else 1)
        self.best, self.best_factors = math.inf, (self.small, self.large)
        self.stalled = 0  # rounds in a row without an improvement of tol over the best

    def round(self, t, n_rounds, admm_steps, tol, beat) -> float:
        """One round (small^T solves wide^T ~ large^T small^T, then large solves wide ~ small large);
        its objective. Raises _Stopped or LinAlgError with the factors of the round before kept."""
        rho0 = min(1.0, t / max(n_rounds - 3, 1)) ** 3
        small = _transposed(_admm_solve(self.large.z.T, self.wide.T, _transposed(self.small), rho0, admm_steps, beat(0)))
        large = _admm_solve(small.z, self.wide, self.large, rho0, admm_steps, beat(1))
        objective = float(torch.linalg.norm(self.wide - small.z @ large.z)) / self.wide_norm
        if math.isfinite(objective):
            self.small, self.large = small, large
            self.stalled = 0 if objective < self.best * (1 - tol) else self.stalled + 1
            if objective < self.best:
                self.best, self.best_factors = objective, (small, large)
        return objective

    def factors(self):
        """``A`` and ``B`` of the best round, in W's orientation and scale."""
        small, large = self.best_factors
        a, b = (large.z.T, small.z.T) if self.transposed else (small.z, large.z)
        return a, b / self.scale  # undo the importance scaling on the right factor


def _alternate(run: _Run, W, gram, progress, n_rounds, admm_steps, tol, refit_steps):
    """Run the rounds (stopping on a plateau, a stop request or a numerical failure), keep the best
    round's factors, then refit them."""
    if not W.any():  # nothing to approximate
        progress(0, 0.0)
        zeros = [W.new_zeros(W.shape[0], run.info["inner_dim"]), W.new_zeros(run.info["inner_dim"], W.shape[1])]
        chosen = {"inner_dim": run.info["inner_dim"], "split": run.split}
        return Fit(factors=zeros, sparse=[True, True], info={**run.info, "rounds": 0, "refitted": False}, chosen=chosen)

    progress.beat(0, 0.0)  # started: the first report comes before any long work
    rounds_run = 0
    for t in range(n_rounds):
        try:
            objective = run.round(t, n_rounds, admm_steps, tol, _round_beats(progress, t, admm_steps))
            if not math.isfinite(objective):
                raise torch.linalg.LinAlgError("non-finite objective")
        except _Stopped:  # asked to stop inside the round: half-done factors are dropped
            break
        except torch.linalg.LinAlgError:
            warnings.warn(
                f"DSF met a numerical failure in round {t}; returning the best factors of rounds before it.",
                ConvergenceWarning,
                stacklevel=4,
            )
            break
        rounds_run = t + 1
        if not progress(t, objective):
            break
        # Late rounds start near the previous sparse iterate and barely move: stop on a plateau of
        # two rounds (one round up is ADMM noise, not yet a plateau).
        if tol > 0 and t >= n_rounds // 2 and run.stalled >= 2:
            break

    a, b = run.factors()
    refitted = None
    if refit_steps > 0 and not progress.stopped:
        try:
            refitted = _refit(W, a, b, gram, refit_steps, lambda fraction: progress.beat(rounds_run, fraction))
        except _Stopped:  # asked to stop inside the refit: the factors as the rounds left them
            pass
    if refitted is not None:
        a, b = refitted
    info = {**run.info, "rounds": rounds_run, "refitted": refitted is not None}
    return Fit(factors=[a, b], sparse=[True, True], info=info, chosen={"inner_dim": run.info["inner_dim"], "split": run.split})


class _Stopped(Exception):
    """The heartbeat asked to stop inside a round."""


def _round_beats(progress, t: int, admm_steps: int):
    """For sub-problem ``half`` (0 or 1) of round ``t``: the function its solver calls inside its
    inverse (step -2), after it (-1) and after each ADMM step; it reports the round's fraction done
    and raises :class:`_Stopped` when asked to stop."""

    def for_half(half: int):
        def beat(step: int) -> None:
            if not progress.beat(t, (half + max(step + 2, 0) / (admm_steps + 1)) / 2):
                raise _Stopped

        return beat

    return for_half


@contextmanager
def float32_matmul_precision(precision: str):
    """Within the block, float32 matrix products use torch's ``precision`` ("medium": bfloat16-based
    algorithms where the hardware has fast ones; about twice as fast on this project's CPU).
    The setting is process-wide, so other threads' float32 products are affected meanwhile."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _factor_sizes(budget: int, m: int, n: int, inner_dim, split, group) -> tuple[int, float | None, int, int]:
    """The inner dimension, the split (``split`` or :func:`_auto_split`; None under a pattern), and
    the nonzeros of the small-side factor and of the other one."""
    if group is None:
        if budget < 2:
            raise budget_error("dsf", 2, budget, "one nonzero in each factor", (m, n))
        r = inner_dim or min(m, n)
        split = _auto_split(budget, m, n, r) if split is None else split
        return (r, split, *_split_budget(budget, m, n, r, split))
    if split is not None:
        raise ValueError("dsf: the option 'split' does not apply with an n:m pattern (the pattern fixes both factors).")
    r = _pattern_inner_dim(budget, m, n, group, inner_dim)
    nnz_a, nnz_b = nm_count((m, r), *group), nm_count((r, n), *group)
    return (r, None, nnz_a, nnz_b) if m < n else (r, None, nnz_b, nnz_a)


def _split_budget(budget: int, m: int, n: int, r: int, split: float):
    """Nonzeros for the small-side factor (``min(m,n) x r``; ``B`` when W is square) and the other
    one, ``split`` of the budget going to the first."""
    side, other = min(m, n), max(m, n)
    nnz_small = min(max(int(split * budget), 1), side * r, budget - 1)
    nnz_large = min(budget - nnz_small, r * other)
    return nnz_small, nnz_large


def _reference_split(budget: int, m: int, n: int, r: int) -> float:
    """The reference's share: the small-side factor at density 0.16 (square W) or 0.25 (at most 0.9)."""
    square_density = 0.16 if m == n else 0.25
    return min(square_density * min(m, n) * r / budget, 0.9)


def _auto_split(budget: int, m: int, n: int, r: int) -> float:
    """The reference's share, at most half the budget.

    Where the reference gives the small-side factor more than half (low density: 0.25 on a square
    W), half was better on every MiniLM, tiny-lm and Gaussian matrix measured (up to 23% lower
    error), though up to 7% worse on a low-rank weight plus noise. Elsewhere no rule measured was
    safer than the reference's share: a larger one was better on some layers (up to 15% lower
    error) and worse on others (up to 32% higher), and short trial runs at both shares misjudged
    which, because the larger share leads in the early rounds and falls behind later.
    """
    return min(_reference_split(budget, m, n, r), 0.5)


def _pattern_inner_dim(budget: int, m: int, n: int, group, inner_dim) -> int:
    """``inner_dim``, or the largest ``r <= min(m, n)`` at which both factors under the ``n:m``
    pattern fit the budget; BudgetError when that ``r`` does not fit."""

    def needed(r):
        return nm_count((m, r), *group) + nm_count((r, n), *group)

    r = inner_dim or next((r for r in range(min(m, n), 1, -1) if needed(r) <= budget), 1)
    if needed(r) > budget:
        what = f"the {group[0]}:{group[1]} pattern on both factors at inner dimension {r} (density {needed(r) / (m * n):.3g})"
        raise budget_error("dsf", needed(r), budget, what, (m, n))
    return r


def _input_scale(gram, W):
    """``s = sqrt(diag G)`` divided by its maximum (ones when data-free), kept away from zero for
    dead inputs. A common factor of ``s`` changes nothing, so it is dropped to avoid overflow."""
    if gram is None:
        return torch.ones(W.shape[1], dtype=W.dtype, device=W.device)
    s = gram.diagonal().clamp_min(0).sqrt()
    return (s / s.max()).clamp_min(1e-8)


def _initial_factors(wide, r, nnz_small, nnz_large, group, axis):
    """Small factor = (rectangular) identity; large factor = magnitude pruning at half its budget
    (under a pattern: the pattern's magnitude pruning)."""
    p, q = wide.shape
    eye = torch.eye(p, r, dtype=wide.dtype, device=wide.device)
    rows = torch.zeros(r, q, dtype=wide.dtype, device=wide.device)
    k = min(r, p)
    rows[:k] = wide[:k]
    small = _Sparse(eye, torch.zeros_like(eye), nnz_small, group, axis)
    large = _Sparse(rows, torch.zeros_like(rows), nnz_large, group, axis)
    small.z = eye * _support(eye, replace(small, nnz=min(nnz_small, k)))
    large.z = rows * _support(rows, replace(large, nnz=max(nnz_large // 2, 1)))
    return small, large


def _transposed(state: _Sparse) -> _Sparse:
    return replace(state, z=state.z.T, u=state.u.T, axis=1 - state.axis)


def _support(values: torch.Tensor, state: _Sparse) -> torch.Tensor:
    """Where ``state``'s factor may be nonzero for these ``values``: the ``nnz`` largest, or the
    largest ``n`` of each group of ``m`` along ``state.axis``."""
    scores = values.abs()
    if state.group is None:
        return topk_mask(scores, state.nnz)
    return nm_mask(scores, *state.group) if state.axis == 1 else nm_mask(scores.T, *state.group).T


def _support_indicator(values: torch.Tensor, state: _Sparse) -> torch.Tensor:
    """:func:`_support` as 1.0 / 0.0 in ``values``' dtype, by the faster :func:`largest_indicator`
    (which may keep a few fewer than ``nnz``)."""
    if state.group is None:
        return largest_indicator(values.abs(), state.nnz)
    return _support(values, state).to(values.dtype)


def _admm_solve(fixed, target, state: _Sparse, rho0: float, steps: int, beat=lambda step: None) -> _Sparse:
    """ADMM for ``min ||target - fixed @ X||^2`` s.t. ``nnz(X) <= state.nnz``, warm-started.

    Columns of ``fixed`` are normalised (X's rows scaled to match) and a small ridge keeps the Gram
    well conditioned. The first solve uses the warm-start penalty ``rho0``; the support is re-chosen
    only in the first ``_MASK_STEPS`` steps, then frozen. ``beat(step)`` is called before and
    inside the inverse (``step = -2``), after it (``step = -1``) and after each step.
    """
    beat(-2)
    # (G + rho I)^-1 of the column-normalised Gram G (plus a small ridge) for the ADMM penalty
    # rho = 1 and the warm-start penalty rho0, in one batch.
    raw = fixed.T @ fixed
    norms = raw.diagonal().clamp_min(0).sqrt() + 1e-8
    shifts = [1.0, rho0] if rho0 != 1.0 else [1.0]
    shifted = raw.new_empty(len(shifts), *raw.shape)
    torch.div(raw, torch.outer(norms, norms), out=shifted[0])
    ridge = _RIDGE * max(float(shifted[0].diagonal().mean()), 1e-3)
    shifted[1:].copy_(shifted[0])
    for gram, shift in zip(shifted, shifts):
        gram.diagonal().add_(ridge + shift)
    scale = norms[:, None]
    beat(-2)
    rhs = (fixed.T @ target).div_(scale)
    beat(-2)
    inverses = spd_inverse(shifted, tick=lambda: beat(-2))
    inverse, inverse0 = inverses[0], inverses[-1]
    beat(-1)
    u = state.u * scale
    x = inverse0 @ torch.addcmul(rhs, state.z - state.u, scale, value=rho0)  # rhs + rho0 (z - u), scaled

    # Fused, in-place updates, three passes over X per step: below ~512 a side, elementwise passes
    # cost about as much as the products.
    for step in range(steps):
        v = x.add_(u)
        if step < _MASK_STEPS:
            off_support = torch.rsub(_support_indicator(v, state), 1.0)
            sign = torch.rsub(off_support, 1.0, alpha=2.0)  # +1 on the support, -1 off it
        u = v * off_support  # new dual: u + x - z, zero on the support
        if step < steps - 1:
            x = inverse @ torch.addcmul(rhs, v, sign)  # rhs + z - u = rhs + v - 2 u
        beat(step)
    z = v.sub_(u)
    return replace(state, z=z.div_(scale), u=u.div_(scale))


def _refit(W, a, b, gram, steps: int, go_on=lambda fraction: True):
    """Refit the factors' values on their supports against ``tr((W - A B) G (W - A B)^T)`` (``G = I``
    data-free), ``steps`` conjugate-gradient steps each time: ``A`` with ``B`` fixed, then, when a
    Gram is given, ``B`` and ``A`` again. The rounds weigh only ``diag(G)``; using the whole Gram
    lowered MiniLM layers' weighted error by a further 2-50% (most on ``output.dense``).
    Returns the refitted factors, or None where they do not lower the objective.
    ``go_on(fraction)`` is asked after each step; :class:`_Stopped` is raised when it says no."""
    with float32_matmul_precision("highest"):  # CG's recurrences drift with bfloat16-based products
        before = _error(W, a, b, gram)
        phases = [_refit_left] if gram is None else [_refit_left, _refit_right, _refit_left]
        for phase, refit in enumerate(phases):
            a, b = refit(W, a, b, gram, steps, lambda step, phase=phase: go_on((phase + step / steps) / len(phases)))
        after = _error(W, a, b, gram)
    return (a, b) if after <= before else None  # also None for a non-finite refit


def _error(W, a, b, gram) -> float:
    """The relative error of ``A B``, activation-weighted when a Gram is given."""
    approx = a @ b
    return relative_error(W, approx) if gram is None else weighted_relative_error(W, approx, gram)


def _refit_left(W, a, b, gram, steps, go_on):
    """``A`` on its support, ``B`` fixed: the rows of ``A`` are independent problems with the
    Hessian ``B G B^T``, solved together (one step length per row)."""
    bg = b if gram is None else b @ gram
    hessian = bg @ b.T
    x = _masked_cg(lambda d: hessian @ d, bg @ W.T, a.T, hessian.diagonal()[:, None], steps, True, go_on)
    return x.T, b


def _refit_right(W, a, b, gram, steps, go_on):
    """``B`` on its support, ``A`` fixed: one problem with the Hessian ``(A^T A) (x) G``."""
    ata = a.T @ a
    diagonal = ata.diagonal()[:, None] * gram.diagonal()[None, :]
    return a, _masked_cg(lambda d: ata @ d @ gram, a.T @ W @ gram, b, diagonal, steps, False, go_on)


def _masked_cg(apply, rhs, x, diagonal, steps, per_column, go_on):
    """Jacobi-preconditioned conjugate gradients for ``apply(X) = rhs`` over the entries where ``x``
    is nonzero, warm-started at ``x``: one system, or each column its own when ``per_column``.
    Updates are in place (elementwise passes cost as much as the products here)."""

    def inner(p, q):  # the inner product of each system
        return torch.linalg.vecdot(p, q, dim=0) if per_column else torch.tensordot(p, q, dims=2)

    x = x.clone(memory_format=torch.contiguous_format)  # mixed layouts make each pass several times slower
    mask = (x != 0).to(x.dtype)
    diagonal = diagonal.clamp_min(1e-12 * max(float(diagonal.max()), 1e-30))
    residual = torch.sub(rhs, apply(x)).mul_(mask)  # minus the gradient, on the support
    z = residual / diagonal
    direction, rz = z.clone(), inner(residual, z)
    for step in range(steps):
        curved = apply(direction).mul_(mask)
        curvature = inner(direction, curved)
        alpha = torch.where(curvature > 0, rz / curvature.clamp_min(1e-30), 0.0)
        x.addcmul_(alpha, direction)
        residual.addcmul_(alpha, curved, value=-1.0)
        torch.div(residual, diagonal, out=z)
        rz_new = inner(residual, z)
        direction.mul_(torch.where(rz > 0, rz_new / rz.clamp_min(1e-30), 0.0)).add_(z)
        rz = rz_new
        if not go_on(step + 1):
            raise _Stopped
    return x


def spd_inverse(matrix: torch.Tensor, leaf: int = 192, tick=lambda: None) -> torch.Tensor:
    """Inverse of a (batch of) symmetric positive definite matrix by 2 x 2 block elimination:
    ``[[A, B], [B^T, C]]^-1`` from ``A^-1`` and the Schur complement ``S = C - B^T A^-1 B`` (both
    SPD), down to ``leaf`` size, where ``L^-T L^-1`` of the Cholesky factor ``L`` is formed by a
    triangular solve and a product. As fast as LAPACK's Cholesky inverse on one 384 x 384 matrix,
    1.1x as fast on the pair DSF inverts (2 CPU threads). ``tick()``
    is called after each block's inverse (a long inversion can be interrupted from it). Products
    are full float32 whatever torch's precision setting: with bfloat16-based ones ("medium" on CPUs
    with AVX512-BF16) the Schur complements of ill-conditioned matrices lose definiteness."""
    inverse = torch.empty_like(matrix)
    with float32_matmul_precision("highest"):
        _invert_into(matrix, inverse, leaf, tick)
    return inverse


def _invert_into(matrix, out, leaf, tick):
    """:func:`spd_inverse` of ``matrix``, written into ``out`` (a view of the same shape): each block
    lands in place, with no copies to assemble the result."""
    n = matrix.shape[-1]
    if n <= leaf:  # LAPACK's own inverse (potri) was 1.5x slower here (two 192 x 192 matrices, 2 threads)
        lower = torch.linalg.cholesky(matrix)
        eye = torch.eye(n, dtype=matrix.dtype, device=matrix.device).expand_as(matrix)
        lower_inverse = torch.linalg.solve_triangular(lower, eye, upper=False)
        out.copy_(lower_inverse.mT @ lower_inverse)
        return
    h = n // 2
    a_inv, s_inv = out[..., :h, :h], out[..., h:, h:]
    _invert_into(matrix[..., :h, :h], a_inv, leaf, tick)
    tick()
    b = matrix[..., :h, h:]
    a_inv_b = a_inv @ b
    tick()
    _invert_into(matrix[..., h:, h:] - b.mT @ a_inv_b, s_inv, leaf, tick)
    tick()
    product = a_inv_b @ s_inv  # minus the upper right block
    tick()
    a_inv.add_(product @ a_inv_b.mT)  # A^-1 + A^-1 B S^-1 B^T A^-1
    torch.neg(product, out=out[..., :h, h:])
    out[..., h:, :h].copy_(out[..., :h, h:].mT)


def plan(shape, budget, options) -> Plan:
    """The inner dimension and split ``fit`` takes."""
    m, n = shape
    group = nm_pattern(options["pattern"])
    inner_dim, split = options["inner_dim"], options["split"]
    r, split, nnz_small, nnz_large = _factor_sizes(budget, m, n, inner_dim, split, group)
    if group is None:
        min_budget = 2
    else:
        low = inner_dim or 1
        min_budget = nm_count((m, low), *group) + nm_count((low, n), *group)
    a, b = (nnz_small, nnz_large) if m < n else (nnz_large, nnz_small)
    summary = f"A {m}x{r} with {a:,} nonzeros ({a / (m * r):.1%}), B {r}x{n} with {b:,} ({b / (r * n):.1%})"
    return Plan(True, {**options, "inner_dim": r, "split": split}, min_budget, summary)


def _work(m, n, options, gram):
    r = options["inner_dim"] or min(m, n)
    rounds = 4 * (m * r + r * n) + 4 * r * r + 3 * m * n
    refit_right = 7 * r * n + m * n if gram else 0  # CG's arrays for B, and W G
    return rounds + refit_right + (3 * n * n if gram else 0)


SPECS = (
    MethodSpec(
        "dsf",
        "Double Sparse Factorization: W ~ A B with both factors sparse (alternating ADMM).",
        "optional",
        {
            "inner_dim": inner_dim_option(),
            "split": Option(
                float,
                None,
                "Fraction of the budget given to the factor on the smaller side of W; default: "
                "the reference's share (that factor at density 0.16, or 0.25 if W is not square), "
                "at most 0.5.",
                low=0.0,
                high=1.0,
                low_open=True,
                high_open=True,
            ),
            "n_rounds": Option(
                int,
                40,
                "Outer alternation rounds (each solves A, then B); the warm-start schedule "
                "spans them.",
                low=1,
                high=MAX_ROUNDS,
            ),
            "admm_steps": Option(int, 5, "ADMM steps per sub-problem.", low=1, high=1000),
            "tol": Option(
                float,
                3e-3,
                "Stop once two rounds in a row improve the best relative error by less than this "
                "fraction (checked from the middle of the schedule on; the best round's factors are "
                "kept); 0 runs every round.",
                low=0.0,
            ),
            "refit_steps": Option(
                int, 20, "Conjugate-gradient steps of each final refit against the full objective: A, then B and A again when a Gram is given (whole Gram; G = I data-free); 0: no refit.",
                low=0, high=MAX_ROUNDS,
            ),
            "matmul_precision": Option(
                str,
                "medium",
                "torch's float32 matrix-product precision inside the solver: 'medium' lets torch "
                "use faster bfloat16-based products where the hardware has them (benchmark errors "
                "as with 'highest'; at most 3% higher even with plain bfloat16 products); "
                "'highest' keeps full float32 products. float64 input is not affected.",
                choices=("highest", "high", "medium"),
            ),
            "pattern": pattern_option(),
        },
        fit,
        plan,
        "sparse-product",
        factor_names=fixed_names("A", "B"),
        steps=lambda shape, options: options["n_rounds"],
        presets={"quick": {"n_rounds": 18}},
        work_elements=_work,
    ),
)
