"""The one list of methods and their options, read by the API, the app, the CLI and the tests."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

from .methods import dsf, palm4msa, pruning, sparsegpt, svd, tt
from .methods._common import PATTERNS


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
class MethodSpec:
    """A method: what it does, its options, whether it reads an input Gram matrix, its solver."""

    name: str
    description: str
    uses_gram: str  # "no", "optional" (activation-aware when given)
    options: Mapping[str, Option]
    fit: Callable = field(repr=False)
    # Named option sets, e.g. "quick": about 1 s on a 512 x 512 matrix on 2 CPU cores, for live
    # previews; the defaults are the papers' quality settings.
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    takes_row_weights: bool = True  # factorize(row_weights=) can move its budget between rows
    # Estimated working memory in elements for an m x n weight, its options and whether a Gram is given.
    work_elements: Callable[[int, int, dict, bool], int] = field(
        default=lambda m, n, options, gram: 4 * m * n + (3 * n * n if gram else 0), repr=False
    )

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


PROJECTIONS = ("sp", "splin", "spcol", "splincol")

_INNER = Option(
    int, None, "Inner dimension r of W ~ A (m x r) B (r x n); default min(m, n).", low=1, at_most_largest_side=True
)
# Upper bounds of step counts: far above any useful setting, low enough that a typo cannot run for days.
MAX_ROUNDS, MAX_STEPS = 10_000, 100_000


def _dsf_work(m, n, options, gram):
    r = options["inner_dim"] or min(m, n)
    return 4 * (m * r + r * n) + 4 * r * r + 3 * m * n + (3 * n * n if gram else 0)


def _palm_work(m, n, options, gram):
    side = max(m, n, options.get("inner_dim") or 0)
    return (options["n_factors"] + 4) * side * side
_PALM_K = Option(
    int,
    None,
    "Nonzeros per row/column of each factor (for 'sp': k times the factor's row count in all); "
    "default: the largest k that fits the budget.",
    low=1,
    at_most_largest_side=True,
)
_PROJECTION = Option(str, "splincol", "Sparsity constraint of each factor.", choices=PROJECTIONS)
_PATTERN = Option(
    str,
    "unstructured",
    "Sparsity pattern: 'unstructured', or 'n:m' (at most n nonzeros in every group of m consecutive "
    "inputs, e.g. 2:4 for sparse tensor cores; it fixes the density at n/m, which the budget must allow).",
    choices=PATTERNS,
)

_SPECS = [
    MethodSpec(
        "dsf",
        "Double Sparse Factorization: W ~ A B with both factors sparse (alternating ADMM).",
        "optional",
        {
            "inner_dim": _INNER,
            "split": Option(
                float,
                None,
                "Fraction of the budget given to the factor on the smaller side of W; default: "
                "the larger of the reference's share (that factor at density 0.16, or 0.25 if W "
                "is not square) and the share giving both factors equal density, at most 0.5.",
                low=0.0,
                high=1.0,
                low_open=True,
                high_open=True,
            ),
            "n_rounds": Option(
                int,
                34,
                "Outer alternation rounds (each solves A, then B); the warm-start schedule "
                "spans them.",
                low=1,
                high=MAX_ROUNDS,
            ),
            "admm_steps": Option(int, 5, "ADMM steps per sub-problem.", low=1, high=1000),
            "tol": Option(
                float,
                1e-3,
                "Stop once two rounds in a row improve the best relative error by less than this "
                "fraction (checked from the middle of the schedule on; the best round's factors are "
                "kept); 0 runs every round.",
                low=0.0,
            ),
            "refit_steps": Option(
                int, 20, "ADMM steps of the final refit of A against the full objective (whole Gram, or G = I data-free); 0: no refit.",
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
            "pattern": _PATTERN,
            "split_trials": Option(
                int,
                0,
                "With split on auto: rounds of a short run (whole schedule, then the refit) for each "
                "of two splits, the default rule's and the reference's; the full run takes the one "
                "with the lower error on the full objective. 0: the default rule alone.",
                low=0,
                high=MAX_ROUNDS,
            ),
        },
        dsf.fit,
        presets={"quick": {"n_rounds": 18}},
        work_elements=_dsf_work,
    ),
    MethodSpec(
        "palm4msa",
        "PALM4MSA: W ~ lambda S_1 ... S_Q with each factor sparse (proximal alternating "
        "linearised minimisation).",
        "no",
        {
            "n_factors": Option(int, 2, "Number of sparse factors Q.", low=2, high=64),
            "projection": _PROJECTION,
            "k": _PALM_K,
            "factor_density": Option(
                float,
                None,
                "Density of each factor (used with projection 'sp' instead of k).",
                low=0.0,
                high=1.0,
                low_open=True,
            ),
            "inner_dim": _INNER,
            "n_iter": Option(int, 300, "Maximum number of sweeps over the factors.", low=1, high=MAX_STEPS),
            "tol": Option(float, 1e-6, "Stop when the relative change of the error is below this.", low=0.0),
        },
        palm4msa.fit,
        presets={"quick": {"n_iter": 60}},
        work_elements=_palm_work,
    ),
    MethodSpec(
        "hierarchical",
        "Hierarchical PALM4MSA: peel one sparse factor at a time, each split followed by a "
        "global PALM4MSA pass (recovers butterfly factorizations such as Hadamard).",
        "no",
        {
            "n_factors": Option(int, 2, "Number of sparse factors Q.", low=2, high=64),
            "projection": _PROJECTION,
            "k": _PALM_K,
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
        palm4msa.fit_hierarchical,
        presets={"quick": {"n_iter": 30}},
        work_elements=_palm_work,
    ),
    MethodSpec(
        "svd",
        "Truncated SVD: the best rank-r approximation (activation-aware with a Gram matrix).",
        "optional",
        {"rank": Option(int, None, "Rank r; default: the largest r with r (m + n) <= budget.", low=1, at_most_largest_side=True)},
        svd.fit,
    ),
    MethodSpec(
        "tt",
        "Tensor-train matrix (TT-matrix) via tensorly, ranks chosen to fit the budget.",
        "no",
        {
            "ranks": Option(
                int,
                None,
                "Internal TT rank (same for every bond, clamped to each bond's maximal rank); "
                "default: the largest that fits the budget.",
                low=1,
                at_most_largest_side=True,
            ),
            "n_cores": Option(
                int,
                None,
                "Number of TT cores d; m and n are split into d balanced factors (a size with too "
                "few prime factors gets modes of size 1); default 2.",
                low=2,
                high=64,
            ),
        },
        tt.fit,
        takes_row_weights=False,
    ),
    MethodSpec(
        "magnitude",
        "Magnitude pruning: keep the largest |W_ij| (scaled by sqrt(diag G) with a Gram matrix).",
        "optional",
        {"pattern": _PATTERN},
        pruning.fit_magnitude,
    ),
    MethodSpec(
        "wanda",
        "Wanda: in each output row keep the largest |W_ij| * sqrt(G_jj); no weight update "
        "(per-row magnitude without a Gram matrix).",
        "optional",
        {"pattern": _PATTERN},
        pruning.fit_wanda,
        takes_row_weights=False,  # a fixed share of every row: row weights cannot move it
    ),
    MethodSpec(
        "sparsegpt",
        "SparseGPT: prune column block by column block, updating the weights not yet pruned to "
        "compensate (optimal brain surgeon updates with the input Gram; the identity data-free).",
        "optional",
        {
            "pattern": _PATTERN,
            "damp": Option(
                float, 0.01, "Added to the Gram's diagonal, times its mean diagonal (as the paper's code).", low=0.0
            ),
            "blocksize": Option(
                int, 128, "Columns per block: the mask is chosen per block (rounded up to a multiple of m for n:m).",
                low=1, high=MAX_STEPS,
            ),
        },
        sparsegpt.fit,
    ),
]

METHODS: Mapping[str, MethodSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})


def get_method(name) -> MethodSpec:
    if not isinstance(name, str):
        raise TypeError(f"method must be a str; got {type(name).__name__}.")
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; expected one of {list(METHODS)}.")
    return METHODS[name]
