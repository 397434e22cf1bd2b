"""The built-in digits CNN: its committed checkpoint, data split, bundle and training script."""

import copy

import numpy as np
import pytest
import torch

from dsf_core.models import digits_cnn, load_builtin
from dsf_core.models.digits_cnn import (
    DigitsCNN,
    DigitsCNNConfig,
    evaluate,
    load_checkpoint,
    load_split,
    save_checkpoint,
    train,
)


@pytest.fixture(scope="module")
def bundle():
    return load_builtin("digits-cnn")


def test_bundle_loads_in_eval_mode_as_float32(bundle):
    assert isinstance(bundle.model, DigitsCNN)
    assert not bundle.model.training
    assert all(p.dtype == torch.float32 for p in bundle.model.parameters())
    assert (bundle.task, bundle.metric_name, bundle.higher_is_better) == ("classifier", "accuracy", True)


def test_layers_are_worth_factorizing(bundle):
    shapes = {name: tuple(m.weight.shape) for name, m in bundle.model.named_modules() if hasattr(m, "weight")}
    assert shapes["convs.2"] == (128, 64, 3, 3)
    assert shapes["fc"] == (128, 512)


def test_evaluate_reaches_97_percent_on_the_test_split(bundle):
    metrics = bundle.evaluate(bundle.model)
    assert metrics["accuracy"] >= 97.0
    assert 0 < metrics["loss"] < 0.2


def test_split_is_fixed():
    x_train, y_train, x_test, y_test = load_split()
    assert x_train.shape == (1347, 1, 8, 8) and x_test.shape == (450, 1, 8, 8)
    assert len(y_train) == 1347 and len(y_test) == 450
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    # Pinned labels: the split must not drift between versions (it is the last 25% of a
    # RandomState(0) permutation).
    assert y_train[:6].tolist() == [2, 8, 2, 6, 6, 7]
    assert y_test[:6].tolist() == [0, 7, 7, 4, 7, 2]


@pytest.mark.parametrize("n", [1, 128, 300])
def test_calibration_batches_are_the_first_training_images(bundle, n):
    batches = bundle.calibration_inputs(n)
    assert all(b.shape[1:] == (1, 8, 8) and len(b) <= 128 for b in batches)
    assert torch.equal(torch.cat(batches), load_split()[0][:n])


@pytest.mark.parametrize("n", [0, 1348, 2.5])
def test_calibration_rejects_bad_counts(bundle, n):
    with pytest.raises(ValueError, match="must be an int in the range"):
        bundle.calibration_inputs(n)


def test_forward_on_a_deep_copy_matches_the_original(bundle):
    batch = bundle.calibration_inputs(64)[0]
    clone = copy.deepcopy(bundle.model)
    with torch.no_grad():
        logits = bundle.forward(clone, batch)
        assert logits.shape == (64, 10)
        assert torch.equal(logits, bundle.forward(bundle.model, batch))


def test_checkpoint_round_trips(bundle, tmp_path):
    path = str(tmp_path / "digits.safetensors")
    save_checkpoint(bundle.model, path, seed=3)
    model, info = load_checkpoint(path)
    assert info == {"seed": 3}
    assert model.config == bundle.model.config
    original = bundle.model.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


def test_config_rejects_an_input_size_the_pools_cannot_halve():
    with pytest.raises(ValueError, match="divisible by 2\\*\\*len\\(channels\\) = 8. Got 12"):
        DigitsCNNConfig(channels=(8, 8, 8), input_size=12)


def test_short_training_run_is_reproducible_and_beats_chance():
    config = DigitsCNNConfig(channels=(8, 16), hidden=32)
    model = train(config, epochs=1, seed=0, threads=1, lr=2e-2)
    again = train(config, epochs=1, seed=0, threads=1, lr=2e-2)
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    assert evaluate(model)["accuracy"] > 40.0  # chance is 10%; this run gets ~70%


def test_digits_read_directly_equal_scikit_learns_loader():
    from sklearn.datasets import load_digits

    images, labels = digits_cnn._read_digits()
    reference = load_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(labels, reference.target)
