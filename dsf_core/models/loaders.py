"""Load the models users bring: torchvision architectures, Hugging Face models, PyTorch checkpoints.

:func:`load_model` takes one string: a built-in model name, a local Hugging Face directory, a
checkpoint file, ``"torchvision:ARCH"`` or ``"hf:ID"``. Files are read safely: safetensors, or
``torch.load(weights_only=True)`` (no arbitrary unpickling), or TorchScript; sizes are bounded by
``max_bytes`` and every tensor is checked (floating point, finite, the shape the architecture
expects).

Without a data set, calibration inputs are synthetic (images of standard-normal pixels, or uniform
random token ids) and ``evaluate(model)`` measures agreement with the original model on held-out
synthetic inputs: ``top1_agreement`` and ``kl`` for classifiers, ``next_token_agreement`` and ``kl``
for language models, ``mean_cosine`` for encoders. An image folder (one subfolder per class, as for
torchvision's ``ImageFolder``) adds ``accuracy``; a text file for a language model adds
``perplexity``; either then becomes the bundle's headline metric.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import inspect
import math
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from .._torchvision_compat import import_torchvision, prepare_transformers
from ..file_formats import FLOAT_DTYPES, FLOAT_FILE_DTYPES, check_zip_size, detect_format, hf_shard_map
from ..limits import limit
from . import BUILTIN_MODELS, load_builtin
from ._bundle import ModelBundle

MAX_IMAGE_BYTES = 50 << 20
MAX_TEXT_BYTES = 10 << 20
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
BATCH = 16
CALIBRATION_SEED, EVAL_SEED = 0, 1
ENCODER_EVAL_SAMPLES = 32  # held-out samples of an encoder's mean cosine

# --- shared helpers ----------------------------------------------------------------------------


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    return next(model.parameters(), torch.empty(0)).device


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """Eval mode and no gradients inside the block; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def check_count(n, maximum: int | None = None) -> int:
    """Validate a number of calibration samples."""
    top = "inf" if maximum is None else maximum
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or (maximum is not None and n > maximum):
        raise ValueError(f"The 'n' parameter must be an int in the range [1, {top}]. Got {n!r} instead.")
    return n


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean of the token embeddings (B, T, D) over the real tokens of ``mask`` (B, T)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    return F.normalize(summed / weights.sum(dim=1).clamp(min=1e-9), dim=-1)


def embed(model: nn.Module, batch: dict) -> torch.Tensor:
    """Sentence embeddings (B, D), unit norm, of a tokenised batch (a dict of (B, T) tensors)."""
    device = model_device(model)
    batch = {key: value.to(device) for key, value in batch.items()}
    output = model(**batch)
    hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
    return mean_pool(hidden, batch["attention_mask"])


def embedding_agreement(reference: torch.Tensor, embeddings: torch.Tensor) -> dict:
    """``mean_cosine`` of paired embeddings and ``ranking_agreement``: the Spearman correlation of
    the pairwise-similarity upper triangles (0 when the evaluated similarities are all equal)."""
    from scipy.stats import spearmanr

    embeddings = embeddings.detach().cpu().float()
    upper = torch.triu_indices(len(reference), len(reference), offset=1)
    sims_ref = (reference @ reference.T)[upper[0], upper[1]]
    normed = F.normalize(embeddings, dim=-1)
    sims = (normed @ normed.T)[upper[0], upper[1]]
    rho = spearmanr(sims_ref.numpy(), sims.numpy()).statistic
    return {
        "mean_cosine": F.cosine_similarity(reference, embeddings, dim=-1).mean().item(),
        "ranking_agreement": 0.0 if math.isnan(rho) else float(rho),
    }


def _logits(output) -> torch.Tensor:
    """The logits of a model output: a tensor, an object with ``.logits`` or a tuple led by them."""
    if hasattr(output, "logits"):
        return output.logits
    return output[0] if isinstance(output, (tuple, list)) else output


