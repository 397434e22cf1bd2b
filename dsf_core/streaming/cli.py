"""The command line's streamed runs: ``compress HF_DIR`` (block by block) and ``evaluate OUT_DIR``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .source import is_model_directory
from .store import is_streamed_output

STREAM_ONLY = ("device", "dtype", "calibration_text", "eval_text", "seq_len", "resume", "export_dense")
DEFAULT_SEQ_LEN = 512  # capped at the model's maximum


def add_compress_arguments(parser) -> None:
    """The ``compress`` options of streamed runs."""
    parser.add_argument("--device", help="streamed runs: cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", help="streamed runs: the forward's float32, bfloat16 or float16 (default float32; "
                        "factorization is always float32)")
    parser.add_argument("--calibration-text", help="streamed runs: calibration samples from this text (the model's "
                        "tokenizer; default: random tokens)")
    parser.add_argument("--eval-text", help="streamed runs: perplexity on this text before and after")
    parser.add_argument("--seq-len", type=_seq_len, help=f"streamed runs: tokens per sample (default {DEFAULT_SEQ_LEN}, "
                        "at most the model's maximum)")
    parser.add_argument("--resume", action="store_true", help="streamed runs: continue the interrupted run in --out")
    parser.add_argument("--export-dense", metavar="DIR", help="streamed runs: also write the compressed model as an "
                        "ordinary Hugging Face directory (products multiplied out)")
    parser.add_argument("--in-memory", action="store_true", help="compress a Hugging Face directory in memory "
                        "(whole model) instead of block by block")


def _seq_len(text: str) -> int:
    """A --seq-len argument: a whole number of at least 2 tokens (0 no longer means the default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 2, got {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 2, got {value}")
    return value


def add_evaluate_arguments(parser) -> None:
    parser.add_argument("--eval-text", help="a streamed run's output: perplexity on this text")
    parser.add_argument("--seq-len", type=_seq_len, help="tokens per evaluation chunk (default: the run's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")


def streams(args) -> bool:
    """Whether ``compress`` runs block by block: a Hugging Face directory without ``--in-memory``.
    A ValueError for streamed-run options on an in-memory run."""
    if not args.in_memory and is_model_directory(args.model):
        return True
    given = [name for name in STREAM_ONLY if getattr(args, name) not in (None, False)]
    if given:
        where = "--in-memory runs" if args.in_memory else f"{args.model!r} (not a Hugging Face model directory)"
        raise ValueError(f"--{given[0].replace('_', '-')} applies to streamed runs only, not to {where}.")
    return False


def compress_command(args, options: dict) -> int:
    """``compress HF_DIR``: the streamed run, its summary on stdout (rank 0), progress on stderr."""
    from .pipeline import compress_streaming
    from .source import ModelSource

    if args.output_weighting:
        raise ValueError("--output-weighting needs the whole model's backward pass; use --in-memory.")
    source = ModelSource(args.model)  # bad directories fail here, before anything else
    seq_len = args.seq_len if args.seq_len is not None else min(DEFAULT_SEQ_LEN, source.max_positions or DEFAULT_SEQ_LEN)
    try:
        result = compress_streaming(
            args.model, args.method, args.density, layers=args.layers,
            calibration=128 if args.calibration is None else args.calibration, seq_len=seq_len,
            sequential=True if args.sequential is None else args.sequential, device=args.device or "cpu",
            dtype=args.dtype or "float32", calibration_text=args.calibration_text, eval_text=args.eval_text,
            out=args.out, export_dense=args.export_dense, resume=args.resume, progress=sys.stderr, **options,
        )
    except KeyboardInterrupt:
        if not args.out:
            raise
        raise KeyboardInterrupt(
            f"interrupted; the finished blocks are kept in '{args.out}': the same command with --resume goes on"
        ) from None
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    summary = {
        "model": str(source.directory), "method": args.method, "density": args.density, "options": result.options,
        "settings": result.settings, "dense_perplexity": result.dense_perplexity,
        "compressed_perplexity": result.compressed_perplexity, "mean_cosine": result.mean_cosine,
        "n_params_dense": result.n_params_dense,
        "n_params_compressed": result.n_params_compressed, "seconds": round(result.seconds, 3), "out": args.out,
        "export_dense": args.export_dense,
        "layers": [{"name": r.name, "shape": list(r.shape), "n_params_dense": r.n_params_dense, "n_params": r.n_params,
                    "error": r.error, "weighted_error": r.weighted_error, "seconds": round(r.seconds, 3)}
                   for r in result.layers],
    }
    _print(args, summary)
    return 0


def is_run_directory(target) -> bool:
    return Path(target).is_dir() and is_streamed_output(target)


def evaluate_command(args) -> int:
    """``evaluate OUT_DIR``: the compressed model read back with factorized layers; perplexity on
    ``--eval-text``; the run's own figures from its manifest."""
    from ..models.loaders import EVAL_CHUNKS, _perplexity, _text_chunks, text_tokens
    from .inputs import _tokenizer
    from .load import load_compressed
    from .store import read_manifest

    manifest = read_manifest(args.target)
    model = load_compressed(args.target, model_dir=args.model, device=args.device)
    if args.eval_text and not hasattr(model, "lm_head"):
        raise ValueError("--eval-text (perplexity) applies to causal language models only.")
    rows = [{"metric": key, "value": manifest.get(key)} for key in ("dense_perplexity", "compressed_perplexity", "mean_cosine")]
    rows.append({"metric": "n_params_compressed", "value": sum(r["n_params"] for r in manifest["reports"])})
    if args.eval_text:
        seq_len = args.seq_len if args.seq_len is not None else manifest["command"]["settings"]["seq_len"]
        tokenizer = _tokenizer(args.model or manifest["model"]["model_dir"])
        chunks = _text_chunks(text_tokens(tokenizer, args.eval_text, EVAL_CHUNKS * seq_len), seq_len)
        rows.append({"metric": "perplexity", "value": _perplexity(model, _lm_logits, chunks)})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['metric']:22s} {_cell(row['value'])}")
    return 0


def _lm_logits(model, batch):
    return model(input_ids=batch.to(next(model.parameters()).device), use_cache=False).logits


def _print(args, summary: dict) -> None:
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    for layer in summary["layers"]:
        print(f"{layer['name']:48s} {'x'.join(map(str, layer['shape'])):>11s} {layer['n_params']:>10d} "
              f"error {_cell(layer['error'])} weighted {_cell(layer['weighted_error'])}")
    print()
    for key in ("options", "settings", "dense_perplexity", "compressed_perplexity", "mean_cosine", "n_params_dense",
                "n_params_compressed", "seconds", "out", "export_dense"):
        print(f"{key:22s} {_cell(summary[key])}")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
