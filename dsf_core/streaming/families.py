"""The model families the streaming compressor knows: where a model's blocks are and what runs after them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """How to stream one ``transformers`` model family.

    ``blocks``: dotted path of the ``ModuleList`` of blocks (each block takes the hidden states as
    its first argument and returns the new hidden states); ``head``: the modules applied, in order,
    to the last block's output to get logits (absent ones, e.g. OPT's optional ``project_out``, are
    skipped); ``causal``: a language model (perplexity applies) rather than an encoder.
    """

    blocks: str
    head: tuple[str, ...]
    causal: bool


_DECODER = Family("model.layers", ("model.norm", "lm_head"), causal=True)
FAMILIES = {
    "llama": _DECODER,
    "mistral": _DECODER,
    "qwen2": _DECODER,
    "gpt2": Family("transformer.h", ("transformer.ln_f", "lm_head"), causal=True),
    "opt": Family(
        "model.decoder.layers",
        ("model.decoder.final_layer_norm", "model.decoder.project_out", "lm_head"),
        causal=True,
    ),
    "bert": Family("encoder.layer", (), causal=False),
}


def family_of(model_type: str) -> Family:
    """The family of a config's ``model_type``; a ValueError names the supported ones."""
    if model_type not in FAMILIES:
        raise ValueError(
            f"Model type {model_type!r} cannot be streamed; streaming supports {sorted(FAMILIES)}."
        )
    return FAMILIES[model_type]
