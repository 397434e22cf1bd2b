"""Compress a whole model (or some of its layers), measure what it costs in accuracy and what it
saves in stored values and bytes, and say how to do the same from the command line."""

from __future__ import annotations

import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import pandas as pd
import plotly.graph_objects as go

from dsf_core import METHODS, BudgetError
from dsf_core.checkpoint import save_compressed
from dsf_core.compress import LayerReport, compress_model, parse_layer_densities
from dsf_core.layers import select_layers
from dsf_core.models import BUILTIN_MODELS, ModelBundle
from dsf_core.stats import dense_file_bytes, latency_seconds, stored_values

from . import figures, method_settings
from .comparison import why_not
from .jobs import Report
from .scratch import scratch_folder

MAX_RUNS = 12  # runs kept per model; older ones (and their checkpoint files) are dropped
CLI_OUT = "compressed.safetensors"


@dataclass(frozen=True)
class Settings:
    """Everything that determines one compression run."""

    method: str
    density: float
    layers: tuple[str, ...] = ()  # layer names; empty: every factorizable layer
    calibration: int = 64  # calibration samples; 0: data-free
    sequential: bool = False  # Grams collected on the partly compressed model (slower)
    output_weighting: bool = False  # rows weighted by how much they move the model's output
    quick: bool = True  # the method's "quick" preset
    layer_densities: tuple[tuple[str, float], ...] = ()  # (layer, its own density); 1 keeps it dense
    keep_infeasible: bool = True  # a layer whose budget is too small for the method stays dense

    @property
    def densities(self) -> dict[str, float]:
        return dict(self.layer_densities)

    @property
    def pattern(self) -> str | None:
        """The ``layers`` argument of ``compress_model`` (``None``: all)."""
        return ",".join(self.layers) or None

    @property
    def preset(self) -> str | None:
        return "quick" if self.quick and "quick" in METHODS[self.method].presets else None

    @property
    def label(self) -> str:
        own = f" ({len(self.layer_densities)} layers with their own)" if self.layer_densities else ""
        return f"{self.method} at density {self.density:.2f}{own}"


@dataclass
class Run:
    """One finished (or stopped) compression run; the compressed model itself is not kept, its
    checkpoint file is."""

    settings: Settings
    metrics: dict  # the compressed model's evaluation
    metric: float  # its headline metric
    stored_values: int  # numbers the whole compressed model stores
    file_bytes: int  # size of its compressed checkpoint
    layers: list[LayerReport]  # the layers compressed, in order
    n_layers: int  # the layers chosen (more than len(layers) when stopped)
    seconds: float
    checkpoint: str  # path of the compressed checkpoint
    number: int = 0  # set when kept, to name the run on the page
    kept_dense: dict = field(default_factory=dict)  # layer -> why it stayed dense
    latency_ms: float | None = None  # median forward time of the compressed model on LATENCY_BATCH samples

    @property
    def stopped(self) -> bool:
        return len(self.layers) + len(self.kept_dense) < self.n_layers

    @property
    def name(self) -> str:
        return f"#{self.number} {self.settings.label}" + (" (partial)" if self.stopped else "")


@dataclass
class Outcome:
    """What a job of several runs produced: the runs, and why the others failed."""

    runs: list[Run] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Reference:
    """The dense model: its metric, stored values and file size."""

    metric: float
    stored_values: int
    file_bytes: int
    latency_ms: float | None = None


LATENCY_BATCH, LATENCY_REPEATS = 8, 10


def latency_ms(bundle: ModelBundle, model) -> float:
    """Median milliseconds of one forward pass of ``model`` on ``LATENCY_BATCH`` calibration samples
    (after a warm-up), on the CPU thread count of this server."""
    batch = bundle.calibration_inputs(LATENCY_BATCH)[0]
    return 1000 * latency_seconds(model, batch, LATENCY_REPEATS, forward=bundle.forward)


def dense_reference(bundle: ModelBundle, metric: float) -> Reference:
    return Reference(metric, stored_values(bundle.model), dense_file_bytes(bundle.model), latency_ms(bundle, bundle.model))