def _kl(reference: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean KL(original || evaluated) of the softmax distributions, over all leading positions."""
    ref = F.log_softmax(reference.reshape(-1, reference.shape[-1]).float(), dim=-1)
    new = F.log_softmax(logits.reshape(-1, logits.shape[-1]).float(), dim=-1)
    return F.kl_div(new, ref, log_target=True, reduction="batchmean").item()


def _agreement(name: str, reference: torch.Tensor, logits: torch.Tensor) -> dict:
    """``{name: share of positions whose top-1 matches the original's, "kl": _kl(...)}``."""
    return {name: (logits.argmax(-1) == reference.argmax(-1)).float().mean().item(), "kl": _kl(reference, logits)}


def _run(forward, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``forward`` over ``inputs`` in batches, concatenated on the CPU."""
    with evaluating(model):
        return torch.cat([forward(model, batch).cpu() for batch in inputs.split(BATCH)])


def _reference_run(forward, model: nn.Module, inputs: torch.Tensor, what: str) -> torch.Tensor:
    """The model's outputs on the held-out inputs; a model that cannot take them is a ValueError."""
    try:
        output = _run(forward, model, inputs)
    except (RuntimeError, IndexError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"The model does not accept {what} ({first}); check the input shape or vocabulary.") from None
    if not isinstance(output, torch.Tensor) or not output.is_floating_point():
        raise ValueError(f"The model's output is not a tensor of logits (got {type(output).__name__}).")
    return output


# --- bundles for models without their own data set ---------------------------------------------


def _check_shape(input_shape) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be three positive ints (C, H, W). Got {input_shape!r} instead.")
    return shape


def classifier_bundle(
    model: nn.Module,
    *,
    name: str,
    source: str,
    input_shape=(3, 224, 224),
    image_folder: str | None = None,
    max_images: int = 200,
    n_eval: int = 32,
) -> ModelBundle:
    """A bundle for an image classifier taking (B, *input_shape) images and returning (B, classes).

    Calibration images have standard-normal pixels (what inputs normalised with ImageNet statistics
    look like on average). ``image_folder`` adds ``accuracy`` (classes numbered in sorted subfolder
    order, images resized to ``input_shape`` and normalised with ImageNet mean and std).
    """
    shape = _check_shape(input_shape)

    def forward(m: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return _logits(m(batch.to(model_device(m))))

    def calibration_inputs(n: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(CALIBRATION_SEED)
        return list(torch.randn(check_count(n), *shape, generator=generator).split(BATCH))

    held_out = torch.randn(n_eval, *shape, generator=torch.Generator().manual_seed(EVAL_SEED))
    reference = _reference_run(forward, model, held_out, f"inputs of shape {shape}")
    images, labels = (None, None) if image_folder is None else read_image_folder(image_folder, shape, max_images)
    if labels is not None and int(labels.max()) >= reference.shape[-1]:
        raise ValueError(
            f"The image folder has {int(labels.max()) + 1} classes but the model outputs "
            f"{reference.shape[-1]} logits."
        )

    def evaluate(m: nn.Module) -> dict:
        result = _agreement("top1_agreement", reference, _run(forward, m, held_out))
        if images is not None:
            result["accuracy"] = (_run(forward, m, images).argmax(-1) == labels).float().mean().item()
        return result

    return ModelBundle(
        name=name,
        model=model,
        task="classifier",
        metric_name="top1_agreement" if image_folder is None else "accuracy",
        higher_is_better=True,
        calibration_inputs=calibration_inputs,
        forward=forward,
        evaluate=evaluate,
        description=f"image classifier on {shape[0]}x{shape[1]}x{shape[2]} inputs",
        source=source,
        extras={"input_shape": shape, "image_folder": image_folder},
    )


def _random_tokens(n: int, seq_len: int, vocab_size: int, seed: int) -> torch.Tensor:
    return torch.randint(vocab_size, (n, seq_len), generator=torch.Generator().manual_seed(seed))


def _perplexity(model: nn.Module, forward, chunks: torch.Tensor) -> float:
    """exp of the mean next-token cross-entropy over (N, T) chunks of token ids."""
    logits = _run(forward, model, chunks)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), chunks[:, 1:].reshape(-1))
    return math.exp(loss.item())


def lm_bundle(
    model: nn.Module,
    *,
    name: str,
    source: str,
    vocab_size: int,
    seq_len: int = 32,
    n_eval: int = 8,
    text_tokens: torch.Tensor | None = None,
) -> ModelBundle:
    """A bundle for a causal language model taking (B, T) token ids and returning (B, T, V) logits.

    Calibration and held-out inputs are uniform random token ids; ``text_tokens`` (1-D) adds
    ``perplexity`` over non-overlapping chunks of ``seq_len`` tokens (at most 16 of them).
    """

    def forward(m: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return _logits(m(batch.to(model_device(m))))

    def calibration_inputs(n: int) -> list[torch.Tensor]:
        return list(_random_tokens(check_count(n), seq_len, vocab_size, CALIBRATION_SEED).split(BATCH))

    held_out = _random_tokens(n_eval, seq_len, vocab_size, EVAL_SEED)
    reference = _reference_run(forward, model, held_out, f"token ids below {vocab_size} in sequences of {seq_len}")
    chunks = None if text_tokens is None else _text_chunks(text_tokens, seq_len)

    def evaluate(m: nn.Module) -> dict:
        result = _agreement("next_token_agreement", reference, _run(forward, m, held_out))
        if chunks is not None:
            result["perplexity"] = _perplexity(m, forward, chunks)
        return result

    return ModelBundle(
        name=name,
        model=model,
        task="language-model",
        metric_name="next_token_agreement" if chunks is None else "perplexity",
        higher_is_better=chunks is None,
        calibration_inputs=calibration_inputs,
        forward=forward,
        evaluate=evaluate,
        description=f"causal language model, vocabulary {vocab_size}, sequences of {seq_len} tokens",
        source=source,
        extras={"seq_len": seq_len, "vocab_size": vocab_size},
    )


EVAL_CHUNKS = 16  # perplexity is measured on at most this many sequences of the evaluation text


def _text_chunks(tokens: torch.Tensor, seq_len: int, max_chunks: int = EVAL_CHUNKS) -> torch.Tensor:
    tokens = tokens[: seq_len * max_chunks]
    if len(tokens) < 2:
        raise ValueError(f"The text gives {len(tokens)} token(s); perplexity needs at least 2.")
    if len(tokens) < seq_len:
        return tokens[None]
    return tokens[: len(tokens) // seq_len * seq_len].view(-1, seq_len)


def encoder_bundle(
    model: nn.Module, *, name: str, source: str, vocab_size: int, seq_len: int = 32, n_eval: int = ENCODER_EVAL_SAMPLES
) -> ModelBundle:
    """A bundle for a Hugging Face encoder: mean-pooled, normalised embeddings of random token ids."""

    def batches(n: int, seed: int) -> list[dict]:
        ids = _random_tokens(n, seq_len, vocab_size, seed)
        return [{"input_ids": b, "attention_mask": torch.ones_like(b)} for b in ids.split(BATCH)]

    held_out = batches(n_eval, EVAL_SEED)

    def run(m: nn.Module) -> torch.Tensor:
        with evaluating(m):
            return torch.cat([embed(m, batch).cpu() for batch in held_out])

    reference = run(model)
    return ModelBundle(
        name=name,
        model=model,
        task="encoder",
        metric_name="mean_cosine",
        higher_is_better=True,
        calibration_inputs=lambda n: batches(check_count(n), CALIBRATION_SEED),
        forward=embed,
        evaluate=lambda m: embedding_agreement(reference, run(m)),
        description=f"encoder, vocabulary {vocab_size}, mean-pooled embeddings of {seq_len} tokens",
        source=source,
        extras={"seq_len": seq_len, "vocab_size": vocab_size},
    )


# --- reading files -----------------------------------------------------------------------------


def _size(n_bytes: int) -> str:
    return f"{n_bytes} bytes" if n_bytes < 1 << 20 else f"{n_bytes / 2**20:.1f} MiB"


def _byte_limit(max_bytes: int | None) -> int:
    """``max_bytes``, or the ``DSF_MAX_FILE_BYTES`` limit when it is None."""
    return limit("DSF_MAX_FILE_BYTES") if max_bytes is None else max_bytes


def _check_file(path, max_bytes: int | None) -> Path:
    """The path of an existing regular file no larger than ``max_bytes`` (default: the
    ``DSF_MAX_FILE_BYTES`` limit)."""
    max_bytes = _byte_limit(max_bytes)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int. Got {max_bytes!r} instead.")
    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(f"No such file: '{file}'.")
    if not file.is_file():
        raise ValueError(f"'{file}' is not a regular file (a Hugging Face model directory goes to load_hf).")
    size = file.stat().st_size
    if size > max_bytes:
        raise ValueError(
            f"'{file}' is {_size(size)}, over the limit of {_size(max_bytes)} "
            "(max_bytes); raise max_bytes if you trust this file."
        )
    return file


def _read_tensors(file: Path, max_bytes: int | None = None) -> dict:
    """The state dict in a safetensors file or a ``torch.save`` file (weights only, never pickle),
    told apart by content; a zip archive must not unpack to more than ``max_bytes``."""
    kind = detect_format(file)
    if kind == "torchscript":
        raise ValueError(f"'{file}' is a TorchScript file; expected a state dict (safetensors or torch.save).")
    if kind is None:
        raise ValueError(
            f"'{file}' is not a readable PyTorch checkpoint: its content is neither safetensors, "
            "a torch.save file nor TorchScript (whatever its name says)."
        )
    if kind == "torch-zip":
        check_zip_size(file, _byte_limit(max_bytes))
    if kind == "safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(file))
        except Exception as exc:  # safetensors raises its own error type for malformed files
            raise ValueError(f"'{file}' is not a readable safetensors file: {exc}") from exc
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):
            raise ValueError(
                f"'{file}' is not a readable PyTorch checkpoint (torch.load(weights_only=True) rejected it)."
            ) from exc
        raise ValueError(
            f"Refusing to load '{file}': it holds pickled Python objects besides tensors, and "
            "unpickling them could run arbitrary code. Save model.state_dict() (torch.save or "
            "safetensors) or a TorchScript file instead."
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"'{file}' is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}).") from exc
    return _state_dict_of(obj, file)


def _state_dict_of(obj, file: Path) -> dict:
    """A state dict, or the one under 'state_dict' or 'model' in a full checkpoint dict."""
    if isinstance(obj, dict):
        inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), obj)
        not_tensors = [k for k, v in inner.items() if not isinstance(v, torch.Tensor)]
        if inner and not not_tensors:
            return dict(inner)
        if inner:
            raise ValueError(f"'{file}' holds a dict whose entries {not_tensors[:5]} are not tensors.")
    raise ValueError(
        f"'{file}' holds a {type(obj).__name__}; expected a state_dict (a dict of tensors) or a "
        "checkpoint dict with one under 'state_dict' or 'model'."
    )


def _few(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:5]) + (f" (and {len(keys) - 5} more)" if len(keys) > 5 else "")


def _check_state(state: dict, expected: dict) -> None:
    """Same keys and shapes as ``expected``; floating, finite values (integer buffers may stay)."""
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or unexpected:
        raise ValueError(
            f"The weights do not match the architecture: missing keys: {_few(missing) or 'none'}; "
            f"unexpected keys: {_few(unexpected) or 'none'}."
        )
    for key, value in state.items():
        want = expected[key]
        if value.shape != want.shape:
            raise ValueError(
                f"Shape mismatch for '{key}': the file has {tuple(value.shape)}, "
                f"the architecture expects {tuple(want.shape)}."
            )
        if value.layout != torch.strided or value.is_meta:
            raise ValueError(f"'{key}' is a {'meta' if value.is_meta else value.layout} tensor; expected a dense one with values.")
        if value.is_floating_point():
            if value.dtype not in FLOAT_DTYPES:
                raise ValueError(f"'{key}' has dtype {value.dtype}; expected float16, bfloat16, float32 or float64.")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"'{key}' contains NaN or Inf values; expected finite weights.")
        elif value.dtype != want.dtype:
            raise ValueError(f"'{key}' has dtype {value.dtype}; expected a floating-point tensor.")


