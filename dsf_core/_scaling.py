"""Exact rescaling by powers of two that cannot overflow on the way (used to solve and measure at
unit scale whatever the input's magnitude)."""

from __future__ import annotations

import math

import torch


def exponent_above(value: float) -> int:
    """The ``e`` with ``2**e`` in ``(value, 2 * value]`` (0 for 0): ``x / 2**e`` has magnitude below 1."""
    return math.frexp(value)[1] if value > 0 else 0


def times_power_of_two(tensor: torch.Tensor, exponent: int) -> torch.Tensor:
    """``tensor * 2**exponent`` as a new tensor, in two half steps so that neither the factor nor
    an intermediate value overflows (exact unless a result is subnormal or out of range)."""
    half = exponent // 2
    return tensor.mul(2.0**half).mul_(2.0 ** (exponent - half))


def to_unit_scale(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(tensor / 2**e, e)`` with the largest magnitude of the result in ``[0.5, 1)``."""
    exponent = exponent_above(float(tensor.abs().max())) if tensor.numel() else 0
    return times_power_of_two(tensor, -exponent), exponent
