"""Benchmark every method on the matrices of targets.md and print tables.

    python benchmarks/bench_methods.py [--threads 2] [--device cpu|cuda] [--quick]

Reference figures (error, seconds) are those measured from the public reference implementations
on this project's 2-core CPU machine (../shared/docs/targets.md); speed-ups are only meaningful on
the same kind of machine, with the same thread count, when it is otherwise idle.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import dsf_core  # noqa: E402
from _tables import print_table  # noqa: E402
from dsf_core.examples import minilm_weight, synthetic_matrix  # noqa: E402

# (label, shape, density, activation-aware, reference error, reference seconds)
DSF_REFERENCE = [
    ("synthetic", (256, 256), 0.5, False, 0.098, 1.1),
    ("synthetic", (256, 256), 0.5, True, 0.075, 1.0),
    ("synthetic", (512, 512), 0.5, False, 0.089, 5.4),
    ("synthetic", (512, 512), 0.5, True, 0.069, 4.9),
    ("synthetic", (512, 2048), 0.5, False, 0.106, 13.1),
    ("synthetic", (512, 2048), 0.5, True, 0.077, 12.3),
    ("synthetic", (1024, 1024), 0.5, False, 0.083, 30.9),
    ("synthetic", (1024, 1024), 0.5, True, 0.062, 27.6),
    ("attention.self.query", (384, 384), 0.25, False, 0.3190, 2.6),
    ("attention.self.query", (384, 384), 0.5, False, 0.1157, 2.7),
    ("intermediate.dense", (1536, 384), 0.25, False, 0.3286, 6.6),
    ("intermediate.dense", (1536, 384), 0.5, False, 0.1439, 6.4),
    ("output.dense", (384, 1536), 0.25, False, 0.3147, 6.2),
    ("output.dense", (384, 1536), 0.5, False, 0.1383, 6.1),
]
PYFAUST_QUERY = [(8, 0.831, 10.0), (16, 0.722, 9.0), (32, 0.563, 8.5)]  # k, error, seconds (8.5-10 s)


def timed(weight, method, device, **kwargs):
    """Factorize and return (result, wall seconds, longest gap between progress callbacks)."""
    stamps = [time.perf_counter()]
    result = dsf_core.factorize(
        weight, method, device=device, callback=lambda s, o: stamps.append(time.perf_counter()), **kwargs
    )
    stamps.append(time.perf_counter())
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return result, stamps[-1] - stamps[0], max(gaps)


def matrix_for(label, shape, activation_aware):
    if label == "synthetic":
        W, G = synthetic_matrix(*shape)
        return W, (G if activation_aware else None)
    return minilm_weight(label), None


def bench_dsf(device, quick, repeats):
    rows = []
    for label, shape, density, aware, ref_err, ref_s in DSF_REFERENCE:
        if quick and shape[0] * shape[1] > 512 * 512:
            continue
        W, G = matrix_for(label, shape, aware)
        runs = [timed(W, "dsf", device, density=density, gram=G) for _ in range(repeats)]
        result, _, _ = runs[0]
        seconds = min(run[1] for run in runs)  # the same deterministic fit; the least disturbed time
        err = result.error(W, G)
        magnitude = dsf_core.factorize(W, "magnitude", density=density, gram=G).error(W, G)
        svd = dsf_core.factorize(W, "svd", density=density, gram=G)
        rows.append([
            label, "x".join(map(str, shape)), density, "act" if aware else "I",
            f"{err:.4f}", f"{ref_err:.4f}", f"{err / ref_err:.3f}",
            f"{seconds:.2f}", f"{ref_s:.1f}", f"{ref_s / seconds:.1f}x",
            result.info["rounds"], f"{magnitude:.4f}", f"{svd.info['rank']}, {svd.error(W, G):.4f}",
        ])
    print_table(
        f"DSF against the reference implementation (targets.md); DSF s: best of {repeats} runs",
        ["matrix", "shape", "density", "G", "DSF err", "ref err", "err ratio", "DSF s", "ref s",
         "speed-up", "rounds", "magnitude err", "SVD rank, err"],
        rows,
    )


def warm_up(device):
    """One small fit per method, so that no table pays a process's one-time costs (the lazy
    tensorly import, first-use kernel set-up)."""
    W = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    for method, spec in dsf_core.METHODS.items():
        dsf_core.factorize(W, method, density=0.5, device=device, **spec.presets.get("quick", {}))


def bench_methods_on(W, title, density, device, preset=None):
    rows = []
    for method, spec in dsf_core.METHODS.items():
        options = spec.presets.get(preset, {}) if preset else {}
        result, seconds, gap = timed(W, method, device, density=density, **options)
        rows.append([method + (f" ({preset})" if options else ""), result.n_params, f"{result.density:.3f}", f"{result.error(W):.4f}",
                     f"{seconds:.2f}", f"{gap:.3f}", result.n_bytes, result.flops])
    print_table(title, ["method", "params", "density", "error", "seconds", "max callback gap s",
                        "bytes (CSR)", "FLOPs/matvec"], rows)


def bench_palm4msa(device):
    W = minilm_weight("attention.self.query")
    rows = []
    for k, ref_err, ref_s in PYFAUST_QUERY:
        result, seconds, _ = timed(W, "palm4msa", device, density=1.0, n_factors=2, projection="splincol",
                                   k=k, n_iter=300, tol=0.0)
        err = result.error(W)
        rows.append([k, f"{result.density:.3f}", f"{err:.4f}", f"{ref_err:.3f}", f"{err / ref_err:.3f}",
                     f"{seconds:.2f}", f"{ref_s:.1f}"])
    print_table("PALM4MSA, MiniLM query 384x384, Q=2, splincol, 300 iterations, vs pyfaust 3.41",
                ["k", "density", "error", "pyfaust err", "err ratio", "seconds", "pyfaust s"], rows)


def bench_hadamard(device, quick):
    from scipy.linalg import hadamard

    rows = []
    for n in (5, 6, 7) if quick else (5, 6, 7, 8):
        H = torch.tensor(hadamard(2**n), dtype=torch.float64)
        result, seconds, _ = timed(H, "hierarchical", device, density=1.0, n_factors=n,
                                   projection="splincol", k=2)
        rows.append([2**n, n, result.n_params, f"{result.error(H):.2e}", f"{seconds:.2f}"])
    print_table("Hierarchical PALM4MSA on Walsh-Hadamard (float64; pyfaust N=256: 2.7e-13 in 23 s)",
                ["N", "factors", "nonzeros", "error", "seconds"], rows)


def bench_gpu():
    rows = []
    for shape in ((4096, 4096), (4096, 11008)):
        W = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) / shape[1] ** 0.5
        dsf_core.factorize(W[:512, :512], "dsf", density=0.5, device="cuda")  # warm-up
        result, seconds, gap = timed(W, "dsf", "cuda", density=0.5)
        rows.append(["x".join(map(str, shape)), f"{result.error(W):.4f}", f"{seconds:.2f}", f"{gap:.3f}"])
    print_table("DSF on the GPU, density 0.5 (LLaMA-7B shapes, random weights)",
                ["shape", "error", "seconds", "max callback gap s"], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="skip the matrices above 512x512")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each DSF row, the fastest reported (shared machines are noisy)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"# dsf_core benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {device} ({name}), {os.cpu_count()} CPU cores")

    warm_up(device)
    bench_dsf(device, args.quick, args.repeats)
    W512, _ = synthetic_matrix(512, 512)
    bench_methods_on(W512, "Every method on a 512x512 matrix, density 0.25, defaults", 0.25, device)
    bench_methods_on(W512, "Every method on a 512x512 matrix, density 0.25, 'quick' presets (target <= 1 s)",
                     0.25, device, preset="quick")
    bench_methods_on(minilm_weight("attention.self.query"),
                     "Every method on MiniLM query 384x384, density 0.18", 0.18, device)
    bench_palm4msa(device)
    bench_hadamard(device, args.quick)
    if device.type == "cuda":
        bench_gpu()


if __name__ == "__main__":
    main()
