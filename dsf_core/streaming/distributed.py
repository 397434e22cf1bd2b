"""The processes of one run: ``torch.distributed`` under ``torchrun`` (gloo on CPU, NCCL on GPUs),
a single process otherwise, with the same few operations either way."""

from __future__ import annotations

import hashlib
import os

import torch
import torch.distributed as dist

from .._result import Factorization

_KINDS = ("product", "tt")
_HEADER = 64  # int64 slots describing one factorization's factors


class Ranks:
    """This process's place among the run's processes (rank 0 of 1 without ``torchrun``)."""

    def __init__(self, device: torch.device):
        self.rank, self.world, self.owned = 0, 1, False
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if not dist.is_initialized():  # a caller's own process group is used, and left open
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
                self.owned = True
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = device

    @property
    def writer(self) -> bool:
        """Whether this process writes files and prints progress."""
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This process's share of ``items`` (every ``world``-th, from its rank)."""
        return items[self.rank :: self.world]

    def agree(self, text: str) -> None:
        """A ValueError on every process unless all processes were given the same ``text``."""
        if self.world == 1:
            return
        digest = torch.tensor(list(hashlib.sha256(text.encode()).digest()), dtype=torch.uint8, device=self.device)
        digests = [torch.empty_like(digest) for _ in range(self.world)]
        dist.all_gather(digests, digest)
        differing = [r for r, d in enumerate(digests) if not torch.equal(d, digests[0])]
        if differing:
            raise ValueError(
                f"The {self.world} processes were given different arguments or inputs "
                f"(rank {differing[0]} differs from rank 0); start them all with the same command."
            )

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the processes, in place."""
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor

    def owners(self, costs: list[float]) -> list[int]:
        """A process for each job: the costliest job first, each to the least loaded process."""
        load, owner = [0.0] * self.world, [0] * len(costs)
        for job in sorted(range(len(costs)), key=lambda j: (-costs[j], j)):
            owner[job] = min(range(self.world), key=lambda r: (load[r], r))
            load[owner[job]] += costs[job]
        return owner

    def share(self, result: Factorization | None, stats: list[float] | None, src: int, *, method, options, weight_shape):
        """``(result, stats)`` as computed on process ``src``, on every process (factors as float32
        tensors; the others build the result from ``method``, ``options`` and ``weight_shape``)."""
        if self.world == 1:
            return result, stats
        header = torch.zeros(_HEADER, dtype=torch.int64, device=self.device)
        if self.rank == src:
            header[:3] = torch.tensor([len(result.factors), _KINDS.index(result.kind), 0])
            slot = 3
            for factor, sparse in zip(result.factors, result.sparse):
                header[slot : slot + 2 + factor.ndim] = torch.tensor([int(sparse), factor.ndim, *factor.shape])
                slot += 2 + factor.ndim
        dist.broadcast(header, src)
        count, kind = int(header[0]), _KINDS[int(header[1])]
        slot, factors, sparse = 3, [], []
        for _ in range(count):
            ndim = int(header[slot + 1])
            shape = header[slot + 2 : slot + 2 + ndim].tolist()
            sparse.append(bool(header[slot]))
            mine = result.factors[len(factors)].float().contiguous() if self.rank == src else None
            buffer = mine if mine is not None else torch.empty(shape, dtype=torch.float32, device=self.device)
            dist.broadcast(buffer, src)
            factors.append(buffer)
            slot += 2 + ndim
        numbers = torch.tensor(stats if self.rank == src else [0.0] * 3, dtype=torch.float64, device=self.device)
        dist.broadcast(numbers, src)
        if self.rank == src:
            return result, stats
        shared = Factorization(
            method=method, options=options, factors=factors, sparse=sparse, kind=kind,
            weight_shape=tuple(weight_shape), seconds=float(numbers[2]),
        )
        return shared, numbers.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
