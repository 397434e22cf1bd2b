"""Hostile and broken inputs, built here: nothing is overwritten that should not be, memory stays
bounded by what was asked, damaged models are refused, numerical edges give numbers or clear
errors, and the command line answers every mistake with one line and exit status 2."""

import json
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
import zipfile

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from _small_models import cnn_bundle
from dsf_core import METHODS, factorize
from dsf_core._metrics import relative_error, weighted_relative_error
from dsf_core.checkpoint import load_compressed, read_manifest, save_compressed
from dsf_core.compress import compress_model
from dsf_core.file_formats import detect_format
from dsf_core.models.loaders import load_checkpoint, load_hf
from dsf_core.output_files import check_target

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
ENV.pop("DSF_DEBUG", None)


def cli(*args, timeout=300):
    """``python -m dsf_core ARGS`` in a real subprocess: (exit status, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "dsf_core", *args], capture_output=True, text=True, env=ENV, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def assert_one_line_error(status, stderr, match):
    assert status == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert match in lines[0], lines[0]


def run_capped(code: str, cap_bytes: int = 2 << 30) -> subprocess.CompletedProcess:
    """Run ``code`` in a subprocess whose address space is capped (RLIMIT_AS) at ``cap_bytes``."""
    prologue = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({cap_bytes}, {cap_bytes}))\n"
    return subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(code)], capture_output=True, text=True,
                          env=ENV, timeout=300, cwd=os.path.dirname(__file__))


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """A real compressed checkpoint of the small CNN (svd: dense factors; magnitude: sparse ones)."""
    bundle = cnn_bundle()
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for method in ("svd", "magnitude"):
        result = compress_model(bundle, method, 0.5, calibration=8, evaluate=False)
        paths[method] = folder / f"{method}.safetensors"
        save_compressed(paths[method], result, None)
    return bundle, paths


def tampered(source, target, *, tensors=None, metadata=None):
    """A copy of the checkpoint ``source`` with some tensors or metadata entries replaced (None drops)."""
    with safe_open(str(source), framework="pt") as handle:
        stored = {key: handle.get_tensor(key) for key in handle.keys()}
        meta = dict(handle.metadata())
    for key, value in (tensors or {}).items():
        stored.pop(key) if value is None else stored.__setitem__(key, value)
    for key, value in (metadata or {}).items():
        meta[key] = value
    save_file(stored, str(target), metadata=meta)
    return target


# --- output files ------------------------------------------------------------------------------


def test_special_files_and_links_are_never_written(tmp_path, compressed):
    bundle, paths = compressed
    result = compress_model(bundle, "magnitude", 0.5, evaluate=False)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "link.safetensors"
    link.symlink_to(victim)
    folder = tmp_path / "folder"
    folder.mkdir()
    for target, what in ((fifo, "FIFO"), (link, "symbolic link"), (folder, "directory"), ("/dev/null", "character device")):
        with pytest.raises(ValueError, match=what):
            save_compressed(target, result, None, overwrite=True)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.path.islink(link) and victim.read_text() == "precious"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder", "link.safetensors", "victim.txt"]


def test_existing_file_needs_overwrite_and_keeps_its_mode(tmp_path, compressed):
    bundle, _ = compressed
    result = compress_model(bundle, "magnitude", 0.5, evaluate=False)
    target = tmp_path / "model.safetensors"
    target.write_text("an older file")
    os.chmod(target, 0o640)
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_compressed(target, result, None)
    assert target.read_text() == "an older file"
    save_compressed(target, result, None, overwrite=True)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert read_manifest(target)["method"] == "magnitude"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temporary left


def test_unwritable_places_fail_before_any_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_target(tmp_path / "missing" / "m.safetensors")
    with pytest.raises(ValueError, match="non-empty"):
        check_target("")
    with pytest.raises(PermissionError, match="File name too long"):  # its temporary name would be over 255 bytes
        check_target(tmp_path / ("m" * 243 + ".st"))
    start = time.perf_counter()
    for out, match in ((str(tmp_path / "missing" / "m.st"), "does not exist"), ("", "non-empty"),
                       ("/dev/null", "character device"), (str(tmp_path), "directory")):
        status, _, stderr = cli("compress", "digits-cnn", "--method", "dsf", "--density", "0.3", "--out", out)
        assert_one_line_error(status, stderr, match)
    assert time.perf_counter() - start < 120  # no compression ran (each would take several seconds)


def test_cli_refuses_existing_out_without_overwrite(tmp_path):
    target = tmp_path / "out.safetensors"
    target.write_text("keep me")
    status, _, stderr = cli("compress", "digits-cnn", "--method", "magnitude", "--density", "0.3", "--out", str(target))
    assert_one_line_error(status, stderr, "--overwrite")
    assert target.read_text() == "keep me"


# --- memory bounded by what was asked ----------------------------------------------------------


def test_manifest_declaring_a_huge_layer_fails_under_a_memory_cap(tmp_path, compressed):
    _, paths = compressed
    layers = read_manifest(paths["magnitude"])["layers"]
    layers["fc1"]["weight_shape"] = [20000, 20000]
    layers["fc1"]["shapes"] = [[20000, 20000]]
    bomb = tampered(paths["magnitude"], tmp_path / "bomb.safetensors", metadata={"layers": json.dumps(layers)})
    done = run_capped(f"""
        from _small_models import cnn_bundle
        from dsf_core.checkpoint import load_compressed
        try:
            load_compressed({str(bomb)!r}, cnn_bundle().model)
        except ValueError as exc:
            print("refused:", exc)
    """)
    assert "refused:" in done.stdout and "fc1" in done.stdout, done.stderr


def test_declared_tensor_over_the_limit_is_refused_before_reading(tmp_path, compressed, monkeypatch):
    _, paths = compressed
    layers = read_manifest(paths["magnitude"])["layers"]
    layers["fc1"]["shapes"] = [[2**20, 2**20]]
    bomb = tampered(paths["magnitude"], tmp_path / "bomb.safetensors", metadata={"layers": json.dumps(layers)})
    with pytest.raises(ValueError, match="DSF_MAX_TENSOR_BYTES"):
        read_manifest(bomb)


def test_zip_that_unpacks_far_beyond_its_size_is_refused(tmp_path):
    small = tmp_path / "small.pt"
    torch.save({"weight": torch.zeros(4)}, small)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(small) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        root = source.namelist()[0].split("/")[0]
        for info in source.infolist():
            out.writestr(info.filename, source.read(info))
        with out.open(f"{root}/data/9", "w", force_zip64=True) as member:
            zeros = bytes(1 << 24)
            for _ in range(64):  # 1 GiB of zeros, about 1 MB deflated
                member.write(zeros)
    assert bomb.stat().st_size < 4 << 20
    done = run_capped(f"""
        from torch import nn
        from dsf_core.models.loaders import load_checkpoint
        try:
            load_checkpoint({str(bomb)!r}, arch=nn.Linear(2, 2), max_bytes=200 << 20)
        except ValueError as exc:
            print("refused:", exc)
    """)
    assert "refused:" in done.stdout and "unpacks to 1.0 GiB" in done.stdout, done.stderr


def _tiny_llama_dir(folder, **overrides):
    from dsf_core._torchvision_compat import prepare_transformers

    prepare_transformers()
    from transformers import LlamaConfig, LlamaForCausalLM

    config = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**config)).eval()
    model.save_pretrained(folder)
    if overrides:
        config_file = folder / "config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **overrides}))
    return model


@pytest.mark.parametrize("config, match", [
    (dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=20, vocab_size=128000, num_attention_heads=64,
          num_key_value_heads=8), "over the limit of 2,000,000,000"),  # about 19 G parameters
    (dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, vocab_size=32000, num_attention_heads=16,
          num_key_value_heads=16), "weight files hold only 4 values"),  # about 1.2 G: under the limit
])
def test_config_declaring_billions_of_parameters_is_refused(tmp_path, config, match):
    _tiny_llama_dir(tmp_path, **config)
    for file in tmp_path.glob("*.safetensors"):
        file.unlink()
    save_file({"x": torch.zeros(4)}, str(tmp_path / "model.safetensors"))
    header = json.dumps({"big": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 1 << 42]}}).encode()
    (tmp_path / "zz.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)  # lies; never read
    done = run_capped(f"""
        from dsf_core.models.loaders import load_hf
        try:
            load_hf({str(tmp_path)!r})
        except ValueError as exc:
            print("refused:", exc)
    """)
    assert "refused:" in done.stdout and match in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("override, match", [
    ({"num_attention_heads": 0}, "ZeroDivisionError"),
    ({"hidden_act": "nonexistent"}, "KeyError: 'nonexistent'"),
    ({"hidden_size": -16}, "negative dimension"),
    ({"hidden_size": "16"}, "hidden_size"),
    ({"max_position_embeddings": -1}, "max_position_embeddings=-1"),
])
def test_config_with_bad_values_is_a_value_error_on_both_paths(tmp_path, override, match):
    from dsf_core.models.loaders import load_hf
    from dsf_core.streaming.source import ModelSource

    _tiny_llama_dir(tmp_path, **override)
    for load in (load_hf, ModelSource):  # in memory, streamed: a ValueError is the CLI's one-line error
        with pytest.raises(ValueError, match=re.escape(match)):
            load(str(tmp_path))


def test_calibration_counts_and_method_options_are_bounded(monkeypatch):
    bundle = cnn_bundle()
    for count in (-5, 3_000_000, 1.5, True):
        with pytest.raises(ValueError, match="calibration must be an int"):
            compress_model(bundle, "wanda", 0.5, calibration=count, evaluate=False)
    for damp in (float("nan"), -5.0, float("inf")):  # was taken as 0 and recorded as NaN
        with pytest.raises(ValueError, match="damp must be a finite number"):
            compress_model(bundle, "wanda", 0.5, calibration=8, damp=damp, evaluate=False)
    weight = torch.randn(16, 16)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="at most the weight's larger side 16"):
        factorize(weight, "dsf", density=0.5, inner_dim=8000)
    for option in ("n_rounds", "admm_steps", "refit_steps"):
        with pytest.raises(ValueError, match="must be in the range"):
            factorize(weight, "dsf", density=0.5, **{option: 10**12})
    with pytest.raises(ValueError, match="must be in the range"):
        factorize(weight, "palm4msa", density=0.5, n_iter=10**12)
    with pytest.raises(ValueError, match="must be in the range"):
        factorize(weight, "sparsegpt", density=0.5, blocksize=10**12)
    assert time.perf_counter() - start < 5
    monkeypatch.setenv("DSF_MAX_WORK_BYTES", "100000")
    with pytest.raises(ValueError, match=r"Method 'dsf' on a 256 x 256 weight \(estimated\) would take .* DSF_MAX_WORK_BYTES"):
        factorize(torch.randn(256, 256), "dsf", density=0.5)
    factorize(weight, "dsf", density=0.5, n_rounds=2)  # small work stays under the same limit


def test_cli_calibration_bomb_and_negative_count_are_one_line_errors():
    for count, match in (("3000000", "DSF_MAX_CALIBRATION"), ("-5", "expected a whole number >= 0")):
        status, _, stderr = cli("compress", "tiny-lm", "--method", "magnitude", "--density", "0.5", "--calibration", count)
        assert_one_line_error(status, stderr, match)


# --- damaged models are refused ---------------------------------------------------------------


@pytest.mark.parametrize("change, match", [
    ({"fc1.factor_0": torch.full((32, 576), float("nan"))}, "NaN or Inf"),
    ({"fc2.bias": torch.full((10,), float("inf"))}, "NaN or Inf"),
    ({"fc2.bias": None}, "lacks a bias for 'fc2'"),
    ({"state.depthwise.bias": None}, "missing ['depthwise.bias']"),
    ({"state.depthwise.weight": torch.full((16, 1, 3, 3), float("nan"))}, "NaN or Inf"),
    ({"extra": torch.zeros(3)}, "no layer uses"),
    ({"fc1.factor_0": torch.zeros(31, 576)}, "shape [31, 576]"),
])
def test_tampered_compressed_checkpoints_are_refused(tmp_path, compressed, change, match):
    bundle, paths = compressed
    source = paths["svd"] if "fc1.factor_0" in change else paths["magnitude"]
    if "fc1.factor_0" in change and change["fc1.factor_0"].shape[0] == 32:
        with safe_open(str(source), framework="pt") as handle:
            change = {"fc1.factor_0": torch.full(handle.get_tensor("fc1.factor_0").shape, float("nan"))}
    bad = tampered(source, tmp_path / "bad.safetensors", tensors=change)
    with pytest.raises(ValueError, match=__import__("re").escape(match)):
        load_compressed(bad, bundle.model)


@pytest.mark.parametrize("key, dtype, match", [
    ("fc1.factor_0", torch.float8_e4m3fn, "expected floating-point values"),  # no isfinite for float8
    ("fc2.bias", torch.float8_e4m3fn, "expected floating-point values"),
    ("fc1.factor_1", torch.float64, "have dtypes"),  # one layer's factors in two dtypes: fails in the forward
    ("fc1.factor_0", torch.bfloat16, "have dtypes"),
])
def test_factors_of_unusable_dtypes_are_refused(tmp_path, compressed, key, dtype, match):
    bundle, paths = compressed
    with safe_open(str(paths["svd"]), framework="pt") as handle:
        value = handle.get_tensor(key).to(dtype)
    bad = tampered(paths["svd"], tmp_path / "bad.safetensors", tensors={key: value})
    with pytest.raises(ValueError, match=match):
        load_compressed(bad, bundle.model)


def test_sparse_values_with_nan_and_bad_indices_are_refused(tmp_path, compressed):
    bundle, paths = compressed
    with safe_open(str(paths["magnitude"]), framework="pt") as handle:
        keys = list(handle.keys())
        values_key = next(k for k in keys if k.endswith(".values"))
        values = handle.get_tensor(values_key).clone()
    values[0] = float("nan")
    bad = tampered(paths["magnitude"], tmp_path / "nan.safetensors", tensors={values_key: values})
    with pytest.raises(ValueError, match="NaN or Inf"):
        load_compressed(bad, bundle.model)


@pytest.mark.parametrize("changes, match", [  # to conv2: 16 x 8 x 3 x 3, stride 2, padding 2, dilation 2
    ({"conv": {"stride": [2, 2], "padding": [20000, 20000], "dilation": [2, 2]}}, "padding"),  # terabytes of patches
    ({"conv": {"stride": [2, 2], "padding": [1, 1], "dilation": [1, 1]}}, "dilation"),  # same output size, wrong maps
    ({"conv": {"stride": [0, 0], "padding": [2, 2], "dilation": [2, 2]}}, "stride"),
    ({"weight_shape": [16, 8, 9, 1]}, "weight shape"),
    ({"conv": None}, "as a convolution of weight shape"),
    ({"shapes": [[16, 500000], [500000, 72]], "sparse": [True, True]}, "inner size"),  # empty CSR, a huge product
])
def test_compressed_layers_must_match_the_models_layer_exactly(tmp_path, compressed, changes, match):
    bundle, paths = compressed
    with safe_open(str(paths["svd"]), framework="pt") as handle:
        layers = json.loads(handle.metadata()["layers"])
    layers["conv2"].update(changes)
    bad = tampered(paths["svd"], tmp_path / "bad.safetensors", metadata={"layers": json.dumps(layers)})
    with pytest.raises(ValueError, match=match):
        load_compressed(bad, bundle.model)


@pytest.mark.parametrize("layers, match", [
    ('["fc1"]', "must be a JSON object"),
    ('{"fc1": {"kind": "mystery", "shapes": [[1, 1]], "sparse": [false], "weight_shape": [32, 576], "conv": null}}',
     "kind 'mystery'"),
    ('{"fc1": {"kind": "product", "shapes": [[-1, 5]], "sparse": [false], "weight_shape": [32, 576], "conv": null}}',
     "non-negative ints"),
    ("not json", "not valid JSON"),
])
def test_malformed_manifests_are_refused(tmp_path, compressed, layers, match):
    _, paths = compressed
    bad = tampered(paths["svd"], tmp_path / "bad.safetensors", metadata={"layers": layers})
    with pytest.raises(ValueError, match=match):
        read_manifest(bad)


def test_hf_directories_with_foreign_or_nan_weights_are_refused(tmp_path):
    foreign, nan = tmp_path / "foreign", tmp_path / "nan"
    for folder in (foreign, nan):
        folder.mkdir()
        model = _tiny_llama_dir(folder)
    state = {f"other.{i}": p.detach().clone() for i, p in enumerate(model.parameters())}
    for file in foreign.glob("*.safetensors"):
        file.unlink()
    save_file(state, str(foreign / "model.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        load_hf(str(foreign))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["model.norm.weight"][0] = float("nan")
    for file in nan.glob("*.safetensors"):
        file.unlink()
    save_file(state, str(nan / "model.safetensors"))
    with pytest.raises(ValueError, match="NaN or Inf"):
        load_hf(str(nan))


def test_pickles_never_run_anywhere(tmp_path):
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for i, obj in enumerate(({"w": Payload()}, Payload(), {"state_dict": {"w": Payload()}})):
        path = tmp_path / f"payload{i}.pt"
        torch.save(obj, path)
        with pytest.raises(ValueError, match="Refusing to load"):
            load_checkpoint(str(path), arch=torch.nn.Linear(2, 2))
        status, _, stderr = cli("evaluate", str(path))
        assert_one_line_error(status, stderr, "Refusing to load")
        legacy = tmp_path / f"legacy{i}.pkl"
        legacy.write_bytes(pickle.dumps(obj, protocol=2))
        with pytest.raises(ValueError):
            load_checkpoint(str(legacy), arch=torch.nn.Linear(2, 2))
    assert not marker.exists()


# --- formats from content ----------------------------------------------------------------------


def test_formats_are_told_by_content_not_name(tmp_path):
    def arch():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))

    linear = arch()
    named_pt = tmp_path / "weights.pt"
    save_file(linear.state_dict(), str(named_pt))  # safetensors under a .pt name
    assert detect_format(named_pt) == "safetensors"
    loaded = load_checkpoint(str(named_pt), arch=arch(), input_shape=(3, 2, 2)).model
    torch.testing.assert_close(loaded[1].weight, linear[1].weight)
    with pytest.raises(ValueError, match=r"does not accept inputs of shape \(3, 224, 224\)"):
        load_checkpoint(str(named_pt), arch=arch())
    zipped = tmp_path / "state.zip"
    torch.save(linear.state_dict(), zipped)
    with zipfile.ZipFile(zipped, "a") as archive:  # a state dict with a member named like TorchScript's
        archive.writestr("x/constants.pkl", b"")
    assert detect_format(zipped) == "torch-zip"
    text = tmp_path / "notes.pt"
    text.write_text("101 reasons\n")
    with pytest.raises(ValueError, match="neither safetensors"):
        load_checkpoint(str(text), arch=arch())


def test_cli_evaluates_a_checkpoint_whatever_its_suffix(tmp_path):
    for name in ("model.pt", "MODEL.SAFETENSORS"):
        out = tmp_path / name
        status, stdout, stderr = cli("compress", "digits-cnn", "--method", "magnitude", "--density", "0.5",
                                     "--calibration", "0", "--out", str(out))
        assert status == 0, stderr
        status, stdout, stderr = cli("evaluate", str(out))
        assert status == 0 and "accuracy" in stdout, stderr


def test_checkpoint_names_its_model_only_when_built_in(tmp_path, compressed):
    _, paths = compressed
    assert read_manifest(paths["svd"])["model"] == ""
    status, _, stderr = cli("evaluate", str(paths["svd"]))
    assert_one_line_error(status, stderr, "give that model with --model")
    other = tampered(paths["svd"], tmp_path / "other.safetensors", metadata={"model": "tiny-lm"})
    status, _, stderr = cli("evaluate", str(other))
    assert_one_line_error(status, stderr, "is not in the model")
    evil = tampered(paths["svd"], tmp_path / "evil.safetensors", metadata={"model": "/etc/passwd"})
    status, _, stderr = cli("evaluate", str(evil))
    assert_one_line_error(status, stderr, "give that model with --model")


@pytest.mark.parametrize("args, match", [
    (["layers", "/etc/passwd"], "neither safetensors"),
    (["layers", "/no/such/model"], "no such built-in model, file or directory"),
    (["compress", "digits-cnn", "--method", "dsf", "--density", "1.5"], "density must be in the range"),
    (["compress", "digits-cnn", "--method", "dsf", "--density", "0.5", "--option", "inner_dim=8000"], "larger side"),
    (["compress", "digits-cnn", "--method", "dsf", "--density", "0.5", "--option", "n_rounds=1000000000000"],
     "must be in the range"),
    (["compress", "digits-cnn", "--method", "nope", "--density", "0.5"], "invalid choice"),
    (["compress", "digits-cnn", "--density", "0.5"], "required"),
    (["evaluate"], "required"),
])
def test_cli_mistakes_are_one_line(args, match):
    status, _, stderr = cli(*args)
    assert_one_line_error(status, stderr, match)


def test_ctrl_c_during_compress_exits_130_and_writes_nothing(tmp_path):
    out = tmp_path / "out.safetensors"
    process = subprocess.Popen(
        [sys.executable, "-m", "dsf_core", "compress", "tiny-lm", "--method", "dsf", "--density", "0.5", "--out", str(out)],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV,
        # Ctrl-C in a terminal meets SIGINT's default action; a background shell job would inherit "ignored".
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(8)  # past start-up, inside the compression
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["interrupted; nothing written"]
    assert list(tmp_path.iterdir()) == []


# --- numerical edges ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
def test_extreme_magnitudes_give_finite_factors_or_a_clear_error(method):
    weight = torch.randn(16, 16, generator=torch.Generator().manual_seed(0))
    huge = weight.clone()
    huge[0, 0] = 2.0**127  # finite in float32
    for matrix in (huge, weight.double() * 1e307, weight.double() * 1e-310):
        try:
            result = factorize(matrix, method, density=0.5)
        except ValueError as exc:
            assert "overflow" in str(exc)
            continue
        assert all(bool(torch.isfinite(f).all()) for f in result.factors)
        assert 0 <= result.error(matrix) < 1.5
    scaled = factorize(weight.double() * 1e-310, method, density=0.5)
    plain = factorize(weight.double(), method, density=0.5)
    assert scaled.error(weight.double() * 1e-310) == pytest.approx(plain.error(weight.double()), rel=1e-6)


def test_row_weights_spanning_too_far_are_refused_and_wide_ones_stay_finite():
    weight = torch.randn(8, 8)
    far = torch.logspace(-30, 30, 8)
    with pytest.raises(ValueError, match="span at most"):
        factorize(weight, "svd", density=0.5, row_weights=far)
    wide = torch.logspace(-3, 3, 8)
    for method in ("dsf", "svd", "magnitude", "palm4msa"):
        result = factorize(weight, method, density=0.5, row_weights=wide)
        assert all(bool(torch.isfinite(f).all()) for f in result.factors)


@pytest.mark.parametrize("method", [name for name, spec in METHODS.items() if spec.uses_gram != "no"])
def test_indefinite_gram_with_positive_diagonal_is_refused(method):
    gram = torch.tensor([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # eigenvalues 3, 1, -1
    with pytest.raises(ValueError, match="positive semi-definite"):
        factorize(torch.randn(4, 3), method, density=0.6, gram=gram)
    samples = torch.randn(2, 3)
    factorize(torch.randn(4, 3), method, density=0.6, gram=samples.T @ samples)  # singular but PSD: accepted


def test_error_is_defined_for_zero_and_extreme_weights():
    zero = torch.zeros(4, 4, dtype=torch.float64)
    assert relative_error(zero, zero) == 0.0 and relative_error(zero, torch.ones(4, 4)) == float("inf")
    weight = torch.randn(6, 6, dtype=torch.float64)
    approx = weight + 0.1 * torch.randn(6, 6, dtype=torch.float64)
    gram = torch.eye(6, dtype=torch.float64)
    reference = relative_error(weight, approx)
    for scale in (1e200, 1e-310, 1e300):
        assert relative_error(weight * scale, approx * scale) == pytest.approx(reference, rel=1e-9)
        assert weighted_relative_error(weight * scale, approx * scale, gram * 1e300) == pytest.approx(reference, rel=1e-9)
    result = factorize(zero, "svd", density=0.5)
    assert result.error(zero) == 0.0
