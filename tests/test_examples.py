"""The example matrices are what the targets describe."""

import pytest
import torch

from dsf_core.examples import minilm_weight, synthetic_matrix


def test_synthetic_matrix_is_reproducible_low_rank_plus_noise():
    W, G = synthetic_matrix(256, 192)
    W2, _ = synthetic_matrix(256, 192)
    assert torch.equal(W, W2) and W.shape == (256, 192) and G.shape == (192, 192)
    torch.testing.assert_close(G, G.T)
    energy = torch.linalg.svdvals(W) ** 2
    assert energy[:32].sum() > 0.6 * energy.sum()  # the planted rank-32 part dominates the noise
    assert G.diagonal()[-1] > 100 * G.diagonal()[0]  # input scales 0.1 .. 3


def test_minilm_weights_are_real_pretrained_matrices(query_weight):
    assert query_weight.shape == (384, 384)
    assert minilm_weight("intermediate.dense").shape == (1536, 384)
    assert minilm_weight("output.dense").shape == (384, 1536)
    assert 0.01 < float(query_weight.std()) < 1.0


def test_unknown_minilm_weight_is_a_clear_error():
    with pytest.raises(KeyError, match="No weight named"):
        minilm_weight("attention.self.nothing")
