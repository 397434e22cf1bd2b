"""Plotly figures of matrices, spectra, sparsity patterns and convergence; matrices of any size
are reduced to at most ``MAX_CELLS`` per side by block averaging before plotting."""

from __future__ import annotations

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


def layout(fig: go.Figure, title: str, height: int = 360, **settings) -> go.Figure:
    """``fig`` with ``title``, ``height``, the app's narrow margins and any other layout ``settings``."""
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40, b=10), **settings)
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
    return layout(fig, f"{title} ({shape}{note})")


def spy(factor: torch.Tensor, title: str) -> go.Figure:
    """The sparsity pattern of ``factor``: black where it is nonzero (fraction of nonzeros per
    block when downsampled)."""
    filled = downsample((factor.detach() != 0).float())
    fig = go.Figure(go.Heatmap(z=filled.numpy(), colorscale="Greys", zmin=0, zmax=1, showscale=False))
    fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x")
    fig.update_xaxes(showticklabels=False, constrain="domain")
    rows, cols = factor.shape
    nnz = int(torch.count_nonzero(factor))
    return layout(fig, f"{title}: {rows}x{cols}, {nnz:,} nonzeros ({nnz / (rows * cols):.1%})")


def histogram(matrix: torch.Tensor, title: str) -> go.Figure:
    values = matrix.detach().float().flatten().cpu()
    if values.numel() > 200_000:  # a fixed sample keeps the page fast
        values = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))[:200_000]]
    fig = go.Figure(go.Histogram(x=values.numpy(), nbinsx=80))
    return layout(fig, title, height=300, xaxis_title="value", yaxis_title="count", bargap=0.02)


def spectrum(curves: dict[str, torch.Tensor], title: str, *, log: bool = True) -> go.Figure:
    """Singular values (or eigenvalues) in decreasing order, one line per entry of ``curves``."""
    fig = go.Figure()
    for name, values in curves.items():
        values = values.detach().double().cpu()
        fig.add_trace(go.Scatter(x=list(range(1, values.numel() + 1)), y=values.numpy(), mode="lines", name=name))
    axis = "log" if log else "linear"
    return layout(fig, title, height=320, xaxis_title="index", yaxis_title="value", yaxis_type=axis)


def convergence(history: list[float], title: str = "Convergence") -> go.Figure:
    """The method's objective per step (the library's callback values)."""
    fig = go.Figure(go.Scatter(x=list(range(1, len(history) + 1)), y=list(history), mode="lines+markers"))
    return layout(
        fig, title, height=300, xaxis_title="step", yaxis_title="objective (relative error)", yaxis_type="log"
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
