"""A Hugging Face model directory read lazily: the model built on the ``meta`` device (no memory),
every tensor checked against the safetensors headers up front, and the weights of one part of the
model (a block, or everything outside the blocks) read onto a device only when asked."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from .._torchvision_compat import prepare_transformers
from ..file_formats import FLOAT_FILE_DTYPES, hf_shard_map
from ..models.loaders import CONFIG_ERRORS, check_config_bounds, config_error, encoder_options, why_not_loadable
from .families import FAMILIES, Family, infer_family, why_not_streamed


class ModelSource:
    """The model in ``directory`` (``config.json`` and safetensors shards): ``model`` is its
    ``transformers`` skeleton on the ``meta`` device; :meth:`materialize` gives parts of it weights."""

    def __init__(self, directory):
        self.directory = Path(directory).expanduser().resolve()
        self.config = _read_config(self.directory)
        _check_streams(self.config)
        check_config_bounds(self.config)
        self.shards = hf_shard_map(self.directory)  # tensor name in the files -> shard file
        known = FAMILIES.get(self.config.model_type)
        self.model = skeleton(self.config, causal=known.causal if known else True, stored_names=self.shards)
        self.family: Family = known or infer_family(self.model, self.config)
        self.headers: dict[str, tuple[list[int], str]] = {}  # name in the files -> (shape, dtype)
        self.tied: dict[str, list[str]] = {}  # model tensor name -> the names of the tensors tied to it
        self._check_tensors()

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.get_submodule(self.family.blocks)

    @property
    def max_positions(self) -> int | None:
        return getattr(self.config, "max_position_embeddings", None) or getattr(self.config, "n_positions", None)

    def fingerprint(self) -> dict:
        """What identifies these weights: the directory, its config and its shards' names and sizes."""
        config = (self.directory / "config.json").read_bytes()
        files = sorted(set(self.shards.values()))
        return {
            "model_dir": str(self.directory),
            "config_sha256": hashlib.sha256(config).hexdigest(),
            "shards": {name: (self.directory / name).stat().st_size for name in files},
        }

    def materialize(self, module: nn.Module, prefix: str, *, device, dtype, skip=()) -> nn.Module:
        """Give every meta tensor of ``module`` (called ``prefix`` in the model; ``""`` for the
        model itself) its value from the shards, on ``device``; floating parameters in ``dtype``.
        Submodules named in ``skip`` (relative names, and what is under them) are left alone.
        Tied tensors stay tied; buffers the files do not hold are computed by ``transformers``."""
        entries, to_init = [], []
        for name, owner in module.named_modules(remove_duplicate=False):
            if any(name == s or name.startswith(s + ".") for s in skip):
                continue
            for kind in ("_parameters", "_buffers"):
                for leaf, tensor in getattr(owner, kind).items():
                    if tensor is not None and tensor.is_meta:
                        key = ".".join(p for p in (prefix, name, leaf) if p)
                        stored = kind == "_parameters" or leaf not in owner._non_persistent_buffers_set
                        entries.append((owner, kind, leaf, key, tensor, stored))
        made: dict[int, torch.Tensor] = {}
        for owner, kind, leaf, key, tensor, stored in entries:  # first the buffers no file holds
            if not stored:
                if id(tensor) not in made:
                    made[id(tensor)] = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
                    to_init.append(owner)
                getattr(owner, kind)[leaf] = made[id(tensor)]
        with torch.no_grad():  # before the stored tensors arrive: it may also re-initialize an owner's weights
            for owner in to_init:
                self.model._init_weights(owner)
        wanted = {id(tensor): key for *_, key, tensor, stored in entries if stored}  # one name per tied group
        values = self.read(list(wanted.values()), device=device)
        for owner, kind, leaf, key, tensor, stored in entries:
            if stored:
                if id(tensor) not in made:
                    value = values[wanted[id(tensor)]]
                    if kind == "_parameters":
                        value = nn.Parameter(value.to(dtype) if value.is_floating_point() else value, requires_grad=False)
                    made[id(tensor)] = value
                getattr(owner, kind)[leaf] = made[id(tensor)]
        return module

    def read(self, keys, *, device="cpu") -> dict[str, torch.Tensor]:
        """The named tensors (model names; a tied alias is read under its twin's name in the files),
        one shard opened at a time (so no file stays mapped), only these tensors read."""
        by_file = defaultdict(list)
        for key in keys:
            file_key = self.stored_key(key)
            by_file[self.shards[file_key]].append((key, file_key))
        out = {}
        for file, pairs in by_file.items():
            with safe_open(self.directory / file, framework="pt", device="cpu") as handle:
                for key, file_key in pairs:
                    out[key] = handle.get_tensor(file_key).to(device)
        return out

    def stored_key(self, key: str) -> str:
        """The name in the files of model tensor ``key``, or of a tensor tied to it."""
        for candidate in (key, *self.tied.get(key, ())):
            file_key = self.file_key(candidate)
            if file_key is not None:
                return file_key
        raise KeyError(f"No tensor {key!r} in the shards of '{self.directory}'.")

    def file_key(self, key: str) -> str | None:
        """The name ``key`` has in the files: as is, or with the base model's prefix dropped or added
        (hub GPT-2 files lack ``transformer.``; a BERT saved with a head has ``bert.``)."""
        prefix = getattr(self.model, "base_model_prefix", "") + "."
        for candidate in (key, key[len(prefix):] if key.startswith(prefix) else None, prefix + key):
            if candidate in self.shards:
                return candidate
        return None

    def _check_tensors(self) -> None:
        """Every tensor the model stores is in the shards with its shape, before any work starts."""
        groups = defaultdict(list)  # tied tensors: one group, one of whose names must be in the files
        for key, tensor in self.model.state_dict(keep_vars=True).items():
            groups[id(tensor)].append((key, tensor))
        for file in set(self.shards.values()):
            with safe_open(self.directory / file, framework="pt") as handle:
                for k in handle.keys():
                    part = handle.get_slice(k)
                    self.headers[k] = (part.get_shape(), part.get_dtype())
        headers = {k: shape for k, (shape, _) in self.headers.items()}
        for members in groups.values():
            for key, _ in members:
                self.tied[key] = [other for other, _ in members if other != key]
            found = [(key, t, self.file_key(key)) for key, t in members if self.file_key(key) is not None]
            if not found:
                key, tensor = members[0]
                raise ValueError(
                    f"The shards in '{self.directory}' lack tensor {key!r} (shape {list(tensor.shape)}); "
                    "the checkpoint is incomplete or not of this model."
                )
            for key, tensor, file_key in found:
                if list(headers[file_key]) != list(tensor.shape):
                    raise ValueError(
                        f"Tensor {key!r} in '{self.shards[file_key]}' has shape {list(headers[file_key])}; "
                        f"the config says {list(tensor.shape)}."
                    )
                stored = self.headers[file_key][1]
                if tensor.is_floating_point() and stored not in FLOAT_FILE_DTYPES:
                    raise ValueError(
                        f"Tensor {key!r} in '{self.shards[file_key]}' is stored as {stored}; expected floating-point "
                        f"values ({', '.join(FLOAT_FILE_DTYPES)})."
                    )


