"""Read a streamed run back: the ``transformers`` model with factorized modules in place of the
compressed layers (:func:`load_compressed`, no dense weight of those layers is ever formed), or an
ordinary model directory with the products multiplied out (:func:`export_dense`), written one
shard at a time."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .._result import Factorization
from ..layers import list_layers, set_module
from ..output_files import write_atomically
from .inputs import DTYPES, check_run_device
from .source import ModelSource
from .store import read_layers, read_manifest

EXPORT_MARKER = "dsf-export.json"
COPIED_SUFFIXES = (".json", ".txt", ".model", ".tiktoken")  # config, tokenizer, generation settings


def open_run(out_dir, model_dir=None) -> tuple[dict, ModelSource]:
    """The finished run's manifest and its model (``model_dir`` if the model has moved), checked
    to be the very weights the run compressed."""
    manifest = read_manifest(out_dir)
    if not manifest.get("complete"):
        raise ValueError(f"The run in '{out_dir}' did not finish; finish it with the same command and --resume.")
    source = ModelSource(model_dir or manifest["model"]["model_dir"])
    mine, theirs = source.fingerprint(), manifest["model"]
    if (mine["config_sha256"], mine["shards"]) != (theirs["config_sha256"], theirs["shards"]):
        raise ValueError(f"The model in '{source.directory}' is not the one the run in '{out_dir}' compressed.")
    return manifest, source


def _layer_shapes(model: nn.Module, names) -> dict:
    shapes = {layer.name: layer.shape for layer in list_layers(model)}
    unknown = [name for name in names if name not in shapes]
    if unknown:
        raise ValueError(f"The run names layers the model does not have: {unknown[:3]}.")
    return {name: shapes[name] for name in names}


def load_compressed(out_dir, *, model_dir=None, device="cpu", dtype: str = "float32") -> nn.Module:
    """The compressed model of a streamed run in ``out_dir``, on ``device``, in eval mode: the
    factorized layers from the run, every other weight from the model's own shards."""
    manifest, source = open_run(out_dir, model_dir)
    device = check_run_device(device)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}. Got {dtype!r} instead.")
    names = list(manifest["layers"])
    model = source.model
    for name, module in read_layers(out_dir, manifest, names, _layer_shapes(model, names)).items():
        set_module(model, name, module.to(device))
    return source.materialize(model, "", device=device, dtype=DTYPES[dtype], skip=names).eval()


def export_dense(out_dir, export_dir, *, model_dir=None) -> Path:
    """Write the compressed model of ``out_dir`` as an ordinary Hugging Face directory (the model's
    config, tokenizer and shard layout; each factorized weight replaced by its product, in the
    weight's own dtype and layout) that ``AutoModel*.from_pretrained`` loads."""
    manifest, source = open_run(out_dir, model_dir)
    identity = {"command": manifest["command"], "model": manifest["model"]}
    export = check_export_target(export_dir, identity, out_dir)
    export.mkdir(parents=True, exist_ok=True)
    marker = json.dumps({"from": str(Path(out_dir).resolve()), **identity})
    write_atomically(export / EXPORT_MARKER, lambda path: Path(path).write_text(marker), overwrite=True)  # first: claims the directory
    names = list(manifest["layers"])
    shapes = _layer_shapes(source.model, names)
    by_key = {source.file_key(name + ".weight"): name for name in names}
    for shard in sorted(set(source.shards.values())):
        with safe_open(source.directory / shard, framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        mine = [by_key[key] for key in tensors if key in by_key]
        for name, module in read_layers(out_dir, manifest, mine, {n: shapes[n] for n in mine}).items():
            key = source.file_key(name + ".weight")
            product = _product(module, shapes[name])
            transposed = type(source.model.get_submodule(name)).__name__ == "Conv1D"  # stores (in, out)
            tensors[key] = (product.T if transposed else product).to(tensors[key].dtype).contiguous()
        write_atomically(export / shard, lambda path: save_file(tensors, path, metadata={"format": "pt"}), overwrite=True)
    for file in sorted(source.directory.iterdir()):
        if file.suffix in COPIED_SUFFIXES and file.is_file() and not file.is_symlink():
            write_atomically(export / file.name, lambda path: shutil.copyfile(file, path), overwrite=True)
    return export


def _product(module, shape) -> torch.Tensor:
    """The dense ``(out, in)`` matrix a factorized module computes with."""
    factors = [f.to_dense() if f.layout == torch.sparse_csr else f for f in module.factors]
    return Factorization("", {}, factors, [False] * len(factors), module.kind, tuple(shape)).to_matrix()


def check_export_target(export_dir, identity: dict, out_dir=None) -> Path:
    """The export directory, if it may be written: not the run's directory ``out_dir``, and new,
    empty, or an earlier (possibly interrupted) export of the same run (``identity``: its command and
    model fingerprint), never anything else, e.g. another model's export."""
    export = Path(export_dir).expanduser()
    if out_dir is not None and export.resolve() == Path(out_dir).expanduser().resolve():
        raise ValueError(f"--export-dense '{export}' is the --out directory; name another one.")
    if os.path.lexists(export):
        if not export.is_dir() or export.is_symlink():
            raise ValueError(f"--export-dense '{export}' exists and is not a directory.")
        if any(export.iterdir()) and _marked_identity(export / EXPORT_MARKER) != identity:
            raise ValueError(f"--export-dense '{export}' is not empty and holds no export of this run of this model.")
    return export


def _marked_identity(marker: Path):
    """The run and model an earlier export recorded in its marker file (None if there is none)."""
    if not marker.is_file() or marker.is_symlink() or marker.stat().st_size > 1 << 20:
        return None
    try:
        recorded = json.loads(marker.read_text())
        return {"command": recorded["command"], "model": recorded["model"]}
    except (ValueError, KeyError, TypeError):
        return None
