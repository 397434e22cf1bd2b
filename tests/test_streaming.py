"""The streaming compressor on tiny random models of every family it knows, against the in-memory
path (``compress_model`` on the whole model, same calibration batches) as the oracle."""

import pytest
import torch
from _hf_models import TEXT, save_model

from dsf_core import METHODS
from dsf_core.compress import compress_model
from dsf_core.models.loaders import load_hf
from dsf_core.streaming import compress_streaming
from dsf_core.streaming.load import export_dense, load_compressed

FAMILIES = ["llama", "mistral", "qwen2", "gpt2", "opt", "bert"]
SEQ_LEN = 16


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {family: save_model(family, root / family) for family in FAMILIES}


def _blocks_pattern(family):
    blocks = {"gpt2": "transformer.h", "bloom": "transformer.h", "opt": "model.decoder.layers", "bert": "encoder.layer"}
    return blocks.get(family, "model.layers") + ".*"


def _outputs(model, ids):
    with torch.no_grad():
        if hasattr(model, "lm_head"):
            return model(input_ids=ids, use_cache=False).logits
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state


def _tokens(n=3, seed=5):
    return torch.randint(0, 300, (n, SEQ_LEN), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_streaming_equals_in_memory_and_reloads(family, model_dirs, tmp_path):
    directory = model_dirs[family]
    bundle = load_hf(str(directory), seq_len=SEQ_LEN)
    memory = compress_model(bundle, "wanda", 0.5, layers=_blocks_pattern(family), calibration=20, evaluate=False)
    streamed = compress_streaming(directory, "wanda", 0.5, calibration=20, seq_len=SEQ_LEN, out=tmp_path / "out")
    assert [r.name for r in streamed.layers] == [r.name for r in memory.layers]
    for mine, theirs in zip(streamed.layers, memory.layers):
        assert mine.n_params == theirs.n_params
        assert mine.weighted_error == pytest.approx(theirs.weighted_error, rel=1e-5)
    model = load_compressed(tmp_path / "out")
    for name, result in memory.factorizations.items():
        stored = model.get_submodule(name).factors[0].to_dense()
        torch.testing.assert_close(stored, result.factors[0], rtol=0, atol=1e-6)
    ids = _tokens()
    torch.testing.assert_close(_outputs(model, ids), _outputs(memory.model, ids), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(_outputs(model, ids), _outputs(bundle.model, ids), atol=1e-3)  # it did compress


def test_an_encoder_reports_the_in_memory_mean_cosine(model_dirs, tmp_path):
    from dsf_core.streaming.store import read_manifest

    directory = model_dirs["bert"]
    bundle = load_hf(str(directory), seq_len=SEQ_LEN)
    memory = compress_model(bundle, "magnitude", 0.3, layers=_blocks_pattern("bert"), calibration=0)
    streamed = compress_streaming(directory, "magnitude", 0.3, calibration=0, seq_len=SEQ_LEN, out=tmp_path / "out")
    # a random tiny BERT's embeddings barely move (0.99986): the two must agree far closer than that
    assert memory.metric_name == "mean_cosine" and memory.compressed_metric < 1 - 1e-4
    assert streamed.mean_cosine == pytest.approx(memory.compressed_metric, abs=1e-6)
    assert read_manifest(tmp_path / "out")["mean_cosine"] == streamed.mean_cosine
    assert streamed.dense_perplexity is None and streamed.compressed_perplexity is None


@pytest.mark.parametrize("method, options", [("dsf", {"preset": "quick"}), ("svd", {})])
@pytest.mark.parametrize("sequential", [True, False])
def test_factorizing_methods_equal_in_memory(method, options, sequential, model_dirs, tmp_path):
    from dsf_core import METHODS

    opts = dict(METHODS[method].presets[options["preset"]]) if options else {}
    bundle = load_hf(str(model_dirs["llama"]), seq_len=SEQ_LEN)
    memory = compress_model(bundle, method, 0.4, layers="model.layers.*", calibration=20, sequential=sequential,
                            evaluate=False, **opts)
    streamed = compress_streaming(model_dirs["llama"], method, 0.4, calibration=20, seq_len=SEQ_LEN,
                                  sequential=sequential, out=tmp_path / "out", **opts)
    for mine, theirs in zip(streamed.layers, memory.layers):
        assert (mine.name, mine.n_params) == (theirs.name, theirs.n_params)
        assert mine.weighted_error == pytest.approx(theirs.weighted_error, rel=1e-4)
    ids = _tokens()
    model = load_compressed(tmp_path / "out")
    torch.testing.assert_close(_outputs(model, ids), _outputs(memory.model, ids), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_export_dense_loads_in_plain_transformers(family, model_dirs, tmp_path):
    from transformers import AutoModelForCausalLM

    compress_streaming(model_dirs[family], "dsf", 0.5, calibration=8, seq_len=SEQ_LEN, out=tmp_path / "out",
                       **METHODS["dsf"].presets["quick"])
    compressed = load_compressed(tmp_path / "out")
    export_dense(tmp_path / "out", tmp_path / "dense")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "dense", local_files_only=True).eval()
    ids = _tokens()
    torch.testing.assert_close(_outputs(plain, ids), _outputs(compressed, ids), rtol=1e-4, atol=1e-4)
    original = AutoModelForCausalLM.from_pretrained(model_dirs[family], local_files_only=True).eval()
    assert not torch.allclose(_outputs(plain, ids), _outputs(original, ids), atol=1e-3)


def test_outputs_get_the_usual_file_mode_and_damping_is_checked(model_dirs, tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        compress_streaming(model_dirs["llama"], "magnitude", 0.5, calibration=0, seq_len=SEQ_LEN, out=tmp_path / "out")
        export = export_dense(tmp_path / "out", tmp_path / "dense")
    finally:
        os.umask(umask)
    files = [*(tmp_path / "out").iterdir(), *export.iterdir()]
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o644 for f in files)  # not mkstemp's 0600
    for damp in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="damp must be a finite number"):
            compress_streaming(model_dirs["llama"], "wanda", 0.5, calibration=8, seq_len=SEQ_LEN, damp=damp)


def test_export_dense_never_mixes_two_models_exports(model_dirs, tmp_path):
    runs = {}
    for family in ("llama", "mistral"):  # the same command on two models
        runs[family] = tmp_path / family
        compress_streaming(model_dirs[family], "magnitude", 0.5, calibration=0, seq_len=SEQ_LEN, out=runs[family])
    export = export_dense(runs["llama"], tmp_path / "dense")
    before = {f.name: f.read_bytes() for f in export.iterdir()}
    with pytest.raises(ValueError, match="no export of this run of this model"):
        export_dense(runs["mistral"], export)
    assert {f.name: f.read_bytes() for f in export.iterdir()} == before
    export_dense(runs["llama"], export)  # the same run again: allowed, to the same files
    assert {f.name: f.read_bytes() for f in export.iterdir()} == before


def test_a_run_exports_itself_and_checks_the_export_target_before_any_work(model_dirs, tmp_path, monkeypatch):
    import tempfile

    from dsf_core.streaming import pipeline

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    run = dict(calibration=0, seq_len=SEQ_LEN)
    compress_streaming(model_dirs["llama"], "magnitude", 0.5, out=tmp_path / "out", **run)
    expected = export_dense(tmp_path / "out", tmp_path / "expected")
    # without --out the factors pass through a scratch directory, removed afterwards
    result = compress_streaming(model_dirs["llama"], "magnitude", 0.5, export_dense=tmp_path / "dense", **run)
    assert result.out is None and list(scratch.iterdir()) == []
    shards = sorted(f.name for f in expected.glob("*.safetensors"))
    assert shards and [(tmp_path / "dense" / name).read_bytes() for name in shards] == [
        (expected / name).read_bytes() for name in shards]

    # another model's export: refused before the calibration pass, so no run is lost at the end
    def started(*args, **kwargs):
        raise AssertionError("the run started before its export target was checked")

    monkeypatch.setattr(pipeline, "_capture", started)
    before = {f.name: f.read_bytes() for f in (tmp_path / "dense").iterdir()}
    for target, out, match in [(tmp_path / "dense", None, "no export of this run of this model"),
                               (tmp_path / "o", tmp_path / "o", "is the --out directory")]:
        with pytest.raises(ValueError, match=match):
            compress_streaming(model_dirs["mistral"], "magnitude", 0.5, out=out, export_dense=target, **run)
    assert {f.name: f.read_bytes() for f in (tmp_path / "dense").iterdir()} == before
    assert list(scratch.iterdir()) == [] and not (tmp_path / "o").exists()


def test_layers_the_method_cannot_compress_are_refused_before_any_work(model_dirs, tmp_path):
    from dsf_core import BudgetError

    # 2:4 keeps half of each row: more than density 0.3 allows, on all 14 of the model's layers.
    with pytest.raises(BudgetError, match=r"14 chosen layer\(s\) cannot be compressed by 'magnitude' at density 0\.3, "
                                          r"e\.g\. 'model\.layers\.0\.self_attn\.q_proj': .*2:4 pattern"):
        compress_streaming(model_dirs["llama"], "magnitude", 0.3, pattern="2:4", calibration=0, seq_len=SEQ_LEN,
                           out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # Only the chosen layers count: the MLP's down projections alone are as short of budget.
    with pytest.raises(BudgetError, match=r"^2 chosen layer\(s\)"):
        compress_streaming(model_dirs["llama"], "svd", 0.01, layers="*.down_proj", calibration=0, seq_len=SEQ_LEN)


@pytest.mark.parametrize("dtype", [torch.int8, torch.complex64, torch.bool])
def test_weights_stored_as_non_floats_are_refused_before_any_work(dtype, model_dirs, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from dsf_core.streaming.source import ModelSource

    directory = tmp_path / "model"
    shutil.copytree(model_dirs["llama"], directory)
    shard = sorted(directory.glob("model-*.safetensors"))[0]
    tensors = load_file(shard)
    key = next(k for k, v in tensors.items() if v.ndim == 2)
    tensors[key] = tensors[key].to(dtype)
    save_file(tensors, shard, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"{key}.*is stored as"):
        ModelSource(directory)
    with pytest.raises(ValueError, match=f"{key}.*is stored as"):  # in memory, from_pretrained would cast it
        load_hf(str(directory))


@pytest.mark.parametrize("change, match", [
    ({"blocks_done": "abc"}, "'blocks_done'"),
    ({"reports": "x"}, "'reports'"),
    ({"reports": [{"name": "x"}]}, "per-layer records"),
    ({"model": {}}, "no model directory"),
    ({"layers": {"model.layers.0.mlp.up_proj": {"file": "block-00000.safetensors", "kind": "product", "shapes": [[64, 32]],
                                                "sparse": [False], "conv": {"stride": [1, 1]}}}}, "no convolution"),
    ({"layers": {"model.layers.0.mlp.up_proj": {"file": "block-00000.safetensors", "kind": "product",
                                                "shapes": [[64, -1]], "sparse": [False], "conv": None}}}, "non-negative"),
])
def test_a_damaged_run_manifest_is_refused_by_name(change, match, model_dirs, tmp_path):
    import json

    from dsf_core.streaming.store import read_manifest

    out = tmp_path / "out"
    compress_streaming(model_dirs["llama"], "magnitude", 0.5, calibration=0, seq_len=SEQ_LEN, out=out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, **change}))
    with pytest.raises(ValueError, match=match):
        read_manifest(out)


def test_perplexity_before_and_after_matches_the_whole_model(model_dirs, tmp_path):
    directory = model_dirs["llama"]
    result = compress_streaming(directory, "wanda", 0.5, calibration=8, seq_len=SEQ_LEN, eval_text=TEXT,
                                out=tmp_path / "out")
    dense = load_hf(str(directory), seq_len=SEQ_LEN, text_file=str(TEXT))
    assert result.dense_perplexity == pytest.approx(dense.evaluate(dense.model)["perplexity"], rel=1e-5)
    compressed = load_compressed(tmp_path / "out")
    assert result.compressed_perplexity == pytest.approx(dense.evaluate(compressed)["perplexity"], rel=1e-5)
    assert result.compressed_perplexity != pytest.approx(result.dense_perplexity, rel=1e-3)


@pytest.mark.parametrize("family", ["gemma2", "bloom"])
def test_a_family_read_from_its_skeleton_streams_as_in_memory(family, tmp_path):
    directory = save_model(family, tmp_path / family)
    result = compress_streaming(directory, "wanda", 0.5, calibration=8, seq_len=SEQ_LEN, eval_text=TEXT,
                                out=tmp_path / "out")
    dense = load_hf(str(directory), seq_len=SEQ_LEN, text_file=str(TEXT))
    memory = compress_model(dense, "wanda", 0.5, layers=_blocks_pattern(family), calibration=8, evaluate=False)
    assert [(r.name, r.n_params) for r in result.layers] == [(r.name, r.n_params) for r in memory.layers]
    for mine, theirs in zip(result.layers, memory.layers):
        assert mine.weighted_error == pytest.approx(theirs.weighted_error, rel=1e-5)
    assert result.dense_perplexity == pytest.approx(dense.evaluate(dense.model)["perplexity"], rel=1e-6)
    compressed = load_compressed(tmp_path / "out")
    assert result.compressed_perplexity == pytest.approx(dense.evaluate(compressed)["perplexity"], rel=1e-6)
    assert not torch.allclose(_outputs(compressed, _tokens()), _outputs(dense.model, _tokens()), atol=1e-3)


def test_bert_saved_without_pooler_streams_as_in_memory(tmp_path):
    from _hf_models import config
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    BertForMaskedLM(config("bert")).save_pretrained(tmp_path / "mlm")  # no pooler; a cls.* head
    memory = compress_model(load_hf(str(tmp_path / "mlm"), seq_len=SEQ_LEN), "wanda", 0.5, layers="encoder.layer.*",
                            calibration=8, evaluate=False)
    streamed = compress_streaming(tmp_path / "mlm", "wanda", 0.5, calibration=8, seq_len=SEQ_LEN)
    assert [r.name for r in streamed.layers] == [r.name for r in memory.layers]
    for mine, theirs in zip(streamed.layers, memory.layers):
        assert mine.weighted_error == pytest.approx(theirs.weighted_error, rel=1e-5)


def test_bfloat16_forward_keeps_float32_factors_and_the_same_result(model_dirs, tmp_path):
    runs = {dtype: compress_streaming(model_dirs["llama"], "wanda", 0.5, calibration=8, seq_len=SEQ_LEN, dtype=dtype,
                                      eval_text=TEXT, out=tmp_path / dtype) for dtype in ("float32", "bfloat16")}
    assert runs["bfloat16"].compressed_perplexity == pytest.approx(runs["float32"].compressed_perplexity, rel=0.01)
    for low, full in zip(runs["bfloat16"].layers, runs["float32"].layers):
        assert low.weighted_error == pytest.approx(full.weighted_error, abs=0.01)
    model = load_compressed(tmp_path / "bfloat16", dtype="bfloat16")
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.model.layers[0].mlp.down_proj.factor_0.dtype == torch.float32
    ids = _tokens()
    assert _outputs(model, ids).dtype == torch.bfloat16


@pytest.mark.parametrize("sequential", [True, False])
def test_lm_head_selected_is_factorized_as_in_memory(sequential, model_dirs, tmp_path):
    pattern = "model.layers.1.*,lm_head"
    bundle = load_hf(str(model_dirs["llama"]), seq_len=SEQ_LEN, text_file=str(TEXT))
    memory = compress_model(bundle, "wanda", 0.5, layers=pattern, calibration=20, sequential=sequential)
    streamed = compress_streaming(model_dirs["llama"], "wanda", 0.5, layers=pattern, calibration=20, seq_len=SEQ_LEN,
                                  sequential=sequential, eval_text=TEXT, out=tmp_path / "out")
    assert [r.name for r in streamed.layers] == [r.name for r in memory.layers]
    assert streamed.layers[-1].name == "lm_head"
    for mine, theirs in zip(streamed.layers, memory.layers):
        assert mine.n_params == theirs.n_params
        assert mine.weighted_error == pytest.approx(theirs.weighted_error, rel=1e-5)
    assert memory.metric_name == "perplexity"
    assert streamed.compressed_perplexity == pytest.approx(memory.compressed_metric, rel=1e-5)
    model = load_compressed(tmp_path / "out")
    ids = _tokens()
    torch.testing.assert_close(_outputs(model, ids), _outputs(memory.model, ids), rtol=1e-5, atol=1e-5)


def test_lm_head_stays_dense_unless_selected_and_tied_heads_are_refused(model_dirs):
    streamed = compress_streaming(model_dirs["llama"], "magnitude", 0.5, calibration=0, seq_len=SEQ_LEN)
    assert "lm_head" not in [r.name for r in streamed.layers]
    with pytest.raises(ValueError, match="tied to 'transformer.wte.weight'.*--in-memory, which unties them"):
        compress_streaming(model_dirs["gpt2"], "magnitude", 0.5, layers="lm_head", calibration=0, seq_len=SEQ_LEN)
    with pytest.raises(ValueError, match="'pooler.dense', outside the blocks and the head"):
        compress_streaming(model_dirs["bert"], "magnitude", 0.5, layers="pooler.*", calibration=0, seq_len=SEQ_LEN)


@pytest.mark.parametrize("head_done", [True, False])
def test_resume_after_the_blocks_with_lm_head_selected(head_done, model_dirs, tmp_path):
    import json

    run = dict(layers="model.layers.*,lm_head", calibration=8, seq_len=SEQ_LEN, eval_text=TEXT, out=tmp_path / "out")
    whole = compress_streaming(model_dirs["llama"], "wanda", 0.5, **run)
    manifest_file = tmp_path / "out" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest.update(complete=False, blocks_done=3 if head_done else 2)  # stopped after the head, or before it
    manifest_file.write_text(json.dumps(manifest))
    resumed = compress_streaming(model_dirs["llama"], "wanda", 0.5, resume=True, **run)
    assert resumed.compressed_perplexity == pytest.approx(whole.compressed_perplexity, rel=1e-6)
    assert [(r.name, r.n_params) for r in resumed.layers] == [(r.name, r.n_params) for r in whole.layers]
