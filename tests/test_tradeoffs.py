"""dsf_app.tradeoffs: compression runs, their checkpoints, the CLI command, tables and figures."""

import copy
import dataclasses
import shlex
import sys
from pathlib import Path

import pytest
import torch

from dsf_app import tradeoffs
from dsf_app.tradeoffs import Run, RunFailed, Settings
from dsf_core import METHODS
from dsf_core.checkpoint import load_compressed, read_manifest
from dsf_core.cli import _options, _parser
from dsf_core.compress import LayerReport, compress_model, parse_layer_densities
from dsf_core.layers import list_layers
from dsf_core.models import load_builtin
from dsf_core.stats import stored_values

FAST = Settings("svd", 0.3, ("fc", "head"), calibration=16)


@pytest.fixture(scope="module")
def bundle():
    return load_builtin("digits-cnn")


def test_compress_measures_what_compress_model_makes(bundle, tmp_path):
    before = copy.deepcopy(bundle.model.state_dict())
    run = tradeoffs.compress(bundle, FAST, "digits-cnn", str(tmp_path))
    again = compress_model(bundle, "svd", 0.3, layers="fc,head", calibration=16, sequential=False)
    assert run.metric == pytest.approx(again.compressed_metric, abs=1e-9)
    assert run.metrics == pytest.approx(bundle.evaluate(again.model))
    assert run.stored_values == stored_values(again.model) < stored_values(bundle.model)
    assert [layer.name for layer in run.layers] == ["fc", "head"] and not run.stopped
    assert [layer.error for layer in run.layers] == pytest.approx([layer.error for layer in again.layers])
    assert Path(run.checkpoint).stat().st_size == run.file_bytes
    loaded = load_compressed(run.checkpoint, bundle.model)
    assert bundle.evaluate(loaded)[bundle.metric_name] == pytest.approx(run.metric)
    for key, value in bundle.model.state_dict().items():  # the loaded model was never touched
        assert torch.equal(value, before[key])


def test_per_layer_progress_and_stop(bundle, tmp_path):
    seen = []

    def report(item=None, fraction=None):
        seen.append((item.name, fraction))
        return False  # Stop after the first layer

    run = tradeoffs.compress(bundle, Settings("magnitude", 0.5, calibration=0), "digits-cnn", str(tmp_path), report)
    assert seen == [("convs.0", 0.2)]
    assert run.stopped and [layer.name for layer in run.layers] == ["convs.0"] and run.n_layers == 5
    assert tradeoffs.runs_table([run], "accuracy")["status"][0] == "stopped after 1 of 5 layers"


def test_a_budget_below_the_minimum_names_the_layer(bundle, tmp_path):
    with pytest.raises(RunFailed, match=r"svd at density 0.01, layer convs.0: below the method's minimum: "
                                        r"it needs 41 parameters \(rank 1\), the budget is 2"):
        tradeoffs.compress(bundle, Settings("svd", 0.01, calibration=0, keep_infeasible=False), "digits-cnn", str(tmp_path))


def test_the_layer_named_is_the_one_below_its_minimum_not_the_first(bundle, tmp_path):
    with pytest.raises(RunFailed, match=r"svd at density 0.10, layer head: below the method's minimum: "
                                        r"it needs 138 parameters \(rank 1\), the budget is 128"):
        tradeoffs.compress(bundle, Settings("svd", 0.1, ("convs.2", "head"), calibration=0, keep_infeasible=False),
                           "digits-cnn", str(tmp_path))


def test_sweep_goes_on_after_a_failed_run_and_stops_on_request(bundle, tmp_path):
    grid = tradeoffs.grid(Settings("svd", 0.3, ("head",), calibration=0, keep_infeasible=False), ["svd", "magnitude"], [0.3, 0.01])
    assert [(s.method, s.density) for s in grid] == [
        ("svd", 0.01), ("svd", 0.3), ("magnitude", 0.01), ("magnitude", 0.3)
    ]
    fractions = []
    outcome = tradeoffs.sweep(bundle, grid, "digits-cnn", str(tmp_path),
                              lambda item=None, fraction=None: fractions.append(fraction) is None)
    assert [run.settings for run in outcome.runs] == grid[1:]
    assert outcome.failures == ["svd at density 0.01, layer head: below the method's minimum: "
                                "it needs 138 parameters (rank 1), the budget is 12"]
    assert fractions == [0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0]  # per layer, then per run
    stopped = tradeoffs.sweep(bundle, grid[1:], "digits-cnn", str(tmp_path), lambda *args: False)
    assert len(stopped.runs) == 1


