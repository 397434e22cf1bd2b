"""The Learn page's live demonstrations: every method on one matrix at one budget, hierarchical
PALM4MSA recovering the Hadamard butterflies where SVD cannot, and SVD winning on low rank."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import plotly.graph_objects as go
import torch

from dsf_core import METHODS, Factorization, factorize
from dsf_core.plan import budget

from . import figures, method_settings, toys
from .messages import USER_ERRORS, plain_message

LOW_RANK_METHODS = ("svd", "dsf", "palm4msa", "tt", "magnitude")
UNDER_BUDGET = 0.95  # a method storing less than this share of its budget is noted in the table
CLOSE = 1.2  # a runner-up within this factor of the winner's error is "close"
EXACT = 1e-6  # relative errors below this count as exact (rounding level, or near it)

# For the page's tabs: (introduction, LaTeX formulas, remark) per method family.
METHOD_NOTES = {
    "DSF": (
        "**Double Sparse Factorization** (Boza & Macko, 2025): two sparse factors, `A` (m x r) and `B` (r x n).",
        [
            r"\min_{A,B}\ \|W - AB\|_F^2 \quad \text{s.t.}\quad"
            r"\operatorname{nnz}(A) + \operatorname{nnz}(B) \le \text{budget}"
        ],
        "It alternates: fix `A`, solve a sparse least-squares problem for `B` by a few ADMM steps (a ridge "
        "solve, then keep the largest entries), then the other way round. The inner size `r = min(m, n)` "
        "is not reduced, so unlike SVD the product can have full rank.",
    ),
    "Activation-aware": (
        "A layer only ever sees its inputs `X` (calibration tokens or image patches as rows). With the "
        "input Gram `G = XᵀX`, the error that matters is the layer's *output* error:",
        [r"\|(W - AB)X^\top\|_F^2 \;=\; \operatorname{tr}\big((W - AB)\,G\,(W - AB)^\top\big)"],
        "DSF, SVD, magnitude and Wanda can minimise this instead of the plain error (the *Factorize* "
        "page's activation-aware mode). A Gram from few samples is damped: `G + 0.01 mean(diag G) I`.",
    ),
    "PALM4MSA": (
        "**PALM4MSA** (Le Magoarou & Gribonval, 2016): a product of `Q` sparse factors and a scale.",
        [
            r"\min_{\lambda, S_1,\dots,S_Q}\ \|W - \lambda\, S_1 S_2 \cdots S_Q\|_F^2"
            r"\quad \text{s.t.}\quad S_j \in \mathcal{E}_j",
            r"S_j \leftarrow P_{\mathcal{E}_j}\!\Big(S_j - \tfrac{\lambda}{c}\, L^\top(\lambda L S_j R - W)R^\top\Big),"
            r"\qquad c = 1.001\,\lambda^2 \|L\|_2^2 \|R\|_2^2",
        ],
        "`L` and `R` are the products left and right of `S_j`; the projection `P` keeps `k` entries per "
        "row and/or column (`sp`, `splin`, `spcol`, `splincol`) and rescales to unit norm. The "
        "**hierarchical** variant peels one factor at a time off a residual: that is how it finds the "
        "butterfly factors of a Hadamard matrix.",
    ),
    "SVD": (
        "**Truncated SVD**: keep the top `r` singular triplets, `r (m + n)` numbers.",
        [r"W_r = U_r \Sigma_r V_r^\top, \qquad \|W - W_r\|_F = \sqrt{\textstyle\sum_{i > r} \sigma_i^2}"],
        "Eckart-Young: no matrix of rank `r` is closer to `W`. Unbeatable on low-rank matrices, "
        "helpless when the energy is spread over all singular values (Hadamard, DFT, noise).",
    ),
    "Tensor train": (
        "**Tensor train (TT-matrix)**: split `m = m_1 ⋯ m_d`, `n = n_1 ⋯ n_d` and chain small cores.",
        [
            r"W\big[(i_1,\dots,i_d),(j_1,\dots,j_d)\big] = G_1[i_1, j_1]\, G_2[i_2, j_2] \cdots G_d[i_d, j_d],"
            r"\qquad G_k[i_k, j_k] \in \mathbb{R}^{r_{k-1} \times r_k}"
        ],
        "Cores hold `r_{k-1} m_k n_k r_k` numbers. A Kronecker product such as a Hadamard matrix "
        "(`H_{2n} = H_2 ⊗ H_n`) has TT rank 1: there TT is exact with very few numbers.",
    ),
    "Pruning": (
        "**Pruning**: one sparse matrix, the kept weights unchanged.",
        [
            r"\text{magnitude: keep the largest } |W_{ij}| \qquad "
            r"\text{Wanda: in each row, keep the largest } |W_{ij}|\,\|X_j\|_2"
        ],
        "`||X_j||_2 = sqrt(G_jj)`: Wanda favours weights on inputs that are large.",
    ),
}


@dataclass(frozen=True)
class Comparison:
    """One row per method that ran (``method``, ``relative error``, ``parameters``, ``density``,
    ``seconds``, ``note``); ``stopped`` when Stop ended it before ``n_methods`` rows."""

    rows: list
    density: float
    device: str
    n_methods: int
    stopped: bool

    @property
    def impossible(self) -> list[str]:
        """The methods whose plan says the budget is below their minimum."""
        return [row["method"] for row in self.rows if row["possible"] is False]


def run_method(matrix: torch.Tensor, method: str, density: float, device, keep_going: Callable[[], bool],
               options: dict | None = None) -> dict:
    """One table row: ``method`` with its quick options (overlaid with ``options``) on ``matrix``
    at ``density``, or why it could not run (``possible`` False when its plan says the budget is
    below its minimum)."""
    row = {"method": method, "relative error": math.nan, "parameters": None, "density": None, "seconds": None}
    options = {**method_settings.options(method, quick=True), **(options or {})}
    plan = METHODS[method].plan(tuple(matrix.shape), budget(tuple(matrix.shape), density), **options)
    if not plan.feasible:
        return {**row, "note": f"not possible: {plan.reason}", "possible": False}
    row["possible"] = True
    try:
        result = factorize(
            matrix,
            method,
            density=density,
            device=device,
            callback=lambda step, objective: keep_going(),
            **options,
        )
    except (*USER_ERRORS, MemoryError) as exc:
        return {**row, "note": f"failed: {plain_message(exc)}"}
    allowed = result.info["budget"]
    notes = ["stopped early"] if result.info["stopped_early"] else []
    if result.n_params < UNDER_BUDGET * allowed:
        notes.append(f"stores {result.n_params / allowed:.0%} of its budget of {allowed:,}")
    return {
        **row,
        "relative error": result.error(matrix),
        "parameters": result.n_params,
        "density": result.density,
        "seconds": result.seconds,
        "note": "; ".join(notes),
    }


def verdict(rows: list, built_for: tuple[str, ...] = ()) -> str:
    """The sentence on who won, computed from the ``rows`` that ran: the winner (or the methods
    that are exact, as equals), how far ahead of the next method, and where the methods
    ``built_for`` the toy's structure came."""
    ran = sorted((row for row in rows if not math.isnan(row["relative error"])), key=lambda row: row["relative error"])
    if not ran:
        return "No method could run at this budget."
    exact = [row for row in ran if row["relative error"] < EXACT]
    ahead = exact if len(exact) > 1 else ran[:1]
    if len(ahead) > 1:
        names = " and ".join(f"**{row['method']}** ({row['relative error']:.2g})" for row in ahead)
        sentence = f"Here {names} {'both' if len(ahead) == 2 else 'all'} store it exactly (relative error below {EXACT:g})"
    else:
        sentence = f"Here **{ran[0]['method']}** comes out ahead, with relative error {ran[0]['relative error']:.3g}"
    if len(ran) > len(ahead):
        best, second = ahead[-1], ran[len(ahead)]
        ratio = second["relative error"] / max(best["relative error"], 1e-300)
        if ratio < CLOSE:
            sentence += f", close to **{second['method']}** ({second['relative error']:.3g})"
        else:
            times = f"{ratio:.3g} times" if ratio < 1e6 else "orders of magnitude"
            sentence += f", {times} lower than the next, **{second['method']}** ({second['relative error']:.3g})"
    sentence += "."
    order = [row["method"] for row in ran]
    for method in built_for:
        if method in order and order.index(method) >= len(ahead):
            place = order.index(method) + 1
            sentence += f" **{method}**, which can express this structure, comes {_ordinal(place)} ({ran[place - 1]['relative error']:.3g})."
    return sentence


