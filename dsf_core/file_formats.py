"""Tell a weights file's format from its content (never from its name) and bound what it unpacks to."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from .limits import human_bytes

SAFETENSORS_MAX_HEADER = 100 << 20  # the safetensors library's own limit on the JSON header


def detect_format(path) -> str | None:
    """``"safetensors"``, ``"torchscript"``, ``"torch-zip"`` (``torch.save``), ``"torch-legacy"``
    (the pre-1.6 ``torch.save`` pickle stream) or ``None`` for anything else."""
    file = Path(path)
    with open(file, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":
        (header_size,) = struct.unpack("<Q", head[:8])
        if header_size <= min(SAFETENSORS_MAX_HEADER, file.stat().st_size - 8):
            return "safetensors"
    if zipfile.is_zipfile(file):
        return "torchscript" if _is_torchscript(file) else "torch-zip"
    if head[:1] == b"\x80":  # a pickle protocol marker
        return "torch-legacy"
    return None


def _is_torchscript(file: Path) -> bool:
    """A TorchScript archive holds its model's code (``ROOT/code/...``) beside ``ROOT/constants.pkl``;
    a ``torch.save`` archive holds neither."""
    with zipfile.ZipFile(file) as archive:
        names = archive.namelist()
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1:
        return False
    root = roots.pop()
    return f"{root}/constants.pkl" in names and any(name.startswith(f"{root}/code/") for name in names)


def check_zip_size(path, max_bytes: int) -> None:
    """Refuse a zip archive whose members unpack to more than ``max_bytes`` (a compressed bomb)."""
    with zipfile.ZipFile(path) as archive:
        total = sum(info.file_size for info in archive.infolist())
    if total > max_bytes:
        raise ValueError(
            f"'{path}' unpacks to {human_bytes(total)}, over the limit of {human_bytes(max_bytes)}; "
            "raise max_bytes (or DSF_MAX_FILE_BYTES) if you trust this file."
        )


def safetensors_header(path) -> dict:
    """The JSON header of a safetensors file (tensor names to dtype, shape and offsets)."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > SAFETENSORS_MAX_HEADER:
            raise ValueError(f"'{path}' declares a {size}-byte header; not a safetensors file.")
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"'{path}' has no readable safetensors header ({exc}).") from None
    if not isinstance(header, dict):
        raise ValueError(f"'{path}' has no readable safetensors header.")
    header.pop("__metadata__", None)
    return header
