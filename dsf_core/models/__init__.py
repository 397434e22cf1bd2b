"""Models to look into: built-in ones that work offline, and loaders for what users bring."""

from __future__ import annotations

import importlib

from ._bundle import ModelBundle

# name -> (module holding ``load_bundle()``, one-line description)
BUILTIN_MODELS = {
    "digits-cnn": ("dsf_core.models.digits_cnn", "CNN trained on scikit-learn's 8x8 digits (bundled data)"),
    "tiny-lm": ("dsf_core.models.tiny_lm", "small decoder-only transformer trained on Python stdlib text"),
    "minilm": ("dsf_core.models.minilm", "pretrained all-MiniLM-L6-v2 sentence encoder (offline package)"),
    "efficientnet-lite0": (
        "dsf_core.models.efficientnet_lite0",
        "pretrained EfficientNet-Lite0 ImageNet CNN, scored on real photographs (offline packages)",
    ),
}


def load_builtin(name: str) -> ModelBundle:
    """Load a built-in model by name (see ``BUILTIN_MODELS``)."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"Unknown built-in model {name!r}; expected one of {list(BUILTIN_MODELS)}.")
    module = importlib.import_module(BUILTIN_MODELS[name][0])
    return module.load_bundle()


__all__ = ["BUILTIN_MODELS", "ModelBundle", "load_builtin"]
