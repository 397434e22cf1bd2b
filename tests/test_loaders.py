"""Loaders for user models, on small models made here; and the torchvision import fallback."""

import copy
import os
import pickle
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from dsf_core._torchvision_compat import import_torchvision, prepare_transformers
from dsf_core.models import loaders
from dsf_core.models.loaders import load_checkpoint, load_hf, load_model, load_torchvision

tv = import_torchvision()
SMALL = (3, 32, 32)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """A resnet18 with 10 classes, saved as a state dict."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("resnet") / "resnet18.pt"
    torch.save(tv.models.resnet18(num_classes=10).state_dict(), path)
    return path


def _perturbed(model, scale=0.5):
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(scale * p.std().nan_to_num() * torch.randn_like(p))
    return noisy


# --- torchvision compat ------------------------------------------------------------------------


def test_torchvision_imports_and_nms_works():
    assert import_torchvision() is tv
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    assert torch.ops.torchvision.nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert torch.ops.torchvision.nms(boxes, scores, 0.95).tolist() == [3, 0, 1, 2]


def test_missing_torchvision_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ImportError, match="torchvision is not installed"):
        import_torchvision()


# --- torchvision architectures -----------------------------------------------------------------


def test_torchvision_state_dict_agrees_with_itself(resnet_file):
    bundle = load_torchvision("resnet18", str(resnet_file), num_classes=10, input_shape=SMALL)
    assert (bundle.task, bundle.metric_name, bundle.higher_is_better) == ("classifier", "top1_agreement", True)
    assert bundle.evaluate(bundle.model) == pytest.approx({"top1_agreement": 1.0, "kl": 0.0}, abs=1e-6)
    worse = bundle.evaluate(_perturbed(bundle.model))
    assert worse["top1_agreement"] < 1.0 and worse["kl"] > 0
    batches = bundle.calibration_inputs(20)
    assert sum(len(b) for b in batches) == 20 and batches[0].shape[1:] == SMALL
    assert bundle.forward(bundle.model, batches[0]).shape == (len(batches[0]), 10)


@pytest.mark.parametrize(
    "arch, match",
    [("resnet19", r"not a torchvision model.*resnet18"), ("fasterrcnn_resnet50_fpn", "not an image classifier")],
)
def test_torchvision_bad_arch(arch, match):
    with pytest.raises(ValueError, match=match):
        load_torchvision(arch, "unused.pt")


def test_torchvision_needs_exactly_one_weights_source(resnet_file):
    with pytest.raises(ValueError, match="exactly one of weights_path"):
        load_torchvision("resnet18")
    with pytest.raises(ValueError, match="exactly one of weights_path"):
        load_torchvision("resnet18", str(resnet_file), weights_enum="DEFAULT")


def test_torchvision_enum_offline_names_file_and_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="no weights 'V9'.*IMAGENET1K_V1"):
        load_torchvision("resnet18", weights_enum="V9")
    checkpoints = tmp_path / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError, match="resnet18-f37072fd.pth") as info:
        load_torchvision("resnet18", weights_enum="ResNet18_Weights.IMAGENET1K_V1")
    assert str(checkpoints) in str(info.value)
    checkpoints.mkdir(parents=True)
    (checkpoints / "resnet18-f37072fd.pth").write_bytes(b"not the real weights")
    with pytest.raises(ValueError, match="does not match the hash"):
        load_torchvision("resnet18", weights_enum="DEFAULT")


# --- checkpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["state_dict", "checkpoint_state_dict", "checkpoint_model", "safetensors"])
def test_checkpoint_layouts(tmp_path, layout):
    source = nn.Linear(6, 3)
    state = source.state_dict()
    if layout == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, path)
    else:
        path = tmp_path / "w.pt"
        key = layout.removeprefix("checkpoint_")
        torch.save(state if layout == "state_dict" else {key: state, "epoch": 3}, path)
    bundle = load_checkpoint(str(path), arch=nn.Linear(6, 3), input_shape=(1, 1, 6))
    assert torch.equal(bundle.model.weight, source.weight)
    assert bundle.evaluate(bundle.model)["top1_agreement"] == 1.0


def test_checkpoint_strips_data_parallel_prefix(tmp_path):
    source = nn.Linear(4, 2)
    torch.save({"module." + k: v for k, v in source.state_dict().items()}, tmp_path / "dp.pt")
    bundle = load_checkpoint(str(tmp_path / "dp.pt"), arch=nn.Linear(4, 2), input_shape=(1, 1, 4))
    assert torch.equal(bundle.model.bias, source.bias)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
def test_torchscript_file(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    torch.jit.trace(net, torch.randn(1, 3, 8, 8)).save(str(tmp_path / "net.pt"))
    bundle = load_checkpoint(str(tmp_path / "net.pt"), input_shape=(3, 8, 8))
    assert bundle.evaluate(bundle.model) == pytest.approx({"top1_agreement": 1.0, "kl": 0.0}, abs=1e-6)
    x = bundle.calibration_inputs(4)[0]
    torch.testing.assert_close(bundle.forward(bundle.model, x), net(x))
    with pytest.raises(ValueError, match="TorchScript.*drop arch"):
        load_checkpoint(str(tmp_path / "net.pt"), arch=net)


def test_language_model_checkpoint(tmp_path):
    torch.manual_seed(0)
    lm = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 50))
    torch.save(lm.state_dict(), tmp_path / "lm.pt")
    arch = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 50))
    bundle = load_checkpoint(str(tmp_path / "lm.pt"), arch=arch, task="language-model")
    assert (bundle.metric_name, bundle.extras["vocab_size"]) == ("next_token_agreement", 50)
    assert bundle.evaluate(bundle.model) == pytest.approx({"next_token_agreement": 1.0, "kl": 0.0}, abs=1e-6)
    assert bundle.evaluate(_perturbed(bundle.model))["next_token_agreement"] < 1.0


class _Planted:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_refuses_pickled_objects(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(ValueError, match="Refusing to load.*pickled Python objects"):
        load_checkpoint(str(tmp_path / "module.pt"), arch=nn.Linear(2, 2))
    marker = tmp_path / "code_ran"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"weight": _Planted(marker)}, f, protocol=2)
    with pytest.raises(ValueError, match="Refusing to load"):
        load_checkpoint(str(tmp_path / "evil.pt"), arch=nn.Linear(2, 2))
    assert not marker.exists()


def test_wrong_shape_names_the_key(resnet_file):
    with pytest.raises(ValueError, match=r"'fc.weight'.*\(10, 512\).*\(5, 512\)"):
        load_checkpoint(str(resnet_file), arch=tv.models.resnet18(num_classes=5))


@pytest.mark.parametrize(
    "state, match",
    [
        ({"weight": torch.zeros(3, 6)}, "missing keys: bias"),
        ({"weight": torch.zeros(3, 6), "bias": torch.zeros(3), "extra": torch.zeros(1)}, "unexpected keys: extra"),
        ({"weight": torch.zeros(3, 6, dtype=torch.int32), "bias": torch.zeros(3)}, "'weight' has dtype torch.int32"),
        ({"weight": torch.full((3, 6), float("nan")), "bias": torch.zeros(3)}, "'weight' contains NaN"),
        ({"weight": torch.zeros(3, 6), "bias": [0.0, 0.0, 0.0]}, r"entries \['bias'\] are not tensors"),
        ({"weight": torch.zeros(3, 6, dtype=torch.float8_e4m3fn), "bias": torch.zeros(3)}, "'weight' has dtype torch.float8"),
        ({"weight": torch.zeros(3, 6).to_sparse(), "bias": torch.zeros(3)}, "'weight' is a torch.sparse_coo tensor"),
    ],
)
def test_bad_state_dicts(tmp_path, state, match):
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=match):
        load_checkpoint(str(tmp_path / "bad.pt"), arch=nn.Linear(6, 3))


def test_file_errors(tmp_path, resnet_file):
    with pytest.raises(FileNotFoundError, match="No such file"):
        load_checkpoint(str(tmp_path / "missing.pt"), arch=nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"over the limit of 1000 bytes \(max_bytes\)"):
        load_checkpoint(str(resnet_file), arch=tv.models.resnet18(num_classes=10), max_bytes=1000)
    with pytest.raises(ValueError, match="without its architecture; pass arch="):
        load_checkpoint(str(resnet_file))
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(str(tmp_path / "junk.pt"), arch=nn.Linear(2, 2))
    with pytest.raises(ValueError, match="task must be"):
        load_checkpoint(str(resnet_file), task="detector")


# --- image folders -----------------------------------------------------------------------------


def _colour_folder(root, n_per_class=3):
    """Class 'a_red' holds red images, class 'b_blue' blue ones (8x8 PNGs)."""
    from PIL import Image

    for name, rgb in (("a_red", (255, 0, 0)), ("b_blue", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(np.full((8, 8, 3), rgb, dtype=np.uint8)).save(root / name / f"{i}.png")
        (root / name / "notes.txt").write_text("not an image")
    return root


def test_image_folder_accuracy_on_a_planted_classifier(tmp_path):
    """Logits (R - B, B - R) of the mean colour classify the red/blue folder perfectly."""
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[2].weight.copy_(torch.tensor([[1.0, 0, -1], [-1, 0, 1]]))
    torch.save(net.state_dict(), tmp_path / "colour.pt")
    folder = _colour_folder(tmp_path / "images")
    arch = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2, bias=False))
    bundle = load_checkpoint(str(tmp_path / "colour.pt"), arch=arch, input_shape=(3, 16, 16), image_folder=str(folder))
    assert bundle.metric_name == "accuracy"
    assert bundle.evaluate(bundle.model)["accuracy"] == 1.0
    flipped = copy.deepcopy(bundle.model)
    with torch.no_grad():
        flipped[2].weight.neg_()
    assert bundle.evaluate(flipped)["accuracy"] == 0.0


def test_image_folder_errors(tmp_path, resnet_file):
    options = {"num_classes": 10, "input_shape": SMALL}
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        load_torchvision("resnet18", str(resnet_file), image_folder=str(tmp_path / "empty"), **options)
    with pytest.raises(FileNotFoundError, match="No such image folder"):
        load_torchvision("resnet18", str(resnet_file), image_folder=str(tmp_path / "no"), **options)
    folder = _colour_folder(tmp_path / "images")
    arch = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 1))
    torch.save(arch.state_dict(), tmp_path / "one.pt")
    with pytest.raises(ValueError, match="2 classes but the model outputs 1 logits"):
        load_checkpoint(str(tmp_path / "one.pt"), arch=arch, input_shape=(3, 8, 8), image_folder=str(folder))


# --- Hugging Face ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from dsf_core.models.minilm import model_path

    return AutoTokenizer.from_pretrained(model_path(), local_files_only=True)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, tokenizer):
    """A 2-layer, 32-wide GPT-2 with MiniLM's tokenizer, saved with save_pretrained."""
    prepare_transformers()
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=tokenizer.vocab_size)
    config.bos_token_id = config.eos_token_id = tokenizer.sep_token_id
    directory = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_hf_causal_lm(gpt2_dir):
    bundle = load_hf(str(gpt2_dir), seq_len=16)
    assert (bundle.task, bundle.metric_name) == ("language-model", "next_token_agreement")
    assert bundle.evaluate(bundle.model) == pytest.approx({"next_token_agreement": 1.0, "kl": 0.0}, abs=1e-6)
    assert bundle.evaluate(_perturbed(bundle.model, 2.0))["next_token_agreement"] < 1.0
    batch = bundle.calibration_inputs(3)[0]
    assert bundle.forward(bundle.model, batch).shape == (3, 16, bundle.extras["vocab_size"])


