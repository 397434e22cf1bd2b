"""Compressed checkpoints that are really smaller, in a safetensors file (no pickle) with a JSON
manifest: each sparse factor's nonzero values plus either CSR int32 indices or a bitmap of its
support, whichever takes fewer bytes; low-rank and TT cores as they are."""

from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ._modules import FactorizedConv2d, FactorizedLinear, _to_csr
from .file_formats import FLOAT_DTYPES, detect_format
from .layers import is_factorizable, set_module, weight_matrix
from .limits import check_bytes, check_tensor
from .output_files import write_atomically

FORMAT = "dsf-explorer-compressed/1"
KINDS = ("product", "tt")
MAX_FACTORS = 64  # PALM4MSA's most


def save_compressed(path, result, model_spec: str | None, *, overwrite: bool = False) -> int:
    """Write ``result`` (a ``CompressionResult``) to ``path``; return the file's size in bytes.

    ``model_spec`` names the base model (a built-in name, or ``None`` when the model is the user's
    to give again at load time) so that :func:`load_compressed` can rebuild the architecture. The
    file is written atomically; an existing file is replaced only with ``overwrite`` (and anything
    but a regular file never).
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
        "model": model_spec or "",
        "method": result.method,
        "density": repr(result.density),
        "options": json.dumps(result.options),
        "settings": json.dumps(result.settings),
        "layers": json.dumps(layers),
    }
    tensors = unshared(tensors)
    return write_atomically(path, lambda temporary: save_file(tensors, temporary, metadata=metadata), overwrite=overwrite)


def read_manifest(path) -> dict:
    """The checkpoint's metadata, checked to be ours and well formed (without loading any tensor)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such compressed checkpoint: {path}")
    check_bytes(os.path.getsize(path), "DSF_MAX_FILE_BYTES", f"The checkpoint '{path}'")
    if detect_format(path) != "safetensors":
        raise ValueError(f"'{path}' is not a safetensors file, so not a DSF Explorer compressed checkpoint.")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise ValueError(f"'{path}' is not a readable safetensors file ({exc}).") from exc
    if metadata.get("format") != FORMAT:
        raise ValueError(f"'{path}' is not a DSF Explorer compressed checkpoint (format {metadata.get('format')!r}).")
    try:
        decoded = {key: json.loads(metadata[key]) for key in ("layers", "options", "settings") if key in metadata}
    except json.JSONDecodeError as exc:
        raise ValueError(f"'{path}': the manifest is not valid JSON ({exc}).") from None
    if not isinstance(decoded.get("layers"), dict):
        raise ValueError(f"'{path}': the manifest's 'layers' must be a JSON object of layer entries.")
    for name, layer in decoded["layers"].items():
        _check_layer_entry(name, layer)
    return {**metadata, **decoded}


def _check_layer_entry(name: str, layer) -> None:
    """A manifest layer entry: known kind, consistent lists, non-negative int shapes within limits."""
    where = f"Manifest entry {name!r}"
    if not isinstance(layer, dict) or not {"kind", "shapes", "sparse", "weight_shape", "conv"} <= layer.keys():
        raise ValueError(f"{where} must hold kind, shapes, sparse, weight_shape and conv.")
    check_factor_entry(where, layer)
    check_tensor(layer["weight_shape"], 4, f"{where}, weight,")
    if len(layer["weight_shape"]) not in (2, 4):
        raise ValueError(f"{where}: weight_shape must be 2-D or 4-D. Got {layer['weight_shape']} instead.")
    conv = layer["conv"]
    if conv is not None and (not isinstance(conv, dict) or set(conv) != {"stride", "padding", "dilation"}):
        raise ValueError(f"{where}: 'conv' must be null or hold stride, padding and dilation.")


def check_factor_entry(where: str, layer: dict) -> None:
    """A layer entry's factors: known kind, one sparse flag per factor, non-negative int shapes within limits."""
    if layer["kind"] not in KINDS:
        raise ValueError(f"{where} has kind {layer['kind']!r}; expected one of {list(KINDS)}.")
    shapes, sparse = layer["shapes"], layer["sparse"]
    if not isinstance(shapes, list) or not isinstance(sparse, list) or len(shapes) != len(sparse) or not shapes:
        raise ValueError(f"{where}: 'shapes' and 'sparse' must be lists of one entry per factor.")
    if not all(isinstance(flag, bool) for flag in sparse):
        raise ValueError(f"{where}: 'sparse' must hold true/false values.")
    for i, shape in enumerate(shapes):
        check_tensor(shape, 4, f"{where}, factor {i},")
        if sparse[i] and len(shape) != 2:
            raise ValueError(f"{where}: sparse factor {i} must be 2-D. Got shape {shape} instead.")


