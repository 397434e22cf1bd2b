"""Every method on one matrix at the same budget, and the error of each across densities."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import pandas as pd
import plotly.graph_objects as go

from dsf_core import METHODS, BudgetError, Factorization, factorize
from dsf_core.methods._common import PATTERNS

from . import figures, method_settings
from .jobs import Report
from .messages import USER_ERRORS, plain_message
from .numbers import readable

GRAM_METHODS = tuple(name for name in METHODS if method_settings.reads_gram(name))
UNSTRUCTURED = PATTERNS[0]
SWEEP_DENSITIES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)

BELOW_MINIMUM = "below the method's minimum"


@dataclass(frozen=True)
class Row:
    """One method at one density: its errors and costs, or in ``note`` why there are none."""

    method: str
    density: float
    error: float | None = None  # relative error of the weight
    output_error: float | None = None  # output error on the calibration inputs (undamped Gram)
    n_params: int | None = None
    n_bytes: int | None = None
    flops: int | None = None
    seconds: float | None = None
    device: str = ""
    note: str = ""
    result: Factorization | None = field(default=None, repr=False, compare=False)  # to try it in the model

    @property
    def ok(self) -> bool:
        return self.error is not None


def why_not(exc: BaseException) -> str:
    """A plain-words reason a method gave no result, e.g. that the budget is below its minimum."""
    if isinstance(exc, BudgetError) and exc.budget == 0:
        return f"{BELOW_MINIMUM}: the density leaves a budget of 0 parameters"
    if isinstance(exc, BudgetError):
        return f"{BELOW_MINIMUM}: it needs {exc.needed} parameters ({exc.what}), the budget is {exc.budget}"
    return f"failed: {plain_message(exc)}"


def patterned_methods() -> list[str]:
    """The methods that can keep an ``n:m`` pattern (they have the option ``pattern``)."""
    return [name for name, spec in METHODS.items() if spec.takes_pattern]


def run_options(method: str, quick: bool, pattern: str = UNSTRUCTURED) -> dict:
    """``method``'s options: its quick preset if ``quick``, and ``pattern`` if it takes one."""
    options = method_settings.options(method, quick)
    if pattern != UNSTRUCTURED and METHODS[method].takes_pattern:
        options["pattern"] = pattern
    return options


def run_one(target, method: str, density: float, *, aware: bool, quick: bool, device, callback=None,
            pattern: str = UNSTRUCTURED) -> Row | None:
    """Factorize ``target.weight`` by ``method`` at ``density``; failures become a ``Row`` note,
    and ``None`` means ``callback`` stopped the run.

    Activation-aware runs give methods that read a Gram the damped calibration Gram; errors on
    the outputs always use the undamped one. ``pattern`` (e.g. ``"2:4"``) is given to every method
    that takes one; the others run unstructured.
    """
    gram = method_settings.fit_gram(target.gram, method, aware)
    try:
        result = factorize(
            target.weight, method, density=density, gram=gram, device=device, callback=callback,
            **run_options(method, quick, pattern),
        )
    except (*USER_ERRORS, MemoryError) as exc:
        return Row(method, density, note=why_not(exc))
    if result.info.get("stopped_early"):
        return None
    output_error = None if target.gram is None else result.error(target.matrix, target.gram)
    notes = ["data-free (the method reads no Gram)"] if aware and not method_settings.reads_gram(method) else []
    if pattern != UNSTRUCTURED:
        notes.append(f"{pattern} pattern" if METHODS[method].takes_pattern else "no n:m pattern (unstructured)")
    note = "; ".join(notes)
    return Row(
        method, density, result.error(target.matrix), output_error, result.n_params, result.n_bytes,
        result.flops, result.seconds, str(result.device), note, result,
    )


def run_all(target, density: float, methods: Sequence[str], *, aware: bool, quick: bool, device,
            report: Report | None = None, pattern: str = UNSTRUCTURED) -> list[Row]:
    """Each of ``methods`` on ``target`` at ``density``; stops early (with the rows done) when
    ``report`` returns False. Each row keeps its factorization (to try it in the model)."""
    return _run_grid(target, [density], methods, aware=aware, quick=quick, device=device, report=report,
                     pattern=pattern, keep_results=True)


