"""The command line, run as a user runs it: a real subprocess, exit codes, tables and JSON."""

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "dsf_core", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def test_models_lists_every_builtin_model_with_its_metric():
    result = run("models", "--json", timeout=300)  # loads and scores all four models
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(rows) == ["digits-cnn", "tiny-lm", "minilm", "efficientnet-lite0"]
    assert rows["digits-cnn"]["metric_name"] == "accuracy" and rows["digits-cnn"]["metric"] > 97
    assert rows["tiny-lm"]["metric_name"] == "perplexity" and 1 < rows["tiny-lm"]["metric"] < 5
    assert rows["minilm"]["metric"] == pytest.approx(1.0)
    assert rows["efficientnet-lite0"]["metric_name"] == "top1_agreement" and rows["efficientnet-lite0"]["metric"] == 1.0


def test_layers_prints_a_table_and_json():
    table = run("layers", "digits-cnn")
    assert table.returncode == 0, table.stderr
    assert "convs.1" in table.stdout and "64x288" in table.stdout
    rows = json.loads(run("layers", "digits-cnn", "--json").stdout)
    assert [row["name"] for row in rows] == ["convs.0", "convs.1", "convs.2", "fc", "head"]


def test_compress_writes_a_checkpoint_that_evaluate_reads(tmp_path):
    out = tmp_path / "digits.safetensors"
    result = run("compress", "digits-cnn", "--method", "svd", "--density", "0.5", "--layers", "fc,convs.2",
                 "--calibration", "64", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    for key in ("dense_metric", "compressed_metric", "metric_name", "n_params_dense", "n_params_compressed",
                "file_bytes", "seconds", "layers"):
        assert key in summary
    assert 0 < summary["flops_per_sample"] < summary["dense_flops_per_sample"]
    assert [layer["name"] for layer in summary["layers"]] == ["convs.2", "fc"]
    assert summary["n_params_compressed"] <= 0.5 * summary["n_params_dense"]
    assert summary["file_bytes"] == out.stat().st_size < summary["dense_file_bytes"]
    evaluated = json.loads(run("evaluate", str(out), "--json").stdout)
    accuracy = {row["metric"]: row["value"] for row in evaluated}["accuracy"]
    assert accuracy == pytest.approx(summary["compressed_metric"])


def test_compress_accepts_presets_and_options():
    result = run("compress", "digits-cnn", "--method", "dsf", "--density", "0.4", "--layers", "head",
                 "--preset", "quick", "--option", "refit_steps=0", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["options"] == {"n_rounds": 18, "refit_steps": 0}


def test_compress_reports_its_settings_and_takes_them_from_flags():
    base = ("compress", "digits-cnn", "--method", "dsf", "--density", "0.4", "--layers", "head", "--json")
    default = json.loads(run(*base).stdout)["settings"]
    assert default == {"calibration": 128, "sequential": True, "damp": 0.01, "output_weighting": False}
    result = run(*base, "--independent", "--output-weighting", "--calibration", "32")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["settings"] == {"calibration": 32, "sequential": False, "damp": 0.01,
                                                     "output_weighting": True}
    both = run(*base, "--independent", "--sequential")
    assert both.returncode != 0 and "not allowed with argument" in both.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["layers", "no-such-model"], "no-such-model"),
        (["compress", "digits-cnn", "--method", "dsf", "--density", "1.5"], "density must be in the range"),
        (["compress", "digits-cnn", "--method", "svd", "--density", "0.5", "--layers", "nothing*"], "No factorizable layer"),
        (["compress", "digits-cnn", "--method", "dsf", "--density", "0.5", "--option", "bogus=1"], "Unknown option"),
        (["compress", "digits-cnn", "--method", "dsf", "--density", "0.5", "--preset", "slow"], "has no preset"),
        (["compress", "digits-cnn", "--method", "dsf", "--density", "0.5", "--preset", ""], "has no preset ''"),
        (["compress", "digits-cnn", "--method", "dsf", "--density", "0.5", "--seq-len", "0"], "expected a whole number >= 2"),
        (["evaluate", "some-run", "--seq-len", "1"], "expected a whole number >= 2"),
        (["compress", "digits-cnn", "--method", "tt", "--density", "0.5", "--output-weighting"], "cannot weigh"),
        (["evaluate", "/no/such/file.safetensors"], "error:"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(args, message):
    result = run(*args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreadable_file_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    result = run("evaluate", str(junk))
    assert result.returncode == 2 and "its content is neither safetensors" in result.stderr


def test_unknown_method_is_rejected_by_the_parser():
    result = run("compress", "digits-cnn", "--method", "qr", "--density", "0.5")
    assert result.returncode == 2 and "invalid choice: 'qr'" in result.stderr


def test_compress_keeps_infeasible_layers_and_per_layer_densities_dense():
    done = run("compress", "digits-cnn", "--method", "svd", "--density", "0.1", "--calibration", "0",
               "--layer-density", "fc=1", "--keep-infeasible", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert list(summary["kept_dense"]) == ["convs.0", "fc", "head"]
    assert [layer["name"] for layer in summary["layers"]] == ["convs.1", "convs.2"]

    bad = run("compress", "digits-cnn", "--method", "svd", "--density", "0.1", "--layer-density", "fc")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "PATTERN=DENSITY" in bad.stderr


def test_mixture_of_experts_weights_are_listed_as_not_factorizable_and_the_run_says_so(tmp_path, capsys, monkeypatch):
    from dsf_core._torchvision_compat import prepare_transformers
    from dsf_core.cli import main

    prepare_transformers()
    import torch
    from transformers import AutoModelForCausalLM, MixtralConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=100, num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                           num_key_value_heads=1, intermediate_size=64, num_local_experts=4, num_experts_per_tok=2,
                           max_position_embeddings=64)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "moe")
    capsys.readouterr()
    assert main(["layers", str(tmp_path / "moe"), "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    experts = rows["model.layers.0.mlp.experts"]  # the experts' stacked 3-D weights: not one matrix
    assert not experts["factorizable"] and "3 or more dimensions" in experts["reason"]
    assert rows["model.layers.0.self_attn.q_proj"]["factorizable"]
    assert main(["compress", str(tmp_path / "moe"), "--in-memory", "--method", "magnitude", "--density", "0.5",
                 "--calibration", "0"]) == 0
    err = capsys.readouterr().err
    assert f"{2 * experts['params']:,} parameters" in err and "stay dense" in err
