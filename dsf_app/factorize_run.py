"""What the Factorize page computes, without Streamlit: options from widget values, one run with its
summary, the key of its cached result and the rows of the result table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

import dsf_core
from dsf_core import METHODS, Factorization, Option
from dsf_core.plan import automatic_options

from . import job_results, layer_stats, method_settings
from .numbers import readable


# --- options -----------------------------------------------------------------------------------


def automatic_values(method: str, shape: tuple[int, int], density: float) -> dict:
    """What ``method`` picks itself here for its automatic options (``{}`` when the budget is below
    its minimum): the value to offer when the user switches one off "auto"."""
    try:
        return automatic_options(method, shape, density)
    except ValueError:
        return {}


def start_value(option: Option):
    """A value to offer for an automatic option when the method's own pick is unknown."""
    if option.kind is float and option.low is not None and option.high is not None:
        return (option.low + option.high) / 2
    if option.low is None:
        return option.kind(0)
    return option.kind(option.low + (1 if option.kind is int and option.low_open else 0))


def resolve_options(method: str, values: Mapping[str, Any]) -> dict:
    """The options ``factorize`` will use (None: the method's automatic choice), each checked;
    raises ``ValueError``/``TypeError`` in plain words when one is out of range."""
    return METHODS[method].resolve_options(dict(values))


def progress_fraction(method: str, shape: tuple[int, int], options: Mapping[str, Any], step: int,
                      within: float = 1.0) -> float:
    """How far a run of ``method`` on an ``m x n`` matrix is after progress ``step`` (or ``within`` it)."""
    return METHODS[method].progress_fraction(shape, options, step, within)


# --- one run -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Outcome:
    """A finished (or stopped) factorization and what the page shows of it."""

    result: Factorization
    relative_error: float
    output_error: float | None  # on the calibration inputs (undamped Gram), when there is one
    stopped: bool
    approximation: torch.Tensor  # m x n, on the CPU
    singular_values: torch.Tensor  # of the approximation
    original_values: torch.Tensor  # of the original matrix
    rank: int  # numerical rank of the approximation

    @property
    def steps(self) -> int:
        return len(self.result.history)

    @property
    def memory_bytes(self) -> int:
        """Bytes its tensors hold: what keeping it in the session's cache costs."""
        tensors = [*self.result.factors, self.approximation, self.singular_values, self.original_values]
        return sum(t.numel() * t.element_size() for t in tensors)


CACHE_BYTES = 1 << 30  # the Factorize page keeps at most about 1 GiB of results per session


