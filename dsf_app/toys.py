"""Toy matrices for teaching, each with the structure one method is built for: Hadamard and DFT
(products of butterflies), low rank plus noise (SVD), a planted product of two sparse factors (DSF,
PALM4MSA) and Gaussian noise (no structure at all). All are square, float64, reproducible by seed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

KINDS = {
    "hadamard": "Hadamard (Walsh-Hadamard, ±1 entries)",
    "dft": "DFT (real form of the unitary DFT)",
    "low_rank": "Low rank + noise",
    "planted": "Planted product of two sparse factors",
    "gaussian": "Gaussian noise",
}
SIZES = (8, 16, 32, 64, 128, 256, 512)  # powers of two: every kind accepts them


@dataclass(frozen=True)
class ToySpec:
    """Everything that determines a toy matrix (hashable: it keys result caches). Parameters a
    kind does not use keep their defaults, so equal toys have equal specs."""

    kind: str
    size: int
    seed: int = 0
    rank: int = 8
    noise: float = 0.0
    density_a: float = 0.25
    density_b: float = 0.25


@dataclass(frozen=True, eq=False)
class Toy:
    """A generated toy: the matrix, a sentence on its structure, the density at which that
    structure can be stored exactly (None when there is none), and the planted factors if any."""

    spec: ToySpec
    matrix: torch.Tensor
    note: str
    natural_density: float | None
    factors: tuple = ()
    built_for: tuple[str, ...] = ()  # the methods whose model can express this structure exactly
    # the options a method of built_for needs to express it (over its quick preset), by method
    method_options: dict = field(default_factory=dict)


def spec_for(kind: str, size: int, seed: int = 0, **params) -> ToySpec:
    """The spec of a toy, keeping only the parameters ``kind`` uses."""
    if kind not in KINDS:
        raise ValueError(f"Unknown toy {kind!r}; expected one of {list(KINDS)}.")
    used = {"low_rank": ("rank", "noise"), "planted": ("density_a", "density_b")}.get(kind, ())
    seeded = kind in ("low_rank", "planted", "gaussian")
    return ToySpec(kind, size, seed if seeded else 0, **{k: v for k, v in params.items() if k in used})


def make(spec: ToySpec) -> Toy:
    """Generate the toy ``spec`` describes."""
    n = spec.size
    if spec.kind == "hadamard":
        levels = int(math.log2(n))
        return Toy(
            spec,
            hadamard(n),
            f"H_{n} = H_2 ⊗ ... ⊗ H_2 ({levels} times), so H H^T = {n} I. It is the product of "
            f"{levels} butterfly factors with 2 nonzeros per row and column: {butterfly_params(n):,} "
            f"numbers instead of {n * n:,}. Being a Kronecker product, it also has tensor-train rank 1: "
            f"tensor-train stores it exactly in far fewer. Hierarchical PALM4MSA, given {levels} factors "
            "with 2 nonzeros per row and column (splincol, k = 2), finds the butterflies.",
            butterfly_params(n) / n**2,
            built_for=("tt", "hierarchical"),
            method_options={"hierarchical": butterfly_options(n)},
        )
    if spec.kind == "dft":
        return Toy(
            spec,
            dft_real(n // 2),
            f"The unitary {n // 2}-point DFT F (F_jk = exp(-2πi jk/{n // 2}) / sqrt({n // 2})) is complex; "
            f"shown is its real {n} x {n} form [[Re F, -Im F], [Im F, Re F]], which is orthogonal. "
            "The FFT writes F as a product of sparse butterflies too (with a permutation).",
            None,
        )
    generator = torch.Generator().manual_seed(spec.seed)
    if spec.kind == "low_rank":
        rank = min(spec.rank, n)
        return Toy(
            spec,
            low_rank(n, rank, spec.noise, generator),
            f"U V^T of rank {rank} plus {spec.noise:g} x Gaussian noise: SVD at rank {rank} keeps "
            f"{rank} x ({n} + {n}) = {2 * n * rank:,} numbers and leaves only the noise.",
            2 * n * rank / n**2,
            built_for=("svd",),
        )
    if spec.kind == "planted":
        inner = planted_inner(n)
        a = sparse_factor(n, inner, spec.density_a, generator)
        b = sparse_factor(inner, n, spec.density_b, generator)
        stored = int(torch.count_nonzero(a) + torch.count_nonzero(b))
        product = a @ b
        dense = float((product != 0).double().mean())
        return Toy(
            spec,
            product,
            f"A B with A ({n} x {inner}) at density {spec.density_a:g} and B ({inner} x {n}) at "
            f"{spec.density_b:g} (random supports, Gaussian values): {stored:,} nonzeros reproduce the "
            f"{n} x {n} product exactly. DSF's model W ~ A B can express it, and it finds the supports. "
            f"The others cannot: each entry of W mixes several of A's and B's, so {dense:.0%} of W is "
            f"nonzero and pruning keeps only a few of them; W has rank {inner}, which SVD would store "
            f"in {2 * n * inner:,} numbers, {2 * n * inner / max(stored, 1):.1f} times as many.",
            stored / n**2,
            (a, b),
            built_for=("dsf",),
        )
    return Toy(
        spec,
        torch.randn(n, n, generator=generator, dtype=torch.float64),
        "Independent N(0, 1) entries: no structure to find. The energy is spread over all singular "
        "values (Marchenko-Pastur), so low rank helps little: a baseline for every method.",
        None,
    )


def hadamard(n: int) -> torch.Tensor:
    """The Sylvester-Hadamard matrix of size ``n`` (a power of two): ``H_2n = [[H, H], [H, -H]]``."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"A Hadamard matrix here needs a power of two as size; got {n}.")
    H = torch.ones(1, 1, dtype=torch.float64)
    while H.shape[0] < n:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    return H


