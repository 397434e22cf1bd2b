"""The public exceptions and warnings of ``dsf_core``, in one place."""

from __future__ import annotations


class BudgetError(ValueError):
    """The budget is below what a method needs: ``needed`` parameters for ``what`` (e.g. "rank 1"),
    where ``budget`` are allowed."""

    def __init__(self, message: str, *, needed: int, budget: int, what: str):
        super().__init__(message)
        self.needed, self.budget, self.what = needed, budget, what


class ConvergenceWarning(UserWarning):
    """An iterative method stopped before meeting its tolerance or met a numerical problem."""


class DataFreeWarning(UserWarning):
    """A method that needs an input Gram matrix ran without one, on the identity Gram instead."""