def load_checked(arch: nn.Module, state: dict) -> nn.Module:
    """Check ``state`` against ``arch`` (dropping a DataParallel 'module.' prefix) and load it."""
    expected = arch.state_dict()
    prefix = "module."
    if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    _check_state(state, expected)
    arch.load_state_dict(state)
    return arch.float().eval()


def read_image_folder(folder, input_shape, max_images: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W), normalised with ImageNet statistics, and labels (N,) from a folder with
    one subfolder per class (numbered in sorted order); at most ``max_images``, evenly spread."""
    from PIL import Image

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"No such image folder: '{root}'.")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    files = [(f, c) for c, d in enumerate(classes) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"'{root}' holds no images in class subfolders (expected {root}/CLASS/IMAGE.png).")
    picks = np.unique(np.linspace(0, len(files) - 1, min(max_images, len(files))).round().astype(int))
    channels, height, width = input_shape
    if channels not in (1, 3):
        raise ValueError(f"An image folder needs models with 1 or 3 input channels. Got {channels} instead.")
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    images = []
    for file, _ in (files[i] for i in picks):
        _check_file(file, MAX_IMAGE_BYTES)
        try:
            with Image.open(file) as image:
                pixels = np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR))
        except OSError as exc:
            raise ValueError(f"Cannot read image '{file}': {exc}") from exc
        x = (torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255 - mean) / std
        images.append(x.mean(0, keepdim=True) if channels == 1 else x)
    return torch.stack(images), torch.tensor([files[i][1] for i in picks])


# --- torchvision -------------------------------------------------------------------------------


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached_weights(tv, arch: str, weights_enum: str, max_bytes: int) -> Path:
    """The file of a torchvision weights enum in the local torch hub cache, hash-checked."""
    enum = tv.models.get_model_weights(arch)
    member = weights_enum.split(".")[-1]
    if member not in enum.__members__:
        raise ValueError(f"{arch} has no weights {weights_enum!r}; expected one of {list(enum.__members__)}.")
    url = enum[member].url
    directory = Path(torch.hub.get_dir()) / "checkpoints"
    file = directory / url.rsplit("/", 1)[-1]
    if not file.is_file():
        raise FileNotFoundError(
            f"The weights {enum[member]} are not in the local torch hub cache (no download here). "
            f"Put the file '{file.name}' (from {url}) in the directory '{directory}'."
        )
    _check_file(file, max_bytes)
    prefix = torch.hub.HASH_REGEX.search(file.name)
    if prefix and not _sha256(file).startswith(prefix.group(1)):
        raise ValueError(f"'{file}' does not match the hash in its name ({prefix.group(1)}); it is damaged or wrong.")
    return file


COMMON_CLASSIFIERS = ("resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0", "vit_b_16")


def check_torchvision_classifier(arch: str):
    """torchvision, once ``arch`` is one of its image classifiers; otherwise a ValueError that names
    the closest ones (or common ones when none is close)."""
    tv = import_torchvision()
    classifiers = tv.models.list_models(module=tv.models)
    if arch not in classifiers:
        kind = "is not an image classifier" if arch in tv.models.list_models() else "is not a torchvision model"
        close = difflib.get_close_matches(arch, classifiers) or [name for name in COMMON_CLASSIFIERS if name in classifiers]
        raise ValueError(
            f"{arch!r} {kind}; expected an image classifier such as {', '.join(close)} "
            f"(all {len(classifiers)}: torchvision.models.list_models(module=torchvision.models))."
        )
    return tv


def load_torchvision(
    arch: str,
    weights_path: str | None = None,
    *,
    weights_enum: str | None = None,
    num_classes: int | None = None,
    input_shape=(3, 224, 224),
    image_folder: str | None = None,
    max_bytes: int | None = None,
) -> ModelBundle:
    """A torchvision image classifier by name (``torchvision.models.list_models()``) with weights
    from ``weights_path`` (a state dict) or ``weights_enum`` (e.g. ``"IMAGENET1K_V1"``, read from
    the local torch hub cache)."""
    tv = check_torchvision_classifier(arch)
    if (weights_path is None) == (weights_enum is None):
        raise ValueError("Give exactly one of weights_path (a state dict file) and weights_enum (e.g. 'DEFAULT').")
    if weights_path is not None:
        file = _check_file(weights_path, max_bytes)
    else:
        file = _cached_weights(tv, arch, weights_enum, max_bytes)
    options = {} if num_classes is None else {"num_classes": num_classes}
    model = load_checked(tv.models.get_model(arch, weights=None, **options), _read_tensors(file, max_bytes))
    return classifier_bundle(
        model, name=f"torchvision:{arch}", source=str(file), input_shape=input_shape, image_folder=image_folder
    )


# --- Hugging Face ------------------------------------------------------------------------------


def _check_hf_dir(directory: Path, max_bytes: int | None) -> None:
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"'{directory}' has no config.json; it is not a Hugging Face model directory.")
    weights = list(directory.glob("*.safetensors"))
    if not weights:
        raise ValueError(
            f"'{directory}' has no .safetensors weights; only safetensors are loaded (convert "
            "pytorch_model.bin with model.save_pretrained(directory, safe_serialization=True))."
        )
    size = sum(f.stat().st_size for f in weights)
    max_bytes = _byte_limit(max_bytes)
    if size > max_bytes:
        raise ValueError(
            f"The weights in '{directory}' are {_size(size)}, over the limit of {_size(max_bytes)} "
            "(max_bytes); raise max_bytes if you trust them."
        )


MAX_CONFIG_LAYERS = 4096  # a bound on layer counts read from a config, before building anything


def _config_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import StrictDataclassError

    return (ValueError, KeyError, TypeError, ArithmeticError, RuntimeError, StrictDataclassError)


# What transformers raises on a config.json with bad values (a string size, zero heads, an unknown
# activation, a negative width), in reading it or building a model from it.
CONFIG_ERRORS = _config_errors()


def config_error(exc: BaseException) -> str:
    """One line on what was wrong with a config, the exception's type named unless a ValueError."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, (ValueError, OSError)) and text else f"{type(exc).__name__}: {text}".rstrip(": ")


