"""Command line: ``python -m dsf_core {models,layers,compress,evaluate}``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from ._registry import METHODS
from .models import BUILTIN_MODELS
from .output_files import check_target
from .streaming import cli as streaming

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (``error: ...``) and exit status 2."""

    def error(self, message):
        raise _UsageError(f"{message} (see {self.prog} --help)")


class _UsageError(Exception):
    pass


def main(argv=None) -> int:
    """Run one command; every error is one line on stderr and exit status 2 (130 when interrupted)."""
    try:
        args = _parser().parse_args(argv)
        return args.run(args)
    except KeyboardInterrupt as interrupt:  # a streamed run says what it kept
        print(str(interrupt) or "interrupted; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the command line shows every failure as one line
        if os.environ.get("DSF_DEBUG"):
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(exc: Exception) -> str:
    """The exception's message on one line; an unexpected type is named, with how to see more."""
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    message = " ".join(str(message).split()) or type(exc).__name__
    expected = (ValueError, TypeError, KeyError, OSError, ImportError, _UsageError)
    if not isinstance(exc, expected):
        message = f"{type(exc).__name__}: {message} (unexpected; set DSF_DEBUG=1 for the traceback)"
    return message


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dsf_core", description="Factorize and compress model layers.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name, run, help, *positional):
        """A subcommand with its positional arguments and --json."""
        sub_parser = sub.add_parser(name, help=help)
        for arg_name, arg_help in positional:
            sub_parser.add_argument(arg_name, help=arg_help)
        sub_parser.add_argument("--json", action="store_true", help="print JSON")
        sub_parser.set_defaults(run=run)
        return sub_parser

    model = ("model", "built-in name, model directory, checkpoint file, torchvision:ARCH or hf:ID")
    command("models", _models, "list the built-in models and their metrics")
    command("layers", _layers, "table of a model's factorizable layers", model)
    compress = command("compress", _compress, "compress a model's layers and report the damage", model)
    compress.add_argument("--method", required=True, choices=list(METHODS))
    compress.add_argument("--density", required=True, type=float, help="kept fraction of each layer's weights")
    compress.add_argument("--layers", help="comma-separated glob patterns of layer names (default: all)")
    compress.add_argument("--calibration", type=_count, help="calibration samples (0: data-free; default: the "
                          "model's recommended number, else 128)")
    order = compress.add_mutually_exclusive_group()
    order.add_argument("--sequential", dest="sequential", action="store_true", default=None,
                       help="collect each layer's Gram on the partly compressed model (the default unless the "
                       "model recommends otherwise)")
    order.add_argument("--independent", dest="sequential", action="store_false",
                       help="collect all Grams on the original model (faster)")
    compress.add_argument("--output-weighting", action=argparse.BooleanOptionalAction,
                          help="weigh each layer's output rows by how much they move the model's output "
                          "(default: as the model recommends)")
    compress.add_argument("--layer-density", action="append", default=[], metavar="PATTERN=DENSITY",
                          help="a density for the layers matching a glob pattern (the first match wins; 1 keeps "
                          "them dense); repeatable")
    compress.add_argument("--keep-infeasible", action="store_true",
                          help="keep a layer dense when its budget is too small for the method, instead of failing")
    compress.add_argument("--preset", help="a named option set of the method, e.g. quick")
    compress.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="a method option")
    compress.add_argument("--out", help="write the compressed checkpoint here (a safetensors file; a directory "
                          "for a streamed run of a Hugging Face directory)")
    compress.add_argument("--overwrite", action="store_true", help="replace an existing --out file (keeping its mode)")
    streaming.add_compress_arguments(compress)
    evaluate = command("evaluate", _evaluate, "the metric of a model or a compressed checkpoint",
                       ("target", "compressed checkpoint file or streamed-run directory, or a model as for 'layers'"))
    evaluate.add_argument("--model", help="the base model of a compressed checkpoint (needed unless the "
                          "checkpoint names a built-in model); for a streamed run, its model directory if it moved")
    streaming.add_evaluate_arguments(evaluate)
    return parser