def fake_run(number_of_layers=2, stopped=False, method="svd", metric=90.0, stored=100, file_bytes=800):
    layers = [LayerReport(f"l{i}", (4, 4), 16, 8, 0.1 * (i + 1), 0.05 * (i + 1), 0.01) for i in range(number_of_layers)]
    return Run(Settings(method, 0.5), {"accuracy": metric}, metric, stored, file_bytes, layers,
               number_of_layers + stopped, 0.1, "")


def test_keep_numbers_runs_and_deletes_the_files_of_dropped_ones(tmp_path):
    store = []
    runs = [fake_run() for _ in range(3)]
    for i, run in enumerate(runs):
        run.checkpoint = str(tmp_path / f"{i}.safetensors")
        Path(run.checkpoint).write_bytes(b"x")
    tradeoffs.keep(store, runs, limit=2)
    assert [run.number for run in store] == [2, 3] and store[0].name == "#2 svd at density 0.50"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.safetensors", "2.safetensors"]


@pytest.mark.parametrize("settings", [
    FAST,
    Settings("dsf", 0.25, (), calibration=0, sequential=False, quick=True),
    Settings("palm4msa", 0.125, ("convs.*",), calibration=128, sequential=True, quick=False),
    Settings("dsf", 0.5, ("head",), calibration=32, output_weighting=True),
    Settings("svd", 0.1, (), calibration=0, layer_densities=(("fc", 0.5), ("convs.0", 1.0)), keep_infeasible=False),
])
def test_cli_command_is_valid_for_the_cli_parser(settings):
    words = shlex.split(tradeoffs.cli_command(settings, "digits-cnn"))
    assert words[1:3] == ["-m", "dsf_core"]
    assert Path(words[0]).resolve() == Path(sys.executable).resolve()  # the server's own (virtual environment's) Python
    args = _parser().parse_args(words[3:])
    assert (args.model, args.method, args.density) == ("digits-cnn", settings.method, settings.density)
    assert args.layers == settings.pattern and args.calibration == settings.calibration
    assert args.sequential is settings.sequential and args.output_weighting is settings.output_weighting
    assert args.out == "compressed.safetensors"
    assert _options(args) == (METHODS[settings.method].presets.get("quick", {}) if settings.quick else {})
    assert parse_layer_densities(args.layer_density) == settings.densities
    assert args.keep_infeasible is settings.keep_infeasible


def test_model_specs_with_spaces_are_quoted():
    words = shlex.split(tradeoffs.cli_command(FAST, "/tmp/my models/net.pt"))
    assert _parser().parse_args(words[3:]).model == "/tmp/my models/net.pt"


def test_evaluate_command_names_a_user_model_and_not_a_builtin():
    user = _parser().parse_args(shlex.split(tradeoffs.cli_evaluate_command("/tmp/my models/hf"))[3:])
    assert (user.target, user.model) == (tradeoffs.CLI_OUT, "/tmp/my models/hf")
    builtin = _parser().parse_args(shlex.split(tradeoffs.cli_evaluate_command("digits-cnn"))[3:])
    assert (builtin.target, builtin.model) == (tradeoffs.CLI_OUT, None)


def test_figures_and_table():
    runs = [fake_run(method="svd", metric=80), fake_run(method="dsf", metric=95, stored=50),
            fake_run(method="svd", metric=70, stored=40), fake_run(stopped=True, method="tt")]
    for number, run in enumerate(runs, 1):
        run.number = number
    dense = tradeoffs.Reference(99.0, 1000, 4000)
    fig = tradeoffs.metric_figure(runs, dense, x="stored_values", metric_name="accuracy", higher_is_better=True)
    assert [trace.name for trace in fig.data] == ["svd", "dsf", "dense model"]  # the stopped run is left out
    assert list(fig.data[0].x) == [40, 100] and list(fig.data[0].y) == [70, 80]
    assert list(fig.data[2].x) == [1000] and "higher is better" in fig.layout.title.text
    bytes_fig = tradeoffs.metric_figure(runs, dense, x="file_bytes", metric_name="perplexity", higher_is_better=False)
    assert list(bytes_fig.data[2].x) == [4000] and "lower is better" in bytes_fig.layout.title.text
    bars = tradeoffs.layer_error_figure(runs[0])
    assert [list(trace.y) for trace in bars.data] == [pytest.approx([0.1, 0.2]), pytest.approx([0.05, 0.1])]
    table = tradeoffs.runs_table(runs, "accuracy")
    assert list(table["accuracy"]) == [80, 95, 70, 90] and table["layers"][0] == "all"
    assert tradeoffs.download_name(runs[0], "checkpoint: my net.pt") == "checkpoint-my-net-svd-d0.50.safetensors"


