"""Streamed (block by block) vs in-memory whole-model compression against depth.

    python benchmarks/bench_streaming.py [--depths 4,8,16,32] [--memory-depths 4,8,16] [--calibration 32]
        [--width 512] [--methods wanda,dsf]

Random LLaMA-architecture models of one width (``transformers``' own classes, saved as sharded
safetensors), ``wanda`` and DSF's ``quick`` preset at density 0.5. Each run is its own subprocess
(one thread per process) and its peak RSS is read with ``getrusage(RUSAGE_CHILDREN)`` by a wrapper
process around it; seconds are the compress call's own (model loading included), wall-clock and CPU
(the process's CPU time: with one thread per process it measures the work even on a busy machine). DSF also runs
over two processes (``torch.distributed.run``, gloo), sequential and ``--independent``.
Targets (issue 12): 32 layers <= 9x the 4-layer time; peak RSS of 32 layers <= the 4-layer run's +
25% of the 32-layer model's size; two processes >= 1.6x faster than one on DSF.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from _tables import print_table

ROOT = Path(__file__).resolve().parents[1]
HEADS, VOCAB = 8, 2000
MLP_RATIO = 1376 / 512  # LLaMA's intermediate size over width
DSF_QUICK = {"n_rounds": 18}  # METHODS["dsf"].presets["quick"]
WRAPPER = "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; " \
          "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"


def save_llama(directory: Path, layers: int, width: int) -> int:
    """A random LLaMA of ``layers`` blocks in ``directory``; returns its weights' bytes."""
    from dsf_core._torchvision_compat import prepare_transformers

    prepare_transformers()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=width, intermediate_size=round(width * MLP_RATIO), num_hidden_layers=layers,
                         num_attention_heads=HEADS,
                         num_key_value_heads=HEADS, vocab_size=VOCAB, max_position_embeddings=256)
    LlamaForCausalLM(config).save_pretrained(directory, max_shard_size="50MB")
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))


def worker(directory: str, path: str, method: str, calibration: int, independent: bool) -> None:
    """One compress run, timed; prints ``SECONDS wall cpu`` (rank 0)."""
    import time

    torch.set_num_threads(1)
    options = DSF_QUICK if method == "dsf" else {}
    start, start_cpu = time.perf_counter(), time.process_time()
    if path == "memory":
        from dsf_core.compress import compress_model
        from dsf_core.models.loaders import load_hf

        bundle = load_hf(directory, seq_len=32)
        compress_model(bundle, method, 0.5, layers="model.layers.*", calibration=calibration,
                       sequential=not independent, evaluate=False, **options)
    else:
        from dsf_core.streaming import compress_streaming

        compress_streaming(directory, method, 0.5, calibration=calibration, seq_len=32, sequential=not independent,
                           **options)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"SECONDS {time.perf_counter() - start:.2f} {time.process_time() - start_cpu:.2f}", file=sys.stderr)


def measure(directory: Path, path: str, method: str, calibration: int, processes: int = 1, independent=False):
    """(seconds, CPU seconds of rank 0, peak RSS in MB of the largest process) of one run in a fresh
    subprocess."""
    script = [str(Path(__file__).resolve()), "--worker", str(directory), path, method, str(calibration),
              "1" if independent else "0"]
    if processes > 1:
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *script]
    else:
        run = [sys.executable, *script]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", WRAPPER, *run], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    lines = done.stderr.splitlines()
    seconds, cpu = map(float, next(line.split()[1:] for line in lines if line.startswith("SECONDS")))
    peak_mb = int(next(line.split()[1] for line in lines if line.startswith("PEAK_KB"))) / 1024
    return seconds, cpu, peak_mb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--depths", default="4,8,16,32")
    parser.add_argument("--memory-depths", default="4,8,16", help="depths for the in-memory path (quadratic time)")
    parser.add_argument("--dsf-depths", default="4,8,16,32")
    parser.add_argument("--parallel-depth", type=int, default=8, help="depth of the 1 vs 2 process DSF runs")
    parser.add_argument("--parallel-modes", default="sequential,independent")
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--methods", default="wanda,dsf")
    args = parser.parse_args()
    methods = args.methods.split(",")
    depths = [int(d) for d in args.depths.split(",")]
    memory_depths = {int(d) for d in args.memory_depths.split(",") if d}
    dsf_depths = {int(d) for d in args.dsf_depths.split(",") if d}
    print(f"# Streaming vs in-memory compression: width {args.width}, MLP {round(args.width * MLP_RATIO)}, "
          f"vocab {VOCAB}, density 0.5, "
          f"{args.calibration} calibration samples of 32 tokens; 1 thread per process; CPU ({platform.processor() or 'cpu'}, "
          f"{os.cpu_count()} cores), torch {torch.__version__}")
    rows, parallel_rows, results = [], [], {}
    with tempfile.TemporaryDirectory() as scratch:
        for depth in depths:
            directory = Path(scratch) / f"llama-{depth}"
            size_mb = save_llama(directory, depth, args.width) / 2**20
            for method in methods:
                if method == "dsf" and depth not in dsf_depths:
                    continue
                for path in ("stream", "memory"):
                    if path == "memory" and depth not in memory_depths:
                        continue
                    seconds, cpu, peak = measure(directory, path, method, args.calibration)
                    results[depth, method, path] = (seconds, cpu, peak, size_mb)
                    rows.append([depth, f"{size_mb:.0f}", method, path, f"{seconds:.1f}", f"{cpu:.1f}", f"{peak:.0f}"])
                    print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
            if depth == args.parallel_depth:
                for mode in args.parallel_modes.split(","):
                    independent = mode == "independent"
                    one = measure(directory, "stream", "dsf", args.calibration, 1, independent)
                    two = measure(directory, "stream", "dsf", args.calibration, 2, independent)
                    parallel_rows.append([depth, mode, f"{one[0]:.1f}", f"{two[0]:.1f}", f"{one[0] / two[0]:.2f}x"])
                    print(" | ".join(map(str, parallel_rows[-1])), file=sys.stderr, flush=True)
    print_table("Seconds and peak RSS against depth",
                ["layers", "model MB", "method", "path", "seconds", "CPU s", "peak RSS MB"], rows)
    print_table("DSF (quick), 1 vs 2 processes (torch.distributed, gloo)",
                ["layers", "Grams", "1 process s", "2 processes s", "speed-up"], parallel_rows)
    lo, hi = min(depths), max(depths)
    for method in methods:
        if (lo, method, "stream") in results and (hi, method, "stream") in results:
            (t_lo, c_lo, rss_lo, _), (t_hi, c_hi, rss_hi, size_hi) = results[lo, method, "stream"], results[hi, method, "stream"]
            print(f"\n{method} streamed: time {hi} layers / {lo} layers = {t_hi / t_lo:.2f}x wall, {c_hi / c_lo:.2f}x CPU "
                  f"(target for 32/4: <= 9x); "
                  f"peak RSS {rss_hi:.0f} MB (target: <= {rss_lo:.0f} + 25% of {size_hi:.0f} = "
                  f"{rss_lo + 0.25 * size_hi:.0f} MB)")
    print(json.dumps({f"{k[0]}-{k[1]}-{k[2]}": v for k, v in results.items()}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6] == "1")
    else:
        main()