def check_config_bounds(config) -> None:
    """Refuse a config whose layer count is not in ``[1, MAX_CONFIG_LAYERS]`` or whose position
    count is below 1, before anything is built."""
    for key in ("num_hidden_layers", "n_layer", "num_layers", "num_decoder_layers"):
        layers = getattr(config, key, None)
        if isinstance(layers, int) and not 1 <= layers <= MAX_CONFIG_LAYERS:
            raise ValueError(f"The config declares {key}={layers}; expected 1 to {MAX_CONFIG_LAYERS}.")
    for key in ("max_position_embeddings", "n_positions"):
        positions = getattr(config, key, None)
        if isinstance(positions, int) and positions < 1:
            raise ValueError(f"The config declares {key}={positions}; expected at least 1.")


def _check_declared_size(directory: Path, shards: dict, auto, config) -> None:
    """Refuse a config whose model is over the parameter limit or larger than its weight files, and
    weights or biases stored as other than floating-point values."""
    check_config_bounds(config)
    with torch.device("meta"):
        skeleton = auto.from_config(config)
    n_params = sum(p.numel() for p in skeleton.parameters())
    top = limit("DSF_MAX_MODEL_PARAMS")
    if n_params > top:
        raise ValueError(
            f"The config declares {n_params:,} parameters, over the limit of {top:,}; if you trust this "
            "model, raise it with the environment variable DSF_MAX_MODEL_PARAMS."
        )
    stored = 0
    for file in sorted(set(shards.values())):  # the files from_pretrained reads, checked whole
        with safe_open(directory / file, framework="pt") as handle:
            for key in handle.keys():
                part = handle.get_slice(key)
                stored += math.prod(part.get_shape())
                if key.endswith((".weight", ".bias")) and part.get_dtype() not in FLOAT_FILE_DTYPES:
                    raise ValueError(  # from_pretrained would cast it silently (complex parts dropped)
                        f"Tensor {key!r} in '{file}' is stored as {part.get_dtype()}; expected floating-point "
                        f"values ({', '.join(FLOAT_FILE_DTYPES)})."
                    )
    if n_params > 1.05 * stored + 4096:
        raise ValueError(
            f"The config declares a model of {n_params:,} parameters but the weight files hold only "
            f"{stored:,} values: the weights are missing or belong to another model."
        )


