"""What every method shares: the result it hands back, progress reporting, top-k and N:M masks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy
import torch

from ..exceptions import BudgetError


@dataclass
class Fit:
    """A solver's raw output. ``factors`` multiply in order to the approximation (``kind="product"``)
    or are TT-matrix cores ``(r_prev, m_k, n_k, r_next)`` (``kind="tt"``)."""

    factors: list[torch.Tensor]
    sparse: list[bool]
    kind: str = "product"
    info: dict = field(default_factory=dict)
    chosen: dict = field(default_factory=dict)  # the value picked for each automatic option


class Progress:
    """Records the objective per step and forwards it to the user's ``callback(step, objective)``;
    the callback may return ``False`` to ask the solver to stop. Solvers whose steps are long also
    report inside a step through :meth:`beat`, to the user's ``heartbeat(step, fraction)``."""

    def __init__(self, callback=None, heartbeat=None):
        self.callback = callback
        self.heartbeat = heartbeat
        self.history: list[float] = []
        self.stopped = False

    def beat(self, step: int, fraction: float) -> bool:
        """Report that ``fraction`` (0..1) of step ``step`` is done; return True if the solver should go on."""
        if self.heartbeat is not None and self.heartbeat(step, fraction) is False:
            self.stopped = True
        return not self.stopped

    def __call__(self, step: int, objective: float) -> bool:
        """Report one step; return True if the solver should go on."""
        objective = float(objective)
        self.history.append(objective)
        if self.callback is not None and self.callback(step, objective) is False:
            self.stopped = True
        return not self.stopped


def budget_error(method: str, needed: int, budget: int, what: str, shape) -> BudgetError:
    """The error raised when a method's smallest (or requested) size does not fit the budget."""
    m, n = shape
    return BudgetError(
        f"Method {method!r} needs {needed} parameters for {what}, more than the budget of "
        f"{budget} parameters (density x {m} x {n}); raise the density or lower the option.",
        needed=needed,
        budget=budget,
        what=what,
    )


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest entries of ``scores`` (ties broken arbitrarily, exactly k)."""
    flat = scores.reshape(-1)
    k = max(0, min(int(k), flat.numel()))
    if k == 0 or k == flat.numel():
        return torch.full_like(scores, k > 0, dtype=torch.bool)
    threshold = kth_smallest(flat, flat.numel() - k)
    mask = flat > threshold
    deficit = k - int(mask.sum())
    if deficit > 0:  # ties at the threshold: take just enough of them
        ties = torch.nonzero(flat == threshold).squeeze(1)[:deficit]
        mask[ties] = True
    return mask.reshape(scores.shape)


def largest_indicator(scores: torch.Tensor, k: int, slack: float = 2.5e-4) -> torch.Tensor:
    """1.0 at the ``k`` largest of the nonnegative ``scores`` (or at the ``k'`` largest, ``k(1 -
    slack) <= k' <= k``), 0.0 elsewhere, in ``scores``' dtype; exactly ``k`` on small inputs.

    The entries above a threshold found by exact counts, from a guess and slope read off a sample:
    three to five comparison passes on large inputs, several times faster than
    :func:`topk_mask` in an inner loop (which the slack allows: the last few entries cost most).
    Scores tied at the threshold may leave more out; past 1% of ``k`` it falls back to
    :func:`topk_mask`."""
    n = scores.numel()
    k = max(0, min(int(k), n))
    if n <= _SMALL or k == 0 or k == n:
        return topk_mask(scores, k).to(scores.dtype)
    count_dtype = scores.dtype if n < 2**24 else torch.float64  # float sums of ones stay exact

    buffers = (torch.empty_like(scores), torch.empty_like(scores))  # one may hold below_k

    def above(threshold: float, out: torch.Tensor) -> int:
        torch.gt(scores, threshold, out=out)  # 1.0 / 0.0 written straight in scores' dtype
        return int(out.sum(dtype=count_dtype))

    # numpy: torch's CPU sort is ~20x slower on a few thousand entries
    sample = scores[:: max(1, scores.shape[0] // 64), :: max(1, scores.shape[-1] // 64)]
    sample = numpy.sort(sample.reshape(-1).double().cpu().numpy())
    size = sample.size
    rank = min(int((1.0 - k / n) * size), size - 1)
    lo, hi = max(rank - 64, 0), min(rank + 64, size - 1)
    per_unit = n * (hi - lo) / size / max(float(sample[hi] - sample[lo]), 1e-30)  # entries per unit of score

    # Illinois regula falsi on f(t) = count(t) - aim (falling as t rises), from secant steps.
    aim = k - 0.5 * slack * k
    low = high = None  # [t, f(t)] with f > 0 at low and f < 0 at high, once found
    below_k, guess, previous, moved = None, float(sample[rank]), None, None
    for _ in range(16):
        indicator = buffers[1] if below_k is buffers[0] else buffers[0]
        count = above(guess, indicator)
        if k - slack * k <= count <= k:
            return indicator
        point = [guess, count - aim]
        if count > k:
            low, side = point, "low"
        else:
            high, below_k, side = point, indicator, "high"
        if low is not None and high is not None:
            if side == moved:  # the same end moved twice in a row: halve the other's f
                (high if side == "low" else low)[1] /= 2
            moved = side
            if math.nextafter(low[0], math.inf) >= high[0]:  # scores tie at the threshold
                break
            guess = low[0] + low[1] * (high[0] - low[0]) / (low[1] - high[1])
        else:
            if previous is not None and previous[1] != point[1] and previous[0] != point[0]:
                per_unit = (previous[1] - point[1]) / (point[0] - previous[0])
            guess += point[1] / max(per_unit, 1e-30)
        previous = point
        lowest, highest = (low[0] if low else 0.0), (high[0] if high else float(scores.max()))
        if not lowest < guess < highest:
            guess = 0.5 * (lowest + highest)
    if below_k is None or high[1] + aim < 0.99 * k:
        return topk_mask(scores, k).to(scores.dtype)
    return below_k


_SMALL = 32768  # below this many scores, topk_mask is as fast


def kth_smallest(values: torch.Tensor, j: int, n_samples: int = 4096) -> torch.Tensor:
    """The ``j``-th smallest (1-based) entry of a 1-D tensor, exactly.

    A random sample brackets the answer; only the few entries inside the bracket go through
    ``kthvalue``. Several times faster than a full ``kthvalue`` on large inputs.
    """
    size = values.numel()
    if size <= 8 * n_samples:
        return values.kthvalue(j).values
    generator = torch.Generator(device=values.device).manual_seed(size + j)
    picks = torch.randint(size, (n_samples,), generator=generator, device=values.device)
    sample = values[picks]
    q = j / size
    margin = 4.0 * math.sqrt(q * (1.0 - q) / n_samples) + 2.0 / n_samples
    lo = sample.kthvalue(max(int((q - margin) * n_samples), 1)).values
    hi = sample.kthvalue(min(int((q + margin) * n_samples) + 2, n_samples)).values
    below_mask = values <= lo
    below = int(below_mask.sum())
    window = values[(values <= hi) & ~below_mask]
    if not below < j <= below + window.numel():  # the bracket missed: exact fallback
        return values.kthvalue(j).values
    return window.kthvalue(j - below).values


def rowwise_topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask keeping the ``k`` largest entries of each row."""
    k = max(0, min(int(k), scores.shape[1]))
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, scores.topk(k, dim=1).indices, True)
    return mask


