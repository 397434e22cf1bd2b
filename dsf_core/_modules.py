"""``nn.Module`` forms of a factorization: they compute ``x @ W_hat.T`` through the factors,
never forming ``W_hat``. Sparse factors are stored as CSR tensors."""

from __future__ import annotations

import copy
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn


def _apply_product(factors, rows: torch.Tensor) -> torch.Tensor:
    """``rows @ (F_1 F_2 ... F_Q).T`` for rows of shape (T, n), applying ``F_Q`` first."""
    out = rows.T  # (n, T)
    for factor in reversed(factors):
        if is_semi_structured(factor):
            out = out.contiguous()
        out = factor @ out  # CSR, 2:4 semi-structured or dense, @ dense
    return out.T


def _apply_tt(cores, rows: torch.Tensor) -> torch.Tensor:
    """``rows @ W_hat.T`` for a TT-matrix with cores ``(r_prev, m_k, n_k, r_next)``."""
    t = rows.shape[0]
    in_modes = [core.shape[2] for core in cores]
    # state: (T * produced m modes, r, remaining n modes)
    state = rows.reshape(t, 1, -1)
    produced = t
    for core, n_k in zip(cores, in_modes):
        r_prev, m_k, _, r_next = core.shape
        state = state.reshape(produced, r_prev, n_k, -1)  # (P, r, n_k, rest)
        state = torch.einsum("prnz,rmns->pmsz", state, core)  # (P, m_k, r_next, rest)
        produced *= m_k
        state = state.reshape(produced, r_next, -1)
    # state: (T * m_1 ... m_d, 1, 1) in the order T, m_1, ..., m_d
    return state.reshape(t, -1)


class FactorizedLinear(nn.Module):
    """A Linear layer whose weight is held as its factors (shape comments: T tokens, n in, m out)."""

    def __init__(self, factors, sparse, kind: str, bias: torch.Tensor | None = None, *, semi_structured=False):
        """``semi_structured``: hold sparse factors that are 2:4 along their inputs in PyTorch's
        semi-structured form (sparse tensor cores, for inference); a factor that cannot be (not
        2:4, not on a CUDA GPU of compute capability 8.0+, unsupported shape or dtype) stays CSR,
        with a warning saying why."""
        super().__init__()
        self.kind = kind
        self.n_factors = len(factors)
        for i, (factor, is_sparse) in enumerate(zip(factors, sparse)):
            factor = factor.detach()
            if is_sparse and semi_structured:
                stored = _semi_structured_or_warn(factor, i)
            else:
                stored = _to_csr(factor) if is_sparse else factor.clone()
            self.register_buffer(f"factor_{i}", stored)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @property
    def factors(self) -> list[torch.Tensor]:
        return [getattr(self, f"factor_{i}") for i in range(self.n_factors)]

    def __deepcopy__(self, memo):
        """A copy (``copy.deepcopy`` cannot copy CSR tensors' storage; ``clone`` can), so that a
        model holding compressed layers can be copied, e.g. to be compressed further."""
        twin = type(self).__new__(type(self))
        memo[id(self)] = twin
        for key, value in self.__dict__.items():  # what deepcopy does, with the buffers cloned
            if key == "_buffers":
                value = {name: None if b is None else b.clone() for name, b in value.items()}
            twin.__dict__[key] = value if key == "_buffers" else copy.deepcopy(value, memo)
        return twin

    def flops_per_row(self) -> int:
        """Multiply-adds times two for one input row (one token or one conv patch)."""
        if self.kind == "tt":
            return 2 * tt_matvec_macs(self.factors)
        return 2 * sum(_stored_values(f) for f in self.factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # computes in the factors' dtype (CPU CSR products have no bfloat16), returns the input's
        rows = x.reshape(-1, x.shape[-1]).to(self.factor_0.dtype)  # (T, n)
        apply = _apply_tt if self.kind == "tt" else _apply_product
        out = apply(self.factors, rows)  # (T, m)
        if self.bias is not None:
            out = out + self.bias
        return out.to(x.dtype).reshape(*x.shape[:-1], out.shape[-1])


class FactorizedConv2d(nn.Module):
    """A Conv2d whose kernel (read as ``out x in*kh*kw``) is held as its factors: the input is
    unfolded into patches, which go through a :class:`FactorizedLinear`."""

    def __init__(self, linear: FactorizedLinear, kernel_size, stride=1, padding=0, dilation=1):
        super().__init__()
        self.linear = linear
        self.kernel_size = tuple(kernel_size)
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        patches = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (N, in*kh*kw, L)
        out = self.linear(patches.transpose(1, 2))  # (N, L, out)
        h_out, w_out = conv_output_size((h, w), self.kernel_size, self.stride, self.padding, self.dilation)
        return out.transpose(1, 2).reshape(n, -1, h_out, w_out)


def conv_output_size(size, kernel_size, stride, padding, dilation) -> tuple[int, int]:
    """Height and width of a Conv2d's output map for an input map of ``size``."""
    return tuple(
        (length + 2 * p - d * (k - 1) - 1) // s + 1
        for length, k, s, p, d in zip(size, _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation))
    )


def tt_matvec_macs(cores) -> int:
    """Multiply-adds of the sequential contraction in ``_apply_tt`` for one input vector."""
    macs, produced, rest = 0, 1, math.prod(core.shape[2] for core in cores)
    for core in cores:
        r_prev, m_k, n_k, r_next = core.shape
        rest //= n_k
        macs += produced * rest * r_prev * m_k * n_k * r_next
        produced *= m_k
    return macs


def _stored_values(factor: torch.Tensor) -> int:
    if factor.layout == torch.sparse_csr:
        return factor.values().numel()
    return factor.numel() // 2 if is_semi_structured(factor) else factor.numel()


def is_semi_structured(factor: torch.Tensor) -> bool:
    return isinstance(factor, torch.sparse.SparseSemiStructuredTensor)


def semi_structured_obstacle(factor: torch.Tensor) -> str | None:
    """Why ``factor`` cannot run on 2:4 sparse tensor cores here, or None when it can."""
    rows, cols = factor.shape
    if cols % 4 or int((factor.reshape(rows, cols // 4, 4) != 0).sum(-1).max()) > 2:
        return "it is not 2:4 sparse along its inputs (factorize with pattern='2:4')"
    if factor.device.type != "cuda":
        return f"2:4 sparse tensor cores need a CUDA GPU and the factor is on {factor.device}"
    major, minor = torch.cuda.get_device_capability(factor.device)
    if major < 8:
        return f"2:4 sparse tensor cores need compute capability 8.0 or newer, this GPU has {major}.{minor}"
    return None


def _semi_structured_or_warn(factor: torch.Tensor, index: int) -> torch.Tensor:
    reason = semi_structured_obstacle(factor)
    if reason is None:
        try:
            return torch.sparse.to_sparse_semi_structured(factor.contiguous())
        except (RuntimeError, NotImplementedError) as error:  # shape or dtype PyTorch does not take
            reason = str(error).removeprefix("Error ")
    warnings.warn(f"factor {index} {tuple(factor.shape)} stays CSR: {reason}", stacklevel=3)
    return _to_csr(factor)


def _to_csr(dense: torch.Tensor) -> torch.Tensor:
    if dense.layout == torch.sparse_csr:
        return dense
    with warnings.catch_warnings():  # torch flags all CSR use as beta; nothing for the user to act on
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return dense.to_sparse_csr()


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
