"""A small CNN on scikit-learn's bundled 8x8 digits: the app's default model.

Data: ``sklearn.datasets.load_digits`` (1797 images, pixel values 0..16) scaled to [0, 1]. The
split is fixed: a permutation of the 1797 indices by ``numpy.random.RandomState(0)`` (whose stream
NumPy keeps stable across versions); its first 1347 indices are the training set and its last 450
(25%) the test set. The model upsamples its 8x8 input to 16x16 itself, so it takes the raw images.

Train and write the committed checkpoint with ``python -m dsf_core.models.digits_cnn --train``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._bundle import ModelBundle

WEIGHTS_PATH = os.path.join(os.path.dirname(__file__), "weights", "digits_cnn.safetensors")
SPLIT_SEED = 0
TEST_FRACTION = 0.25
CALIBRATION_BATCH = 128
TRAIN_BATCH = 64


@dataclass
class DigitsCNNConfig:
    """Shape of a :class:`DigitsCNN`: one 3x3 conv + ReLU + 2x2 max-pool per entry of ``channels``."""

    channels: tuple[int, ...] = (32, 64, 128)
    hidden: int = 128
    input_size: int = 16  # the 8x8 images are upsampled to this size
    n_classes: int = 10
    dropout: float = 0.25

    def __post_init__(self):
        self.channels = tuple(self.channels)
        if self.input_size % 2 ** len(self.channels):
            raise ValueError(
                f"input_size must be divisible by 2**len(channels) = {2 ** len(self.channels)}. "
                f"Got {self.input_size} instead."
            )


class DigitsCNN(nn.Module):
    """Conv blocks, then a hidden dense layer and a linear head (shape comments: B images)."""

    def __init__(self, config: DigitsCNNConfig):
        super().__init__()
        self.config = config
        widths = (1, *config.channels)
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip(widths, widths[1:]))
        side = config.input_size // 2 ** len(config.channels)
        self.fc = nn.Linear(config.channels[-1] * side * side, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # (B, 1, S, S)
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)  # (B, C_k, S / 2^k, S / 2^k)
        x = F.relu(self.fc(x.flatten(1)))  # (B, hidden)
        return self.head(self.dropout(x))  # (B, n_classes)


@functools.lru_cache(maxsize=1)
def load_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixed split ``(x_train, y_train, x_test, y_test)``; images are (N, 1, 8, 8) in [0, 1].

    Cached: the same tensors are returned on every call, so do not modify them in place.
    """
    images, labels = _read_digits()
    order = np.random.RandomState(SPLIT_SEED).permutation(len(labels))
    n_train = int((1 - TEST_FRACTION) * len(order))  # 1347 train, 450 test
    x = torch.tensor(images[order] / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(labels[order], dtype=torch.long)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as ``(images (1797, 8, 8), labels)``: read straight from its
    data file (``load_digits`` reads the same file, but importing ``sklearn.datasets`` costs half
    a second of every app start); through ``load_digits`` if that file is not where it was."""
    package = importlib.util.find_spec("sklearn")
    folder = Path(package.submodule_search_locations[0]) if package else Path()
    file = folder / "datasets" / "data" / "digits.csv.gz"
    if package is None or not file.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    table = np.loadtxt(file, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def train(
    config: DigitsCNNConfig, *, epochs: int = 30, seed: int = 0, threads: int = 1, lr: float = 2e-3
) -> DigitsCNN:
    """Train a :class:`DigitsCNN` on the training split (AdamW, one-cycle learning rate).

    Deterministic for a given ``seed`` and ``threads``; returns the model in eval mode.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = DigitsCNN(config)
        x, y, _, _ = load_split()
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        steps_per_epoch = -(-len(y) // TRAIN_BATCH)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch)
        generator = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(y), generator=generator).split(TRAIN_BATCH):
                loss = F.cross_entropy(model(x[batch]), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
    finally:
        torch.set_num_threads(previous_threads)
    return model.eval()


def evaluate(model: nn.Module) -> dict:
    """Accuracy (percent) and mean cross-entropy of ``model`` on the fixed test split."""
    _, _, x, y = load_split()
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(x)
    model.train(was_training)
    accuracy = 100.0 * (logits.argmax(1) == y).float().mean().item()
    return {"accuracy": accuracy, "loss": F.cross_entropy(logits, y).item()}


def calibration_inputs(n: int) -> list[torch.Tensor]:
    """The first ``n`` training images as batches of up to 128, each (B, 1, 8, 8)."""
    x_train = load_split()[0]
    if not isinstance(n, int) or not 1 <= n <= len(x_train):
        raise ValueError(f"The 'n' parameter must be an int in the range [1, {len(x_train)}]. Got {n!r} instead.")
    return list(x_train[:n].split(CALIBRATION_BATCH))


def forward(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` for one batch of images."""
    return model(batch)


def save_checkpoint(model: DigitsCNN, path: str, **info) -> None:
    """Write the weights as safetensors, with the config and ``info`` as JSON metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {"config": json.dumps(asdict(model.config)), "info": json.dumps(info)}
    save_file(state, path, metadata=metadata)


def load_checkpoint(path: str = WEIGHTS_PATH) -> tuple[DigitsCNN, dict]:
    """The model (eval mode, float32) and the ``info`` saved with it."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    from .loaders import load_checked

    model = load_checked(DigitsCNN(DigitsCNNConfig(**json.loads(metadata["config"]))), load_file(path))
    return model, json.loads(metadata.get("info", "{}"))


def load_bundle() -> ModelBundle:
    """The committed digits CNN with its calibration data and test-set metric."""
    model, info = load_checkpoint(WEIGHTS_PATH)
    load_split()  # read the data now, so that the first evaluate() is as fast as the others
    return ModelBundle(
        name="digits-cnn",
        model=model,
        task="classifier",
        metric_name="accuracy",
        higher_is_better=True,
        calibration_inputs=calibration_inputs,
        forward=forward,
        evaluate=evaluate,
        description=(
            "CNN (3 conv layers, a hidden dense layer) on scikit-learn's 8x8 digits upsampled to 16x16; "
            "accuracy in percent on a fixed 450-image test split."
        ),
        source=WEIGHTS_PATH,
        extras=info,
    )


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--train`` trains the default config and writes the checkpoint."""
    parser = argparse.ArgumentParser(prog="python -m dsf_core.models.digits_cnn", description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="train and write the checkpoint")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=WEIGHTS_PATH)
    args = parser.parse_args(argv)
    if not args.train:
        parser.error("nothing to do: pass --train")
    start = time.perf_counter()
    model = train(DigitsCNNConfig(), epochs=args.epochs, seed=args.seed, threads=args.threads)
    seconds = time.perf_counter() - start
    metrics = evaluate(model)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    accuracy = round(metrics["accuracy"], 2)
    save_checkpoint(model, args.out, epochs=args.epochs, seed=args.seed, threads=args.threads, test_accuracy=accuracy)
    print(
        f"trained in {seconds:.1f} s on {args.threads} thread(s): test accuracy {metrics['accuracy']:.2f}%, "
        f"loss {metrics['loss']:.4f}; wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)"
    )


if __name__ == "__main__":
    main()
