"""Plotly figures of matrices, spectra, sparsity patterns and convergence; matrices of any size
are reduced to at most ``MAX_CELLS`` per side by block averaging before plotting."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import torch
import torch.nn.functional as F

MAX_CELLS = 192


def downsample(matrix: torch.Tensor, max_cells: int = MAX_CELLS) -> torch.Tensor:
    """Block means so that neither side exceeds ``max_cells`` (the matrix itself if small)."""
    matrix = matrix.detach().float().cpu()
    rows, cols = matrix.shape
    if rows <= max_cells and cols <= max_cells:
        return matrix
    size = (min(rows, max_cells), min(cols, max_cells))
    return F.adaptive_avg_pool2d(matrix[None, None], size)[0, 0]


def layout(fig: go.Figure, title: str, height: int = 360, *, subtitle: str = "", **settings) -> go.Figure:
    """``fig`` with ``title`` (and ``subtitle``), ``height``, the app's narrow margins and any other
    layout ``settings``; numbers on the axes as powers of ten (never SI letters such as "10f"), and
    a log axis labelled at its decades when it spans one or more."""
    heading = dict(text=title, font=dict(size=14))
    if subtitle:
        heading["subtitle"] = dict(text=subtitle, font=dict(size=11))
    fig.update_layout(title=heading, height=height, margin=dict(l=10, r=10, t=56 if subtitle else 40, b=10), **settings)
    fig.update_xaxes(exponentformat="power", automargin=True)
    fig.update_yaxes(exponentformat="power", automargin=True)
    if settings.get("yaxis_type") == "log":
        values = [float(v) for trace in fig.data for v in (trace.y if trace.y is not None else ()) if v and v > 0]
        if values and math.log10(max(values) / min(values)) >= 1:
            fig.update_yaxes(dtick=1)  # 10^-2, 10^-1, 10^0: no "2, 5" labels between them
    return fig


def heatmap(matrix: torch.Tensor, title: str, *, zmax: float | None = None) -> go.Figure:
    """A signed heatmap (red-blue, centred on 0) of ``matrix``, downsampled if large."""
    small = downsample(matrix)
    limit = zmax if zmax is not None else float(small.abs().max()) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=small.numpy(),
            colorscale="RdBu_r",
            zmin=-limit,
            zmax=limit,
        )
    )
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    shape = "x".join(map(str, matrix.shape))
    note = "" if tuple(small.shape) == tuple(matrix.shape) else f", shown as {small.shape[0]}x{small.shape[1]} block means"
    return layout(fig, title, subtitle=f"{shape}{note}; colour scale ±{limit:.3g}")


def spy(factor: torch.Tensor, title: str) -> go.Figure:
    """The sparsity pattern of ``factor``: black where it is nonzero (fraction of nonzeros per
    block when downsampled)."""
    filled = downsample((factor.detach() != 0).float())
    fig = go.Figure(go.Heatmap(z=filled.numpy(), colorscale="Greys", zmin=0, zmax=1, showscale=False))
    fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x")
    fig.update_xaxes(showticklabels=False, constrain="domain")
    rows, cols = factor.shape
    nnz = int(torch.count_nonzero(factor))
    return layout(fig, title, subtitle=f"{rows}x{cols}, {nnz:,} nonzeros ({nnz / (rows * cols):.1%})")


def histogram(matrix: torch.Tensor, title: str) -> go.Figure:
    values = matrix.detach().float().flatten().cpu()
    if values.numel() > 200_000:  # a fixed sample keeps the page fast
        values = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))[:200_000]]
    fig = go.Figure(go.Histogram(x=values.numpy(), nbinsx=80))
    return layout(fig, title, height=300, xaxis_title="weight value", yaxis_title="number of weights", bargap=0.02)


def spectrum(curves: dict[str, torch.Tensor], title: str, *, log: bool = True, quantity: str = "singular value",
             threshold: float | None = None) -> go.Figure:
    """Singular values (or eigenvalues: ``quantity``) in decreasing order, one line per entry of
    ``curves``; ``threshold``: the round-off level above which a numerical rank counts values, drawn dashed."""
    fig = go.Figure()
    for name, values in curves.items():
        values = values.detach().double().cpu()
        fig.add_trace(go.Scatter(x=list(range(1, values.numel() + 1)), y=values.numpy(), mode="lines", name=name))
    if threshold is not None:
        fig.add_hline(y=threshold, line_dash="dash", line_color="gray",
                      annotation_text="round-off level: the numerical rank counts the values above", annotation_position="top right")
    axis = "log" if log else "linear"
    return layout(fig, title, height=320, xaxis_title="index k (largest first)", yaxis_title=quantity,
                  yaxis_type=axis)


def convergence(history: list[float], title: str = "Convergence", reported: dict[str, float] | None = None) -> go.Figure:
    """The method's objective per step (the library's callback values), with the ``reported`` final
    errors as dashed lines, so that the curve reads against the numbers the page shows."""
    fig = go.Figure(go.Scatter(x=list(range(1, len(history) + 1)), y=list(history), mode="lines+markers", name="objective"))
    for (name, value), dash in zip((reported or {}).items(), ("dash", "dot")):
        if value and value > 0:
            fig.add_trace(go.Scatter(x=[1, max(len(history), 2)], y=[value, value], mode="lines", name=name,
                                     line=dict(dash=dash)))
    return layout(
        fig, title, height=300, xaxis_title="step", yaxis_title="objective (relative error)", yaxis_type="log",
        legend=dict(orientation="h", y=-0.3),
    )


def convergence_overlay(curves: dict[str, list[float]]) -> go.Figure:
    """Several runs' objectives per step on one log axis, one line per run."""
    fig = go.Figure()
    for name, history in curves.items():
        fig.add_trace(go.Scatter(x=list(range(1, len(history) + 1)), y=list(history), mode="lines", name=name))
    return layout(
        fig, "Convergence of these runs", height=320, xaxis_title="step", yaxis_title="objective (relative error)",
        yaxis_type="log", legend=dict(orientation="h", y=-0.25),
    )