def skeleton(config, *, causal: bool, stored_names) -> nn.Module:
    """The model of ``config`` (its causal language model, or its base model, as the checkpoint
    holding ``stored_names`` has it) on the meta device, in eval mode (no weights allocated)."""
    from transformers import AutoModel, AutoModelForCausalLM

    try:
        with torch.device("meta"):
            if causal:
                return AutoModelForCausalLM.from_config(config).eval()
            return AutoModel.from_config(config, **encoder_options(config, stored_names)).eval()
    except CONFIG_ERRORS as exc:
        raise ValueError(f"The config ({config.model_type!r}) does not build a model: {config_error(exc)}") from exc


def is_model_directory(path) -> bool:
    """Whether ``path`` looks like a Hugging Face model directory (it has a config.json)."""
    return Path(path).expanduser().is_dir() and (Path(path).expanduser() / "config.json").is_file()


def _read_config(directory: Path):
    if not directory.is_dir():
        raise FileNotFoundError(f"No such model directory: '{directory}'.")
    if not (directory / "config.json").is_file():
        raise ValueError(f"'{directory}' is not a Hugging Face model directory (it has no config.json).")
    prepare_transformers()
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, *CONFIG_ERRORS) as exc:
        raise ValueError(f"'{directory}/config.json' is not a readable model config: {config_error(exc)}") from exc


def _check_streams(config) -> None:
    """A ValueError, saying whether the in-memory path applies, for a config that cannot be streamed."""
    reason = why_not_streamed(config)
    if reason is None:
        return
    unloadable = why_not_loadable(config)
    in_memory = f"nor can the in-memory path run it: {unloadable}" if unloadable else "the in-memory path can load it: add --in-memory"
    raise ValueError(f"Model type {config.model_type!r} cannot be streamed ({reason}); {in_memory}.")