def cache_limit(outcome: Outcome) -> int:
    """How many results like ``outcome`` the page's cache may keep (at least the newest)."""
    return max(1, min(job_results.LIMIT, CACHE_BYTES // max(outcome.memory_bytes, 1)))


def summarize(result: Factorization, matrix: torch.Tensor, gram: torch.Tensor | None) -> Outcome:
    """Errors, the approximation and both spectra of ``result`` against ``matrix`` (``gram``: the
    undamped calibration Gram, or None)."""
    approximation = result.to_matrix().detach().float().cpu()
    singular_values = layer_stats.singular_values(approximation)
    return Outcome(
        result=result,
        relative_error=result.error(matrix),
        output_error=None if gram is None else result.error(matrix, gram),
        stopped=bool(result.info.get("stopped_early")),
        approximation=approximation,
        singular_values=singular_values,
        original_values=layer_stats.singular_values(matrix),
        rank=layer_stats.numerical_rank(singular_values, max(approximation.shape), result.factors[0].dtype),
    )


def run(
    weight: torch.Tensor,
    matrix: torch.Tensor,
    gram: torch.Tensor | None,
    method: str,
    options: Mapping[str, Any],
    *,
    density: float,
    aware: bool,
    device: torch.device,
    callback: Callable[[int, float], bool] | None = None,
    heartbeat: Callable[[int, float], bool] | None = None,
    on_stop: Callable[[int], None] | None = None,
) -> Outcome:
    """Factorize ``weight`` (activation-aware with the damped ``gram`` if ``aware``) and summarize
    it against ``matrix`` and the undamped ``gram``; ``callback`` and ``heartbeat`` as ``factorize``'s.
    ``on_stop(steps)`` is told when a run stopped early, before the summary (singular values) is computed."""
    fit_gram = method_settings.fit_gram(gram, method, aware)
    result = dsf_core.factorize(
        weight, method, density=density, gram=fit_gram, device=device, callback=callback, heartbeat=heartbeat,
        **options,
    )
    if on_stop is not None and result.info.get("stopped_early"):
        on_stop(len(result.history))
    return summarize(result, matrix, gram)


# --- the cache key -----------------------------------------------------------------------------


def run_key(target_key: tuple, method: str, options: Mapping[str, Any], density: float, aware: bool, device) -> tuple:
    """Everything that determines a run's result (the seed is always 0)."""
    return (target_key, method, tuple(sorted(options.items())), float(density), bool(aware), str(device))


# --- what the page shows -----------------------------------------------------------------------


def dense_sizes(shape: tuple[int, int], element_size: int = 4) -> dict:
    """Parameters, bytes and FLOPs per input row of the dense ``m x n`` matrix."""
    m, n = shape
    return {"n_params": m * n, "n_bytes": m * n * element_size, "flops": 2 * m * n}


def summary_rows(outcome: Outcome) -> list[dict]:
    """The result table: one row per quantity, with the dense matrix's value beside it."""
    result = outcome.result
    dense = dense_sizes(result.shape, result.factors[0].element_size())
    # the app holds weights in float32: round-off at that precision
    original_rank = layer_stats.numerical_rank(outcome.original_values, max(result.shape), torch.float32)
    rows = [
        ("Relative error", readable(outcome.relative_error), "0"),
        (
            "Output error (calibration inputs)",
            readable(outcome.output_error),
            "0",
        ),
        ("Parameters", f"{result.n_params:,} ({result.n_params / dense['n_params']:.1%})", f"{dense['n_params']:,}"),
        ("Bytes (CSR for sparse factors)", f"{result.n_bytes:,}", f"{dense['n_bytes']:,}"),
        ("FLOPs per input row", f"{result.flops:,}", f"{dense['flops']:,}"),
        ("Rank of the product", f"{outcome.rank}", f"{original_rank}"),
        ("Steps run", f"{outcome.steps}" + (" (stopped)" if outcome.stopped else ""), "-"),
        ("Seconds", f"{result.seconds:.3f}", "-"),
        ("Device", str(result.device), "-"),
    ]
    return [{"quantity": q, "factorization": v, "dense matrix": d} for q, v, d in rows]


def history_row(key: tuple, outcome: Outcome) -> dict:
    """One run of the page's history: what it was and what it gave."""
    _, method, options, density, aware, device = key
    changed = {name: value for name, value in options if value != METHODS[method].options[name].default}
    return {
        "run": f"{method} at {density:.2f}" + (", aware" if aware else "") + (f" {changed}" if changed else ""),
        "relative error": outcome.relative_error,
        "output error": outcome.output_error,
        "parameters": outcome.result.n_params,
        "steps": outcome.steps,
        "stopped": outcome.stopped,
        "seconds": round(outcome.result.seconds, 3),
        "device": device,
    }


def factor_label(result: Factorization, index: int) -> str:
    """A factor's name as its method calls it (A/B, S_1..S_Q, G_1..G_d, the pruned W)."""
    return METHODS[result.method].factor_names(len(result.factors))[index]


def core_matrix(core: torch.Tensor) -> torch.Tensor:
    """A TT core ``(r_prev, m_k, n_k, r_next)`` unfolded to ``(r_prev * m_k) x (n_k * r_next)``."""
    r_prev, m_k, n_k, r_next = core.shape
    return core.detach().float().cpu().reshape(r_prev * m_k, n_k * r_next)
