"""Whole-model compression of the built-in models: metric, size and time per method.

    python benchmarks/bench_models.py [--threads 2] [--models digits-cnn,tiny-lm,minilm,efficientnet-lite0] [--methods dsf,svd] [--densities 0.5]
    python benchmarks/bench_models.py --normalisation   # efficientnet-lite0's input scaling, measured

Prints, with thread count and device, one table per model (the targets of issue 3: digits-cnn at
density 0.3, tiny-lm and minilm at 0.5; efficientnet-lite0 at 0.5 and 0.3, issue 15) and the
measured forward latency of factorized layers against their dense originals. Seconds are those of
the compression (calibration and factorization), without the evaluations.
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

# model -> (densities, methods, layers pattern, options per method where not the defaults)
PLAN = {
    "digits-cnn": ((0.3,), ["dsf", "magnitude", "wanda", "svd"], None, {}),
    "tiny-lm": ((0.5,), ["dsf", "magnitude", "wanda", "svd"], None, {}),
    "minilm": ((0.5,), ["dsf", "magnitude", "wanda", "svd"], None, {}),
    "efficientnet-lite0": (
        (0.5, 0.3),
        ["dsf", "magnitude", "wanda", "sparsegpt", "svd", "tt", "palm4msa", "hierarchical"],
        None,
        {"palm4msa": {"n_iter": 60}, "hierarchical": {"n_iter": 30}},  # their quick presets: 33 layers
    ),
}


def bench_model(name, only_methods=None, only_densities=None):
    densities, methods, layers, method_options = PLAN[name]
    densities = only_densities or densities
    methods = [m for m in methods if only_methods is None or m in only_methods]
    bundle = load_builtin(name)
    dense_bytes = dense_file_bytes(bundle.model)
    batch = bundle.calibration_inputs(8)[0]
    dense_flops = flops_per_sample(bundle.model, bundle.forward, batch, 8)
    dense_scores = bundle.evaluate(bundle.model)
    rows, results = [], {}
    for density in densities:
        for method in methods:
            try:
                result = compress_model(bundle, method, density, layers=layers, evaluate=False,
                                        **method_options.get(method, {}))
            except ValueError as exc:  # e.g. a layer's budget below the method's minimum: say so, go on
                rows.append([density, method, f"failed: {exc}"] + [""] * 10)
                print("failed:", rows[-1], flush=True)
                continue
            scores = bundle.evaluate(result.model)
            with tempfile.TemporaryDirectory() as folder:
                file_bytes = save_compressed(os.path.join(folder, "m.safetensors"), result, name)
            flops = flops_per_sample(result.model, bundle.forward, batch, 8)
            results.setdefault(method, result)
            settings = result.settings
            calibration = (f"{settings['calibration']}, {'sequential' if settings['sequential'] else 'independent'}"
                           f"{', row weights' if settings['output_weighting'] else ''}")
            others = ", ".join(f"{k} {v:.4g}" for k, v in scores.items() if k != bundle.metric_name)
            rows.append([density, method, calibration, f"{scores[bundle.metric_name]:.4f}", others,
                         result.n_params_compressed, result.n_params_dense, file_bytes, dense_bytes,
                         f"{file_bytes / dense_bytes:.0%}", flops, dense_flops, f"{result.seconds:.1f}"])
            print("done:", rows[-1], flush=True)  # long runs: each row as soon as it is measured
    print_table(f"{name}: all layers at density {', '.join(map(str, densities))}, activation-aware where the method "
                f"allows (metric: {bundle.metric_name}, {'higher' if bundle.higher_is_better else 'lower'} is better; "
                f"dense: {bundle.metric_name} {dense_scores[bundle.metric_name]:.4f})",
                ["density", "method", "calibration", "metric", "other measures", "params", "dense params", "file bytes",
                 "dense file bytes", "file ratio", "FLOPs/sample", "dense FLOPs/sample", "seconds"], rows)
    if bundle.method_options:
        print(f"The model's recommended method options, used above: {bundle.method_options}")
    used = {m: o for m, o in method_options.items() if m in methods}
    if used:
        print(f"Method options used above: {used}")
    return bundle, results


def bench_normalisation(n_crops=9):
    """efficientnet-lite0's top-1 on each photograph's centre crop and how many of ``n_crops`` random
    crops keep that label, with inputs scaled to [-1, 1] (as trained) and with ImageNet mean/std."""
    from dsf_core.models import efficientnet_lite0 as lite0
    from dsf_core.models.loaders import IMAGENET_MEAN, IMAGENET_STD
    from dsf_core.models.photos import PHOTOS, random_crops

    model = lite0.load_model()
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    scalings = {"(x - 127) / 128": lambda x: x, "ImageNet mean/std": lambda x: ((x * 128 + 127) / 255 - mean) / std}
    rows, top_probs = [], {name: [] for name in scalings}
    for photo in PHOTOS:
        x = torch.cat([lite0.center_crop(photo), lite0.to_input(random_crops([photo], n_crops, lite0.SIDE, 0))])
        row = [photo]
        for name, scale in scalings.items():
            with torch.no_grad():
                probs = model(scale(x)).softmax(-1)
            top = probs.max(-1)
            top_probs[name].append(top.values)
            kept = int((top.indices[1:] == top.indices[0]).sum())
            row += [f"{lite0.imagenet_classes()[top.indices[0]]} {top.values[0]:.2f}", f"{kept}/{n_crops}"]
        rows.append(row)
    header = ["photograph"] + [f"{name} {what}" for name in scalings for what in ("centre top-1", "crops agreeing")]
    means = ", ".join(f"{name} {torch.cat(v).mean():.3f}" for name, v in top_probs.items())
    print_table(f"efficientnet-lite0: top-1 by input scaling (mean top-1 probability over all crops: {means})", header, rows)


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
    parser.add_argument("--normalisation", action="store_true", help="only efficientnet-lite0's input scaling")
    parser.add_argument("--methods", help="comma-separated subset of each model's methods")
    parser.add_argument("--densities", help="comma-separated densities instead of each model's")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    print(f"# dsf_core model benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device cpu ({platform.processor() or 'CPU'}), {os.cpu_count()} CPU cores")
    if args.normalisation:
        bench_normalisation()
        return
    for name in args.models.split(","):
        densities = args.densities and [float(d) for d in args.densities.split(",")]
        bundle, results = bench_model(name, args.methods and args.methods.split(","), densities)
        if "dsf" in results:
            bench_latency(bundle, results["dsf"])

if __name__ == "__main__":
    main()
