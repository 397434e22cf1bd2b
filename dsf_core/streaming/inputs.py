"""What a streamed run feeds the model: its device and dtype, calibration and evaluation batches,
all checked before any long work starts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..compress import check_calibration
from ..models.loaders import (BATCH, CALIBRATION_SEED, ENCODER_EVAL_SAMPLES, EVAL_CHUNKS, EVAL_SEED, _random_tokens,
                              _text_chunks, text_tokens)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_run_device(device) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` that this machine has (``cuda`` under torchrun: the process's
    local GPU)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device must be cpu, cuda or cuda:N. Got {device!r} instead.") from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"--device must be cpu, cuda or cuda:N. Got {str(device)!r} instead.")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is available here (torch.cuda.is_available() is False).")
    if device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s).")
    return device


class RunInputs:
    """The run's device, dtype, calibration batches (``calibration``) and evaluation batches
    (``evaluation``: token ids of ``eval_text`` for a causal model; for an encoder, the in-memory
    path's held-out random tokens), on the device."""

    def __init__(self, source, *, calibration, seq_len, device, dtype, calibration_text, eval_text, use_data):
        self.device = check_run_device(device)
        if dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {list(DTYPES)}. Got {dtype!r} instead.")
        self.dtype = DTYPES[dtype]
        limit = source.max_positions
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
            raise ValueError(f"--seq-len must be an int >= 2. Got {seq_len!r} instead.")
        if limit is not None and seq_len > limit:
            raise ValueError(f"--seq-len {seq_len} is over the model's maximum of {limit} positions.")
        check_calibration(calibration)
        if eval_text is not None and not source.family.causal:
            raise ValueError("--eval-text (perplexity) applies to causal language models only.")
        self.texts = {"calibration_text": calibration_text, "eval_text": eval_text}
        tokenizer = _tokenizer(source.directory) if calibration_text or eval_text else None
        if not use_data:
            ids = None
        elif calibration_text:
            tokens = text_tokens(tokenizer, calibration_text, calibration * seq_len)
            if len(tokens) < seq_len:
                raise ValueError(f"--calibration-text gives {len(tokens)} tokens, fewer than one --seq-len ({seq_len}).")
            count = min(calibration, len(tokens) // seq_len)
            ids = tokens[: count * seq_len].view(count, seq_len)
        else:
            ids = _random_tokens(calibration, seq_len, source.config.vocab_size, CALIBRATION_SEED) if calibration else None
        self.n_calibration = 0 if ids is None else len(ids)
        self.calibration = [] if ids is None else [self._batch(b, source.family.causal) for b in ids.split(BATCH)]
        if source.family.causal:
            chunks = None if eval_text is None else _text_chunks(text_tokens(tokenizer, eval_text, EVAL_CHUNKS * seq_len), seq_len)
            self.evaluation = [] if chunks is None else [b.to(self.device) for b in chunks.split(BATCH)]
        else:  # an encoder: the in-memory path's held-out random tokens, for the embeddings' mean cosine
            held_out = _random_tokens(ENCODER_EVAL_SAMPLES, seq_len, source.config.vocab_size, EVAL_SEED)
            self.evaluation = [self._batch(b, causal=False) for b in held_out.split(BATCH)]

    def _batch(self, ids: torch.Tensor, causal: bool):
        """A batch as the model takes it: token ids, or a dict for an encoder (as the in-memory path)."""
        ids = ids.to(self.device)
        return ids if causal else {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def describe(self) -> dict:
        """The texts by content (their SHA-256), for the run's identity."""
        return {key: None if path is None else hashlib.sha256(open(path, "rb").read()).hexdigest()
                for key, path in self.texts.items()}

    def evaluation_tokens(self, ranks) -> list[torch.Tensor]:
        return ranks.shard(self.evaluation)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "tokenizer_config.json")


def _tokenizer(directory):
    """The model's own tokenizer (transformers would build an empty one from the config alone)."""
    from transformers import AutoTokenizer

    needs = "--calibration-text and --eval-text need the model's own tokenizer"
    if not any((Path(directory) / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"'{directory}' has no tokenizer files ({', '.join(TOKENIZER_FILES)}); {needs}.")
    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"'{directory}' has no tokenizer that loads ({reason[:200]}); {needs}.") from exc
