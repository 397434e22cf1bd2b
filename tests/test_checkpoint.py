"""Compressed checkpoints: really smaller, reload to the same outputs, refuse bad files."""

import pytest
import torch
from safetensors.torch import save_file

from _small_models import cnn_bundle, gpt2_bundle
from dsf_core.checkpoint import load_compressed, read_manifest, save_compressed
from dsf_core.compress import compress_model
from dsf_core.stats import dense_file_bytes, flops_per_sample, latency_seconds, stored_values


@pytest.mark.parametrize("make_bundle", [cnn_bundle, gpt2_bundle])
@pytest.mark.parametrize("method", ["dsf", "svd", "tt", "magnitude"])
def test_saved_model_reloads_to_the_same_outputs(tmp_path, make_bundle, method):
    bundle = make_bundle()
    result = compress_model(bundle, method, 0.3, calibration=16, evaluate=False)
    path = tmp_path / "model.safetensors"
    size = save_compressed(path, result, bundle.name)
    reloaded = load_compressed(path, bundle.model)
    batch = bundle.calibration_inputs(8)[0]
    with torch.no_grad():
        torch.testing.assert_close(bundle.forward(reloaded, batch), bundle.forward(result.model, batch))
    manifest = read_manifest(path)
    assert manifest["model"] == bundle.name and manifest["method"] == method
    assert size < dense_file_bytes(bundle.model)


def test_sparse_factors_are_stored_as_values_and_indices_not_dense(tmp_path):
    bundle = cnn_bundle()
    result = compress_model(bundle, "dsf", 0.3, calibration=16, evaluate=False)
    path = tmp_path / "m.safetensors"
    size = save_compressed(path, result, bundle.name)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        values = sum(handle.get_tensor(k).numel() for k in keys if k.endswith(".values"))
    assert values == result.n_params_compressed  # only the nonzeros are stored
    assert any(k.endswith(".bitmap") for k in keys) or any(k.endswith(".col_indices") for k in keys)
    assert not any(k.startswith("state.fc1.") for k in keys)  # no dense copy of a compressed layer
    # stored values of the factorized layers: at most 30% of the dense weights, plus index overhead
    assert size < 0.6 * dense_file_bytes(bundle.model)


def test_both_sparse_encodings_round_trip(tmp_path):
    bundle = cnn_bundle()
    for density in (0.01, 0.5):  # CSR wins when very sparse, the bitmap otherwise
        result = compress_model(bundle, "magnitude", density, evaluate=False)
        path = tmp_path / f"m{density}.safetensors"
        save_compressed(path, result, bundle.name)
        reloaded = load_compressed(path, bundle.model)
        for name in result.factorizations:
            original = result.model.get_submodule(name)
            original = getattr(original, "linear", original).factors[0]
            copy = reloaded.get_submodule(name)
            copy = getattr(copy, "linear", copy).factors[0]
            torch.testing.assert_close(copy.to_dense(), original.to_dense())


def test_bad_files_are_refused_with_clear_errors(tmp_path, monkeypatch):
    bundle = cnn_bundle()
    with pytest.raises(FileNotFoundError, match="No such compressed checkpoint"):
        read_manifest(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(ValueError, match="is not a safetensors file"):
        read_manifest(junk)
    plain = tmp_path / "plain.safetensors"
    save_file(bundle.model.state_dict(), str(plain))
    with pytest.raises(ValueError, match="not a DSF Explorer compressed checkpoint"):
        read_manifest(plain)
    result = compress_model(bundle, "svd", 0.5, evaluate=False)
    good = tmp_path / "good.safetensors"
    save_compressed(good, result, bundle.name)
    with pytest.raises(ValueError, match="is not in the model"):
        load_compressed(good, gpt2_bundle().model)
    monkeypatch.setenv("DSF_MAX_FILE_BYTES", "100")
    with pytest.raises(ValueError, match="over the limit of 100 bytes.*DSF_MAX_FILE_BYTES"):
        read_manifest(good)


def test_stats_count_what_is_stored_and_computed():
    bundle = cnn_bundle()
    result = compress_model(bundle, "magnitude", 0.25, layers="fc*", evaluate=False)
    dense_fc = 576 * 32 + 32 * 10
    assert stored_values(bundle.model) - stored_values(result.model) == dense_fc - result.n_params_compressed
    batch = bundle.calibration_inputs(4)[0]
    dense_flops = flops_per_sample(bundle.model, bundle.forward, batch, 4)
    compressed_flops = flops_per_sample(result.model, bundle.forward, batch, 4)
    conv_flops = 2 * (8 * 27 * 144 + 16 * 72 * 36)  # outputs x (2 x weights) for conv1, conv2
    assert dense_flops == conv_flops + 2 * dense_fc
    assert compressed_flops == conv_flops + 2 * result.n_params_compressed
    assert latency_seconds(result.model.fc1, torch.randn(64, 576), repeats=3) > 0