def _ordinal(place: int) -> str:
    return {1: "first", 2: "second", 3: "third"}.get(place, f"{place}th")


def compare(
    matrix: torch.Tensor,
    density: float,
    *,
    methods=tuple(METHODS),
    device=None,
    method_options: dict | None = None,
    report: Callable = lambda *a, **k: True,
) -> Comparison:
    """Run ``methods`` one after the other at the same ``density``, each with its quick options
    and its entry of ``method_options`` (a toy's :attr:`~toys.Toy.method_options`).
    ``report(row, fraction)`` (a job's) gets each row; once it returns False the comparison ends
    with the rows so far."""
    device = torch.device(device) if device is not None else matrix.device
    method_options = method_options or {}
    rows = []
    for method in methods:
        rows.append(run_method(matrix, method, density, device, report, method_options.get(method)))
        if not report(rows[-1], len(rows) / len(methods)):
            break
    stopped = len(rows) < len(methods) or not report()
    return Comparison(rows, density, device.type, len(methods), stopped)


@dataclass(frozen=True)
class HadamardDemo:
    """Hierarchical PALM4MSA's butterflies of ``H_size`` and SVD at the parameters they store;
    ``stopped`` when Stop ended the butterfly search early."""

    size: int
    hierarchical: Factorization
    svd: Factorization
    hierarchical_error: float
    svd_error: float
    stopped: bool


