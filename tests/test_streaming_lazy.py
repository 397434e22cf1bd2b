"""Opening a Hugging Face checkpoint lazily (dsf_core.streaming.lazy): the layers from the headers
equal list_layers of the loaded model, one layer's weight is read alone, and one layer's Gram
equals the in-memory Gram, against load_hf as the oracle."""

import pytest
import torch
from _hf_models import save_model
from safetensors import safe_open

from dsf_core.calibration import collect_grams
from dsf_core.layers import list_layers, weight_matrix
from dsf_core.models.loaders import load_hf
from dsf_core.streaming.lazy import LazyModel

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lazy")
    return {family: save_model(family, root / family, with_tokenizer=False, n_layers=3) for family in ("llama", "gpt2")}


@pytest.fixture
def reads(monkeypatch):
    """Every tensor read from a safetensors file, by name."""
    names = []
    real = safe_open

    class Counting:
        def __init__(self, *args, **kwargs):
            self.handle = real(*args, **kwargs)

        def __enter__(self):
            self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def get_tensor(self, key):
            names.append(key)
            return self.handle.get_tensor(key)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr("dsf_core.streaming.source.safe_open", Counting)
    return names


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_layers_from_the_headers_equal_the_loaded_models(family, model_dirs, reads):
    lazy = LazyModel(model_dirs[family])
    assert reads == []  # listing reads no tensor
    assert all(p.is_meta for p in lazy.source.model.parameters())
    loaded = load_hf(str(model_dirs[family])).model
    assert lazy.layers == list_layers(loaded)
    assert lazy.n_params == sum(p.numel() for p in loaded.parameters())
    assert {lazy.dtype(layer.name) for layer in lazy.layers} == {"F32"}


@pytest.mark.parametrize("family, name", [("llama", "model.layers.1.mlp.down_proj"), ("gpt2", "transformer.h.2.attn.c_attn"),
                                          ("gpt2", "lm_head")])
def test_one_layers_weight_is_read_alone(family, name, model_dirs, reads, monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a transformers model was loaded")

    lazy = LazyModel(model_dirs[family])
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", refuse)
    module = lazy.module(name)
    expected = {name + ".weight", name + ".bias"} if family == "gpt2" and name != "lm_head" else {name + ".weight"}
    if name == "lm_head":  # GPT-2 ties it to the input embeddings: read under that name, alone
        expected = {"transformer.wte.weight"}
    assert set(reads) == expected and len(reads) == len(expected)
    assert all(p.is_meta for p in lazy.source.model.parameters())  # the shared skeleton stays weightless
    monkeypatch.undo()
    loaded = load_hf(str(model_dirs[family])).model
    torch.testing.assert_close(weight_matrix(module), weight_matrix(loaded.get_submodule(name)), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["model.layers.1.self_attn.q_proj", "model.layers.2.mlp.down_proj", "lm_head"])
def test_one_layers_gram_equals_the_in_memory_gram(name, model_dirs, reads):
    lazy = LazyModel(model_dirs["llama"])
    cost = lazy.gram_cost(name, 20)
    gram = lazy.gram(name, 20)
    bundle = load_hf(str(model_dirs["llama"]))
    expected = collect_grams(bundle.model, bundle.forward, bundle.calibration_inputs(20), [name], damp=0.0)[name]
    torch.testing.assert_close(gram, expected, rtol=1e-5, atol=1e-6)
    blocks = 3 if name == "lm_head" else int(name.split(".")[2]) + 1
    assert (cost.blocks, cost.forward_passes) == (blocks, 2 * blocks)  # 20 samples: batches of 16 and 4
    read_bytes = 0
    for key in set(reads):
        read_bytes += 4 * lazy.source.model.state_dict()[key].numel()
    assert cost.read_bytes == read_bytes  # float32 files: what it said it would read, it read
    later_blocks = {key for key in reads if key.startswith("model.layers.") and int(key.split(".")[2]) >= blocks}
    assert not later_blocks


def test_no_gram_outside_the_blocks_and_head(tmp_path):
    directory = save_model("bert", tmp_path / "bert", with_tokenizer=False)
    lazy = LazyModel(directory)
    assert lazy.gram_cost("pooler.dense", 8) is None
    with pytest.raises(ValueError, match="outside the model's blocks and head"):
        lazy.gram("pooler.dense", 8)
    with pytest.raises(ValueError, match="no factorizable layer 'nope'"):
        lazy.module("nope")


def test_the_layers_command_lists_a_checkpoint_from_its_headers(model_dirs, reads, capsys):
    import json

    from dsf_core.cli import main

    assert main(["layers", str(model_dirs["gpt2"]), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert reads == []
    expected = list_layers(load_hf(str(model_dirs["gpt2"])).model)
    assert [(r["name"], r["shape"]) for r in rows] == [(layer.name, "x".join(map(str, layer.shape))) for layer in expected]
