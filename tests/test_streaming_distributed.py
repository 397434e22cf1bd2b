"""Streamed runs over two processes (torch.distributed, gloo on CPU) equal the single-process run."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _hf_models import TEXT, save_model
from safetensors.torch import load_file

from dsf_core.streaming import compress_streaming

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
RUN = ("--calibration", "32", "--seq-len", "16", "--eval-text", str(TEXT))  # 32 samples: two batches, one a process


def torchrun(*args, timeout=600):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "dsf_core", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_model("llama", tmp_path_factory.mktemp("dist") / "llama", n_layers=3)


@pytest.mark.parametrize("method, mode", [("dsf", "--sequential"), ("wanda", "--independent")])
def test_two_processes_equal_one(method, mode, model, tmp_path):
    options = {"n_rounds": 6} if method == "dsf" else {}
    extra = ["--option", "n_rounds=6"] if method == "dsf" else []
    result = torchrun("compress", model, "--method", method, "--density", "0.5", mode, *RUN, *extra,
                      "--out", tmp_path / "two", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # rank 0 alone prints
    one = compress_streaming(model, method, 0.5, calibration=32, seq_len=16, eval_text=TEXT,
                             sequential=mode == "--sequential", out=tmp_path / "one", **options)
    assert summary["compressed_perplexity"] == pytest.approx(one.compressed_perplexity, rel=1e-5)
    assert summary["dense_perplexity"] == pytest.approx(one.dense_perplexity, rel=1e-6)
    assert [r["name"] for r in summary["layers"]] == [r.name for r in one.layers]
    for mine, theirs in zip(summary["layers"], one.layers):
        assert mine["n_params"] == theirs.n_params
        assert mine["weighted_error"] == pytest.approx(theirs.weighted_error, rel=1e-4)
    for file in sorted((tmp_path / "one").glob("block-*.safetensors")):
        ours, theirs = load_file(tmp_path / "two" / file.name), load_file(file)
        assert ours.keys() == theirs.keys()
        for key in theirs:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-4, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_processes_given_different_arguments_stop_with_one_line(model, tmp_path):
    """Two processes joined by torch.distributed's standard environment, with different densities."""
    port = _free_port()
    processes = []
    for rank, density in enumerate(("0.5", "0.4")):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port)}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "dsf_core", "compress", str(model), "--method", "wanda", "--density", density, *RUN],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT))
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "different arguments" in lines[0] and "Traceback" not in err


def test_an_encoders_mean_cosine_is_over_both_processes_batches(tmp_path):
    bert = save_model("bert", tmp_path / "bert", n_layers=2)  # 32 held-out samples: one batch a process
    result = torchrun("compress", bert, "--method", "wanda", "--density", "0.3", "--calibration", "32",
                      "--seq-len", "16", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    one = compress_streaming(bert, "wanda", 0.3, calibration=32, seq_len=16)
    assert one.mean_cosine < 1 - 1e-5
    assert json.loads(result.stdout)["mean_cosine"] == pytest.approx(one.mean_cosine, abs=1e-6)