def sweep(target, densities: Sequence[float], methods: Sequence[str], *, aware: bool, quick: bool, device,
          report: Report | None = None, pattern: str = UNSTRUCTURED) -> list[Row]:
    """Each of ``methods`` at each of ``densities`` (in increasing order); the rows keep no factors."""
    return _run_grid(target, sorted(densities), methods, aware=aware, quick=quick, device=device, report=report,
                     pattern=pattern, keep_results=False)


def _run_grid(target, densities, methods, *, aware, quick, device, report, pattern, keep_results) -> list[Row]:
    rows, total = [], len(densities) * len(methods)
    keep_going = (lambda *_: True) if report is None else report
    for density in densities:
        for method in methods:
            row = run_one(target, method, density, aware=aware, quick=quick, device=device,
                          callback=lambda step, objective: keep_going(), pattern=pattern)
            if row is None:
                return rows
            rows.append(row if keep_results else replace(row, result=None))
            if not keep_going(row, len(rows) / total):
                return rows
    return rows


def progress_text(rows: Sequence[Row], total: int) -> str:
    """A one-line account of a running comparison, e.g. ``2 of 7 done: dsf 0.304, svd 0.539``."""
    last = [f"{r.method} at {r.density:.2f}: " + (readable(r.error) if r.ok else "no result") for r in rows[-4:]]
    done = ", ".join(last)
    return f"{len(rows)} of {total} done" + (f"; last: {done}" if rows else "")


def best(rows: Sequence[Row], attribute: str) -> Row | None:
    """The row with the smallest ``attribute`` (``"error"`` or ``"output_error"``) among those that ran."""
    ran = [row for row in rows if getattr(row, attribute) is not None]
    return min(ran, key=lambda row: getattr(row, attribute), default=None)


def winners(rows: Sequence[Row]) -> str:
    """Which method has the lowest error of each kind, in words (Markdown)."""
    found = [
        f"lowest {what}: **{row.method}** ({readable(getattr(row, attribute))})"
        for what, attribute in [("relative error", "error"), ("output error", "output_error")]
        if (row := best(rows, attribute)) is not None
    ]
    return "Best here: " + "; ".join(found) + "."


def table(rows: Sequence[Row], *, with_output_error: bool, in_model: tuple[str, dict] | None = None) -> pd.DataFrame:
    """The comparison table: numbers where a method ran, a plain reason where it did not;
    ``in_model``: a column's name and its value per method (the model with that method's layer)."""
    columns = {
        "method": [r.method for r in rows],
        "relative error": [r.error for r in rows],
        "output error": [r.output_error for r in rows],
    }
    if in_model is not None:
        name, values = in_model
        columns[name] = [values.get(r.method) for r in rows]
    columns |= {
        "parameters": [r.n_params for r in rows],
        "bytes": [r.n_bytes for r in rows],
        "FLOPs": [r.flops for r in rows],
        "seconds": [r.seconds for r in rows],
        "device": [r.device for r in rows],
        "note": [r.note for r in rows],
    }
    if not with_output_error:
        del columns["output error"]
    return pd.DataFrame(columns)


def sweep_figure(rows: Sequence[Row], methods: Sequence[str], *, output_error: bool) -> go.Figure:
    """Error against density, one line per method (a method's densities below its minimum are absent)."""
    fig = go.Figure()
    for method in methods:
        done = [r for r in rows if r.method == method and r.ok]
        fig.add_trace(go.Scatter(
            x=[r.density for r in done],
            y=[r.output_error if output_error else r.error for r in done],
            mode="lines+markers",
            name=method,
        ))
    what = "output error on calibration inputs" if output_error else "relative error of the weight"
    return figures.layout(
        fig, f"{what} against density", height=420, xaxis_title="density (kept fraction of the weights)",
        yaxis_title=what,
    )

