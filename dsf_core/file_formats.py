"""Tell a weights file's format from its content (never from its name), bound what it unpacks to,
and map a Hugging Face checkpoint's tensors to its safetensors shards."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open

from .limits import human_bytes

SAFETENSORS_MAX_HEADER = 100 << 20  # the safetensors library's own limit on the JSON header
INDEX = "model.safetensors.index.json"  # a sharded Hugging Face checkpoint's list of shards
MAX_INDEX_BYTES = 50 << 20
# the floating-point weights the project reads, as torch and safetensors name them (no float8: no isfinite)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
FLOAT_FILE_DTYPES = ("F16", "BF16", "F32", "F64")


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


def hf_shard_map(directory: Path) -> dict[str, str]:
    """Tensor name -> shard file name, from the index (every listed shard must exist and hold the
    names the index gives it) or from the single ``model.safetensors``."""
    index = directory / INDEX
    if index.is_file():
        if index.stat().st_size > MAX_INDEX_BYTES:
            raise ValueError(f"'{index}' is over {MAX_INDEX_BYTES} bytes; not a shard index.")
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"'{index}' is not a shard index (a JSON object with a 'weight_map').") from exc
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(f"'{index}' has a malformed 'weight_map'; expected tensor names mapped to file names.")
    elif (directory / "model.safetensors").is_file():
        weight_map = None
    else:
        raise ValueError(f"'{directory}' has no model.safetensors and no {INDEX}; only safetensors weights are read.")
    files = sorted(set(weight_map.values())) if weight_map is not None else ["model.safetensors"]
    found = {}
    for name in files:
        if Path(name).name != name:
            raise ValueError(f"The shard index names {name!r}; shards must be plain file names in the model directory.")
        file = directory / name
        if not file.is_file():
            raise ValueError(f"Shard '{name}' listed in {INDEX} is missing from '{directory}'.")
        try:
            with safe_open(file, framework="pt") as handle:
                found.update(dict.fromkeys(handle.keys(), name))
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise ValueError(f"Shard '{file}' is not a readable safetensors file ({exc}).") from exc
    if weight_map is not None:
        wrong = [key for key, name in weight_map.items() if found.get(key) != name]
        if wrong:
            raise ValueError(
                f"Shard index and shards disagree: {wrong[0]!r} is listed in {weight_map[wrong[0]]!r} but "
                f"{'is in ' + repr(found[wrong[0]]) if wrong[0] in found else 'is in no shard'}."
            )
    return found
