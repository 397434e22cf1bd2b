"""The output directory of a streamed run: one safetensors file of factors per block and a JSON
manifest that is also the run's journal (rewritten after each block). Every file is written to a
temporary name in the directory and moved into place, so a crash leaves the last finished block."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .._modules import FactorizedLinear
from ..checkpoint import _encode_sparse, _rebuild_layer, check_factor_chain, check_factor_entry, unshared
from ..output_files import write_atomically

FORMAT = "dsf-explorer-streamed/1"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 50 << 20


def block_file(index: int) -> str:
    return f"block-{index:05d}.safetensors"


def read_manifest(directory) -> dict:
    """The manifest of a streamed run's output directory, checked to be ours."""
    file = Path(directory).expanduser() / MANIFEST
    if not file.is_file() or file.is_symlink():
        raise ValueError(f"'{directory}' holds no {MANIFEST} of a streamed run.")
    if file.stat().st_size > MAX_MANIFEST_BYTES:
        raise ValueError(f"'{file}' is over {MAX_MANIFEST_BYTES} bytes; not a manifest.")
    try:
        manifest = json.loads(file.read_text())
    except ValueError as exc:
        raise ValueError(f"'{file}' is not valid JSON ({exc}).") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"'{file}' is not the manifest of a streamed run (format {FORMAT!r}).")
    _check_manifest(manifest, file)
    return manifest


def _check_manifest(manifest: dict, file) -> None:
    """Every field a run reads, of the type it is written with; each layer entry's factors."""
    fields = {"command": dict, "model": dict, "blocks_done": int, "complete": bool, "layers": dict, "reports": list}
    for key, kind in fields.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
            raise ValueError(f"'{file}' is damaged: its {key!r} is {value!r:.80}, not a {kind.__name__}.")
    if not isinstance(manifest["model"].get("model_dir"), str):
        raise ValueError(f"'{file}' is damaged: it names no model directory.")
    for name, entry in manifest["layers"].items():
        where = f"'{file}', layer {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"file", "kind", "shapes", "sparse", "conv"}:
            raise ValueError(f"{where}: expected file, kind, shapes, sparse and conv.")
        if not isinstance(entry["file"], str) or entry["conv"] is not None:
            raise ValueError(f"{where}: expected a block file name and no convolution settings.")
        check_factor_entry(where, entry)
    report_keys = {"name", "shape", "n_params_dense", "n_params", "error", "weighted_error", "seconds"}
    if not all(isinstance(row, dict) and set(row) == report_keys for row in manifest["reports"]):
        raise ValueError(f"'{file}' is damaged: its reports are not per-layer records ({', '.join(sorted(report_keys))}).")


def is_streamed_output(path) -> bool:
    """Whether ``path`` is a directory holding a streamed run's manifest."""
    try:
        read_manifest(path)
    except ValueError:
        return False
    return True


class OutputStore:
    """The output directory of one run, identified by ``identity`` (the command and the model).

    A directory that exists must be empty or hold a previous run of the same identity (its files
    are then replaced one by one); ``resume`` needs such a run and starts after its last finished
    block. Only the ``writer`` process writes."""

    def __init__(self, directory, identity: dict, *, resume: bool, writer: bool):
        self.directory = Path(directory).expanduser()
        self.identity = json.loads(json.dumps(identity))  # as it reads back from JSON
        self.writer = writer
        previous = self._previous_run()
        if resume and previous is None:
            raise ValueError(f"--resume: '{self.directory}' holds no previous run to continue.")
        self.manifest = previous if resume else {"format": FORMAT, **self.identity, "blocks_done": 0, "layers": {}, "reports": []}
        self.manifest["complete"] = False

    @property
    def blocks_done(self) -> int:
        return int(self.manifest["blocks_done"])

    def _previous_run(self) -> dict | None:
        """The manifest of the same command's earlier run here; ValueError for anything else."""
        if not os.path.lexists(self.directory):
            return None
        if not self.directory.is_dir() or self.directory.is_symlink():
            raise ValueError(f"--out '{self.directory}' exists and is not a directory.")
        if not any(self.directory.iterdir()):
            return None
        try:
            manifest = read_manifest(self.directory)
        except ValueError:
            raise ValueError(
                f"--out '{self.directory}' is not empty and holds no previous run; give an empty or new directory."
            ) from None
        differing = sorted(key for key in self.identity if manifest.get(key) != self.identity[key])
        if differing:
            raise ValueError(
                f"--out '{self.directory}' holds a run of a different {' and '.join(differing)}; "
                "give another directory (nothing there was changed)."
            )
        return manifest

    def write_block(self, index: int, layers: dict, reports: list[dict]) -> None:
        """Store block ``index``'s factorized layers (``{name: FactorizedLinear}``) and reports,
        then record the block as done in the manifest."""
        tensors, entries = {}, {}
        for name, module in layers.items():
            for i, factor in enumerate(module.factors):
                key = f"{name}.factor_{i}"
                tensors.update(_encode_sparse(key, factor) if factor.layout == torch.sparse_csr else {key: factor})
            if module.bias is not None:
                tensors[f"{name}.bias"] = module.bias.detach()
            entries[name] = {
                "file": block_file(index),
                "kind": module.kind,
                "shapes": [list(f.shape) for f in module.factors],
                "sparse": [f.layout == torch.sparse_csr for f in module.factors],
                "conv": None,
            }
        if self.writer:
            self.directory.mkdir(parents=True, exist_ok=True)
            tensors = unshared({key: value.detach().cpu() for key, value in tensors.items()})
            self._replace(block_file(index), lambda path: save_file(tensors, path, metadata={"format": FORMAT}))
        self.manifest["layers"].update(entries)
        done = {r["name"] for r in reports}
        self.manifest["reports"] = [r for r in self.manifest["reports"] if r["name"] not in done] + reports
        self.manifest["blocks_done"] = index + 1
        self.write_manifest()

    def write_manifest(self, **extra) -> None:
        self.manifest.update(extra)
        if not self.writer:
            return
        text = json.dumps(self.manifest, indent=1)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._replace(MANIFEST, lambda path: Path(path).write_text(text))

    def _replace(self, name: str, write) -> None:
        write_atomically(self.directory / name, write, overwrite=True)  # the run's own file, or a new one


def read_layers(directory, manifest: dict, names, expected_shapes: dict) -> dict[str, FactorizedLinear]:
    """The named factorized layers of a streamed run, their shapes checked against the manifest and
    against ``expected_shapes`` (``{name: (out, in)}`` of the model's layers)."""
    by_file = {}
    for name in names:
        entry = manifest["layers"][name]
        by_file.setdefault(entry["file"], []).append(name)
    out = {}
    for file, file_names in by_file.items():
        if Path(file).name != file or not file.startswith("block-"):
            raise ValueError(f"The manifest names the file {file!r}; expected a block file of the run.")
        with safe_open(Path(directory) / file, framework="pt") as handle:
            stored = {key: handle.get_tensor(key) for key in handle.keys() if _layer_of(key) in file_names}
        for name in file_names:
            entry = manifest["layers"][name]
            check_factor_chain(name, entry, *expected_shapes[name])
            out[name] = _rebuild_layer(name, {**entry, "weight_shape": list(expected_shapes[name])}, stored)
    return out


def _layer_of(key: str) -> str:
    """The layer a stored tensor belongs to (``NAME.factor_I...`` or ``NAME.bias``)."""
    return key.split(".factor_")[0] if ".factor_" in key else key.removesuffix(".bias")