def planted_inner(n: int) -> int:
    """The inner dimension of the planted product of size ``n``: a quarter of it (at least 1)."""
    return max(1, n // 4)


def butterfly_params(n: int) -> int:
    """The numbers that the ``log2(n)`` butterfly factors of ``H_n`` store: ``2 n`` each."""
    return 2 * n * int(math.log2(n))


def butterfly_options(n: int) -> dict:
    """Hierarchical PALM4MSA's options for the butterflies of ``H_n``: ``log2(n)`` factors with 2
    nonzeros per row and column."""
    return {"n_factors": max(2, int(math.log2(n))), "projection": "splincol", "k": 2}


def dft_real(n: int) -> torch.Tensor:
    """The ``2n x 2n`` real form ``[[Re F, -Im F], [Im F, Re F]]`` of the unitary ``n``-point DFT
    ``F_jk = exp(-2 pi i j k / n) / sqrt(n)``; it maps ``[Re z; Im z]`` to ``[Re Fz; Im Fz]``."""
    index = torch.arange(n, dtype=torch.float64)
    angle = -2 * math.pi * torch.outer(index, index).remainder(n) / n
    re, im = angle.cos() / math.sqrt(n), angle.sin() / math.sqrt(n)
    return torch.cat([torch.cat([re, -im], 1), torch.cat([im, re], 1)], 0)


def low_rank(n: int, rank: int, noise: float, generator: torch.Generator) -> torch.Tensor:
    """``U V / sqrt(rank) + noise * N`` with Gaussian ``U`` (n x rank), ``V`` (rank x n), ``N``:
    entries of the low-rank part have unit variance."""
    U = torch.randn(n, rank, generator=generator, dtype=torch.float64)
    V = torch.randn(rank, n, generator=generator, dtype=torch.float64)
    return U @ V / math.sqrt(rank) + noise * torch.randn(n, n, generator=generator, dtype=torch.float64)


def sparse_factor(rows: int, cols: int, density: float, generator: torch.Generator) -> torch.Tensor:
    """A ``rows x cols`` matrix with ``round(density * rows * cols)`` (at least 1) Gaussian
    nonzeros at uniformly random positions."""
    if not 0 < density <= 1:
        raise ValueError(f"A factor's density must be in (0, 1]; got {density}.")
    count = max(1, round(density * rows * cols))
    positions = torch.randperm(rows * cols, generator=generator)[:count]
    values = torch.randn(count, generator=generator, dtype=torch.float64)
    values = torch.where(values == 0, 1.0, values)  # a nonzero at every chosen position
    factor = torch.zeros(rows * cols, dtype=torch.float64)
    factor[positions] = values
    return factor.reshape(rows, cols)