def test_other_failures_are_said_without_blaming_a_layer(bundle, tmp_path):
    def no_data(n_samples):
        raise ValueError("no calibration data in this file")

    broken = dataclasses.replace(bundle, calibration_inputs=no_data)
    with pytest.raises(RunFailed, match=r"^dsf at density 0.30, failed: no calibration data in this file$"):
        tradeoffs.compress(broken, Settings("dsf", 0.3, ("head",)), "digits-cnn", str(tmp_path))


def test_output_weighting_reaches_compress_model(bundle, tmp_path):
    settings = Settings("dsf", 0.5, ("head",), calibration=32, output_weighting=True)
    run = tradeoffs.compress(bundle, settings, "digits-cnn", str(tmp_path))
    assert read_manifest(run.checkpoint)["settings"]["output_weighting"] is True
    assert tradeoffs.runs_table([run], "accuracy")["calibration"][0] == "32 samples, independent, row weights"


def test_per_layer_densities_from_the_rule_and_the_lines(bundle):
    layers = list_layers(bundle.model)  # convs.0 has 288 weights, head 1280
    assert tradeoffs.layer_densities(layers, 0, "") == ()
    assert tradeoffs.layer_densities(layers, 1000, "fc=0.5\n\n convs.* = 0.2") == (
        ("fc", 0.5), ("convs.*", 0.2), ("convs.0", 1.0)
    )
    with pytest.raises(ValueError, match="'fc=2'"):
        tradeoffs.layer_densities(layers, 0, "fc=2")


def test_layers_below_their_budget_are_kept_dense_and_the_run_measures_latency(bundle, tmp_path):
    run = tradeoffs.compress(bundle, Settings("svd", 0.1, calibration=0, layer_densities=(("fc", 1.0),)),
                             "digits-cnn", str(tmp_path))
    assert list(run.kept_dense) == ["convs.0", "fc", "head"] and "needs" in run.kept_dense["head"]
    assert [layer.name for layer in run.layers] == ["convs.1", "convs.2"] and not run.stopped
    assert run.latency_ms > 0 and tradeoffs.dense_reference(bundle, 0.0).latency_ms > 0
    assert tradeoffs.runs_table([run], "accuracy")["layers"][0] == "all; 3 kept dense"


def test_a_stopped_run_is_labelled_partial_everywhere():
    run = fake_run(stopped=True)
    run.number = 4
    assert run.name.endswith("(partial)")
    assert tradeoffs.runs_table([run], "accuracy")["layers"][0] == "partial: 2 of 3 (all)"
    assert tradeoffs.download_name(run, "digits-cnn").endswith("-partial.safetensors")


def test_a_bounded_metric_keeps_its_axis_inside_its_bounds():
    dense = tradeoffs.Reference(1.0, 1000, 4000)  # an encoder's cosine with itself
    alone = tradeoffs.metric_figure([], dense, x="stored_values", metric_name="mean_cosine", higher_is_better=True)
    options = alone.layout.yaxis.autorangeoptions
    assert (options.minallowed, options.maxallowed) == (0.0, 1.0)  # a lone point at 1 would span 0 to 2
    negative = fake_run(metric=-0.2)
    negative.number = 1
    spread = tradeoffs.metric_figure([negative], dense, x="stored_values", metric_name="mean_cosine", higher_is_better=True)
    assert (spread.layout.yaxis.autorangeoptions.minallowed, spread.layout.yaxis.autorangeoptions.maxallowed) == (-1.0, 1.0)
    perplexity = tradeoffs.metric_figure([], dense, x="stored_values", metric_name="perplexity", higher_is_better=False)
    assert perplexity.layout.yaxis.autorangeoptions.maxallowed is None  # unbounded above
