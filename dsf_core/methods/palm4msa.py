"""PALM4MSA (Le Magoarou & Gribonval, 2016) and its hierarchical variant: W ~ lambda S_1 ... S_Q.

Each factor lives in a sparsity set (``sp``: k nonzeros per row in all, ``splin``: k per row,
``spcol``: k per column, ``splincol``: the union of the k largest of each row and of each column),
rescaled to unit Frobenius norm; the scale is the scalar ``lambda``. A sweep takes one projected
gradient step on every factor, with step ``1 / c`` from the Lipschitz constant
``c = 1.001 lambda^2 ||L||_2^2 ||R||_2^2`` (L, R: the products left and right of the factor),
then refits ``lambda``. The hierarchical variant peels one factor at a time off a residual whose
constraint tightens geometrically, each split followed by a global pass over all factors so far.

Budget: a given ``k`` needs the fewest nonzeros its sets can hold (``splincol``: ``k`` in each line
of the longer side, what a butterfly stores), and each factor is capped at its share of the budget,
so ``n_params <= budget`` whatever the union holds. The automatic ``k`` is the largest whose sets
fit whole, each factor then topped up with its largest other entries to its share.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..exceptions import ConvergenceWarning
from ._common import Fit, budget_error, topk_mask
from ._spec import MAX_STEPS, MethodSpec, Option, Plan, inner_dim_option, numbered_names

_STEP_MARGIN = 1.001  # c = 1.001 * lambda^2 ||R||_2^2 ||L||_2^2
_POWER_RTOL = 1e-6  # a power iteration stops when its estimate changes by less than this
_POWER_MAX_STEPS = 100
_FLOOR_EPS = 100  # a pass stops once the relative error is below this many machine epsilons
_SPARSE_DENSITY = 0.125  # on CPU, factors at most this dense and at least this large
_SPARSE_SIZE = 128 * 128  # multiply through a sparse copy (smaller ones: dense is as fast)
_FILL_RTOL = 1e-6  # a factor is topped up only with entries above this fraction of its largest


@dataclass(frozen=True)
class _Constraint:
    """A sparsity set: ``count`` nonzeros in all (``sp``) or per row/column (the others), and
    at most ``cap`` nonzeros in all (None: no cap; a factor's share of the budget). With ``fill``
    the set is topped up to ``cap`` with the largest entries outside it."""

    projection: str
    count: int
    cap: int | None = None
    fill: bool = False

    def worst_nnz(self, rows: int, cols: int) -> int:
        """The most nonzeros the projection can keep in a ``rows x cols`` factor, before the cap."""
        if self.projection == "sp":
            return min(self.count, rows * cols)
        if self.projection == "splin":
            return rows * min(self.count, cols)
        if self.projection == "spcol":
            return cols * min(self.count, rows)
        # Under one total order at least k^2 entries are among the k largest of both their row
        # and their column, so the union holds at most k (rows + cols) - k^2.
        k = min(self.count, rows, cols)
        return rows * k + cols * k - k * k

    def fewest_nnz(self, rows: int, cols: int) -> int:
        """The fewest nonzeros the projection can keep: for ``splincol``, ``k`` in each line of
        the longer side (a butterfly: exactly ``k`` per row and column); the others keep a fixed count."""
        if self.projection != "splincol":
            return self.worst_nnz(rows, cols)
        return max(rows, cols) * min(self.count, rows, cols)

    def max_nnz(self, rows: int, cols: int) -> int:
        """The most nonzeros a ``rows x cols`` factor in this set can hold."""
        worst = self.worst_nnz(rows, cols)
        if self.cap is None:
            return worst
        return self.cap if self.fill else min(worst, self.cap)

    def keeps_all(self, rows: int, cols: int) -> bool:
        """Whether the projection keeps every entry of a ``rows x cols`` factor."""
        if self.projection == "sp":
            return self.count >= rows * cols
        full = {"splin": cols, "spcol": rows}.get(self.projection, min(rows, cols))
        return self.count >= full

    def project(self, S: torch.Tensor) -> torch.Tensor:
        """Keep the constraint's support of ``S`` (within the cap), then rescale to unit Frobenius norm."""
        if not self.keeps_all(*S.shape):
            scores = S.abs()
            kept = _support(scores, self.projection, self.count, self.max_nnz(*S.shape))
            if self.fill:
                kept = _top_up(scores, kept, self.cap)
            S = S * kept
        norm = torch.linalg.norm(S)
        return S.div_(norm) if norm > 0 else S


def _support(scores: torch.Tensor, projection: str, count: int, cap: int | None = None) -> torch.Tensor:
    """Boolean mask of the entries kept by ``projection``. Ties go to the lower index, one total
    order for rows and columns (what makes the ``splincol`` bound of ``worst_nnz`` hold, and what
    lets the hierarchical split break the symmetry of a Hadamard matrix). A ``splincol`` union
    larger than ``cap`` keeps the ``count`` largest of each line of the longer side, then the
    largest of the rest of the union up to ``cap``."""
    if projection == "sp":
        return topk_mask(scores, count)
    if projection == "splin":
        return _topk_along(scores, count, dim=1)
    if projection == "spcol":
        return _topk_along(scores, count, dim=0)
    by_row = _topk_along(scores, count, dim=1)
    by_col = _topk_along(scores, count, dim=0)
    union = by_row | by_col
    if cap is None or int(union.count_nonzero()) <= cap:
        return union
    base = by_row if scores.shape[0] >= scores.shape[1] else by_col
    return _add_largest(scores, base, union & ~base, cap)


def _top_up(scores: torch.Tensor, kept: torch.Tensor, cap: int) -> torch.Tensor:
    """``kept`` with the largest entries outside it added, up to ``cap`` entries in all; entries
    below ``_FILL_RTOL`` of the largest are not worth storing (on a Hadamard matrix all the
    others fall to rounding noise once the butterflies are found)."""
    return _add_largest(scores, kept, ~kept & (scores > _FILL_RTOL * scores.max()), cap)


def _add_largest(scores: torch.Tensor, kept: torch.Tensor, candidates: torch.Tensor, cap: int) -> torch.Tensor:
    """``kept`` with the largest ``candidates`` (by ``scores``) added, up to ``cap`` entries in all."""
    room = cap - int(kept.count_nonzero())
    if room <= 0:
        return kept
    return kept | (candidates & topk_mask(torch.where(candidates, scores, -1.0), room))


def _topk_along(scores: torch.Tensor, k: int, *, dim: int) -> torch.Tensor:
    """Mask of the ``k`` largest entries of each row (``dim=1``) or column (``dim=0``), ties to
    the lower index."""
    size = scores.shape[dim]
    if k >= size:
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = _kth_largest(scores, k, dim=dim)
    kept = scores >= threshold
    if int(kept.count_nonzero()) == k * scores.shape[1 - dim]:  # no ties at the threshold
        return kept
    above = scores > threshold
    ties = scores == threshold
    room = k - above.sum(dim, keepdim=True)
    return above | (ties & (ties.cumsum(dim) <= room))


def _kth_largest(scores: torch.Tensor, k: int, *, dim: int) -> torch.Tensor:
    """The ``k``-th largest entry of each row (``dim=1``) or column (``dim=0``), dimension kept."""
    size = scores.shape[dim]
    if scores.device.type != "cpu":
        return scores.kthvalue(size - k + 1, dim=dim, keepdim=True).values
    # On CPU numpy's introselect is about ten times faster than torch.kthvalue.
    lines = (scores if dim == 1 else scores.T).contiguous().numpy()
    kth = torch.from_numpy(np.partition(lines, size - k, axis=1)[:, size - k])
    return kth.unsqueeze(dim)


def _constraint(projection: str, k: int | None, density: float | None, shape) -> _Constraint:
    """The set of a factor of ``shape``: ``k`` per row/column, or for ``sp`` ``k`` per row in all
    (or a fraction ``density`` of its entries)."""
    rows, cols = shape
    if projection != "sp":
        return _Constraint(projection, k)
    if density is not None:
        return _Constraint("sp", max(1, int(density * rows * cols + 1e-9)))
    return _Constraint("sp", k * rows)


def _factor_shapes(m: int, n: int, r: int, q: int) -> list[tuple[int, int]]:
    """``S_1`` is ``m x r``, the middle factors ``r x r``, ``S_Q`` is ``r x n``."""
    return [(m, r)] + [(r, r)] * (q - 2) + [(r, n)]


def _fewest_nnz(shapes, projection: str, k: int | None, density: float | None) -> int:
    """The fewest nonzeros the factors of ``shapes`` must be allowed under the constraint."""
    return sum(_constraint(projection, k, density, s).fewest_nnz(*s) for s in shapes)


def _choose_k(shapes, projection, k, density, *, budget, method, weight_shape) -> int | None:
    """Check a given ``k`` (or ``density``) against the budget (its fewest nonzeros must fit), or
    pick one."""
    if density is not None and projection != "sp":
        raise ValueError(
            f"Option 'factor_density' of method {method!r} works with projection 'sp' only; "
            f"got projection {projection!r} (use 'k')."
        )
    if density is not None and k is not None:
        raise ValueError(
            f"Options 'k' and 'factor_density' of method {method!r} exclude each other; give one."
        )
    given = k is not None or density is not None
    first = k if given else 1
    needed = _fewest_nnz(shapes, projection, first, density)
    if needed > budget:
        what = f"factor_density={density}" if density is not None else f"k={first}"
        raise budget_error(
            method, needed, budget, f"{len(shapes)} {projection!r} factors with {what}", weight_shape
        )
    if given:
        return k
    # Automatic: the largest k whose every factor can hold its whole projection (each is then
    # topped up to its share of the budget), or k = 1 capped below that.
    low, high = 1, max(max(s) for s in shapes)  # bisection: the count grows with k
    while low < high:
        mid = (low + high + 1) // 2
        if sum(_constraint(projection, mid, None, s).worst_nnz(*s) for s in shapes) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


def _capped(shapes, projection: str, k: int | None, density: float | None, budget: int, *, fill: bool = False) -> list[_Constraint]:
    """The factors' sets, each capped at its share of ``budget`` (caps sum to at most ``budget``):
    the most nonzeros its projection can keep when all of those fit, else its fewest; plus the
    budget left over, in proportion to how many more it could hold. Without ``fill`` the caps bind
    only where a ``splincol`` union could pass them; with ``fill`` each set is topped up to its cap."""
    sets = [_constraint(projection, k, density, s) for s in shapes]
    worst = [c.worst_nnz(*s) for c, s in zip(sets, shapes)]
    if sum(worst) <= budget and not fill:
        return sets
    low = worst if sum(worst) <= budget else [c.fewest_nnz(*s) for c, s in zip(sets, shapes)]
    high = [a * b for a, b in shapes] if fill else worst
    room = [top - floor for top, floor in zip(high, low)]
    spare = budget - sum(low)
    caps = [floor + (min(spare * more // sum(room), more) if sum(room) else 0) for floor, more in zip(low, room)]
    return [replace(c, cap=cap, fill=fill) for c, cap in zip(sets, caps)]


def _coo(S: torch.Tensor) -> torch.Tensor:
    """A coalesced COO copy of the dense CPU matrix ``S`` (faster than ``to_sparse``)."""
    S = S.contiguous()
    flat = torch.from_numpy(np.flatnonzero((S != 0).numpy()))
    rows = flat // S.shape[1]
    index = torch.stack([rows, flat - rows * S.shape[1]])
    values = S.reshape(-1)[flat]
    return torch.sparse_coo_tensor(
        index, values, S.shape, is_coalesced=True, check_invariants=False
    )


class _Sparse:
    """A sparse CPU factor: its dense form and, made on first use, a COO copy. Its transpose keeps
    a COO copy of its own (``torch.sparse.mm`` re-sorts a transposed COO at every call)."""

    def __init__(self, dense: torch.Tensor, transpose: _Sparse | None = None):
        self.dense = dense
        self._transpose = transpose

    @functools.cached_property
    def coo(self) -> torch.Tensor:
        return _coo(self.dense)

    @property
    def T(self) -> _Sparse:
        if self._transpose is None:
            self._transpose = _Sparse(self.dense.T, self)
        return self._transpose


def _operand(S: torch.Tensor, max_nnz: int) -> torch.Tensor | _Sparse:
    """``S`` as a multiplier: sparse on CPU when it holds at most ``max_nnz`` nonzeros and that
    is sparse enough to beat a dense product, else ``S`` itself."""
    large = S.numel() >= _SPARSE_SIZE
    if S.device.type == "cpu" and large and max_nnz <= _SPARSE_DENSITY * S.numel():
        return _Sparse(S)
    return S


def _dense(a: torch.Tensor | _Sparse) -> torch.Tensor:
    return a.dense if isinstance(a, _Sparse) else a


def _times(a, b):
    """``a @ b`` where ``None`` stands for an identity and either side may be ``_Sparse``; the
    product of two matrices is a dense tensor."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, _Sparse):  # sparse.mm is very slow on a non-contiguous dense operand
        return torch.sparse.mm(a.coo, _dense(b).contiguous())
    if isinstance(b, _Sparse):
        return torch.sparse.mm(b.T.coo, a.T.contiguous()).T
    return a @ b


def _transpose(a):
    return None if a is None else a.T


def _chain(factors) -> torch.Tensor | None:
    """The plain product ``S_1 S_2 ... S_Q`` (``None`` for no factors)."""
    out = None
    for f in factors:
        out = _times(out, f)
    return out


def _best_scale(W: torch.Tensor, product: torch.Tensor, fallback: float) -> float:
    """``lambda = tr(W^T P) / ||P||_F^2``, the best scale of ``P`` (``fallback`` when ``P = 0``)."""
    sq = float(torch.sum(product * product))
    return float(torch.sum(W * product)) / sq if sq > 0 else fallback


@dataclass
class _Palm:
    """PALM4MSA state: unit-norm factors, the scale, and the warm starts of the power iterations."""

    target: torch.Tensor
    factors: list[torch.Tensor]
    constraints: list[_Constraint]
    lam: float
    generator: torch.Generator
    right_to_left: bool = False
    product: torch.Tensor | None = None  # S_1 ... S_Q, kept between sweeps
    residual: torch.Tensor | None = None  # lambda S_1 ... S_Q - target, kept between sweeps
    vectors: dict = field(default_factory=dict)
    operands: list = field(init=False)  # the factors as multipliers (see _operand)

    def __post_init__(self):
        self.operands = [self.operand(j) for j in range(len(self.factors))]

    def operand(self, j: int) -> torch.Tensor:
        """Factor ``j`` as a multiplier, sparse when its constraint keeps it sparse."""
        S = self.factors[j]
        return _operand(S, self.constraints[j].max_nnz(*S.shape))

    def sq_norm(self, key, A: torch.Tensor | None) -> float:
        """``||A||_2^2`` by power iteration on ``A^T A``, warm-started from the last ``key`` call."""
        if A is None:
            return 1.0
        A = _dense(A)  # dense matrix-vector products are the fastest
        v = self.vectors.get(key)
        if v is None:
            v = torch.randn(A.shape[1], generator=self.generator, device=A.device, dtype=A.dtype)
            v = v / torch.linalg.norm(v)
        estimate = 0.0
        for _ in range(_POWER_MAX_STEPS):
            w = (A.T @ (A @ v[:, None]))[:, 0]
            previous, estimate = estimate, float(torch.linalg.norm(w))
            if estimate == 0.0:
                break
            v = w / estimate
            if abs(estimate - previous) <= _POWER_RTOL * estimate:
                break
        self.vectors[key] = v
        return estimate

    def misfit(self, product: torch.Tensor) -> torch.Tensor:
        """``lambda P - target`` for the product ``P``."""
        return product.mul(self.lam).sub_(self.target)

    def step(self, j: int, left, right, residual) -> None:
        """One projected gradient step on factor ``j``; ``residual`` is the current misfit."""
        lam = self.lam
        grad = _times(_times(_transpose(left), residual), _transpose(right))
        c = _STEP_MARGIN * lam**2 * self.sq_norm(("L", j), left) * self.sq_norm(("R", j), right)
        if c > 0:
            self.factors[j] = self.constraints[j].project(self.factors[j] - (lam / c) * grad)
            self.operands[j] = self.operand(j)

    def sweep(self) -> None:
        """Update every factor once (left to right, or right to left), then ``lambda``."""
        S, ops = self.factors, self.operands
        q = len(S)
        # Products of the factors not yet updated in this sweep, built once from the far end.
        fixed: list[torch.Tensor | None] = [None] * q
        if self.right_to_left:
            for j in range(1, q):
                fixed[j] = _times(fixed[j - 1], ops[j - 1])  # S_1 ... S_{j-1}
        else:
            for j in range(q - 2, -1, -1):
                fixed[j] = _times(ops[j + 1], fixed[j + 1])  # S_{j+1} ... S_Q
        product = self.product if self.product is not None else _chain(S)
        residual = self.residual if self.residual is not None else self.misfit(product)
        moving = None  # the product of the factors already updated
        for j in range(q - 1, -1, -1) if self.right_to_left else range(q):
            if moving is not None:
                residual = self.misfit(product)
            if self.right_to_left:
                self.step(j, fixed[j], moving, residual)
                moving = ops[j] if moving is None else _times(ops[j], moving)
                product = _times(fixed[j], moving)
            else:
                self.step(j, moving, fixed[j], residual)
                moving = ops[j] if moving is None else _times(moving, ops[j])
                product = _times(moving, fixed[j])
        self.product = product
        self.lam = _best_scale(self.target, product, self.lam)
        self.residual = self.misfit(product)  # the error, and the first residual of the next sweep

    def run(self, *, n_iter: int, tol: float, report) -> bool:
        """Sweep up to ``n_iter`` times, until the relative change of the error is at most ``tol``
        or the error is at rounding level. ``report(error)`` may return False to stop at once;
        returns False then, True when the pass ended on its own."""
        norm = float(torch.linalg.norm(self.target))
        floor = _FLOOR_EPS * torch.finfo(self.target.dtype).eps
        previous = math.inf
        if norm == 0:  # nothing to fit
            return True
        for _ in range(n_iter):
            kept = (list(self.factors), list(self.operands), self.lam, self.product, self.residual)
            self.sweep()
            error = float(torch.linalg.norm(self.residual)) / norm
            if not math.isfinite(error):
                warnings.warn(
                    "PALM4MSA met a non-finite value; keeping the factors of the sweep before.",
                    ConvergenceWarning,
                    stacklevel=2,
                )
                self.factors[:], self.operands[:], self.lam, self.product, self.residual = kept
                return True
            if report(error) is False:
                return False
            if error <= floor or abs(previous - error) <= tol * previous < math.inf:
                return True
            previous = error
        return True


class _Steps:
    """Forwards each sweep's relative error to ``progress`` with a running step count."""

    def __init__(self, progress):
        self.progress = progress
        self.count = 0

    def __call__(self, error: float) -> bool:
        self.count += 1
        return self.progress(self.count, error)


def _start(shapes, like: torch.Tensor, *, right_to_left: bool = False) -> list[torch.Tensor]:
    """The PALM4MSA start: the factor updated first is zero, the others (rectangular) identity."""
    opts = {"dtype": like.dtype, "device": like.device}
    factors = [torch.eye(*s, **opts) for s in shapes]
    first = len(shapes) - 1 if right_to_left else 0
    factors[first] = torch.zeros(shapes[first], **opts)
    return factors


def _within_cap(S: torch.Tensor, constraint: _Constraint) -> torch.Tensor:
    """``S``, or its projection into ``constraint`` when it holds more nonzeros than its cap."""
    return constraint.project(S) if int(S.count_nonzero()) > constraint.max_nnz(*S.shape) else S


def _zeros(shapes, like: torch.Tensor) -> list[torch.Tensor]:
    """All-zero factors (the fit of a zero matrix)."""
    return [torch.zeros(s, dtype=like.dtype, device=like.device) for s in shapes]


def _result(factors, lam: float, info: dict, chosen: dict) -> Fit:
    """The fit with ``lambda`` shared out evenly among the factors (its sign to the first one),
    so that the factors stay in range however large ``lambda`` is."""
    root = abs(lam) ** (1 / len(factors))
    factors = [f * (root if i or lam >= 0 else -root) for i, f in enumerate(factors)]
    info = {**info, "lambda": lam, "factor_shapes": [tuple(f.shape) for f in factors]}
    return Fit(factors=factors, sparse=[True] * len(factors), kind="product", info=info, chosen=chosen)


def fit(
    W,
    *,
    budget,
    gram,
    generator,
    progress,
    n_factors,
    projection,
    k,
    factor_density,
    inner_dim,
    n_iter,
    tol,
):
    m, n = W.shape
    r = inner_dim or min(m, n)
    shapes = _factor_shapes(m, n, r, n_factors)
    automatic = k is None and factor_density is None  # then each factor fills its share of the budget
    k = _choose_k(
        shapes, projection, k, factor_density, budget=budget, method="palm4msa", weight_shape=(m, n)
    )
    chosen = {"k": k, "inner_dim": r}
    constraints = _capped(shapes, projection, k, factor_density, budget, fill=automatic)
    scale = float(W.abs().max())
    if scale == 0:
        return _result(_zeros(shapes, W), 0.0, {"k": k, "n_iter_run": 0}, chosen)
    target = W / scale  # entries in [-1, 1]: no overflow in the squared norms
    palm = _Palm(target, _start(shapes, W), constraints, lam=1.0, generator=generator)
    steps = _Steps(progress)
    palm.run(n_iter=n_iter, tol=tol, report=steps)
    return _result(palm.factors, palm.lam * scale, {"k": k, "n_iter_run": steps.count}, chosen)


def _residual_k(projection: str, k: int, shape, level: int, n_levels: int) -> int:
    """The residual's ``k`` after split ``level`` of ``n_levels``: geometric from a full factor
    down to ``k`` (for a Hadamard matrix of size N: N/2, N/4, ..., 2)."""
    rows, cols = shape
    full = {"sp": cols, "splin": cols, "spcol": rows}.get(projection, min(rows, cols))
    if k >= full:
        return k
    return max(k, round(full * (k / full) ** (level / n_levels)))


def fit_hierarchical(
    W, *, budget, gram, generator, progress, n_factors, projection, k, n_iter, tol
):
    m, n = W.shape
    r = min(m, n)
    shapes = _factor_shapes(m, n, r, n_factors)
    automatic = k is None  # then each factor fills its share of the budget
    k = _choose_k(
        shapes, projection, k, None, budget=budget, method="hierarchical", weight_shape=(m, n)
    )
    final = _capped(shapes, projection, k, None, budget, fill=automatic)
    levels = [_residual_k(projection, k, (r, n), lv, n_factors - 1) for lv in range(1, n_factors)]
    info = {"k": k, "residual_k": levels}
    scale = float(W.abs().max())
    if scale == 0:
        return _result(_zeros(shapes, W), 0.0, {**info, "n_iter_run": 0}, {"k": k})
    target = W / scale  # entries in [-1, 1]: no overflow in the squared norms
    norm = float(torch.linalg.norm(target))
    steps = _Steps(progress)
    peeled: list[torch.Tensor] = []
    residual, lam = target / norm, norm
    # Factors are updated right to left, the residual (rightmost) first from zero: with
    # ties broken by index this is what lets the splits find the butterflies of a Hadamard matrix.
    # A split runs without the caps (on a Hadamard matrix its first projections pass them on the
    # way to the butterflies); the global pass after it projects every factor into its capped set.
    for level, res_k in enumerate(levels, start=1):
        # the last split's residual is the last factor: in its own (capped) set
        loose = final[-1] if level == len(levels) else _constraint(projection, res_k, None, (r, n))
        split = _Palm(
            residual,
            _start([(residual.shape[0], r), (r, n)], W, right_to_left=True),
            [replace(final[level - 1], cap=None, fill=False), replace(loose, cap=None, fill=False)],
            lam=1.0,
            generator=generator,
            right_to_left=True,
        )
        prefix = _chain(peeled)
        if prefix is not None:
            prefix = _operand(prefix, int(prefix.count_nonzero()))

        def full_error(_split_error, split=split, prefix=prefix, lam=lam):
            approx = _times(prefix, split.product)
            return steps(float(torch.linalg.norm(lam * split.lam * approx - target)) / norm)

        finished = split.run(n_iter=n_iter, tol=tol, report=full_error)
        whole = _Palm(
            target,
            peeled + split.factors,
            final[:level] + [loose],
            lam=lam * split.lam,
            generator=generator,
            right_to_left=True,
        )
        if finished:
            finished = whole.run(n_iter=n_iter, tol=tol, report=steps)
        peeled, residual, lam = whole.factors[:-1], whole.factors[-1], whole.lam
        if not finished:  # stopped early: put the factors in their final sets and refit lambda
            peeled = [_within_cap(f, c) for f, c in zip(peeled, final)]
            peeled.append(final[-1].project(residual))
            lam = _best_scale(target, _chain(peeled), lam)
            break
    else:
        peeled.append(residual)
    return _result(peeled, lam * scale, {**info, "n_iter_run": steps.count}, {"k": k})


def _plan(method, shape, budget, options) -> Plan:
    m, n = shape
    r = options.get("inner_dim") or min(m, n)
    projection, density = options["projection"], options.get("factor_density")
    shapes = _factor_shapes(m, n, r, options["n_factors"])
    k = _choose_k(shapes, projection, options["k"], density, budget=budget, method=method, weight_shape=shape)
    fewest = options["k"] if options["k"] is not None or density is not None else 1
    sizes = ", ".join(f"{a}x{b}" for a, b in shapes)
    size = f"factor density {density}" if density is not None else f"k = {k}"
    chosen = {**options, "k": k, **({"inner_dim": r} if "inner_dim" in options else {})}
    summary = f"{len(shapes)} factors ({sizes}), {projection} with {size}"
    return Plan(True, chosen, _fewest_nnz(shapes, projection, fewest, density), summary)


def _work(m, n, options, gram):
    side = max(m, n, options.get("inner_dim") or 0)
    return (options["n_factors"] + 4) * side * side


PROJECTIONS = ("sp", "splin", "spcol", "splincol")


def _shared_options():
    return {
        "n_factors": Option(int, 2, "Number of sparse factors Q.", low=2, high=64),
        "projection": Option(str, "splincol", "Sparsity constraint of each factor.", choices=PROJECTIONS),
        "k": Option(
            int,
            None,
            "Nonzeros per row/column of each factor (for 'sp': k times the factor's row count in all), "
            "each factor capped at its share of the budget; default: the largest k that fits, each "
            "factor then filled with its largest other entries to its share.",
            low=1,
            at_most_largest_side=True,
        ),
    }


SPECS = (
    MethodSpec(
        "palm4msa",
        "PALM4MSA: W ~ lambda S_1 ... S_Q with each factor sparse (proximal alternating "
        "linearised minimisation).",
        "no",
        {
            **_shared_options(),
            "factor_density": Option(
                float,
                None,
                "Density of each factor (used with projection 'sp' instead of k).",
                low=0.0,
                high=1.0,
                low_open=True,
            ),
            "inner_dim": inner_dim_option(),
            "n_iter": Option(int, 300, "Maximum number of sweeps over the factors.", low=1, high=MAX_STEPS),
            "tol": Option(float, 1e-6, "Stop when the relative change of the error is below this.", low=0.0),
        },
        fit,
        functools.partial(_plan, "palm4msa"),
        "sparse-product",
        factor_names=numbered_names("S"),
        steps=lambda shape, options: options["n_iter"],
        first_step=1,
        presets={"quick": {"n_iter": 60}},
        work_elements=_work,
    ),
    MethodSpec(
        "hierarchical",
        "Hierarchical PALM4MSA: peel one sparse factor at a time, each split followed by a "
        "global PALM4MSA pass (recovers butterfly factorizations such as Hadamard).",
        "no",
        {
            **_shared_options(),
            "n_iter": Option(
                int,
                300,
                "Maximum PALM4MSA sweeps per split and per global pass (a pass also stops once "
                "its error is at rounding level).",
                low=1,
                high=MAX_STEPS,
            ),
            "tol": Option(
                float,
                1e-6,
                "Stop a PALM4MSA pass when the relative change of its error is below this.",
                low=0.0,
            ),
        },
        fit_hierarchical,
        functools.partial(_plan, "hierarchical"),
        "sparse-product",
        factor_names=numbered_names("S"),
        # each split: one 2-factor pass and one global pass
        steps=lambda shape, options: 2 * (options["n_factors"] - 1) * options["n_iter"],
        first_step=1,
        presets={"quick": {"n_iter": 30}},
        work_elements=_work,
    ),
)