def why_not_loadable(config) -> str | None:
    """Why :func:`load_hf` cannot run a model of ``config`` (None if it can: it runs causal language
    models and encoders of token ids)."""
    from transformers import MODEL_MAPPING

    if getattr(config, "is_encoder_decoder", False):
        return f"{config.model_type!r} is an encoder-decoder model; causal language models and text encoders are supported"
    if type(config) not in MODEL_MAPPING or MODEL_MAPPING[type(config)].main_input_name != "input_ids":
        return f"{config.model_type!r} does not take token ids; causal language models and text encoders are supported"
    return None


def encoder_options(config, stored_names) -> dict:
    """Options for building an encoder's base model from a checkpoint: without its pooler when the
    checkpoint stores none (e.g. saved from ``BertForMaskedLM``) and the model can leave it out."""
    from transformers import MODEL_MAPPING

    takes_it = "add_pooling_layer" in inspect.signature(MODEL_MAPPING[type(config)].__init__).parameters
    stores_pooler = any(".pooler." in f".{name}" for name in stored_names)
    return {"add_pooling_layer": False} if takes_it and not stores_pooler else {}


def check_hf_weights(model: nn.Module, loading: dict, source: str, *, strict: bool = True, head_keys=frozenset()) -> None:
    """After ``from_pretrained(..., output_loading_info=True)``: every weight the model expects
    came from the files with its shape (and, when ``strict``, none is left over but ``head_keys``,
    a task head saved with the model); all are finite."""
    unexpected = [key for key in loading.get("unexpected_keys") or [] if key not in head_keys]
    problems = {
        "missing": loading.get("missing_keys") or [],
        "of the wrong shape": [entry[0] if isinstance(entry, tuple) else entry for entry in loading.get("mismatched_keys") or []],
        "unexpected": unexpected if strict else [],
    }
    found = [f"{what}: {_few(keys)}" for what, keys in problems.items() if keys]
    if found:
        hint = " (load_hf(strict=False) ignores unexpected ones)" if problems["unexpected"] else ""
        raise ValueError(f"The weights in '{source}' do not match the model's config; " + "; ".join(found) + hint + ".")
    bad = [name for name, t in model.named_parameters() if not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f"The weights in '{source}' contain NaN or Inf values (in {_few(bad)}); expected finite weights.")