def test_hf_perplexity_matches_the_model_loss(gpt2_dir, tokenizer, tmp_path):
    text = "The quick brown fox jumps over the lazy dog while the cat sleeps."
    (tmp_path / "text.txt").write_text(text)
    bundle = load_hf(str(gpt2_dir), seq_len=64, text_file=str(tmp_path / "text.txt"))
    assert (bundle.metric_name, bundle.higher_is_better) == ("perplexity", False)
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        expected = torch.exp(bundle.model(ids, labels=ids).loss).item()
    assert bundle.evaluate(bundle.model)["perplexity"] == pytest.approx(expected, rel=1e-5)


def test_hf_encoder(tmp_path):
    prepare_transformers()
    from transformers import BertConfig, BertModel

    config = BertConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=100
    )
    BertModel(config).save_pretrained(tmp_path)
    bundle = load_model(str(tmp_path))
    assert (bundle.task, bundle.metric_name) == ("encoder", "mean_cosine")
    assert bundle.evaluate(bundle.model) == pytest.approx({"mean_cosine": 1.0, "ranking_agreement": 1.0}, abs=1e-5)
    assert bundle.evaluate(_perturbed(bundle.model))["mean_cosine"] < 1.0
    assert bundle.forward(bundle.model, bundle.calibration_inputs(2)[0]).shape == (2, 32)
    with pytest.raises(ValueError, match="causal language models only"):
        load_hf(str(tmp_path), text_file="unused.txt")


