"""Real photographs that installed packages ship (nothing is downloaded), and crops of them.

scikit-learn carries two (``load_sample_images``), matplotlib one (its sample data) and
scikit-image a dozen (``skimage.data``, the files inside its wheel). They are read straight from
the packages' folders with PIL, without importing the packages. Crops are deterministic: a
``numpy.random.RandomState`` (whose stream NumPy keeps stable across versions) picks each one.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

# name -> (package, file inside the package)
PHOTOS = {
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "astronaut": ("skimage", "data/astronaut.png"),
    "camera": ("skimage", "data/camera.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "motorcycle_left": ("skimage", "data/motorcycle_left.png"),
    "motorcycle_right": ("skimage", "data/motorcycle_right.png"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "retina": ("skimage", "data/retina.jpg"),
    "coins": ("skimage", "data/coins.png"),
    "brick": ("skimage", "data/brick.png"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "color": ("skimage", "data/color.png"),
    "ihc": ("skimage", "data/ihc.png"),
}
PACKAGES = {"sklearn": "scikit-learn", "matplotlib": "matplotlib", "skimage": "scikit-image"}
CROP_SCALE = (0.25, 1.0)  # share of the photograph's area a random crop covers
CROP_RATIO = (3 / 4, 4 / 3)  # width / height of a random crop


def photo_path(name: str) -> Path:
    """The file of photograph ``name`` inside the package that ships it."""
    if name not in PHOTOS:
        raise ValueError(f"Unknown photograph {name!r}; expected one of {list(PHOTOS)}.")
    package, inner = PHOTOS[name]
    spec = importlib.util.find_spec(package)
    file = Path(spec.submodule_search_locations[0]) / inner if spec else None
    if file is None or not file.is_file():
        raise FileNotFoundError(
            f"The photograph {name!r} comes with the package {PACKAGES[package]!r} "
            f"(pip install {PACKAGES[package]}); not found at {file or package}."
        )
    return file


@functools.lru_cache(maxsize=len(PHOTOS))
def read_photo(name: str) -> Image.Image:
    """Photograph ``name`` as an RGB image (grey ones repeated on three channels). Cached: do not
    modify it."""
    with Image.open(photo_path(name)) as image:
        return image.convert("RGB")


def center_box(size: tuple[int, int], fraction: float) -> tuple[int, int, int, int]:
    """The centred square covering ``fraction`` of the shorter side of an image of ``size`` (w, h)."""
    width, height = size
    side = max(1, round(min(width, height) * fraction))
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def random_box(size: tuple[int, int], rng: np.random.RandomState) -> tuple[int, int, int, int]:
    """A random crop covering ``CROP_SCALE`` of the area with a width/height in ``CROP_RATIO``
    (the largest centred square if ten draws do not fit)."""
    width, height = size
    for _ in range(10):
        area = width * height * rng.uniform(*CROP_SCALE)
        ratio = np.exp(rng.uniform(*np.log(CROP_RATIO)))
        w, h = round(np.sqrt(area * ratio)), round(np.sqrt(area / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w + 1), rng.randint(0, height - h + 1)
            return left, top, left + w, top + h
    return center_box(size, 1.0)


def crop(image: Image.Image, box, side: int, flip: bool = False) -> np.ndarray:
    """The ``box`` of ``image`` resized (bicubic) to ``side x side``: a (side, side, 3) uint8 array,
    mirrored left to right when ``flip``."""
    pixels = image.resize((side, side), Image.BICUBIC, box=box)
    if flip:
        pixels = pixels.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(pixels)


def random_crops(names: list[str], n: int, side: int, seed: int) -> np.ndarray:
    """``n`` random crops (with random left-right flips) taken in turn from the photographs
    ``names``: (n, side, side, 3) uint8. The first ``k`` of them do not depend on ``n``."""
    rng = np.random.RandomState(seed)
    crops = []
    for i in range(n):
        image = read_photo(names[i % len(names)])
        box = random_box(image.size, rng)
        crops.append(crop(image, box, side, flip=rng.rand() < 0.5))
    return np.stack(crops)
