"""A small byte-level decoder-only transformer trained on Python standard library source.

Text: the training text is the source of the modules in ``TRAIN_MODULES`` read from the running
interpreter's standard library (the committed weights were trained on CPython 3.11.7's files);
the evaluation text ``data/tiny_lm_eval.txt`` is committed: the source of ``EVAL_MODULES``
(CPython 3.11.7), which the training never sees. Both are excerpts of CPython, Copyright (c)
2001-2023 Python Software Foundation, All Rights Reserved, redistributed under the PSF License
Agreement (https://docs.python.org/3/license.html).

Every projection is a plain ``nn.Linear`` (separate query/key/value/output, two MLP layers and an
untied LM head), so each one can be compressed on its own.

Train the committed weights with ``python -m dsf_core.models.tiny_lm --train``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sysconfig
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ._bundle import ModelBundle

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS_PATH = os.path.join(HERE, "weights", "tiny_lm.safetensors")
INFO_PATH = os.path.join(HERE, "weights", "tiny_lm.json")
EVAL_TEXT_PATH = os.path.join(HERE, "data", "tiny_lm_eval.txt")

# Top-level modules present in CPython 3.10 to 3.13 (none removed or turned into a package).
TRAIN_MODULES = (
    "argparse", "ast", "base64", "bisect", "calendar", "codecs", "colorsys", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "difflib", "dis", "enum", "fnmatch",
    "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "heapq", "hmac",
    "inspect", "ipaddress", "linecache", "locale", "mailbox", "netrc", "ntpath", "numbers",
    "operator", "optparse", "os", "pickle", "pkgutil", "platform", "plistlib", "posixpath",
    "pprint", "queue", "quopri", "random", "reprlib", "sched", "secrets", "selectors", "shutil",
    "smtplib", "socket", "socketserver", "statistics", "string", "subprocess", "tarfile",
    "tempfile", "threading", "timeit", "tokenize", "trace", "traceback", "types", "typing", "uuid",
    "warnings", "weakref", "zipimport",
)  # fmt: skip
EVAL_MODULES = ("shlex", "textwrap")
CALIBRATION_BATCH = 16


@dataclass
class TinyLMConfig:
    """Sizes of a :class:`TinyLM` (the defaults are the committed model's)."""

    vocab_size: int = 256  # bytes
    context: int = 128
    width: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: int = 4


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees itself and the positions before it."""

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.query = nn.Linear(config.width, config.width)
        self.key = nn.Linear(config.width, config.width)
        self.value = nn.Linear(config.width, config.width)
        self.out = nn.Linear(config.width, config.width)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, H, T, D/H)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape  # (B, T, D)
        q, k, v = (self._split_heads(layer(x)) for layer in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D/H)
        return self.out(y.transpose(1, 2).reshape(b, t, d))  # (B, T, D)


class MLP(nn.Module):
    """Position-wise feed-forward layer: widen, GELU, project back."""

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.fc = nn.Linear(config.width, config.mlp_ratio * config.width)
        self.proj = nn.Linear(config.mlp_ratio * config.width, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))  # (B, T, D) -> (B, T, 4D) -> (B, T, D)


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.width)
        self.attn = CausalSelfAttention(config)
        self.ln_mlp = nn.LayerNorm(config.width)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x))
        return x + self.mlp(self.ln_mlp(x))  # (B, T, D)


class TinyLM(nn.Module):
    """Byte-level GPT-style language model: token ids (B, T) -> next-byte logits (B, T, V)."""

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.position_embedding = nn.Embedding(config.context, config.width)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_final = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, config.vocab_size, bias=False)
        self.apply(_init_weights)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.config.context:
            raise ValueError(f"Sequences may hold at most {self.config.context} tokens; got {t}.")
        positions = torch.arange(t, device=idx.device)
        x = self.token_embedding(idx) + self.position_embedding(positions)  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_final(x))  # (B, T, V)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy (nats) of next-byte ``logits`` (B, T, V) against ``targets`` (B, T)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction=reduction)


# --- text --------------------------------------------------------------------------------------


def _stdlib_bytes(modules) -> bytes:
    root = sysconfig.get_paths()["stdlib"]
    parts = []
    for name in modules:
        with open(os.path.join(root, f"{name}.py"), "rb") as f:
            parts.append(f.read())
    return b"".join(parts)


def _as_tokens(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()  # (N,)


@functools.lru_cache(maxsize=1)
def training_tokens() -> torch.Tensor:
    """The training text (``TRAIN_MODULES`` of this interpreter's standard library) as byte ids."""
    return _as_tokens(_stdlib_bytes(TRAIN_MODULES))


@functools.lru_cache(maxsize=1)
def eval_tokens() -> torch.Tensor:
    """The committed evaluation text as byte ids."""
    with open(EVAL_TEXT_PATH, "rb") as f:
        return _as_tokens(f.read())


def calibration_inputs(n: int, *, context: int = TinyLMConfig.context) -> list[torch.Tensor]:
    """``n`` training sequences of ``context`` bytes at evenly spaced offsets, in batches of
    at most ``CALIBRATION_BATCH`` (each a (B, context) tensor of byte ids)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"The number of calibration sequences must be an int >= 1. Got {n!r} instead.")
    tokens = training_tokens()
    starts = torch.linspace(0, len(tokens) - context, n).long()
    sequences = torch.stack([tokens[s : s + context] for s in starts.tolist()])  # (n, context)
    return list(sequences.split(CALIBRATION_BATCH))


# --- training and evaluation -------------------------------------------------------------------


def _random_batch(tokens, batch_size, context, generator):
    starts = torch.randint(len(tokens) - context, (batch_size,), generator=generator)
    windows = torch.stack([tokens[s : s + context + 1] for s in starts.tolist()])  # (B, T+1)
    return windows[:, :-1], windows[:, 1:]


def _learning_rate(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 5% of the steps, then cosine decay to a tenth of ``peak``."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def train(
    config: TinyLMConfig,
    *,
    steps: int,
    seed: int = 0,
    threads: int = 1,
    batch_size: int = 32,
    lr: float = 3e-3,
    callback=None,
) -> TinyLM:
    """Train a fresh :class:`TinyLM` on the training text with AdamW; ``callback(step, loss)``
    reports each step's training loss. Uses ``threads`` CPU threads (restored afterwards)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = TinyLM(config)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        tokens = training_tokens()
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, steps, lr)
            x, y = _random_batch(tokens, batch_size, config.context, generator)
            loss = lm_loss(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if callback is not None:
                callback(step, loss.item())
    finally:
        torch.set_num_threads(previous_threads)
    return model.eval()


@torch.no_grad()
def evaluate(model: nn.Module, *, context: int = TinyLMConfig.context, batch_size: int = 64) -> dict:
    """Byte-level perplexity and loss (nats per byte) on the evaluation text, predicting every byte
    after the first exactly once, in non-overlapping windows of ``context`` bytes."""
    device = next(model.parameters()).device
    tokens = eval_tokens().to(device)
    inputs, targets = tokens[:-1], tokens[1:]
    n_full = len(inputs) // context * context
    windows_x = inputs[:n_full].view(-1, context)  # (W, T)
    windows_y = targets[:n_full].view(-1, context)  # (W, T)
    batches = list(zip(windows_x.split(batch_size), windows_y.split(batch_size)))
    if n_full < len(inputs):
        batches.append((inputs[n_full:][None], targets[n_full:][None]))  # the last, shorter window
    loss = sum(lm_loss(model(x), y, "sum").item() for x, y in batches) / len(targets)
    return {"perplexity": math.exp(loss), "loss": loss}


def forward(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Next-byte logits (B, T, V) of a (B, T) batch of byte ids, on the model's device."""
    return model(batch.to(next(model.parameters()).device))


# --- weights -----------------------------------------------------------------------------------


def load_bundle() -> ModelBundle:
    """The committed tiny language model with its calibration text and perplexity metric."""
    with open(INFO_PATH) as f:
        info = json.load(f)  # config, training run, recorded eval metrics
    from .loaders import load_checked

    model = load_checked(TinyLM(TinyLMConfig(**info["config"])), load_file(WEIGHTS_PATH))
    context = model.config.context
    return ModelBundle(
        name="tiny-lm",
        model=model,
        task="language-model",
        metric_name="perplexity",
        higher_is_better=False,
        calibration_inputs=functools.partial(calibration_inputs, context=context),
        forward=forward,
        evaluate=functools.partial(evaluate, context=context),
        description="Byte-level 4-layer transformer trained on Python standard library source.",
        source=WEIGHTS_PATH,
        extras=info,
    )


def _save(model: TinyLM, training: dict) -> dict:
    os.makedirs(os.path.dirname(WEIGHTS_PATH), exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, WEIGHTS_PATH)
    metrics = evaluate(model, context=model.config.context)
    info = {"config": asdict(model.config), "training": training, "eval": metrics}
    with open(INFO_PATH, "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    return info


def _write_eval_text() -> None:
    os.makedirs(os.path.dirname(EVAL_TEXT_PATH), exist_ok=True)
    with open(EVAL_TEXT_PATH, "wb") as f:
        f.write(_stdlib_bytes(EVAL_MODULES))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--train", action="store_true", help="train and save the committed weights")
    action.add_argument("--write-eval-text", action="store_true", help=f"write {EVAL_TEXT_PATH}")
    parser.add_argument("--steps", type=int, default=1800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)
    if args.write_eval_text:
        _write_eval_text()
        return

    def report(step, loss):
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss:.4f}  {time.perf_counter() - start:7.1f} s", flush=True)

    options = {name: getattr(args, name) for name in ("steps", "seed", "threads", "batch_size", "lr")}
    start = time.perf_counter()
    model = train(TinyLMConfig(), callback=report, **options)
    seconds = round(time.perf_counter() - start, 1)
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    info = _save(model, {**options, "seconds": seconds, **versions})
    print(f"eval perplexity {info['eval']['perplexity']:.4f} (loss {info['eval']['loss']:.4f} nats/byte)")


if __name__ == "__main__":
    main()