class RunFailed(ValueError):
    """A run that gave no model, with the reason in plain words."""


def compress(bundle: ModelBundle, settings: Settings, model_spec: str, folder: str,
             report: Report | None = None) -> Run:
    """Compress a copy of ``bundle.model`` as ``settings`` say (per-layer progress through
    ``report``, which stops the run by returning False), evaluate it and save its checkpoint in
    ``folder``. Raises :class:`RunFailed` saying why (and for a budget too small, which layer)."""

    def callback(count, total, layer: LayerReport | None):
        return True if report is None else report(layer, count / total)

    try:
        chosen = select_layers(bundle.model, settings.pattern)
        result = compress_model(
            bundle, settings.method, settings.density, layers=settings.pattern, calibration=settings.calibration,
            sequential=settings.sequential, output_weighting=settings.output_weighting, evaluate=False, callback=callback,
            layer_densities=settings.densities, keep_infeasible=settings.keep_infeasible,
            **method_settings.options(settings.method, settings.quick),
        )
        metrics = {k: float(v) for k, v in bundle.evaluate(result.model).items()}
        latency = latency_ms(bundle, result.model)
        handle, path = tempfile.mkstemp(suffix=".safetensors", dir=folder)
        os.close(handle)
        file_bytes = save_compressed(path, result, model_spec, overwrite=True)  # our own temporary file
    except Exception as exc:  # one failed run is reported in words; a sweep goes on with the next
        reason = why_not(exc)
        if isinstance(exc, BudgetError) and exc.layer:  # a budget is per layer
            reason = f"layer {exc.layer}: {reason}"
        raise RunFailed(f"{settings.label}, {reason}") from exc
    return Run(
        settings, metrics, metrics[bundle.metric_name], stored_values(result.model), file_bytes,
        list(result.layers), len(chosen), result.seconds, path, kept_dense=dict(result.kept_dense), latency_ms=latency,
    )


def layer_densities(layers, keep_below: int, overrides: str) -> tuple[tuple[str, float], ...]:
    """The per-layer densities of a run: the ``PATTERN=DENSITY`` lines of ``overrides`` first (the
    first match wins), then density 1 (kept dense) for each layer of fewer than ``keep_below``
    parameters. A ValueError names a bad line."""
    given = parse_layer_densities([line for line in overrides.splitlines() if line.strip()], "per-layer density ")
    small = {layer.name: 1.0 for layer in layers if layer.n_params < keep_below}
    return tuple(given.items()) + tuple(small.items())


def sweep(bundle: ModelBundle, runs: Sequence[Settings], model_spec: str, folder: str,
          report: Report | None = None) -> Outcome:
    """One :func:`compress` per entry of ``runs``, in order; a failed run is noted and skipped,
    Stop ends the sweep (keeping the part of the current run that was done)."""
    outcome = Outcome()
    for index, settings in enumerate(runs):
        try:
            outcome.runs.append(compress(bundle, settings, model_spec, folder, _share(report, index, len(runs))))
        except RunFailed as exc:
            outcome.failures.append(str(exc))
        if report is not None and not report(None, (index + 1) / len(runs)):
            break
    return outcome


def _share(report: Report | None, index: int, count: int) -> Report | None:
    """``report`` for run ``index`` of ``count``: its fraction mapped into that run's share."""
    if report is None:
        return None
    return lambda item=None, fraction=None: report(item, None if fraction is None else (index + fraction) / count)


def grid(base: Settings, methods: Sequence[str], densities: Sequence[float]) -> list[Settings]:
    """``base`` with each method at each density (densities in increasing order)."""
    return [replace(base, method=m, density=d) for m in methods for d in sorted(densities)]


def keep(store: list[Run], new: Sequence[Run], limit: int = MAX_RUNS) -> None:
    """Number ``new`` runs and add them to ``store``; drop the oldest beyond ``limit`` with their files."""
    number = max((run.number for run in store), default=0)
    for run in new:
        number += 1
        run.number = number
        store.append(run)
    while len(store) > limit:
        Path(store.pop(0).checkpoint).unlink(missing_ok=True)


