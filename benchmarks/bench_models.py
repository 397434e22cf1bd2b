"""Whole-model compression of the built-in models: metric, size and time per method.

    python benchmarks/bench_models.py [--threads 2] [--models digits-cnn,tiny-lm,minilm]

Prints, with thread count and device, one table per model (the targets of issue 3: digits-cnn at
density 0.3, tiny-lm and minilm at 0.5) and the measured forward latency of factorized layers
against their dense originals.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile

import torch

from dsf_core.checkpoint import save_compressed
from dsf_core.compress import compress_model
from dsf_core.models import load_builtin
from dsf_core.stats import dense_file_bytes, flops_per_sample, latency_seconds

from _tables import print_table

# model -> (density, methods, layers pattern)
PLAN = {
    "digits-cnn": (0.3, ["dsf", "magnitude", "wanda", "svd"], None),
    "tiny-lm": (0.5, ["dsf", "magnitude", "wanda", "svd"], None),
    "minilm": (0.5, ["dsf", "magnitude", "wanda", "svd"], None),
}


def bench_model(name):
    density, methods, layers = PLAN[name]
    bundle = load_builtin(name)
    dense_bytes = dense_file_bytes(bundle.model)
    batch = bundle.calibration_inputs(8)[0]
    dense_flops = flops_per_sample(bundle.model, bundle.forward, batch, 8)
    rows, results = [], {}
    for method in methods:
        result = compress_model(bundle, method, density, layers=layers)
        with tempfile.TemporaryDirectory() as folder:
            file_bytes = save_compressed(os.path.join(folder, "m.safetensors"), result, name)
        flops = flops_per_sample(result.model, bundle.forward, batch, 8)
        results[method] = result
        settings = result.settings
        calibration = (f"{settings['calibration']}, {'sequential' if settings['sequential'] else 'independent'}"
                       f"{', row weights' if settings['output_weighting'] else ''}")
        rows.append([method, calibration, f"{result.compressed_metric:.4f}", f"{result.dense_metric:.4f}",
                     result.n_params_compressed, result.n_params_dense, file_bytes, dense_bytes,
                     f"{file_bytes / dense_bytes:.0%}", flops, dense_flops, f"{result.seconds:.1f}"])
    print_table(f"{name}: all layers at density {density}, activation-aware where the method allows "
                f"(metric: {bundle.metric_name}, {'higher' if bundle.higher_is_better else 'lower'} is better)",
                ["method", "calibration", "metric", "dense metric", "params", "dense params", "file bytes", "dense file bytes",
                 "file ratio", "FLOPs/sample", "dense FLOPs/sample", "seconds"], rows)
    if bundle.method_options:
        print(f"The model's recommended method options, used above: {bundle.method_options}")
    return bundle, results["dsf"]


def bench_latency(bundle, result, tokens=256):
    rows = []
    linear = [(n, f) for n, f in result.factorizations.items() if len(f.weight_shape) == 2]
    for name, factorization in linear[:6]:  # Linear layers, on the same batch of rows
        dense_layer = bundle.model.get_submodule(name)
        factored = result.model.get_submodule(name)
        x = torch.randn(tokens, factorization.shape[1])
        dense_s = latency_seconds(dense_layer, x)
        factored_s = latency_seconds(factored, x)
        rows.append([name, "x".join(map(str, factorization.shape)), f"{factorization.density:.2f}",
                     f"{dense_s * 1e3:.3f}", f"{factored_s * 1e3:.3f}", f"{factored_s / dense_s:.1f}x"])
    print_table(f"{bundle.name}: forward latency of DSF layers (CSR sparse matmul) vs dense, {tokens} rows",
                ["layer", "shape", "density", "dense ms", "factorized ms", "slowdown"], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(PLAN))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    print(f"# dsf_core model benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device cpu ({platform.processor() or 'CPU'}), {os.cpu_count()} CPU cores")
    for name in args.models.split(","):
        bundle, dsf_result = bench_model(name)
        bench_latency(bundle, dsf_result)


if __name__ == "__main__":
    main()