def load_compressed(path, base_model: nn.Module) -> nn.Module:
    """Rebuild the compressed model: a copy of ``base_model`` (the architecture the checkpoint was
    made from) with the factorized layers and the stored state.

    Everything is checked before it is used: each layer exists in ``base_model`` with the stored
    weight shape, factor shapes chain to it, sparse indices are valid, values are finite, every
    tensor the model needs is present and nothing else is. A bad file raises ``ValueError``.
    """
    manifest = read_manifest(path)
    for name, layer in manifest["layers"].items():
        _check_layer_fits(name, layer, base_model)
    with safe_open(os.fspath(path), framework="pt") as handle:
        stored = {key: handle.get_tensor(key) for key in handle.keys()}
    model = copy.deepcopy(base_model).eval()
    used = set()
    for name, layer in manifest["layers"].items():
        set_module(model, name, _rebuild_layer(name, layer, stored, base_model.get_submodule(name), used))
    state = {key[len("state."):]: value for key, value in stored.items() if key.startswith("state.")}
    used.update("state." + key for key in state)
    left = sorted(stored.keys() - used)
    if left:
        raise ValueError(f"The checkpoint holds tensors no layer uses: {left[:5]}.")
    expected = {key: value for key, value in model.state_dict().items() if not key.startswith(tuple(n + "." for n in manifest["layers"]))}
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"The checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    for key, value in state.items():
        _check_values(f"state.{key}", value, expected[key].shape, expected[key].dtype)
    model.load_state_dict(state, strict=False)
    return model


def _check_layer_fits(name: str, layer: dict, base_model: nn.Module) -> None:
    """The manifest's layer matches a factorizable layer of ``base_model`` and its factors chain."""
    try:
        module = base_model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"The checkpoint's layer {name!r} is not in the model: is it the model it was made from?") from None
    if not is_factorizable(module):
        raise ValueError(f"The checkpoint's layer {name!r} is a {type(module).__name__} in the model, not a factorizable layer.")
    m, n = weight_matrix(module).shape
    weight_shape = layer["weight_shape"]
    if [weight_shape[0], math.prod(weight_shape[1:])] != [m, n] or (len(weight_shape) == 4) != (module.weight.ndim == 4):
        raise ValueError(
            f"The checkpoint's layer {name!r} has weight shape {weight_shape}; the model's is {list(module.weight.shape)}."
        )
    check_factor_chain(name, layer, m, n)
    inner = [shape[-1] for shape in layer["shapes"][:-1]]  # the products' inner sizes, or the TT ranks
    if len(layer["shapes"]) > MAX_FACTORS or any(size > max(m, n) for size in inner):
        raise ValueError(
            f"The checkpoint's layer {name!r} has factors {layer['shapes']}: over {MAX_FACTORS} factors, or an inner "
            f"size over the weight's larger side ({max(m, n)})."
        )
    if isinstance(module, nn.Conv2d):
        geometry = {"stride": list(module.stride), "padding": list(module.padding), "dilation": list(module.dilation)}
        if list(weight_shape) != list(module.weight.shape) or layer["conv"] != geometry:
            raise ValueError(
                f"The checkpoint stores {name!r} as a convolution of weight shape {weight_shape} with {layer['conv']}; "
                f"the model's has {list(module.weight.shape)} with {geometry}."
            )
    elif layer["conv"] is not None:
        raise ValueError(f"The checkpoint stores {name!r} as a convolution; the model's layer is not one.")


def check_factor_chain(name: str, layer: dict, m: int, n: int) -> None:
    """The manifest entry's factor shapes multiply out to an ``m x n`` matrix (TT cores: their
    modes multiply to m and n, and their ranks chain from 1 to 1)."""
    shapes = layer["shapes"]
    if layer["kind"] == "product":
        if any(len(s) != 2 for s in shapes) or shapes[0][0] != m or shapes[-1][-1] != n or any(
            a[1] != b[0] for a, b in zip(shapes, shapes[1:])
        ):
            raise ValueError(f"The factors of {name!r} ({shapes}) do not multiply to a {m} x {n} matrix.")
    elif any(len(s) != 4 for s in shapes) or shapes[0][0] != 1 or shapes[-1][-1] != 1 or any(
        a[3] != b[0] for a, b in zip(shapes, shapes[1:])
    ) or math.prod(s[1] for s in shapes) != m or math.prod(s[2] for s in shapes) != n:
        raise ValueError(f"The TT cores of {name!r} ({shapes}) do not form a {m} x {n} matrix.")


