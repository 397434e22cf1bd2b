"""Streamed runs from the command line, as a user runs them: real subprocesses, exit codes, files."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _hf_models import TEXT, save_model

from dsf_core.streaming.load import load_compressed

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
QUICK = ("--calibration", "8", "--seq-len", "16")


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "dsf_core", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def finish(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {"root": root, "llama": save_model("llama", root / "llama"),
            "gpt2": save_model("gpt2", root / "gpt2", with_tokenizer=False)}


def _bad_inputs(dirs):
    """Each bad input: (name, arguments, what the one-line error says)."""
    root, llama = dirs["root"], dirs["llama"]
    missing = root / "missing-shard"
    shutil.copytree(llama, missing)
    next(missing.glob("model-00002-*.safetensors")).unlink()
    swapped = root / "swapped-shard"
    shutil.copytree(llama, swapped)
    first = sorted(swapped.glob("model-*.safetensors"))
    shutil.copyfile(first[1], first[0])
    not_model = root / "not-a-model"
    not_model.mkdir()
    (not_model / "notes.txt").write_text("hello")
    other = root / "other-family"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "distilbert", "n_layers": 2, "dim": 32, "n_heads": 2,
                                                   "hidden_dim": 64}))  # an encoder that is not bert
    renamed = root / "renamed-tensors"
    renamed.mkdir()
    (renamed / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "num_hidden_layers": 2, "hidden_size": 32,
                                                     "num_attention_heads": 2, "intermediate_size": 64}))
    deep = root / "deep-config"
    deep.mkdir()
    (deep / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 10**6, "hidden_size": 32,
                                                  "num_attention_heads": 2, "intermediate_size": 64}))
    busy = root / "busy-out"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    base = ("--method", "wanda", "--density", "0.5", *QUICK)
    return [
        ("not a model", ("compress", not_model, *base), "not a Hugging Face model directory"),
        ("missing shard", ("compress", missing, *base), "model-00002-of-"),
        ("mismatched shard", ("compress", swapped, *base), "disagree"),
        ("no tokenizer", ("compress", dirs["gpt2"], *base, "--calibration-text", TEXT), "tokenizer"),
        ("seq-len too long", ("compress", llama, "--method", "wanda", "--density", "0.5", "--seq-len", "65"), "maximum of 64"),
        ("no gpu", ("compress", llama, *base, "--device", "cuda"), "no CUDA GPU"),
        ("busy out", ("compress", llama, *base, "--out", busy), "not empty"),
        ("export into out", ("compress", llama, *base, "--out", root / "o", "--export-dense", root / "o"), "--out directory"),
        ("other family", ("compress", other, *base), "--in-memory"),
        ("renamed tensors", ("compress", renamed, *base), "renames or fuses"),
        ("a million blocks", ("compress", deep, *base), "num_hidden_layers=1000000"),
        ("calibration over the limit", ("compress", llama, "--method", "wanda", "--density", "0.5", "--calibration",
                                        "3000000"), "DSF_MAX_CALIBRATION"),
        ("resume without a run", ("compress", llama, *base, "--out", root / "fresh", "--resume"), "no previous run"),
    ]


@pytest.fixture(scope="module")
def bad_runs(dirs):
    cases = _bad_inputs(dirs)
    processes = [start(*args) for _, args, _ in cases]  # all at once: start-up dominates
    return {name: (finish(p), match) for (name, _, match), p in zip(cases, processes)}


@pytest.mark.parametrize("name", ["not a model", "missing shard", "mismatched shard", "no tokenizer", "seq-len too long",
                                  "no gpu", "busy out", "export into out", "other family", "renamed tensors",
                                  "a million blocks", "calibration over the limit",
                                  "resume without a run"])
def test_bad_input_is_a_one_line_error(name, bad_runs, dirs):
    if name == "no gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (code, out, err), match = bad_runs[name]
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err
    assert "Traceback" not in err
    if name == "busy out":
        assert (dirs["root"] / "busy-out" / "mine.txt").read_text() == "keep me"
        assert sorted(p.name for p in (dirs["root"] / "busy-out").iterdir()) == ["mine.txt"]


def test_compress_evaluate_and_export_from_the_command_line(dirs, tmp_path):
    out, dense = tmp_path / "out", tmp_path / "dense"
    code, stdout, err = finish(start("compress", dirs["llama"], "--method", "wanda", "--density", "0.5", *QUICK,
                                     "--eval-text", TEXT, "--out", out, "--export-dense", dense, "--json"))
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["n_params_compressed"] == summary["n_params_dense"] // 2
    assert summary["compressed_perplexity"] > 0 and summary["dense_perplexity"] > 0
    assert "block 2/2 model.layers.1.mlp.down_proj" in err and "ETA" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["command"]["method"] == "wanda"
    assert [r["name"] for r in manifest["reports"]] == [layer["name"] for layer in summary["layers"]]
    assert (dense / "config.json").is_file() and (dense / "tokenizer.json").is_file()

    code, stdout, err = finish(start("evaluate", out, "--eval-text", TEXT, "--seq-len", "16", "--json"))
    assert code == 0, err
    rows = {row["metric"]: row["value"] for row in json.loads(stdout)}
    assert rows["perplexity"] == pytest.approx(summary["compressed_perplexity"], rel=1e-5)
    model = load_compressed(out)
    assert type(model.model.layers[0].mlp.down_proj).__name__ == "FactorizedLinear"

    # the same command again is allowed (a previous run of it); another command is not
    code, _, err = finish(start("compress", dirs["llama"], "--method", "wanda", "--density", "0.4", *QUICK, "--out", out))
    assert code == 2 and "different command" in err and "Traceback" not in err


def _block_tensors(out):
    from safetensors.torch import load_file

    return {f.name: load_file(f) for f in sorted(out.glob("block-*.safetensors"))}


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    import signal
    import time

    from dsf_core.streaming import compress_streaming

    model = save_model("llama", tmp_path / "deep", n_layers=6)
    args = ("compress", model, "--method", "dsf", "--density", "0.5", *QUICK, "--eval-text", TEXT)
    whole = compress_streaming(model, "dsf", 0.5, calibration=8, seq_len=16, eval_text=TEXT, out=tmp_path / "whole")

    out = tmp_path / "killed"
    process = start(*args, "--out", out)
    deadline = time.monotonic() + 120
    while not (out / "manifest.json").is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    journal = json.loads((out / "manifest.json").read_text())
    assert 1 <= journal["blocks_done"] < 6 and not journal["complete"]  # killed mid-run

    code, _, err = finish(start(*args, "--out", out, "--resume", "--density", "0.4"))
    assert code == 2 and "different command" in err and len(err.strip().splitlines()) == 1

    code, stdout, err = finish(start(*args, "--out", out, "--resume", "--json"))
    assert code == 0, err
    assert f"block {journal['blocks_done']}/6: done before" in err
    summary = json.loads(stdout)
    assert summary["compressed_perplexity"] == whole.compressed_perplexity
    assert summary["dense_perplexity"] == whole.dense_perplexity
    resumed, reference = _block_tensors(out), _block_tensors(tmp_path / "whole")
    assert list(resumed) == list(reference) and len(resumed) == 6
    for name in reference:
        assert resumed[name].keys() == reference[name].keys()
        for key in reference[name]:
            assert torch.equal(resumed[name][key], reference[name][key]), (name, key)
