"""Progress of a streamed run: a line per layer on a text stream, with elapsed time and an ETA."""

from __future__ import annotations

import time


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts work in weight entries (``costs[i]``: block i's chosen layers', the head's after the
    ``blocks`` blocks); the ETA assumes the rest goes at the pace so far. ``stream=None`` prints nothing."""

    def __init__(self, stream, costs: list[int], *, blocks: int):
        self.stream, self.costs, self.blocks = stream, costs, blocks
        self.total, self.done, self.skipped = max(sum(costs), 1), 0, 0
        self.start = time.perf_counter()

    def layer(self, index: int, name: str, cost: int) -> None:
        self.done += cost
        elapsed = time.perf_counter() - self.start
        pace = elapsed / max(self.done - self.skipped, 1)
        eta = pace * (self.total - self.done)
        self._say(f"{self._part(index)} {name}: {100 * self.done / self.total:.0f}% done, "
                  f"elapsed {_clock(elapsed)}, ETA {_clock(eta)}")

    def skip(self, index: int) -> None:
        """Block ``index`` was done by the interrupted run."""
        self.done += self.costs[index]
        self.skipped += self.costs[index]
        self._say(f"{self._part(index)}: done before, read back from the output directory")

    def _part(self, index: int) -> str:
        return f"block {index + 1}/{self.blocks}" if index < self.blocks else "head"

    def _say(self, line: str) -> None:
        if self.stream is not None:
            print(line, file=self.stream, flush=True)
