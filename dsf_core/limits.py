"""The size limits enforced before anything is allocated from what a file or an argument declares.

Each limit has a default and an environment variable that raises (or lowers) it for a process:

| limit | default | variable |
|---|---|---|
| bytes of one model or checkpoint file, after decompression | 4 GiB | ``DSF_MAX_FILE_BYTES`` |
| bytes of one tensor a file declares | 2 GiB | ``DSF_MAX_TENSOR_BYTES`` |
| parameters of a model a config declares | 2 G | ``DSF_MAX_MODEL_PARAMS`` |
| working memory of one factorization (estimated) | 3/4 of physical memory | ``DSF_MAX_WORK_BYTES`` |
| calibration samples of one run | 16384 | ``DSF_MAX_CALIBRATION`` |

Values are plain integers (bytes or counts); a malformed variable is an error, not a silent default.
"""

from __future__ import annotations

import math
import os

_DEFAULTS = {
    "DSF_MAX_FILE_BYTES": 4 << 30,
    "DSF_MAX_TENSOR_BYTES": 2 << 30,
    "DSF_MAX_MODEL_PARAMS": 2_000_000_000,
    "DSF_MAX_CALIBRATION": 16384,
}


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a small machine
        return 8 << 30


def limit(name: str) -> int:
    """The limit called ``name`` (one of the variables above), read from the environment each call."""
    default = _physical_memory() * 3 // 4 if name == "DSF_MAX_WORK_BYTES" else _DEFAULTS[name]
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"The environment variable {name} must be a positive integer. Got {text!r} instead.") from None
    if value < 1:
        raise ValueError(f"The environment variable {name} must be a positive integer. Got {text!r} instead.")
    return value


def human_bytes(n_bytes: float) -> str:
    """``n_bytes`` for people: bytes, KiB, MiB or GiB."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{int(n_bytes)} bytes"


def check_bytes(n_bytes: int, name: str, what: str) -> None:
    """Raise ``ValueError`` when ``n_bytes`` (what ``what`` would take) is over the limit ``name``."""
    top = limit(name)
    if n_bytes > top:
        raise ValueError(
            f"{what} would take {human_bytes(n_bytes)}, over the limit of {human_bytes(top)}; "
            f"if you trust this input, raise it with the environment variable {name}."
        )


def check_tensor(shape, item_size: int, what: str) -> int:
    """The element count of a declared tensor ``shape`` after checking it: non-negative ints, and
    no more than ``DSF_MAX_TENSOR_BYTES`` at ``item_size`` bytes per element."""
    if not isinstance(shape, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ValueError(f"{what} declares the shape {shape!r}; expected a list of non-negative ints.")
    count = math.prod(shape)
    check_bytes(count * item_size, "DSF_MAX_TENSOR_BYTES", f"{what} of shape {list(shape)}")
    return count