def saved_head_keys(config) -> set[str]:
    """The tensor names of the architectures the config says the checkpoint was saved from (e.g.
    ``BertForPreTraining``: BERT's ``cls.*`` head), built on the meta device."""
    import transformers

    keys = set()
    for name in config.architectures or []:
        architecture = getattr(transformers, name, None) if isinstance(name, str) and name.isidentifier() else None
        if isinstance(architecture, type) and issubclass(architecture, transformers.PreTrainedModel):
            with torch.device("meta"):
                keys.update(architecture(config).state_dict())
    return keys


def _hub_error(model_id: str, exc: Exception) -> OSError:
    from huggingface_hub import constants

    reason = "offline mode is on (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "no network or no such model"
    return OSError(
        f"Could not fetch the Hugging Face model {model_id!r}: {reason}. Download it where there is "
        f"network (e.g. `hf download {model_id} --local-dir DIR`) and pass the local directory instead. "
        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    )


def _read_text_tokens(tokenizer_source: str, options: dict, text_file, seq_len: int) -> torch.Tensor:
    from transformers import AutoTokenizer

    _check_file(text_file, MAX_TEXT_BYTES)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, **options)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"text_file needs the model's tokenizer, and none loads from {tokenizer_source!r}: {exc}"
        ) from exc
    return text_tokens(tokenizer, text_file, EVAL_CHUNKS * seq_len)


