"""The model families the streaming compressor knows: where a model's blocks are and which layers
run after them. Families named here are tested one by one; any other causal language model is
read from its skeleton (:func:`infer_family`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Family:
    """How to stream one ``transformers`` model family.

    ``blocks``: dotted path of the ``ModuleList`` of blocks (each block takes the hidden states as
    its first argument and returns the new hidden states, alone or first in a tuple); ``head``: the
    layers after the blocks that a run may compress (e.g. ``lm_head``); ``causal``: a language
    model (perplexity applies) rather than an encoder.
    """

    blocks: str
    head: tuple[str, ...]
    causal: bool


_DECODER = Family("model.layers", ("lm_head",), causal=True)
FAMILIES = {
    "llama": _DECODER,
    "mistral": _DECODER,
    "qwen2": _DECODER,
    "gpt2": Family("transformer.h", ("lm_head",), causal=True),
    "opt": Family("model.decoder.layers", ("model.decoder.project_out", "lm_head"), causal=True),
    "bert": Family("encoder.layer", (), causal=False),
}
SUPPORTED = "causal language models (e.g. llama, mistral, qwen2, gpt2, opt) and bert"


def why_not_streamed(config) -> str | None:
    """Why a model of ``config`` cannot be streamed; None when it can (a family named here, or a
    causal language model whose checkpoints hold its tensors under its own names)."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    if config.model_type in FAMILIES:
        return None
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        return f"streaming supports {SUPPORTED}"
    names = (MODEL_FOR_CAUSAL_LM_MAPPING[type(config)].__name__, config.model_type)
    if any(get_checkpoint_conversion_mapping(name) is not None for name in names):
        return ("transformers renames or fuses its checkpoints' tensors on loading (e.g. mixture-of-experts "
                "weights), and streaming reads a block's tensors by their names")
    return None


def infer_family(model: nn.Module, config) -> Family:
    """The family of a causal language model of another type: its blocks are the ``ModuleList`` of
    ``num_hidden_layers`` modules holding the most parameters; its head, the output embeddings."""
    n_blocks = getattr(config, "num_hidden_layers", None)
    lists = [(sum(p.numel() for p in module.parameters()), name)
             for name, module in model.named_modules()
             if isinstance(module, nn.ModuleList) and n_blocks and len(module) == n_blocks]
    if not lists:
        raise ValueError(
            f"Model type {config.model_type!r} cannot be streamed: no list of its {n_blocks} blocks was found in the "
            "model; the in-memory path can load it: add --in-memory."
        )
    blocks = max(lists)[1]
    output = model.get_output_embeddings()
    head = tuple(name for name, module in model.named_modules()
                 if module is output and isinstance(module, nn.Linear) and not name.startswith(blocks + "."))
    return Family(blocks, head, causal=True)