def checkpoint_folder() -> str:
    """A fresh folder for one session's compressed checkpoints, in this server's private folder
    (removed when the server exits)."""
    return tempfile.mkdtemp(prefix="tradeoffs-", dir=scratch_folder("tradeoffs"))


def download_name(run: Run, model_label: str) -> str:
    """A file name for the run's checkpoint, e.g. ``digits-cnn-dsf-d0.30.safetensors`` (``-partial``
    before the suffix for a stopped run)."""
    stem = re.sub(r"[^A-Za-z0-9_.]+", "-", Path(model_label).stem).strip("-") or "model"
    partial = "-partial" if run.stopped else ""
    return f"{stem}-{run.settings.method}-d{run.settings.density:.2f}{partial}.safetensors"


# --- the same run from a terminal ---------------------------------------------------------------


def python_command() -> str:
    """The Python this server runs (the project's virtual environment): relative to the working
    directory when inside it, e.g. ``.venv/bin/python``, so that the command runs as shown."""
    executable = Path(sys.executable)
    try:
        return shlex.quote(str(executable.relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(executable))


def cli_args(settings: Settings, model_spec: str, out: str = CLI_OUT) -> list[str]:
    """The arguments of ``python -m dsf_core`` that run ``settings``; the calibration settings are
    always written, as the app's defaults differ from the CLI's (which follow the model's)."""
    args = ["compress", model_spec, "--method", settings.method, "--density", format(settings.density, "g")]
    if settings.layers:
        args += ["--layers", settings.pattern]
    for layer, density in settings.layer_densities:
        args += ["--layer-density", f"{layer}={density:g}"]
    if settings.keep_infeasible:
        args.append("--keep-infeasible")
    args += ["--calibration", str(settings.calibration)]
    args.append("--sequential" if settings.sequential else "--independent")
    args.append("--output-weighting" if settings.output_weighting else "--no-output-weighting")
    if settings.preset:
        args += ["--preset", settings.preset]
    return args + ["--out", out]


def cli_command(settings: Settings, model_spec: str, out: str = CLI_OUT) -> str:
    return f"{python_command()} -m dsf_core " + shlex.join(cli_args(settings, model_spec, out))


def cli_evaluate_command(model_spec: str, out: str = CLI_OUT) -> str:
    """The command that evaluates ``out``: a checkpoint names only a built-in model, so any other
    base model is given with ``--model``."""
    words = ["evaluate", out] + ([] if model_spec in BUILTIN_MODELS else ["--model", model_spec])
    return f"{python_command()} -m dsf_core " + shlex.join(words)


# --- tables and figures -----------------------------------------------------------------------


def runs_table(runs: Sequence[Run], metric_name: str) -> pd.DataFrame:
    """One row per run: its settings, its metric, what it stores, how it went."""
    return pd.DataFrame({
        "run": [run.number for run in runs],
        "method": [run.settings.method for run in runs],
        "density": [run.settings.density for run in runs],
        "layers": [_layers_text(run) for run in runs],
        "calibration": [_calibration_text(run.settings) for run in runs],
        "preset": [run.settings.preset or "defaults" for run in runs],
        metric_name: [run.metric for run in runs],
        "stored values": [run.stored_values for run in runs],
        "checkpoint bytes": [run.file_bytes for run in runs],
        f"latency ms (batch {LATENCY_BATCH})": [run.latency_ms for run in runs],
        "seconds": [round(run.seconds, 2) for run in runs],
        "status": [_status(run) for run in runs],
    })


def _layers_text(run: Run) -> str:
    chosen = ", ".join(run.settings.layers) or "all"
    dense = f"; {len(run.kept_dense)} kept dense" if run.kept_dense else ""
    if run.stopped:
        return f"partial: {len(run.layers) + len(run.kept_dense)} of {run.n_layers} ({chosen}){dense}"
    return chosen + dense


def _calibration_text(settings: Settings) -> str:
    if settings.calibration == 0 or not method_settings.reads_gram(settings.method):
        return "data-free"
    text = f"{settings.calibration} samples, " + ("sequential" if settings.sequential else "independent")
    return text + (", row weights" if settings.output_weighting else "")


def _status(run: Run) -> str:
    if run.stopped:
        return f"stopped after {len(run.layers) + len(run.kept_dense)} of {run.n_layers} layers"
    return f"{run.n_layers} layers"


AXES = {"stored_values": "stored values (parameters)", "file_bytes": "checkpoint bytes"}
# metrics that cannot leave a range: a cosine lies in [-1, 1], a share of agreeing answers in [0, 1]
METRIC_BOUNDS = {"mean_cosine": (-1.0, 1.0), "ranking_agreement": (-1.0, 1.0), "accuracy": (0.0, 1.0),
                 "top1_agreement": (0.0, 1.0), "next_token_agreement": (0.0, 1.0)}


def metric_bounds(metric_name: str, values: Sequence[float]) -> tuple[float, float] | None:
    """The range the axis of ``metric_name`` may span: its bounds, from 0 rather than -1 when no
    value is negative (``None``: the metric is unbounded, e.g. perplexity)."""
    if metric_name not in METRIC_BOUNDS:
        return None
    low, high = METRIC_BOUNDS[metric_name]
    return (0.0 if low < 0 and min(values, default=0.0) >= 0 else low), high


def metric_figure(runs: Sequence[Run], dense: Reference, *, x: str, metric_name: str,
                  higher_is_better: bool) -> go.Figure:
    """The model metric against ``x`` (``"stored_values"`` or ``"file_bytes"``), one line per
    method over its complete runs, with the dense model as a star and a dashed line."""
    fig = go.Figure()
    complete = [run for run in runs if not run.stopped]
    for method in dict.fromkeys(run.settings.method for run in complete):
        mine = sorted((run for run in complete if run.settings.method == method), key=lambda r: getattr(r, x))
        fig.add_trace(go.Scatter(
            x=[getattr(run, x) for run in mine], y=[run.metric for run in mine], mode="lines+markers", name=method,
            text=[run.name for run in mine], hovertemplate="%{text}<br>%{x:,}<br>%{y:.4g}<extra></extra>",
        ))
    fig.add_trace(go.Scatter(
        x=[getattr(dense, x)], y=[dense.metric], mode="markers", name="dense model",
        marker=dict(symbol="star", size=14, color="black"),
    ))
    fig.add_hline(y=dense.metric, line_dash="dash", line_color="gray")
    better = "higher" if higher_is_better else "lower"
    title = f"{metric_name} against {AXES[x]} ({better} is better)"
    fig.update_xaxes(tickformat="~s")  # 22.7M, not 22.713215M
    bounds = metric_bounds(metric_name, [dense.metric, *(run.metric for run in complete)])
    if bounds is not None:  # autorange stays inside them (a lone point would span 0 to 2)
        fig.update_yaxes(autorangeoptions=dict(minallowed=bounds[0], maxallowed=bounds[1]))
        fig.update_traces(cliponaxis=False)  # a marker at the bound is drawn whole
    return figures.layout(fig, title, height=400, xaxis_title=AXES[x], yaxis_title=metric_name)


def layer_error_figure(run: Run) -> go.Figure:
    """Each compressed layer's relative weight error and, with calibration data, its
    activation-weighted error."""
    names = [layer.name for layer in run.layers]
    fig = go.Figure(go.Bar(x=names, y=[layer.error for layer in run.layers], name="relative error"))
    if any(layer.weighted_error is not None for layer in run.layers):
        weighted = [layer.weighted_error for layer in run.layers]
        fig.add_trace(go.Bar(x=names, y=weighted, name="activation-weighted error"))
    return figures.layout(
        fig, f"Per-layer error of run {run.name}", barmode="group", xaxis_title="layer", yaxis_title="error"
    )