@pytest.mark.parametrize("head", ["BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification"])
def test_hf_encoder_saved_with_a_task_head(head, tmp_path):
    prepare_transformers()
    import transformers

    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                     vocab_size=100)
    torch.manual_seed(0)
    saved = getattr(transformers, head)(config).eval()
    saved.save_pretrained(tmp_path)
    model = load_hf(str(tmp_path)).model
    assert (model.pooler is None) == (head == "BertForMaskedLM")  # no pooler in the file: none made up
    for name, value in saved.bert.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)
    state = {f"bert.{k}": v for k, v in saved.bert.state_dict().items()} | {"alien.weight": torch.zeros(2)}
    for file in tmp_path.glob("*.safetensors"):
        file.unlink()
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="unexpected: alien.weight"):  # not a head saved with the model: refused
        load_hf(str(tmp_path))


@pytest.mark.parametrize("config, match", [
    ({"model_type": "t5", "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 2}, "encoder-decoder"),
    ({"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
      "intermediate_size": 64, "image_size": 8, "patch_size": 4}, "does not take token ids"),
])
def test_hf_models_load_hf_cannot_run_are_refused_by_kind(config, match, tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({"w": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=match):
        load_hf(str(tmp_path))


def test_hf_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="'someone/tiny-model'.*pass the local directory"):
        load_hf("someone/tiny-model")
    with pytest.raises(FileNotFoundError, match="No such Hugging Face model directory"):
        load_hf("./not/here")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="no .safetensors weights"):
        load_hf(str(tmp_path))


# --- load_model --------------------------------------------------------------------------------


def test_load_model_dispatch(resnet_file, gpt2_dir, monkeypatch):
    monkeypatch.setattr(loaders, "load_builtin", lambda name: f"builtin {name}")
    assert load_model("digits-cnn") == "builtin digits-cnn"
    with pytest.raises(TypeError, match="takes no options"):
        load_model("digits-cnn", seq_len=3)
    bundle = load_model("torchvision:resnet18", weights_path=str(resnet_file), num_classes=10, input_shape=SMALL)
    assert bundle.name == "torchvision:resnet18"
    assert load_model(str(resnet_file), arch=tv.models.resnet18(num_classes=10), input_shape=SMALL).task == "classifier"
    assert load_model(f"hf:{gpt2_dir}").task == "language-model"


def test_load_model_unknown_lists_the_forms():
    with pytest.raises(ValueError, match="Accepted forms: a built-in model name.*'torchvision:ARCH'.*'hf:ID'"):
        load_model(os.path.join("no", "such", "model.pt"))
    with pytest.raises(TypeError, match="spec must be a str"):
        load_model(3)


def test_text_tokens_are_the_whole_texts_first_ones_from_a_prefix(tmp_path):
    from _hf_models import TEXT, tokenizer

    from dsf_core.models.loaders import text_tokens

    tok = tokenizer()
    whole = tok(TEXT.read_text(), verbose=False)["input_ids"]
    for n in (1, 37, 500, len(whole) + 10):
        assert text_tokens(tok, TEXT, n).tolist() == whole[:n]
    seen = []

    def spy(text, **kwargs):  # the real tokenizer, recording how much text it is given
        seen.append(len(text))
        return tok(text, **kwargs)

    line = tmp_path / "one-line.txt"
    line.write_text("ab" * (4 << 20))  # 8 MB without a space: the whole of it would take gigabytes
    assert len(text_tokens(spy, line, 256)) == 256 and max(seen) <= 8 * 256 * 2
