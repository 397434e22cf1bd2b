"""The public exceptions and warnings of ``dsf_core``, in one place."""

from __future__ import annotations


class BudgetError(ValueError):
    """The budget is below what a method needs: ``needed`` parameters for ``what`` (e.g. "rank 1"),
    where ``budget`` are allowed; ``layer`` names the model's layer when a whole-model run raised it."""

    def __init__(self, message: str, *, needed: int, budget: int, what: str, layer: str | None = None):
        super().__init__(message)
        self.needed, self.budget, self.what, self.layer = needed, budget, what, layer


class ConvergenceWarning(UserWarning):
    """An iterative method stopped before meeting its tolerance or met a numerical problem."""


class DataFreeWarning(UserWarning):
    """A method that needs an input Gram matrix ran without one, on the identity Gram instead."""
