"""Compressed checkpoints that are really smaller, in a safetensors file (no pickle) with a JSON
manifest: each sparse factor's nonzero values plus either CSR int32 indices or a bitmap of its
support, whichever takes fewer bytes; low-rank and TT cores as they are."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ._modules import FactorizedConv2d, FactorizedLinear, _to_csr
from .layers import set_module

FORMAT = "dsf-explorer-compressed/1"
MAX_BYTES = 4 << 30  # refuse larger files before reading them


def save_compressed(path, result, model_spec: str) -> int:
    """Write ``result`` (a ``CompressionResult``) to ``path``; return the file's size in bytes.

    ``model_spec`` names the base model (a built-in name or a loader spec) so that
    :func:`load_compressed` can rebuild the architecture.
    """
    tensors, layers = {}, {}
    for name, factorization in result.factorizations.items():
        module = result.model.get_submodule(name)
        linear = module.linear if isinstance(module, FactorizedConv2d) else module
        for i, factor in enumerate(linear.factors):
            key = f"{name}.factor_{i}"
            if factor.layout == torch.sparse_csr:
                tensors.update(_encode_sparse(key, factor))
            else:
                tensors[key] = factor
        if linear.bias is not None:
            tensors[f"{name}.bias"] = linear.bias.detach()
        layers[name] = {
            "kind": linear.kind,
            "shapes": [list(f.shape) for f in linear.factors],
            "sparse": [f.layout == torch.sparse_csr for f in linear.factors],
            "weight_shape": list(factorization.weight_shape),
            "conv": _conv_geometry(module),
        }
    prefixes = tuple(name + "." for name in layers)
    for key, value in result.model.state_dict().items():
        if not key.startswith(prefixes):
            tensors["state." + key] = value
    metadata = {
        "format": FORMAT,
        "model": model_spec,
        "method": result.method,
        "density": repr(result.density),
        "options": json.dumps(result.options),
        "settings": json.dumps(result.settings),
        "layers": json.dumps(layers),
    }
    save_file(unshared(tensors), os.fspath(path), metadata=metadata)
    return os.path.getsize(path)


def read_manifest(path) -> dict:
    """The checkpoint's metadata, checked to be ours (without loading any tensor)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such compressed checkpoint: {path}")
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        raise ValueError(f"{path} is {size} bytes, over the {MAX_BYTES}-byte limit for checkpoints.")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for non-safetensors files
        raise ValueError(f"{path} is not a safetensors file ({exc}).") from exc
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a DSF Explorer compressed checkpoint (format {metadata.get('format')!r}).")
    decoded = {key: json.loads(metadata[key]) for key in ("layers", "options", "settings") if key in metadata}
    return {**metadata, **decoded}


def load_compressed(path, base_model: nn.Module) -> nn.Module:
    """Rebuild the compressed model: a copy of ``base_model`` (the architecture the checkpoint was
    made from) with the factorized layers and the stored state. Shapes are checked throughout."""
    manifest = read_manifest(path)
    model = copy.deepcopy(base_model).eval()
    with safe_open(os.fspath(path), framework="pt") as handle:
        stored = {key: handle.get_tensor(key) for key in handle.keys()}
    for name, layer in manifest["layers"].items():
        set_module(model, name, _rebuild_layer(name, layer, stored))
    state = {key[len("state."):]: value for key, value in stored.items() if key.startswith("state.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    rebuilt = tuple(name + "." for name in manifest["layers"])
    missing = [key for key in missing if not key.startswith(rebuilt)]
    if missing or unexpected:
        raise ValueError(f"Checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    return model


def _rebuild_layer(name: str, layer: dict, stored: dict) -> nn.Module:
    factors = []
    for i, (shape, is_sparse) in enumerate(zip(layer["shapes"], layer["sparse"])):
        key = f"{name}.factor_{i}"
        if is_sparse:
            factor = _decode_sparse(key, tuple(shape), stored)
        else:
            factor = stored[key]
            if list(factor.shape) != shape:
                raise ValueError(f"{key} has shape {list(factor.shape)}, the manifest says {shape}.")
        factors.append(factor)
    linear = FactorizedLinear(factors, layer["sparse"], layer["kind"], stored.get(f"{name}.bias"))
    if layer["conv"] is None:
        return linear
    return FactorizedConv2d(linear, layer["weight_shape"][2:], **layer["conv"])


def _encode_sparse(key: str, factor: torch.Tensor) -> dict:
    """Values (row-major order) and the cheaper of CSR int32 indices and a packed support bitmap."""
    rows, cols = factor.shape
    nnz = factor.values().numel()
    out = {key + ".values": factor.values()}
    if nnz * 4 + (rows + 1) * 4 <= (rows * cols + 7) // 8:
        out[key + ".crow_indices"] = factor.crow_indices().to(torch.int32)
        out[key + ".col_indices"] = factor.col_indices().to(torch.int32)
    else:
        support = (factor.to_dense() != 0).reshape(-1).numpy()
        out[key + ".bitmap"] = torch.from_numpy(np.packbits(support))
    return out


def _decode_sparse(key: str, shape: tuple, stored: dict) -> torch.Tensor:
    """The CSR factor back from either encoding, with its indices validated."""
    values = stored[key + ".values"]
    if key + ".bitmap" in stored:
        bits = np.unpackbits(stored[key + ".bitmap"].numpy(), count=shape[0] * shape[1])
        support = torch.from_numpy(bits.astype(bool)).reshape(shape)
        if int(support.sum()) != values.numel():
            raise ValueError(f"{key}: the bitmap marks {int(support.sum())} entries for {values.numel()} values.")
        dense = torch.zeros(shape, dtype=values.dtype)
        dense[support] = values
        return _to_csr(dense)
    return torch.sparse_csr_tensor(
        stored[key + ".crow_indices"].long(), stored[key + ".col_indices"].long(), values,
        size=shape, check_invariants=True,
    )


def _conv_geometry(module: nn.Module) -> dict | None:
    if not isinstance(module, FactorizedConv2d):
        return None
    return {"stride": module.stride, "padding": module.padding, "dilation": module.dilation}


def unshared(tensors: dict) -> dict:
    """Contiguous tensors that share no memory (safetensors refuses shared storage)."""
    seen, out = set(), {}
    for key, value in tensors.items():
        value = value.detach().contiguous()
        if value.data_ptr() in seen:
            value = value.clone()
        seen.add(value.data_ptr())
        out[key] = value
    return out