def _count(text: str) -> int:
    """A non-negative integer argument."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def _models(args) -> int:
    from .models import load_builtin

    rows = []
    for name, (_, description) in BUILTIN_MODELS.items():
        bundle = load_builtin(name)
        rows.append({"name": name, "metric_name": bundle.metric_name,
                     "metric": bundle.evaluate(bundle.model)[bundle.metric_name], "description": description})
    _emit(args, rows, ["name", "metric_name", "metric", "description"])
    return 0


def _layers(args) -> int:
    from .layers import list_layers, skipped_layers
    from .streaming.lazy import LazyModel, opens_lazily

    if opens_lazily(args.model):  # a Hugging Face checkpoint: from its headers, no weight read
        lazy = LazyModel(args.model)
        layers, others = lazy.layers, skipped_layers(lazy.source.model)
    else:
        model = _load(args.model).model
        layers, others = list_layers(model), skipped_layers(model)
    rows = [{"name": layer.name, "type": layer.type, "shape": "x".join(map(str, layer.shape)),
             "params": layer.n_params} for layer in layers]
    skipped = [{"name": layer.name, "type": layer.type, "weight_shape": "x".join(map(str, layer.weight_shape)),
                "params": layer.n_params, "reason": layer.reason} for layer in others]
    if args.json:  # one list: the factorizable layers, then the others with the reason
        print(json.dumps([{**row, "factorizable": True} for row in rows]
                         + [{**row, "factorizable": False} for row in skipped], indent=2))
        return 0
    _table(rows, ["name", "type", "shape", "params"])
    if skipped:
        print(f"\nnot factorizable ({len(skipped)} layers, {sum(r['params'] for r in skipped)} params):")
        _table(skipped, ["name", "type", "weight_shape", "params", "reason"])
    return 0


def _compress(args) -> int:
    from .checkpoint import save_compressed
    from .compress import compress_model, parse_layer_densities
    from .layers import skipped_layers
    from .stats import dense_file_bytes, flops_per_sample

    options = _options(args)
    layer_densities = parse_layer_densities(args.layer_density, "--layer-density ")
    if streaming.streams(args):  # a Hugging Face directory: block by block
        if layer_densities or args.keep_infeasible:
            raise ValueError("--layer-density and --keep-infeasible apply to in-memory runs, not to streamed ones.")
        return streaming.compress_command(args, options)
    if args.out is not None:  # before any long work: a bad path fails now, not after the run
        check_target(args.out, overwrite=args.overwrite)
    bundle = _load(args.model)
    untouched = sum(layer.n_params for layer in skipped_layers(bundle.model))
    if untouched:
        total = sum(p.numel() for p in bundle.model.parameters())
        print(f"note: {untouched:,} parameters ({untouched / total:.0%} of the model) are in layers that cannot be "
              "factorized and stay dense; `layers` lists them with the reason.", file=sys.stderr)
    result = compress_model(
        bundle, args.method, args.density, layers=args.layers, calibration=args.calibration,
        sequential=args.sequential, output_weighting=args.output_weighting, callback=_progress_bar(),
        layer_densities=layer_densities, keep_infeasible=args.keep_infeasible, **options,
    )
    base = args.model if args.model in BUILTIN_MODELS else None  # a user's model is named again at load time
    if args.out is not None:
        file_bytes = save_compressed(args.out, result, base, overwrite=args.overwrite)
    else:  # measure the real file size all the same
        with tempfile.TemporaryDirectory() as folder:
            file_bytes = save_compressed(os.path.join(folder, "model.safetensors"), result, base)
    probe = bundle.calibration_inputs(4)[0]  # FLOPs are counted on one real batch
    probe_size = len(probe["input_ids"]) if isinstance(probe, dict) else len(probe)
    summary = {
        "model": args.model, "method": args.method, "density": args.density, "options": result.options,
        "settings": result.settings,
        "metric_name": result.metric_name, "dense_metric": result.dense_metric,
        "compressed_metric": result.compressed_metric,
        "n_params_dense": result.n_params_dense, "n_params_compressed": result.n_params_compressed,
        "file_bytes": file_bytes, "dense_file_bytes": dense_file_bytes(bundle.model),
        "flops_per_sample": flops_per_sample(result.model, bundle.forward, probe, probe_size),
        "dense_flops_per_sample": flops_per_sample(bundle.model, bundle.forward, probe, probe_size),
        "seconds": round(result.seconds, 3), "out": args.out, "kept_dense": result.kept_dense,
        "layers": [
            {"name": r.name, "shape": list(r.shape), "n_params_dense": r.n_params_dense, "n_params": r.n_params,
             "error": r.error, "weighted_error": r.weighted_error, "seconds": round(r.seconds, 3)}
            for r in result.layers
        ],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    rows = [{**row, "shape": "x".join(map(str, row["shape"]))} for row in summary["layers"]]
    _table(rows, ["name", "shape", "n_params_dense", "n_params", "error", "weighted_error", "seconds"])
    print()
    for key in ("options", "settings", "metric_name", "dense_metric", "compressed_metric", "n_params_dense", "n_params_compressed",
                "file_bytes", "dense_file_bytes", "flops_per_sample", "dense_flops_per_sample", "seconds", "out",
                "kept_dense"):
        print(f"{key:22s} {_cell(summary[key])}")
    return 0


def _evaluate(args) -> int:
    from .checkpoint import FORMAT, load_compressed, read_manifest

    if streaming.is_run_directory(args.target):
        return streaming.evaluate_command(args)
    if _is_compressed_checkpoint(args.target, FORMAT):
        manifest = read_manifest(args.target)
        named = manifest.get("model", "")
        if args.model is None and named not in BUILTIN_MODELS:
            raise ValueError(
                f"'{args.target}' was made from {named or 'a model it does not name'}, which is not a built-in "
                "model: give that model with --model (a checkpoint never chooses what gets loaded)."
            )
        bundle = _load(args.model or named)
        model = load_compressed(args.target, bundle.model)
    else:
        if args.model is not None:
            raise ValueError(f"--model applies to compressed checkpoints only; '{args.target}' is not one.")
        bundle = _load(args.target)
        model = bundle.model
    metrics = bundle.evaluate(model)
    _emit(args, [{"metric": key, "value": value} for key, value in metrics.items()], ["metric", "value"])
    return 0


def _is_compressed_checkpoint(path: str, format_name: str) -> bool:
    """Whether ``path`` is a safetensors file (by content) whose metadata marks our format."""
    from safetensors import safe_open

    from .file_formats import detect_format

    if not os.path.isfile(path) or detect_format(path) != "safetensors":
        return False
    try:
        with safe_open(path, framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == format_name
    except Exception:  # noqa: BLE001 - a malformed file is not ours; loading it as a model says why
        return False


def _load(spec: str):
    from .models.loaders import load_model

    return load_model(spec)


def _options(args) -> dict:
    """The preset's options overlaid with ``--option NAME=VALUE`` (values read as JSON if they parse)."""
    spec = METHODS[args.method]
    if args.preset is not None and args.preset not in spec.presets:
        raise ValueError(f"Method {args.method!r} has no preset {args.preset!r}; it has {list(spec.presets)}.")
    options = dict(spec.presets[args.preset]) if args.preset is not None else {}
    for item in args.option:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option must look like NAME=VALUE; got {item!r}.")
        try:
            options[name] = json.loads(value)
        except json.JSONDecodeError:
            options[name] = value
    return options


def _progress_bar():
    """A one-line progress bar on a terminal's stderr; nothing when not on a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(done, total, report):
        filled = int(30 * done / total)
        end = "\n" if done == total else ""
        name = "(kept dense)" if report is None else report.name
        print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} {name[:40]:40s}", end=end,
              file=sys.stderr, flush=True)

    return show


def _emit(args, rows, columns) -> None:
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _table(rows, columns)


def _table(rows, columns) -> None:
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
