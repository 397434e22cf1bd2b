"""The one result type every method returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ._metrics import relative_error, weighted_relative_error
from ._modules import FactorizedConv2d, FactorizedLinear, tt_matvec_macs


@dataclass
class Factorization:
    """An approximation ``W_hat`` of a weight matrix, held as factors.

    ``kind == "product"``: ``W_hat = factors[0] @ factors[1] @ ...`` (a single factor for pruning);
    ``kind == "tt"``: ``factors`` are TT-matrix cores of shape ``(r_prev, m_k, n_k, r_next)``.
    Sparse factors (``sparse[i]``) are dense tensors with zeros off their support.
    """

    method: str
    options: dict
    factors: list[torch.Tensor]
    sparse: list[bool]
    kind: str
    weight_shape: tuple
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """The matrix shape ``(m, n)`` (a conv kernel is read as ``out x in*kh*kw``)."""
        m = self.weight_shape[0]
        return m, int(torch.Size(self.weight_shape).numel() // m)

    @property
    def device(self) -> torch.device:
        return self.factors[0].device

    @property
    def n_params(self) -> int:
        """Stored parameters: nonzeros of sparse factors plus every entry of dense factors."""
        return sum(
            int(torch.count_nonzero(f)) if is_sparse else f.numel()
            for f, is_sparse in zip(self.factors, self.sparse)
        )

    @property
    def density(self) -> float:
        m, n = self.shape
        return self.n_params / (m * n)

    @property
    def n_bytes(self) -> int:
        """Bytes to store the factors: CSR (values, int32 column indices and row pointers) for
        sparse factors, plain values for dense ones."""
        total = 0
        for f, is_sparse in zip(self.factors, self.sparse):
            item = f.element_size()
            if is_sparse:
                nnz = int(torch.count_nonzero(f))
                total += nnz * (item + 4) + (f.shape[0] + 1) * 4
            else:
                total += f.numel() * item
        return total

    @property
    def flops(self) -> int:
        """Multiply-adds times two of one matrix-vector product through the factors."""
        if self.kind == "tt":
            return 2 * tt_matvec_macs(self.factors)
        return 2 * self.n_params

    def to_matrix(self) -> torch.Tensor:
        """The dense ``m x n`` approximation."""
        if self.kind == "tt":
            import tensorly as tl  # imported on use (slow to import; TT only)

            with tl.backend_context("pytorch"):
                return tl.tt_matrix_to_matrix(self.factors)
        out = self.factors[0]
        for factor in self.factors[1:]:
            out = out @ factor
        return out

    def to_dense(self) -> torch.Tensor:
        """The approximation in the weight's own shape (4-D for a conv kernel)."""
        return self.to_matrix().reshape(self.weight_shape)

    def error(self, weight: torch.Tensor, gram: torch.Tensor | None = None) -> float:
        """Relative error, or activation-weighted relative error when ``gram`` is given."""
        weight = weight.to(self.device, self.factors[0].dtype)
        if gram is None:
            return relative_error(weight, self.to_matrix())
        return weighted_relative_error(weight, self.to_matrix(), gram.to(weight))

    def to_module(self, bias=None, *, stride=1, padding=0, dilation=1, semi_structured=False) -> torch.nn.Module:
        """A Linear-like (2-D weight) or Conv2d-like (4-D kernel) module computing through the factors.
        ``semi_structured=True`` runs 2:4 factors on sparse tensor cores where the GPU can (see
        :class:`FactorizedLinear`)."""
        linear = FactorizedLinear(self.factors, self.sparse, self.kind, bias, semi_structured=semi_structured)
        if len(self.weight_shape) == 4:
            return FactorizedConv2d(linear, self.weight_shape[2:], stride, padding, dilation)
        return linear

    def summary(self) -> dict:
        m, n = self.shape
        return {
            "method": self.method,
            "shape": (m, n),
            "n_params": self.n_params,
            "density": self.density,
            "n_bytes": self.n_bytes,
            "flops": self.flops,
            "seconds": self.seconds,
            "device": str(self.device),
        }

