"""A Hugging Face checkpoint opened lazily for looking at one layer at a time: its layers listed
from the model's skeleton (``meta`` device) and the safetensors headers, one layer's weights read
alone, and, on request, one layer's calibration Gram computed by streaming the blocks before it."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..calibration import collect_grams
from ..file_formats import INDEX
from ..layers import LayerInfo, list_layers
from ..limits import check_bytes
from ..models.loaders import BATCH
from .families import why_not_streamed
from .inputs import RunInputs
from .source import ModelSource, _read_config, is_model_directory

# bytes per element of the safetensors dtypes
ITEM_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
              "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}
GRAM_SEQ_LEN = 32  # the in-memory app's calibration sequences (load_hf's default)


@dataclass(frozen=True)
class GramCost:
    """What one layer's calibration Gram costs: ``read_bytes`` of weights read from the shards
    (what lies before the blocks, and blocks ``0..blocks-1``), ``memory_bytes`` at most held at
    once in float32, ``forward_passes`` of one block on one batch."""

    blocks: int
    read_bytes: int
    memory_bytes: int
    forward_passes: int


def opens_lazily(directory) -> bool:
    """Whether ``directory`` is a Hugging Face directory that :class:`LazyModel` opens: a streaming
    family's config and safetensors weights (anything else is for the loaders to judge)."""
    directory = Path(directory).expanduser()
    if not is_model_directory(directory):
        return False
    if not ((directory / "model.safetensors").is_file() or (directory / INDEX).is_file()):
        return False
    try:
        return why_not_streamed(_read_config(directory)) is None
    except ValueError:
        return False


class LazyModel:
    """The model in ``directory`` without its weights: :attr:`layers` as :func:`list_layers` gives
    them for the loaded model, :meth:`module` one layer with its weights, :meth:`gram` one layer's
    input Gram. Nothing here changes the shared skeleton, so one instance serves many readers."""

    def __init__(self, directory):
        self.source = ModelSource(directory)
        self.layers: list[LayerInfo] = list_layers(self.source.model)
        self.n_params = sum(p.numel() for p in self.source.model.parameters())

    @property
    def directory(self):
        return self.source.directory

    def dtype(self, name: str) -> str:
        """The dtype the files store layer ``name``'s weight in (safetensors' name, e.g. ``BF16``)."""
        return self.source.headers[self.source.stored_key(name + ".weight")][1]

    def stored_bytes(self) -> int:
        """The bytes of all the weights in the files."""
        return sum(_bytes(shape, dtype) for shape, dtype in self.source.headers.values())

    def dense_bytes(self) -> int:
        """The memory the whole model takes when loaded in float32 (as the in-memory pages load it)."""
        return 4 * self.n_params

    def module(self, name: str) -> nn.Module:
        """Layer ``name`` with its weights (float32, CPU), read from the shards alone."""
        self._layer(name)
        return self.source.materialize(copy.deepcopy(self.source.model.get_submodule(name)), name,
                                       device="cpu", dtype=torch.float32).eval()

    def gram_cost(self, name: str, n_samples: int) -> GramCost | None:
        """What :meth:`gram` costs for layer ``name``; None for a layer outside the blocks and the head."""
        place = self._place(name)
        if place is None:
            return None
        n_blocks = len(self.source.blocks) if place == "head" else place + 1
        before = self._part_sizes(self._outside(with_head=place == "head"))
        blocks = [self._part_sizes([f"{self.source.family.blocks}.{i}"]) for i in range(n_blocks)]
        return GramCost(
            blocks=n_blocks,
            read_bytes=before[0] + sum(file for file, _ in blocks),
            memory_bytes=before[1] + max(memory for _, memory in blocks),
            forward_passes=-(-n_samples // BATCH) * n_blocks,
        )

    def gram(self, name: str, n_samples: int, *, seq_len: int = GRAM_SEQ_LEN) -> torch.Tensor:
        """The undamped input Gram ``X^T X / rows`` of layer ``name`` over ``n_samples`` random-token
        calibration samples (as the in-memory path draws them), streaming the blocks before it one
        at a time; a ValueError for a layer outside the blocks and the head."""
        place = self._place(name)
        if place is None:
            raise ValueError(f"Layer {name!r} lies outside the model's blocks and head; its Gram needs the whole model.")
        from .pipeline import _capture, _load_block, head_forward

        cost = self.gram_cost(name, n_samples)
        check_bytes(cost.memory_bytes, "DSF_MAX_WORK_BYTES", f"The calibration Gram of {name!r} (weights held at once)")
        source = ModelSource(self.directory)  # its own skeleton: the shared one stays weightless
        inputs = RunInputs(source, calibration=n_samples, seq_len=min(seq_len, source.max_positions or seq_len),
                           device="cpu", dtype="float32", calibration_text=None, eval_text=None, use_data=True)
        source.materialize(source.model, "", device=inputs.device, dtype=inputs.dtype,
                           skip=self._outside_skip(with_head=place == "head"))
        stream = _capture(source, inputs.calibration)
        batches = range(len(stream.hidden))
        last = len(source.blocks) if place == "head" else place
        for index in range(last):
            stream.advance(_load_block(source, index, inputs), index)
        if place == "head":
            forward = head_forward(source, stream)
            return collect_grams(source.model, forward, batches, [name], damp=0.0, stop_early=True)[name]
        prefix = f"{source.family.blocks}.{place}."
        relative = name[len(prefix):]
        block = _load_block(source, place, inputs)
        return collect_grams(block, stream.forward(place), batches, [relative], damp=0.0)[relative]

    def _layer(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"The model in '{self.directory}' has no factorizable layer {name!r}.")

    def _place(self, name: str):
        """The index of the block holding layer ``name``, ``"head"`` for a head module, else None."""
        self._layer(name)
        prefix = self.source.family.blocks + "."
        if name.startswith(prefix):
            return int(name[len(prefix):].split(".")[0])
        return "head" if name in self.source.family.head else None

    def _outside_skip(self, *, with_head: bool) -> tuple[str, ...]:
        """What a Gram's pass leaves on the meta device: the blocks (streamed), and the head unless needed."""
        return (self.source.family.blocks,) + (() if with_head else self.source.family.head)

    def _outside(self, *, with_head: bool) -> list[str]:
        """Prefixes of the tensors a Gram's pass reads besides the blocks."""
        skip = self._outside_skip(with_head=with_head)
        return [key for key in self.source.model.state_dict()
                if not any(key == s or key.startswith(s + ".") for s in skip)]

    def _part_sizes(self, prefixes) -> tuple[int, int]:
        """``(bytes in the files, bytes in float32)`` of the stored tensors named by or under ``prefixes``."""
        seen, file_bytes, memory = set(), 0, 0
        for key, tensor in self.source.model.state_dict(keep_vars=True).items():
            if id(tensor) in seen or not any(key == p or key.startswith(p + ".") for p in prefixes):
                continue
            seen.add(id(tensor))
            try:
                shape, dtype = self.source.headers[self.source.stored_key(key)]
            except KeyError:  # a buffer the files do not hold
                continue
            file_bytes += _bytes(shape, dtype)
            memory += 4 * tensor.numel() if tensor.is_floating_point() else _bytes(shape, dtype)
        return file_bytes, memory


def _bytes(shape, dtype: str) -> int:
    return math.prod(shape) * ITEM_BYTES.get(dtype, 4)