def _rebuild_layer(name: str, layer: dict, stored: dict, original: nn.Module | None = None, used: set | None = None) -> nn.Module:
    """The factorized module of one manifest entry, every tensor checked; the keys it reads are added
    to ``used``. With the ``original`` layer, its bias must be stored exactly when the layer has one."""
    used = set() if used is None else used
    factors = []
    for i, (shape, is_sparse) in enumerate(zip(layer["shapes"], layer["sparse"])):
        key = f"{name}.factor_{i}"
        if is_sparse:
            factor = _decode_sparse(key, tuple(shape), stored, used)
        else:
            factor = _take(stored, key, used)
            _check_values(key, factor, tuple(shape))
        factors.append(factor)
    dtypes = {factor.dtype for factor in factors}
    if not dtypes <= {torch.float32, torch.float64} or len(dtypes) > 1:
        raise ValueError(f"The factors of {name!r} have dtypes {sorted(map(str, dtypes))}; expected one of float32 or float64.")
    bias = stored.get(f"{name}.bias")
    if original is not None and (bias is None) != (getattr(original, "bias", None) is None):
        state = "lacks" if bias is None else "has"
        raise ValueError(f"The checkpoint {state} a bias for {name!r}, unlike the model's layer.")
    if bias is not None:
        used.add(f"{name}.bias")
        _check_values(f"{name}.bias", bias, (layer["weight_shape"][0],))
    linear = FactorizedLinear(factors, layer["sparse"], layer["kind"], bias)
    if layer["conv"] is None:
        return linear
    return FactorizedConv2d(linear, layer["weight_shape"][2:], **layer["conv"])


def _take(stored: dict, key: str, used: set) -> torch.Tensor:
    if key not in stored:
        raise ValueError(f"The checkpoint lacks the tensor {key!r} its manifest promises.")
    used.add(key)
    return stored[key]


def _check_values(key: str, value: torch.Tensor, shape: tuple, dtype: torch.dtype | None = None) -> None:
    """Shape, a floating-point dtype (or ``dtype``) and finite values."""
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{key} has shape {list(value.shape)}; expected {list(shape)}.")
    if dtype is not None and not dtype.is_floating_point:
        if value.dtype != dtype:
            raise ValueError(f"{key} has dtype {value.dtype}; expected {dtype}.")
        return
    if value.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{key} has dtype {value.dtype}; expected floating-point values (float16, bfloat16, float32, float64).")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{key} contains NaN or Inf values.")


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


def _decode_sparse(key: str, shape: tuple, stored: dict, used: set) -> torch.Tensor:
    """The CSR factor back from either encoding, with its indices validated."""
    rows, cols = shape
    values = _take(stored, key + ".values", used)
    if values.ndim != 1:
        raise ValueError(f"{key}.values must be 1-D. Got shape {list(values.shape)} instead.")
    _check_values(key + ".values", values, tuple(values.shape))
    if values.numel() > rows * cols:
        raise ValueError(f"{key} stores {values.numel()} values for a {rows} x {cols} matrix.")
    if key + ".bitmap" in stored:
        bitmap = _take(stored, key + ".bitmap", used)
        if bitmap.dtype != torch.uint8 or tuple(bitmap.shape) != ((rows * cols + 7) // 8,):
            raise ValueError(f"{key}.bitmap must be {(rows * cols + 7) // 8} uint8 bytes for a {rows} x {cols} factor.")
        bits = np.unpackbits(bitmap.numpy(), count=rows * cols)
        support = torch.from_numpy(bits.astype(bool)).reshape(shape)
        if int(support.sum()) != values.numel():
            raise ValueError(f"{key}: the bitmap marks {int(support.sum())} entries for {values.numel()} values.")
        dense = torch.zeros(shape, dtype=values.dtype)
        dense[support] = values
        return _to_csr(dense)
    crow, col = _take(stored, key + ".crow_indices", used), _take(stored, key + ".col_indices", used)
    for part, tensor, length in (("crow_indices", crow, rows + 1), ("col_indices", col, values.numel())):
        if tensor.dtype not in (torch.int32, torch.int64) or tuple(tensor.shape) != (length,):
            raise ValueError(f"{key}.{part} must be {length} int32 indices. Got {tensor.dtype} {list(tensor.shape)}.")
    try:
        return torch.sparse_csr_tensor(crow.long(), col.long(), values, size=shape, check_invariants=True)
    except RuntimeError as exc:
        raise ValueError(f"{key} has invalid CSR indices: {exc}") from None


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
