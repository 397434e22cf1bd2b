"""Checks at the public boundary: every message says what was expected and what was got."""

from __future__ import annotations

import math
import numbers

import torch

# Largest / smallest row weight accepted: beyond float32's ~7 digits a row weighted that little
# adds nothing to the objective, and far beyond it the weighted rows underflow to zero.
MAX_ROW_WEIGHT_RATIO = 1e8


def check_weight(weight) -> torch.Tensor:
    """Return ``weight`` read as an ``out x in`` matrix (a 4-D conv kernel is flattened)."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor; got {type(weight).__name__} instead.")
    weight = weight.detach()
    if weight.is_sparse or weight.layout != torch.strided:
        raise TypeError(f"weight must be a dense (strided) tensor; got layout {weight.layout}.")
    if not weight.is_floating_point():
        raise TypeError(f"weight must have a floating-point dtype; got {weight.dtype}.")
    if weight.ndim not in (2, 4):
        raise ValueError(
            "weight must be 2-D (out x in) or 4-D (a conv kernel out x in x kh x kw); "
            f"got a {weight.ndim}-D tensor of shape {tuple(weight.shape)}."
        )
    if weight.numel() == 0:
        raise ValueError(f"weight must not be empty; got shape {tuple(weight.shape)}.")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight contains NaN or Inf values; expected finite values only.")
    return weight.reshape(weight.shape[0], -1)


def check_row_weights(weights, m: int) -> torch.Tensor | None:
    """Validate optional output-row weights: ``m`` finite positive numbers."""
    if weights is None:
        return None
    if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
        raise TypeError(f"row_weights must be a floating-point torch.Tensor or None; got {weights!r:.60}.")
    weights = weights.detach()
    if tuple(weights.shape) != (m,):
        raise ValueError(f"row_weights must hold {m} numbers (one per output row); got shape {tuple(weights.shape)}.")
    if not bool(torch.isfinite(weights).all()) or float(weights.min()) <= 0:
        raise ValueError("row_weights must be finite and positive.")
    ratio = float(weights.max()) / float(weights.min())
    if ratio > MAX_ROW_WEIGHT_RATIO:
        raise ValueError(
            f"row_weights must span at most a factor of {MAX_ROW_WEIGHT_RATIO:.0e} (largest / smallest); got "
            f"{ratio:.3g}. Rows weighted that little would vanish below float32 precision: drop them instead."
        )
    return weights


def check_gram(gram, n: int) -> torch.Tensor | None:
    """Validate an optional ``n x n`` symmetric input Gram matrix."""
    if gram is None:
        return None
    if not isinstance(gram, torch.Tensor):
        raise TypeError(f"gram must be a torch.Tensor or None; got {type(gram).__name__} instead.")
    gram = gram.detach()
    if not gram.is_floating_point():
        raise TypeError(f"gram must have a floating-point dtype; got {gram.dtype}.")
    if tuple(gram.shape) != (n, n):
        raise ValueError(
            f"gram must be a {n} x {n} matrix (the weight has {n} input columns); "
            f"got shape {tuple(gram.shape)}."
        )
    if not bool(torch.isfinite(gram).all()):
        raise ValueError("gram contains NaN or Inf values; expected finite values only.")
    scale = float(gram.abs().max())
    asym = float((gram - gram.T).abs().max())
    if asym > 1e-4 * max(scale, 1e-30):
        raise ValueError(
            f"gram must be symmetric; got max |G - G^T| = {asym:.3g} (max |G| = {scale:.3g})."
        )
    if float(gram.diagonal().min()) < 0:
        raise ValueError("gram must be positive semi-definite; got a negative diagonal entry.")
    if float(gram.diagonal().max()) == 0.0:
        raise ValueError("gram is all zeros (no input signal); expected a Gram matrix with a positive diagonal.")
    if not _positive_semidefinite(gram):
        raise ValueError(
            "gram must be positive semi-definite (a Gram matrix X^T X); got one with a clearly negative "
            "eigenvalue (its Cholesky factorization fails even with a rounding-level shift)."
        )
    return gram


def _positive_semidefinite(gram: torch.Tensor) -> bool:
    """Whether ``gram`` is PSD up to rounding: Cholesky of ``G / max(diag) + n * eps * I`` succeeds
    (a shift that covers the rounding errors of summing n products in the Gram's dtype)."""
    n = gram.shape[0]
    dtype = torch.float64 if gram.dtype == torch.float64 else torch.float32
    unit = gram.to(dtype) / gram.diagonal().max().to(dtype)
    shift = n * torch.finfo(dtype).eps
    _, info = torch.linalg.cholesky_ex(unit + shift * torch.eye(n, dtype=dtype, device=gram.device))
    return int(info) == 0


def check_density(density) -> float:
    if isinstance(density, bool) or not isinstance(density, numbers.Real):
        raise TypeError(f"density must be a real number in (0, 1]; got {density!r}.")
    density = float(density)
    if math.isnan(density) or not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in the range (0, 1]; got {density} instead.")
    return density


def check_device(device, default: torch.device) -> torch.device:
    if device is None:
        return default
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be like 'cpu' or 'cuda:0'; got {device!r}.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use 'cpu'.")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda'; got {device.type!r}.")
    return device


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int; got {seed!r}.")
    return int(seed)


def check_callback(callback, name: str = "callback"):
    if callback is not None and not callable(callback):
        raise TypeError(f"{name} must be callable or None; got {type(callback).__name__}.")
    return callback
