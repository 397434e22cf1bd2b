"""What a method module declares next to its solver: its options, presets, plan and structure.

Each module in ``dsf_core/methods`` holds one or more :class:`MethodSpec` in a tuple ``SPECS``;
``dsf_core._registry`` collects them into ``METHODS``. The solver is a function following
:class:`Solver`; the plan answers, without running it, what the solver would do.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import torch

from ..exceptions import BudgetError
from ._common import PATTERNS, Fit, Progress

# Upper bounds of step counts: far above any useful setting, low enough that a typo cannot run for days.
MAX_ROUNDS, MAX_STEPS = 10_000, 100_000

# How the stored factors make the approximation (what the app draws and names).
STRUCTURES = ("pruned", "sparse-product", "low-rank", "tensor-train")


class Solver(Protocol):
    """A method's ``fit``: approximate ``W`` within ``budget`` stored parameters.

    ``W`` is ``m x n``, float32 or float64, at unit scale on the working device; it must not be
    modified. ``budget >= 1``. ``gram`` is the ``n x n`` input Gram (None: data-free, or a method
    that reads none). ``generator`` seeds any random start. After each step the solver calls
    ``progress(step, objective)``; once that returns False it stops soon and returns its best so
    far. ``options`` are the method's options, each checked, automatic ones still None.

    Returns a :class:`Fit` whose factors store at most ``budget`` parameters and whose ``chosen``
    holds the value it picked for each automatic option (the same its spec's plan gives). Raises
    ``BudgetError`` (``_common.budget_error``) when the budget is below what it needs.
    """

    def __call__(
        self,
        W: torch.Tensor,
        *,
        budget: int,
        gram: torch.Tensor | None,
        generator: torch.Generator,
        progress: Progress,
        **options: Any,
    ) -> Fit: ...


@dataclass(frozen=True)
class Option:
    """One keyword option of a method: its type, default and allowed range."""

    kind: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    low_open: bool = False
    high_open: bool = False
    at_most_largest_side: bool = False  # a size that must not exceed max(m, n) of the weight

    def check(self, method: str, name: str, value):
        """Return ``value`` converted to ``kind``; raise TypeError/ValueError if it does not fit."""
        if value is None:
            if self.default is None:
                return None
            raise TypeError(f"Option {name!r} of method {method!r} must not be None.")
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise TypeError(f"Option {name!r} of method {method!r} must be an int; got {value!r}.")
        if self.kind is float and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise TypeError(f"Option {name!r} of method {method!r} must be a number; got {value!r}.")
        if self.kind is str and not isinstance(value, str):
            raise TypeError(f"Option {name!r} of method {method!r} must be a str; got {value!r}.")
        value = self.kind(value)
        if self.choices is not None and value not in self.choices:
            raise ValueError(
                f"Option {name!r} of method {method!r} must be one of {list(self.choices)}; "
                f"got {value!r} instead."
            )
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (
            value >= self.high if self.high_open else value > self.high
        )
        if too_low or too_high or value != value:
            raise ValueError(
                f"Option {name!r} of method {method!r} must be in the range {self.range_text()}; "
                f"got {value!r} instead."
            )
        return value

    def check_size(self, method: str, name: str, value, shape) -> None:
        """Raise ValueError when a size option is larger than the weight's larger side."""
        if self.at_most_largest_side and value is not None and value > max(shape):
            raise ValueError(
                f"Option {name!r} of method {method!r} must be at most the weight's larger side "
                f"{max(shape)} (shape {shape[0]} x {shape[1]}); got {value} instead."
            )

    def range_text(self) -> str:
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        low = "-inf" if self.low is None else self.low
        high = "inf" if self.high is None else self.high
        return f"{left}{low}, {high}{right}"


@dataclass(frozen=True)
class Plan:
    """What a method would do for one shape and budget, without running it."""

    feasible: bool
    options: Mapping[str, Any]  # every option as the fit would run with it, automatic ones filled in
    min_budget: int  # the fewest stored parameters it needs with these options
    summary: str = ""  # what it would store, in words ("rank 12 of 16"); empty when not feasible
    reason: str = ""  # why it cannot run; empty when it can
    what: str = ""  # what its minimum budget pays for ("rank 1"), when it cannot run


def fixed_names(*names: str) -> Callable[[int], list[str]]:
    """Factor names for a method with a fixed number of factors."""
    return lambda count: list(names[:count])


def numbered_names(prefix: str) -> Callable[[int], list[str]]:
    """Factor names ``prefix_1 .. prefix_count``."""
    return lambda count: [f"{prefix}_{i + 1}" for i in range(count)]


def _default_work(m, n, options, gram):
    return 4 * m * n + (3 * n * n if gram else 0)


@dataclass(frozen=True)
class MethodSpec:
    """A method: what it does, its options, what it reads, its solver, its plan and its factors."""

    name: str
    description: str
    uses_gram: str  # "no", "optional" (activation-aware when given)
    options: Mapping[str, Option]
    fit: Solver = field(repr=False)
    # plan(shape, budget, options) -> Plan for a feasible run, raising BudgetError when the budget is
    # too small; options are resolved (automatic ones None). MethodSpec.plan wraps it.
    planner: Callable[[tuple[int, int], int, dict], Plan] = field(repr=False)
    structure: str  # one of STRUCTURES
    factor_names: Callable[[int], list[str]] = field(default=numbered_names("S"), repr=False)
    # The most progress steps a run reports, for a shape and resolved options (progress bars), and the
    # number of the first step (0 or 1).
    steps: Callable[[tuple[int, int], dict], int] = field(default=lambda shape, options: 1, repr=False)
    first_step: int = 0
    # Named option sets, e.g. "quick": about 1 s on a 512 x 512 matrix on 2 CPU cores, for live
    # previews; the defaults are the papers' quality settings.
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    takes_row_weights: bool = True  # factorize(row_weights=) can move its budget between rows
    # Estimated working memory in elements for an m x n weight, its options and whether a Gram is given.
    work_elements: Callable[[int, int, dict, bool], int] = field(default=_default_work, repr=False)

    def __post_init__(self):
        if self.structure not in STRUCTURES:
            raise ValueError(f"Method {self.name!r}: structure must be one of {STRUCTURES}; got {self.structure!r}.")
        if self.uses_gram not in ("no", "optional"):
            raise ValueError(f"Method {self.name!r}: uses_gram must be 'no' or 'optional'; got {self.uses_gram!r}.")

    @property
    def takes_pattern(self) -> bool:
        """Whether the method can keep an ``n:m`` sparsity pattern (option ``pattern``)."""
        return "pattern" in self.options

    def resolve_options(self, given: Mapping[str, Any]) -> dict:
        """Defaults overlaid with the given options, each checked."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            raise TypeError(
                f"Unknown option(s) {unknown} for method {self.name!r}; "
                f"expected some of {sorted(self.options)}."
            )
        return {
            name: opt.check(self.name, name, given.get(name, opt.default))
            for name, opt in self.options.items()
        }

    def plan(self, shape: tuple[int, int], budget: int, **given) -> Plan:
        """What ``fit`` would do for an ``m x n`` weight within ``budget`` parameters with the
        ``given`` options (the rest at their defaults); an infeasible plan says why."""
        options = self.resolve_options(given)
        m, n = shape
        if budget < 1:
            reason = f"a {m} x {n} matrix at this density leaves a budget of 0 parameters"
            return Plan(False, options, 1, reason=reason, what="one stored parameter")
        try:
            return self.planner((m, n), budget, options)
        except BudgetError as exc:
            return Plan(False, options, exc.needed, reason=str(exc), what=exc.what)

    def progress_fraction(self, shape: tuple[int, int], options: Mapping[str, Any], step: int,
                          within: float = 1.0) -> float:
        """How far a run is after progress ``step`` or, from a heartbeat, when the fraction ``within``
        of that step is done (at most 1)."""
        total = max(self.steps(shape, dict(options)), 1)
        return min((step - self.first_step + within) / total, 1.0)


def pattern_option() -> Option:
    """The ``pattern`` option shared by the methods that can keep an ``n:m`` pattern."""
    return Option(
        str,
        "unstructured",
        "Sparsity pattern: 'unstructured', or 'n:m' (at most n nonzeros in every group of m consecutive "
        "inputs, e.g. 2:4 for sparse tensor cores; it fixes the density at n/m, which the budget must allow).",
        choices=PATTERNS,
    )


def inner_dim_option() -> Option:
    return Option(
        int, None, "Inner dimension r of W ~ A (m x r) B (r x n); default min(m, n).", low=1, at_most_largest_side=True
    )