# N:M sparsity: at most n nonzeros in every group of m consecutive entries along a matrix's input
# (column) dimension; a last, shorter group keeps at most n too. 2:4 runs on sparse tensor cores.
PATTERNS = ("unstructured", "2:4", "4:8", "1:2", "1:4", "2:8", "8:16")


def nm_pattern(pattern: str) -> tuple[int, int] | None:
    """``(n, m)`` of an ``"n:m"`` pattern, None for ``"unstructured"``."""
    if pattern == "unstructured":
        return None
    n, m = (int(part) for part in pattern.split(":"))
    return n, m


def nm_count(shape, n: int, m: int) -> int:
    """Nonzeros an ``n:m`` pattern keeps in a dense ``rows x cols`` matrix."""
    rows, cols = shape
    full, rest = divmod(cols, m)
    return rows * (full * n + min(n, rest))


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean mask keeping the ``n`` largest scores of each group of ``m`` consecutive columns."""
    rows, cols = scores.shape
    full = cols - cols % m
    parts = []
    if full:
        groups = scores[:, :full].reshape(rows, full // m, m)
        part = torch.zeros_like(groups, dtype=torch.bool)
        part.scatter_(2, groups.topk(min(n, m), dim=2).indices, True)
        parts.append(part.reshape(rows, full))
    if full < cols:
        parts.append(rowwise_topk_mask(scores[:, full:], n))
    return torch.cat(parts, dim=1)


def check_pattern_budget(method: str, pattern: tuple[int, int], budget: int, shape) -> int:
    """The nonzeros the ``(n, m)`` pattern keeps in an ``m x n`` weight; raises BudgetError when they
    are more than ``budget``."""
    n, m = pattern
    needed = nm_count(shape, n, m)
    if needed > budget:
        rows, cols = shape
        what = f"the {n}:{m} pattern (density {needed / (rows * cols):.3g})"
        raise budget_error(method, needed, budget, what, shape)
    return needed