def text_tokens(tokenizer, path, max_tokens: int) -> torch.Tensor:
    """The first ``max_tokens`` token ids of the UTF-8 text file ``path`` (at most ``MAX_TEXT_BYTES``).
    Only a prefix of the text goes through the tokenizer, cut at whitespace and doubled until it
    gives more tokens than needed: a tokenizer's memory grows fast on a long unbroken line, so
    the whole text is never tokenized for the few tokens a run takes."""
    file = _check_file(path, MAX_TEXT_BYTES)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"'{file}' is not UTF-8 text.") from exc
    length = 8 * max(max_tokens, 1)
    while True:
        cut = len(text) if length >= len(text) else _whitespace_before(text, length)
        ids = tokenizer(text[:cut], verbose=False)["input_ids"]
        if len(ids) > max_tokens or cut == len(text):  # beyond the cut's token: the first ones are final
            return torch.tensor(ids[:max_tokens], dtype=torch.long)
        length *= 2


def _whitespace_before(text: str, end: int) -> int:
    """The last whitespace position before ``end`` (``end`` itself for an unbroken stretch)."""
    position = max(text.rfind(" ", 0, end), text.rfind("\n", 0, end))
    return position if position > end // 2 else end


def load_hf(
    path_or_id: str,
    *,
    seq_len: int = 32,
    text_file: str | None = None,
    max_bytes: int | None = None,
    strict: bool = True,
) -> ModelBundle:
    """A Hugging Face model from a local directory (safetensors weights) or a hub id.

    Causal LMs (architectures ``*ForCausalLM`` / ``*LMHeadModel``) load with
    ``AutoModelForCausalLM``; anything else with ``AutoModel`` as an encoder. ``text_file`` adds
    perplexity for causal LMs (it needs the model's tokenizer). Before anything is allocated, the
    parameters the config implies are checked against the weight files present and the
    ``DSF_MAX_MODEL_PARAMS`` limit; after loading, every weight the model expects must have come
    from the files with its shape (and, when ``strict``, no file tensor may go unused), and all
    values must be finite.
    """
    prepare_transformers()
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    directory = Path(path_or_id).expanduser()
    local = directory.is_dir()
    if local:
        _check_hf_dir(directory, max_bytes)
    elif path_or_id.startswith(("/", ".", "~")) or path_or_id.count("/") > 1 or "\\" in path_or_id:
        raise FileNotFoundError(f"No such Hugging Face model directory: '{path_or_id}'.")
    source = str(directory) if local else path_or_id
    options = {"local_files_only": True} if local else {}
    try:
        config = AutoConfig.from_pretrained(source, **options)
        unloadable = why_not_loadable(config)
        if unloadable:
            raise ValueError(unloadable + ".")
        causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures or [])
        auto = AutoModelForCausalLM if causal else AutoModel
        if local:
            shards = hf_shard_map(directory)  # tensor name -> the shard from_pretrained reads it from
            _check_declared_size(directory, shards, auto, config)
            if not causal:
                options.update(encoder_options(config, shards))
        model, loading = auto.from_pretrained(source, use_safetensors=True, output_loading_info=True, **options)
    except (OSError, *CONFIG_ERRORS) as exc:
        if local:
            raise ValueError(f"'{source}' is not a loadable Hugging Face model directory: {config_error(exc)}") from exc
        raise _hub_error(path_or_id, exc) from exc
    check_hf_weights(model, loading, source, strict=strict, head_keys=set() if causal else saved_head_keys(config))
    model = model.float().eval()
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if positions is not None and seq_len > positions:
        raise ValueError(f"seq_len must be at most the model's {positions} positions. Got {seq_len} instead.")
    if not causal:
        if text_file is not None:
            raise ValueError("text_file (perplexity) applies to causal language models only.")
        return encoder_bundle(model, name=f"hf:{source}", source=source, vocab_size=config.vocab_size, seq_len=seq_len)
    tokens = None if text_file is None else _read_text_tokens(source, options, text_file, seq_len)
    return lm_bundle(
        model, name=f"hf:{source}", source=source, vocab_size=config.vocab_size, seq_len=seq_len, text_tokens=tokens
    )


