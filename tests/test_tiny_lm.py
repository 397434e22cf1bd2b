"""The built-in tiny language model: committed weights, eval text, calibration, masking, training."""

import json

import pytest
import torch
from torch import nn

from dsf_core.models import load_builtin, tiny_lm


@pytest.fixture(scope="module")
def bundle():
    return load_builtin("tiny-lm")


def test_bundle_reproduces_recorded_perplexity(bundle):
    with open(tiny_lm.INFO_PATH) as f:
        recorded = json.load(f)["eval"]
    assert (bundle.task, bundle.metric_name) == ("language-model", "perplexity")
    assert not bundle.higher_is_better
    metrics = bundle.evaluate(bundle.model)
    assert metrics["perplexity"] == pytest.approx(recorded["perplexity"], rel=1e-4)
    assert metrics["loss"] == pytest.approx(recorded["loss"], rel=1e-4)
    assert metrics["perplexity"] < 256 / 4  # far better than guessing among the bytes


def test_every_projection_is_a_linear(bundle):
    linears = [name for name, module in bundle.model.named_modules() if isinstance(module, nn.Linear)]
    assert len(linears) == 6 * bundle.model.config.n_layers + 1
    assert "head" in linears and "blocks.0.attn.query" in linears and "blocks.0.mlp.fc" in linears


def test_calibration_batches(bundle):
    batches = bundle.calibration_inputs(40)
    assert [tuple(b.shape) for b in batches] == [(16, 128), (16, 128), (8, 128)]
    assert all(b.dtype == torch.long and 0 <= b.min() and b.max() < 256 for b in batches)
    assert bundle.forward(bundle.model, batches[-1]).shape == (8, 128, 256)


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_calibration_rejects_bad_counts(n):
    with pytest.raises(ValueError, match="must be an int >= 1"):
        tiny_lm.calibration_inputs(n)


def test_too_long_input_raises(bundle):
    with pytest.raises(ValueError, match="at most 128 tokens; got 129"):
        bundle.model(torch.zeros(1, 129, dtype=torch.long))


@torch.no_grad()
def test_changing_a_future_token_leaves_earlier_logits_unchanged(bundle):
    x = bundle.calibration_inputs(2)[0]
    changed = x.clone()
    changed[:, 50] = (changed[:, 50] + 1) % 256
    before, after = bundle.model(x), bundle.model(changed)
    torch.testing.assert_close(before[:, :50], after[:, :50])
    assert not torch.allclose(before[:, 50:], after[:, 50:])


def test_a_few_training_steps_lower_the_loss():
    config = tiny_lm.TinyLMConfig(context=32, width=32, n_layers=1, n_heads=2)
    losses, threads = [], torch.get_num_threads()
    model = tiny_lm.train(config, steps=40, batch_size=8, callback=lambda _, loss: losses.append(loss))
    assert len(losses) == 40 and not model.training and torch.get_num_threads() == threads
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
