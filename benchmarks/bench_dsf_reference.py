"""Our ``dsf`` side by side with the public reference (usamec/double_sparse) on real MiniLM layers.

    python benchmarks/bench_dsf_reference.py --reference DIR [--threads 2] [--depths 1,4]
        [--densities 0.25,0.5,0.7] [--layers query,intermediate.dense,...] [--repeats 1]

``DIR`` (or the environment variable ``DSF_REFERENCE``) holds the reference's ``doublesparse.py``
(e.g. ``git --git-dir=<clone>.git show HEAD:doublesparse.py > DIR/doublesparse.py``); it is imported
from there and never part of this project. Each row runs both in this process, alternating which
goes first, on the same Gram and thread count: activation-aware rows use the layer's input Gram from
the built-in calibration sentences damped by 1% of its mean diagonal (errors against the undamped
Gram); data-free rows use the identity (plain relative error). Times are medians over repeats.
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


def load_reference(directory):
    """The reference module, or None when ``directory`` lacks ``doublesparse.py``."""
    return import_reference(directory, "doublesparse", "DSF_REFERENCE")


def run_reference(reference, W, gram, density):
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
        approx, A, B = reference.factorize(W.clone(), gram.clone(), 1.0 - density)
    seconds = time.perf_counter() - start
    return approx, seconds, int((A != 0).sum() + (B != 0).sum())


def run_ours(W, gram, density, aware, options):
    start = time.perf_counter()
    result = dsf_core.factorize(W, "dsf", density=density, gram=gram if aware else None, **options)
    return result.to_matrix(), time.perf_counter() - start, result.n_params, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=os.environ.get("DSF_REFERENCE"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--depths", default="1,4")
    parser.add_argument("--densities", default="0.25,0.5,0.7")
    parser.add_argument("--layers", default=",".join(LAYER_TYPES))
    parser.add_argument("--gram", choices=("both", "act", "I"), default="both")
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--option", action="append", default=[], help="NAME=VALUE passed to our dsf")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = {k: float(v) if "." in v else int(v) for k, v in (o.split("=", 1) for o in args.option)}
    print(f"# DSF vs reference: torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu "
          f"({platform.processor() or 'CPU'}), {os.cpu_count()} CPU cores, our options {options or 'default'}")
    reference = load_reference(args.reference)
    layers = [(name, int(d)) for d in args.depths.split(",") for name in args.layers.split(",")]
    grams = minilm_grams(layers, args.sentences)
    kinds = {"both": (True, False), "act": (True,), "I": (False,)}[args.gram]

    rows, error_ratios, speedups = [], [], []
    flip = False
    for name, depth in layers:
        W, G = minilm_weight(name, depth), grams[(name, depth)]
        for aware in kinds:
            gram = dsf_core.damp_gram(G, 0.01) if aware else torch.eye(W.shape[1])
            measure = G if aware else None
            for density in map(float, args.densities.split(",")):
                ours_s, ref_s = [], []
                for _ in range(args.repeats):
                    flip = not flip
                    for side in (("ours", "ref") if flip else ("ref", "ours")):
                        if side == "ours":
                            approx, seconds, nnz, result = run_ours(W, gram, density, aware, options)
                            ours_s.append(seconds)
                        elif reference is not None:
                            ref_approx, seconds, ref_nnz = run_reference(reference, W, gram, density)
                            ref_s.append(seconds)
                err = dsf_core.weighted_relative_error(W, approx, measure) if aware else dsf_core.relative_error(W, approx)
                row = [f"{depth}.{name}", "x".join(map(str, W.shape)), "act" if aware else "I", density,
                       f"{err:.4f}", f"{statistics.median(ours_s):.2f}", result.info["rounds"],
                       f"{result.info['chosen']['split']:.3f}"]
                if reference is not None:
                    ref_err = (dsf_core.weighted_relative_error(W, ref_approx, measure) if aware
                               else dsf_core.relative_error(W, ref_approx))
                    error_ratios.append(err / ref_err)
                    speedups.append(statistics.median(ref_s) / statistics.median(ours_s))
                    row += [f"{ref_err:.4f}", f"{err / ref_err:.3f}", f"{statistics.median(ref_s):.2f}",
                            f"{speedups[-1]:.1f}x", f"{nnz}/{ref_nnz}"]
                rows.append(row)
                print(" | ".join(map(str, row)), flush=True)
    header = ["layer", "shape", "G", "density", "ours err", "ours s", "rounds", "split"]
    if reference is not None:
        header += ["ref err", "err ratio", "ref s", "speed-up", "nnz ours/ref"]
    print_table(f"DSF vs the reference (usamec/double_sparse), median of {args.repeats} alternating runs",
                header, rows)
    if error_ratios:
        print(f"\nerror ratio ours/reference: median {statistics.median(error_ratios):.3f}, "
              f"worst {max(error_ratios):.3f}; speed-up: median {statistics.median(speedups):.1f}x, "
              f"lowest {min(speedups):.1f}x")


if __name__ == "__main__":
    main()