def butterfly_density(size: int) -> float:
    """The budget (as a density) that the ``log2(size)`` butterflies of ``H_size`` store."""
    return toys.butterfly_params(size) / size**2


def hadamard_demo(size: int, device=None, report: Callable = lambda *a, **k: True) -> HadamardDemo:
    """Factor ``H_size`` by hierarchical PALM4MSA (``log2(size)`` factors, splincol, ``k = 2``), then
    SVD at the ``2 * size * log2(size)`` parameters that the butterflies store."""
    if size < 4:
        raise ValueError(f"The Hadamard demo needs a size of at least 4; got {size}.")
    H = toys.hadamard(size)
    butterflies = factorize(
        H,
        "hierarchical",
        density=butterfly_density(size),
        **toys.butterfly_options(size),
        device=device,
        callback=lambda step, objective: report(None, 0.5),
    )
    svd = factorize(H, "svd", density=toys.butterfly_params(size) / size**2, device=device)
    report("svd", 1.0)
    stopped = butterflies.info["stopped_early"]
    return HadamardDemo(size, butterflies, svd, butterflies.error(H), svd.error(H), stopped)


def low_rank_demo(size: int, rank: int, noise: float, seed: int = 0, device=None, report=lambda *a, **k: True):
    """Every method of :data:`LOW_RANK_METHODS` on a rank-``rank`` toy plus noise, at exactly the
    budget of truncated SVD at that rank."""
    toy = toys.make(toys.spec_for("low_rank", size, seed, rank=rank, noise=noise))
    return compare(toy.matrix, toy.natural_density, methods=LOW_RANK_METHODS, device=device, report=report)


def error_bars(rows: list, title: str) -> go.Figure:
    """Relative error per method (log scale; methods that could not run are left out)."""
    ran = [row for row in rows if not math.isnan(row["relative error"])]
    errors = [max(row["relative error"], 1e-16) for row in ran]
    fig = go.Figure(
        go.Bar(
            x=[row["method"] for row in ran],
            y=errors,
            text=[f"{e:.2g}" for e in errors],
            textposition="outside",
        )
    )
    return figures.layout(fig, title, height=340, yaxis_title="relative error (log)", yaxis_type="log")
