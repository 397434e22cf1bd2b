"""The one list of method modules; their specs make ``METHODS``, read by the API, the app, the CLI
and the tests. A method is a module under ``dsf_core/methods`` with a tuple ``SPECS`` of
:class:`MethodSpec` (see ``methods/_spec.py``); list it in ``MODULES``, or ``register`` it."""

from __future__ import annotations

from types import MappingProxyType, ModuleType
from typing import Mapping

from .methods import dsf, palm4msa, pruning, sparsegpt, svd, tt
from .methods._spec import MethodSpec, Option, Plan, Solver

__all__ = ["METHODS", "MODULES", "MethodSpec", "Option", "Plan", "Solver", "get_method", "register", "unregister"]

MODULES = (dsf, palm4msa, svd, tt, pruning, sparsegpt)

_methods: dict[str, MethodSpec] = {}
METHODS: Mapping[str, MethodSpec] = MappingProxyType(_methods)  # a live, read-only view


def register(module: ModuleType) -> list[str]:
    """Add the methods of ``module`` (its ``SPECS``); returns their names. A name already taken is
    a ValueError."""
    specs = getattr(module, "SPECS", None)
    if not isinstance(specs, tuple) or not specs or not all(isinstance(s, MethodSpec) for s in specs):
        raise TypeError(f"A method module needs a non-empty tuple SPECS of MethodSpec; {module.__name__} has {specs!r}.")
    taken = [spec.name for spec in specs if spec.name in _methods]
    if taken:
        raise ValueError(f"Method name(s) {taken} of {module.__name__} are already registered.")
    for spec in specs:
        _methods[spec.name] = spec
    return [spec.name for spec in specs]


def unregister(name: str) -> None:
    """Remove the method ``name`` (one added by ``register``)."""
    get_method(name)
    del _methods[name]


def get_method(name) -> MethodSpec:
    if not isinstance(name, str):
        raise TypeError(f"method must be a str; got {type(name).__name__}.")
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; expected one of {list(METHODS)}.")
    return METHODS[name]


for _module in MODULES:
    register(_module)