# --- checkpoints -------------------------------------------------------------------------------


def _vocab_size(model: nn.Module) -> int:
    embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    if embedding is None:
        raise ValueError("Cannot tell the vocabulary size (the model has no nn.Embedding); pass vocab_size=.")
    return embedding.num_embeddings


def load_checkpoint(
    path: str,
    *,
    arch: nn.Module | None = None,
    max_bytes: int | None = None,
    task: str = "classifier",
    input_shape=(3, 224, 224),
    image_folder: str | None = None,
    vocab_size: int | None = None,
    seq_len: int = 32,
) -> ModelBundle:
    """A model from a PyTorch file: a state dict (or a checkpoint dict holding one under
    'state_dict' or 'model') loaded into ``arch``, which receives the weights; or a TorchScript file.

    ``task`` is ``"classifier"`` (inputs (B, *input_shape)) or ``"language-model"`` (token ids;
    ``vocab_size`` defaults to the first ``nn.Embedding``'s size).
    """
    if task not in ("classifier", "language-model"):
        raise ValueError(f"task must be 'classifier' or 'language-model'. Got {task!r} instead.")
    file = _check_file(path, max_bytes)
    if detect_format(file) == "torchscript":
        if arch is not None:
            raise ValueError(f"'{file}' is a TorchScript file, which holds its own architecture; drop arch=.")
        check_zip_size(file, _byte_limit(max_bytes))
        with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated; the format still loads
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                model = torch.jit.load(str(file), map_location="cpu").float().eval()
            except RuntimeError as exc:
                raise ValueError(f"'{file}' is not a loadable TorchScript file: {str(exc).splitlines()[0]}") from None
        bad = [n for n, p in model.named_parameters() if not p.is_floating_point()]
        if bad:
            raise ValueError(f"Parameters {bad[:5]} of '{file}' are not floating point.")
        bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise ValueError(f"Parameters {bad[:5]} of '{file}' contain NaN or Inf values; expected finite weights.")
    else:
        state = _read_tensors(file, max_bytes)
        if arch is None:
            raise ValueError(
                f"'{file}' holds a state_dict ({len(state)} tensors) without its architecture; pass "
                "arch=<an nn.Module of that architecture>, e.g. torchvision.models.resnet18(num_classes=10)."
            )
        if not isinstance(arch, nn.Module):
            raise TypeError(f"arch must be an nn.Module. Got {type(arch).__name__} instead.")
        model = load_checked(arch, state)
    if task == "language-model":
        vocab = vocab_size or _vocab_size(model)
        return lm_bundle(model, name=file.name, source=str(file), vocab_size=vocab, seq_len=seq_len)
    return classifier_bundle(
        model, name=file.name, source=str(file), input_shape=input_shape, image_folder=image_folder
    )


# --- one entry point ---------------------------------------------------------------------------

ACCEPTED_FORMS = (
    f"a built-in model name ({', '.join(BUILTIN_MODELS)}); "
    "a local Hugging Face model directory; "
    "a checkpoint file (state_dict .pt/.pth/.safetensors with arch=, or TorchScript); "
    "'torchvision:ARCH' (with weights_path= or weights_enum=); "
    "'hf:ID' (a Hugging Face hub id or directory)"
)


def load_model(spec: str, **kwargs) -> ModelBundle:
    """Load a model from one string (see ``ACCEPTED_FORMS``); ``kwargs`` go to the loader chosen."""
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str. Got {type(spec).__name__} instead.")
    if spec in BUILTIN_MODELS:
        if kwargs:
            raise TypeError(f"Built-in model {spec!r} takes no options. Got {sorted(kwargs)}.")
        return load_builtin(spec)
    prefix, colon, rest = spec.partition(":")
    if colon and prefix == "torchvision":
        return load_torchvision(rest, **kwargs)
    if colon and prefix == "hf":
        return load_hf(rest, **kwargs)
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_hf(str(path), **kwargs)
    if path.is_file():
        return load_checkpoint(str(path), **kwargs)
    raise ValueError(
        f"Cannot load {spec!r}: no such built-in model, file or directory. Accepted forms: {ACCEPTED_FORMS}."
    )
