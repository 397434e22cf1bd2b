"""Shared test set-up: offline hub, a thread count that suits the 2-core machines, fixtures."""

import os

import pytest
import torch

from dsf_core.examples import minilm_weight

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# More BLAS threads than cores makes linear-algebra-heavy tests crawl on shared machines.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def query_weight():
    """The real 384 x 384 query weight of MiniLM's layer 2."""
    return minilm_weight("attention.self.query")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the tests of a module that use it (small models, many processes)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
