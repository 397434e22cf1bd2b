"""Our ``sparsegpt`` side by side with the public reference (IST-DASLab/sparsegpt), and every
pruning method (and DSF, with ``--dsf``) at density 0.5 unstructured and 2:4, on real MiniLM layers
with activation Grams: error and seconds.

    python benchmarks/bench_sparsegpt.py --reference DIR [--threads 2] [--sentences 128] [--dsf]

``DIR`` (or the environment variable ``SPARSEGPT_REFERENCE``) holds the reference's ``sparsegpt.py``
and ``quant.py`` (e.g. ``git --git-dir=<clone>.git show HEAD:sparsegpt.py > DIR/sparsegpt.py``); it is
imported from there and never part of this project. Both get the same damped Gram (1% of its mean
diagonal, as the app damps), each adds its own 1% damping, and both run in this process, alternating,
on the same thread count. Errors are activation-weighted, against the undamped Gram.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import dsf_core  # noqa: E402
from _reference import import_reference  # noqa: E402
from _tables import print_table  # noqa: E402
from dsf_core.examples import minilm_grams, minilm_weight  # noqa: E402

LAYER_TYPES = ("attention.self.query", "attention.self.key", "attention.self.value",
               "attention.output.dense", "intermediate.dense", "output.dense")
DEPTHS = (1, 4)
PATTERNS = ("unstructured", "2:4", "4:8")
COMPARED_PATTERNS = ("unstructured", "2:4")  # the every-method table


def load_reference(directory):
    """The reference's ``SparseGPT`` class, or None when ``directory`` lacks ``sparsegpt.py``."""
    module = import_reference(directory, "sparsegpt", "SPARSEGPT_REFERENCE")
    if module is None:
        return None
    if not torch.cuda.is_available():  # it synchronizes a GPU unconditionally at the end of a prune
        torch.cuda.synchronize = lambda *args, **kwargs: None
    return module.SparseGPT


def reference_prune(SparseGPT, W, gram, pattern):
    """Prune ``W`` with the reference at density 0.5 (unstructured) or ``pattern``; return (result, s)."""
    layer = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    layer.weight.data = W.clone()
    pruner = SparseGPT(layer)
    pruner.H = gram.clone()
    n, m = (0, 0) if pattern == "unstructured" else map(int, pattern.split(":"))
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its own time and error
        pruner.fasterprune(0.5, prunen=m - n, prunem=m, blocksize=128, percdamp=0.01)
    return layer.weight.data.clone(), time.perf_counter() - start


def ours(W, gram, pattern, method="sparsegpt"):
    options = {"pattern": pattern} if "pattern" in dsf_core.METHODS[method].options else {}
    start = time.perf_counter()
    result = dsf_core.factorize(W, method, density=0.5, gram=gram, **options)
    return result.to_matrix(), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=os.environ.get("SPARSEGPT_REFERENCE"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=128, help="calibration sentences for the Grams")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed runs of each; medians reported")
    parser.add_argument("--dsf", action="store_true", help="also DSF in the every-method table (slower)")
    args = parser.parse_args()
    methods = ("magnitude", "wanda", "sparsegpt") + (("dsf",) if args.dsf else ())  # the every-method table
    torch.set_num_threads(args.threads)
    print(f"# SparseGPT benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu "
          f"({platform.processor() or 'CPU'}), {os.cpu_count()} CPU cores, {args.sentences} calibration sentences")
    SparseGPT = load_reference(args.reference)
    layers = [(name, depth) for depth in DEPTHS for name in LAYER_TYPES]
    grams = minilm_grams(layers, args.sentences)

    rows, pruning_rows, ratios = [], [], []
    for name, depth in layers:
        W, G = minilm_weight(name, depth), grams[(name, depth)]
        damped = dsf_core.damp_gram(G, 0.01)
        shape = "x".join(map(str, W.shape))
        for pattern in PATTERNS:
            times_ours, times_ref = [], []
            for _ in range(args.repeats):
                approx, seconds = ours(W, damped, pattern)
                times_ours.append(seconds)
                if SparseGPT is not None:
                    reference, seconds = reference_prune(SparseGPT, W, damped, pattern)
                    times_ref.append(seconds)
            err = dsf_core.weighted_relative_error(W, approx, G)
            row = [f"{depth}.{name}", shape, pattern, f"{err:.4f}", f"{statistics.median(times_ours):.3f}"]
            if SparseGPT is not None:
                ref_err = dsf_core.weighted_relative_error(W, reference, G)
                ratios.append(err / ref_err)
                row += [f"{ref_err:.4f}", f"{err / ref_err:.3f}", f"{statistics.median(times_ref):.3f}",
                        int((reference != 0).sum())]
            rows.append(row + [int((approx != 0).sum())])
            print(" | ".join(map(str, rows[-1])), flush=True)
            if pattern in COMPARED_PATTERNS:
                cells, errors = [], {}
                for method in methods:
                    if method == "sparsegpt":  # measured above
                        method_approx, seconds = approx, statistics.median(times_ours)
                    else:
                        method_approx, seconds = ours(W, damped, pattern, method)
                    errors[method] = dsf_core.weighted_relative_error(W, method_approx, G)
                    cells += [f"{errors[method]:.4f}", f"{seconds:.2f}"]
                pruning_rows.append([f"{depth}.{name}", pattern, *cells, min(errors, key=errors.get)])
                print(" | ".join(map(str, pruning_rows[-1])), flush=True)

    header = ["layer", "shape", "pattern", "ours err", "ours s"]
    if SparseGPT is not None:
        header += ["reference err", "err ratio", "reference s", "reference nnz"]
    print_table("sparsegpt vs the reference (IST-DASLab/sparsegpt), density 0.5, same damped Gram, "
                f"median of {args.repeats} alternating runs", header + ["ours nnz"], rows)
    if ratios:
        print(f"\nerror ratio ours/reference: median {statistics.median(ratios):.3f}, worst {max(ratios):.3f}")
    print_table("Activation-weighted error and seconds at density 0.5 (DSF with --dsf; under a pattern, "
                "DSF puts it on both factors)",
                ["layer", "pattern", *(f"{m} {c}" for m in methods for c in ("err", "s")), "lowest error"],
                pruning_rows)


if __name__ == "__main__":
    main()
