"""Import a public reference implementation from a folder the user gives (never part of this project)."""

from __future__ import annotations

import importlib
import os
import sys


def import_reference(directory, module_name: str, variable: str):
    """The module ``module_name`` imported from ``directory``, or None (with a message saying the
    reference's side is left out) when ``directory`` lacks ``module_name.py``."""
    if not directory or not os.path.isfile(os.path.join(directory, f"{module_name}.py")):
        print(f"# reference {module_name}.py not found (looked in {directory!r}; pass --reference DIR or set "
              f"{variable}): only our side is run.")
        return None
    sys.path.insert(0, directory)
    return importlib.import_module(module_name)
