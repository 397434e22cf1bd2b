"""The pretrained all-MiniLM-L6-v2 bundle: agreement metrics, calibration data, an independent oracle."""

import copy
import difflib

import pytest
import torch

from dsf_core.compress import compress_model
from dsf_core.models import load_builtin
from dsf_core.models.minilm import read_sentences


@pytest.fixture(scope="module")
def bundle():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_builtin("minilm")
    torch.set_num_threads(previous)


def test_contract(bundle):
    assert (bundle.name, bundle.task, bundle.metric_name, bundle.higher_is_better) == (
        "minilm",
        "encoder",
        "mean_cosine",
        True,
    )
    assert not bundle.model.training and all(p.dtype == torch.float32 for p in bundle.model.parameters())
    assert bundle.extras["reference_embeddings"].shape == (120, 384)


def test_original_agrees_with_itself(bundle):
    result = bundle.evaluate(bundle.model)
    assert result == pytest.approx({"mean_cosine": 1.0, "ranking_agreement": 1.0}, abs=1e-5)


def test_perturbed_copy_agrees_less(bundle):
    noisy = copy.deepcopy(bundle.model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in noisy.encoder.layer[2].parameters():
            p.add_(0.2 * p.std() * torch.randn_like(p))
    result = bundle.evaluate(noisy)
    assert 0.5 < result["mean_cosine"] < 1 - 1e-4
    assert 0.5 < result["ranking_agreement"] < 1 - 1e-4


def test_embeddings_match_sentence_transformers(bundle):
    from sentence_transformers import SentenceTransformer

    oracle = SentenceTransformer(bundle.source, device="cpu")
    expected = oracle.encode(bundle.extras["sentences"], convert_to_tensor=True)
    torch.testing.assert_close(bundle.extras["reference_embeddings"], expected, atol=1e-5, rtol=0)


def test_paraphrases_are_nearest_neighbours(bundle):
    """The sentence file is in groups of six on one topic, each opening with a paraphrase pair."""
    reference = bundle.extras["reference_embeddings"]
    similarity = reference @ reference.T
    similarity.fill_diagonal_(-1)
    nearest = similarity.argmax(dim=1)
    pairs_found = sum(int(nearest[i]) == i + 1 for i in range(0, 120, 6))
    same_topic = (nearest // 6 == torch.arange(120) // 6).float().mean()
    assert pairs_found >= 16 and same_topic > 0.7


def test_calibration_batches_hold_little_padding(bundle):
    masks = [batch["attention_mask"] for batch in bundle.calibration_inputs(600)]
    padding = sum(int((m == 0).sum()) for m in masks) / sum(m.numel() for m in masks)
    assert padding < 0.1  # unsorted batches of 64 were 27% padding


def test_calibration_inputs(bundle):
    batches = bundle.calibration_inputs(70)
    assert sum(len(b["input_ids"]) for b in batches) == 70
    embeddings = bundle.forward(bundle.model, batches[0])
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(len(embeddings)))
    calibration = read_sentences("minilm_calibration.txt")
    assert len(set(calibration)) == len(calibration) == 600
    evaluation = [s.lower() for s in bundle.extras["sentences"]]
    assert not [s for s in calibration if difflib.get_close_matches(s.lower(), evaluation, n=1, cutoff=0.7)]
    for n in (0, 601, 2.5):
        with pytest.raises(ValueError, match=r"'n' parameter must be an int in the range \[1, 600\]"):
            bundle.calibration_inputs(n)


def test_recommended_settings_run(bundle):
    result = compress_model(bundle, "dsf", 0.5, layers="encoder.layer.5.output.dense", calibration=64, evaluate=False)
    assert result.settings == {"calibration": 64, "sequential": False, "damp": 0.01, "output_weighting": True}
    factorization = result.factorizations["encoder.layer.5.output.dense"]
    assert factorization.info["row_weighted"] and factorization.options["n_rounds"] == 48
