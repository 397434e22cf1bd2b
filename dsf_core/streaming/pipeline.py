"""Compress a Hugging Face model block by block, never holding more than one block's weights.

The pipeline, top to bottom (:func:`compress_streaming`):

1. **inputs**: read the model's skeleton (meta device), materialize only what lies outside the
   blocks (embeddings, final norm, head), and capture what each block receives on the calibration
   (and evaluation) batches: one pass with every block replaced by a recorder;
2. **per block**: load its weights from the shards onto the device; collect its layers' input
   Grams with hooks (group by group as the layers feed each other, or all at once with
   ``sequential=False``); factorize its layers; run the batches through it to get the next block's
   inputs; write its factors; free it;
3. **head**: perplexity of the dense and the compressed model on the evaluation batches.

Under ``torchrun`` the batches are shared out over the processes and Grams summed; the layers of a
group are shared out by cost and their factors broadcast (see ``distributed.py``). The result is
the same as :func:`dsf_core.compress.compress_model` on the whole model with the same calibration
batches.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._api import factorize
from .._registry import get_method
from ..calibration import accumulate_inputs, sequential_groups
from ..compress import LayerReport, check_damp
from ..exceptions import BudgetError
from ..layers import list_layers, select_layers, set_module, weight_matrix
from ..plan import budget, infeasible_layers
from .distributed import Ranks
from ..models.loaders import BATCH, mean_pool
from .inputs import RunInputs
from .load import check_export_target, export_dense as write_dense_export
from .progress import Progress
from .source import ModelSource
from .store import OutputStore, read_layers


@dataclass
class StreamResult:
    """What a streamed run did: per-layer reports, perplexities (causal models with evaluation text)
    or the mean cosine of the embeddings (encoders)."""

    method: str
    density: float
    options: dict
    settings: dict
    layers: list[LayerReport]
    dense_perplexity: float | None = None
    compressed_perplexity: float | None = None
    mean_cosine: float | None = None  # encoders: compressed against dense embeddings, as in memory
    seconds: float = 0.0
    out: str | None = None

    @property
    def n_params_dense(self) -> int:
        return sum(r.n_params_dense for r in self.layers)

    @property
    def n_params_compressed(self) -> int:
        return sum(r.n_params for r in self.layers)


class _Captured(BaseException):
    """Ends the capture pass after the last block's recorder (not an ``Exception``, so that no
    ``except Exception`` in a model can swallow it)."""


class _Recorder(nn.Module):
    """Stands in for block ``index`` during the capture pass: records the call, passes the hidden
    states on unchanged."""

    def __init__(self, index: int, calls: list, last: bool):
        super().__init__()
        self.index, self.calls, self.last = index, calls, last

    def forward(self, *args, **kwargs):
        hidden, args = (args[0], args[1:]) if args else (kwargs.pop("hidden_states"), ())
        self.calls.append((hidden, args, kwargs))
        if self.last:
            raise _Captured
        return hidden


class _Replay(nn.Module):
    """Stands in for a block in a pass through the head: the first block gives ``hidden`` (the
    last block's output), every block passes the hidden states on, shaped as the blocks return them."""

    def __init__(self, hidden: torch.Tensor | None, as_tuple: bool):
        super().__init__()
        self.hidden, self.as_tuple = hidden, as_tuple

    def forward(self, *args, **kwargs):
        hidden = self.hidden if self.hidden is not None else args[0] if args else kwargs["hidden_states"]
        return (hidden,) if self.as_tuple else hidden


@dataclass
class Stream:
    """Batches on their way through the blocks: ``hidden[j]``, the next block's input on batch j;
    ``calls[j][i]``, the other arguments block i receives on batch j; ``batches[j]``, the model's
    input; ``tuples``, whether the blocks return the hidden states first in a tuple."""

    hidden: list[torch.Tensor]
    calls: list[list[tuple]]
    batches: list
    tuples: bool = False

    def forward(self, index: int):
        """``forward(block, j)``: block ``index`` on batch j."""

        def run(block, j):
            args, kwargs = self.calls[j][index]
            return block(self.hidden[j], *args, **kwargs)

        return run

    @torch.no_grad()
    def advance(self, block: nn.Module, index: int) -> None:
        """The batches through block ``index``, in place."""
        run = self.forward(index)
        outputs = [run(block, j) for j in range(len(self.hidden))]
        self.tuples = any(isinstance(out, tuple) for out in outputs)
        self.hidden = [out[0] if isinstance(out, tuple) else out for out in outputs]

    def advanced(self, block: nn.Module, index: int) -> "Stream":
        """A new stream: the batches through block ``index`` (this one is left as it is)."""
        twin = replace(self, hidden=list(self.hidden))
        twin.advance(block, index)
        return twin


def compress_streaming(
    model_dir,
    method: str,
    density: float,
    *,
    layers: str | None = None,
    calibration: int = 128,
    seq_len: int = 32,
    sequential: bool = True,
    damp: float = 0.01,
    device="cpu",
    dtype: str = "float32",
    calibration_text=None,
    eval_text=None,
    out=None,
    export_dense=None,
    resume: bool = False,
    progress=None,
    **options,
) -> StreamResult:
    """Compress the model in ``model_dir`` (a Hugging Face directory of a streaming family) block by
    block: the blocks' layers matching ``layers`` (glob patterns; all by default) are factorized by
    ``method`` at ``density``. Calibration: ``calibration`` samples of ``seq_len`` tokens from
    ``calibration_text`` (the model's tokenizer), else uniform random tokens as the in-memory path
    draws them. ``dtype`` is the forward's (factorization runs in float32). ``out``: a directory for
    the factors and the manifest (see ``store.py``); ``resume`` continues a run interrupted there.
    ``export_dense``: a directory that also gets the compressed model as an ordinary Hugging Face
    model (see ``load.export_dense``), checked before any work; without ``out``, the factors pass
    through a scratch directory.
    ``progress`` (a file, e.g. ``sys.stderr``) gets a line per layer with elapsed time and ETA."""
    start = time.perf_counter()
    spec = get_method(method)
    spec.resolve_options(options)  # bad option names or values fail here, before any work
    damp = check_damp(damp)
    source = ModelSource(model_dir)
    inputs = RunInputs(source, calibration=calibration, seq_len=seq_len, device=device, dtype=dtype,
                       calibration_text=calibration_text, eval_text=eval_text,
                       use_data=spec.uses_gram != "no" and calibration > 0)
    settings = {"calibration": inputs.n_calibration, "sequential": bool(sequential), "damp": damp, "seq_len": seq_len,
                "dtype": dtype, "layers": layers, **inputs.describe()}
    command = {"method": method, "density": density, "options": options, "settings": settings}
    ranks = Ranks(inputs.device)
    scratch = tempfile.mkdtemp(prefix="dsf-run-") if export_dense is not None and out is None else None
    try:
        run = _Run(source, inputs, ranks, spec, method, density, options, damp, bool(sequential))
        run.check(command, layers, Path(scratch) / "run" if scratch else out, resume, export_dense)
        result = StreamResult(method, density, dict(options), settings, [], out=None if out is None else str(out))

        # 1. inputs: what the first block receives, and every block's other arguments
        source.materialize(source.model, "", device=inputs.device, dtype=inputs.dtype, skip=(source.family.blocks,))
        calib = _capture(source, ranks.shard(inputs.calibration))
        evals = _capture(source, ranks.shard(inputs.evaluation)) if inputs.evaluation else None
        dense_eval = replace(evals, hidden=list(evals.hidden)) if evals else None
        meter = Progress(progress if ranks.writer else None, [sum(m * n for _, (m, n) in b) for b in run.chosen],
                         blocks=len(source.blocks))

        # 2. per block: onload, calibrate, compress, propagate, write, free
        for index in range(len(source.blocks)):
            if run.store is not None and index < run.store.blocks_done:
                calib = run.replay(index, calib, dense_eval, evals)
                meter.skip(index)
                continue
            block = _load_block(source, index, inputs)
            if dense_eval is not None:
                dense_eval.advance(block, index)
            dense_out = None if sequential else calib.advanced(block, index)  # independent: Grams and outputs dense
            compressed, reports = run.compress_part(block, index, calib.forward(index), len(calib.hidden), meter)
            calib = calib.advanced(block, index) if sequential else dense_out
            if evals is not None:
                evals.advance(block, index)
            run.write(index, compressed, reports)
            result.layers.extend(reports)
            del block, compressed

        # 3. head: perplexity before and after, the head's chosen layers compressed in between
        perplexity = evals is not None and source.family.causal
        if perplexity:
            result.dense_perplexity = _perplexity(source, dense_eval, inputs.evaluation_tokens(ranks), ranks)
        result.layers.extend(run.head(calib, meter))
        if perplexity:
            result.compressed_perplexity = _perplexity(source, evals, inputs.evaluation_tokens(ranks), ranks)
        elif evals is not None:
            result.mean_cosine = _mean_cosine(source, dense_eval, evals, ranks)
        result.seconds = time.perf_counter() - start
        if run.store is not None:
            result.layers = [_report_of(r) for r in run.store.manifest["reports"]]  # with the resumed blocks'
            run.store.write_manifest(
                complete=True, dense_perplexity=result.dense_perplexity,
                compressed_perplexity=result.compressed_perplexity, mean_cosine=result.mean_cosine,
                seconds=round(result.seconds, 3),
            )
            if export_dense is not None and ranks.writer:
                write_dense_export(run.store.directory, export_dense)
        return result
    finally:
        ranks.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class _Run:
    """One run's fixed parts, with the stages that need them."""

    source: ModelSource
    inputs: RunInputs
    ranks: Ranks
    spec: object
    method: str
    density: float
    options: dict
    damp: float
    sequential: bool
    chosen: list | None = None
    store: OutputStore | None = None

    def check(self, command: dict, layers, out, resume: bool, export_dense=None) -> None:
        """Everything that can fail before the long work: the processes agree, the batches go round,
        the layers are streamable, the output directory is new or this command's, and so is the
        dense export's."""
        fingerprint = self.source.fingerprint()
        if export_dense is not None:  # the identity as the manifest will hold it, through JSON
            identity = json.loads(json.dumps({"command": command, "model": fingerprint}))
            check_export_target(export_dense, identity, out)
        self.ranks.agree(json.dumps({**command, "model": fingerprint}, sort_keys=True))
        if self.inputs.calibration and len(self.inputs.calibration) < self.ranks.world:
            raise ValueError(
                f"{len(self.inputs.calibration)} calibration batch(es) of up to {BATCH} samples cannot be shared by "
                f"{self.ranks.world} processes; give more calibration samples."
            )
        self.chosen = _chosen_layers(self.source, layers)
        _check_feasible(self.method, self.density, self.options, self.chosen)
        if out is not None:
            self.store = OutputStore(out, {"command": command, "model": fingerprint}, resume=resume,
                                     writer=self.ranks.writer)
        elif resume:
            raise ValueError("--resume needs --out (the directory of the run to continue).")

    def names(self, index: int) -> list[str]:
        return [name for name, _ in self.chosen[index]]

    def compress_part(self, module, index, forward, n_batches, meter):
        """Factorize the chosen layers of part ``index`` (a block, or after the blocks the head, whose
        ``module`` is the model itself) in place; ``({name: module}, reports)``."""
        prefix = f"{self.source.family.blocks}.{index}." if index < len(self.source.blocks) else ""
        return _compress_block(module, prefix, index, self.names(index), forward, n_batches, self.ranks, self.method,
                               self.density, self.options, self.spec, self.damp, self.sequential, meter)

    def head(self, calib: "Stream", meter) -> list[LayerReport]:
        """The head's chosen layers (e.g. ``lm_head``) factorized on the last block's outputs, in the
        model's own head (or read back from an interrupted run's output); their reports."""
        index = len(self.source.blocks)
        names = self.names(index)
        if not names:
            return []
        model = self.source.model
        if self.store is not None and index < self.store.blocks_done:
            shapes = {layer.name: layer.shape for layer in list_layers(model) if layer.name in names}
            for name, module in read_layers(self.store.directory, self.store.manifest, names, shapes).items():
                set_module(model, name, module.to(self.inputs.device))
            meter.skip(index)
            return []
        compressed, reports = self.compress_part(model, index, head_forward(self.source, calib), len(calib.hidden), meter)
        self.write(index, compressed, reports)
        return reports

    def write(self, index, compressed, reports) -> None:
        if self.store is not None:
            self.store.write_block(index, compressed, [_report_dict(r) for r in reports])
            self.ranks.barrier()

    def replay(self, index, calib, dense_eval, evals):
        return _replay(self.source, self.store, index, self.names(index), calib, dense_eval, evals, self.inputs,
                       self.sequential)


def _chosen_layers(source: ModelSource, pattern: str | None) -> list[list[tuple[str, tuple[int, int]]]]:
    """Per block, then for the head, the chosen layers' full names and ``(out, in)`` shapes. Head
    layers (e.g. ``lm_head``) only when ``pattern`` names them; a ValueError for a chosen layer
    elsewhere outside the blocks, or a head layer whose weight is tied to the input embeddings."""
    prefix = source.family.blocks + "."
    chosen = select_layers(source.model, pattern)
    parts = [[] for _ in range(len(source.blocks) + 1)]
    for layer in chosen:
        if layer.name.startswith(prefix):
            parts[int(layer.name[len(prefix):].split(".")[0])].append((layer.name, layer.shape))
        elif pattern and layer.name in source.family.head:
            parts[-1].append((layer.name, layer.shape))
        elif pattern:
            raise ValueError(
                f"--layers selects {layer.name!r}, outside the blocks and the head; a streamed run compresses "
                "those only (use --in-memory to compress it)."
            )
    for name, _ in parts[-1]:
        tied = source.tied.get(name + ".weight")
        if tied:
            raise ValueError(
                f"--layers selects {name!r}, whose weight is tied to {tied[0]!r} (tie_word_embeddings): a streamed "
                "run keeps tied weights dense; leave it out of --layers, or use --in-memory, which unties them."
            )
    return parts


def _check_feasible(method: str, density: float, options: dict, chosen) -> None:
    """A BudgetError naming the chosen layers ``method`` cannot compress at ``density`` (an N:M
    pattern on a width it does not divide, a rank below 1, ...), before any block is loaded rather
    than when the run reaches them."""
    refused = infeasible_layers(method, ((name, shape, density) for part in chosen for name, shape in part), **options)
    if refused:
        name, shape, _, plan = refused[0]
        raise BudgetError(
            f"{len(refused)} chosen layer(s) cannot be compressed by {method!r} at density {density}, e.g. {name!r}: "
            f"{plan.reason} Or leave those layers out with --layers.",
            needed=plan.min_budget, budget=budget(shape, density), what=plan.what, layer=name,
        )


@torch.no_grad()
def _capture(source: ModelSource, batches: list) -> Stream:
    """The first block's input and every block's other arguments, per batch: one pass of the model
    with its blocks replaced by recorders (the blocks' weights are never needed)."""
    model, family = source.model, source.family
    blocks = source.blocks
    records: list[list] = [[] for _ in blocks]
    recorders = nn.ModuleList(_Recorder(i, records[i], i == len(blocks) - 1) for i in range(len(blocks)))
    set_module(model, family.blocks, recorders)
    try:
        for batch in batches:
            try:
                _run_model(model, batch)
            except _Captured:
                pass
    finally:
        set_module(model, family.blocks, blocks)
    hidden = [hidden for hidden, _, _ in records[0]]
    calls = [[(args, kwargs) for _, args, kwargs in (records[i][j] for i in range(len(blocks)))] for j in range(len(batches))]
    return Stream(hidden, calls, list(batches))


def _run_model(model: nn.Module, batch):
    """The model on one batch: token ids, or a dict of its inputs."""
    return model(**batch) if isinstance(batch, dict) else model(input_ids=batch, use_cache=False)


def _load_block(source: ModelSource, index: int, inputs, skip=()) -> nn.Module:
    """A copy of block ``index`` with its weights from the shards on the device (the model's own
    block stays on the meta device)."""
    block = copy.deepcopy(source.blocks[index])
    prefix = f"{source.family.blocks}.{index}"
    return source.materialize(block, prefix, device=inputs.device, dtype=inputs.dtype, skip=skip).eval()


def _compress_block(block, prefix, index, names, forward, n_batches, ranks, method, density, options, spec, damp,
                    sequential, meter):
    """Factorize the chosen layers (``names``, each ``prefix`` + a name in ``block``) in place, the
    block run on batch j by ``forward(block, j)``; ``({name: module}, reports)``."""
    relative = [name[len(prefix):] for name in names]
    batches = range(n_batches)
    if not relative:
        return {}, []
    if spec.uses_gram == "no" or not batches:
        groups, use_grams = [(relative, False)], False
    elif sequential:
        groups, use_grams = sequential_groups(block, forward, 0, relative), True
    else:
        groups, use_grams = [(relative, False)], True
    modules, reports = {}, []
    for group, called_once in groups:
        grams = _grams(block, forward, batches, group, called_once, damp, ranks) if use_grams else dict.fromkeys(group)
        matrices = {name: weight_matrix(block.get_submodule(name)).float() for name in group}
        owners = ranks.owners([float(m.numel()) for m in matrices.values()])
        mine = {}  # this process's layers, all factorized before any is broadcast (a broadcast waits for its owner)
        for name, owner in zip(group, owners):
            if owner == ranks.rank:
                matrix, gram = matrices[name], grams[name]
                result = factorize(matrix, method, density=density, gram=gram, **options)
                mine[name] = (result, [result.error(matrix), math.nan if gram is None else result.error(matrix, gram),
                                       result.seconds])
        for name, owner in zip(group, owners):
            module, matrix = block.get_submodule(name), matrices[name]
            result, stats = ranks.share(*mine.get(name, (None, None)), owner, method=method, options=options,
                                        weight_shape=matrix.shape)
            new = result.to_module(module.bias)
            set_module(block, name, new)
            modules[prefix + name] = new
            reports.append(LayerReport(
                name=prefix + name, shape=tuple(matrix.shape), n_params_dense=matrix.numel(), n_params=result.n_params,
                error=stats[0], weighted_error=None if math.isnan(stats[1]) else stats[1], seconds=stats[2],
            ))
            meter.layer(index, prefix + name, matrix.numel())
    return modules, reports


def _grams(block, forward, batches, names, called_once, damp, ranks) -> dict:
    """The damped input Gram of each named layer, over this process's batches summed over all."""
    accumulators = accumulate_inputs(block, forward, batches, names, stop_early=called_once)
    grams = {}
    for name, acc in accumulators.items():
        total = acc.sum if acc.sum is not None else torch.zeros(1)
        rows = torch.tensor([float(acc.rows)], dtype=torch.float64, device=total.device)
        ranks.sum_(total)
        ranks.sum_(rows)
        if rows.item() == 0:
            raise ValueError(f"The calibration inputs never reached layer {name!r}.")
        acc.sum, acc.rows = total, int(rows.item())
        grams[name] = acc.gram(damp)
    return grams


def _replay(source, store, index, names, calib, dense_eval, evals, inputs, sequential) -> Stream:
    """Block ``index`` as the interrupted run left it: its factors from the output directory; the
    batches run through it (and through the dense block where needed)."""
    prefix = f"{source.family.blocks}.{index}."
    relative = [name[len(prefix):] for name in names]
    shapes = {name: layer.shape for name, layer in ((prefix + l.name, l) for l in list_layers(source.blocks[index])) if name in names}
    needs_dense = dense_eval is not None or not sequential
    if needs_dense:
        dense = _load_block(source, index, inputs)
        if dense_eval is not None:
            dense_eval.advance(dense, index)
        if not sequential:
            calib = calib.advanced(dense, index)
    compressed = copy.deepcopy(source.blocks[index])
    for name, module in read_layers(store.directory, store.manifest, names, shapes).items():
        set_module(compressed, name[len(prefix):], module.to(inputs.device))
    compressed = source.materialize(compressed, prefix[:-1], device=inputs.device, dtype=inputs.dtype, skip=relative).eval()
    if sequential:
        calib = calib.advanced(compressed, index)
    if evals is not None:
        evals.advance(compressed, index)
    return calib


@torch.no_grad()
def _perplexity(source, stream: Stream, tokens: list[torch.Tensor], ranks) -> float:
    """exp of the mean next-token cross-entropy of the model's head on the stream's last hidden
    states, over every process's batches."""
    head = head_forward(source, stream)
    totals = torch.zeros(2, dtype=torch.float64, device=ranks.device)
    for j, ids in enumerate(tokens):
        logits = head(source.model, j)[:, :-1].float()
        target = ids[:, 1:].to(logits.device)
        totals[0] += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum").double()
        totals[1] += target.numel()
    ranks.sum_(totals)
    return math.exp(float(totals[0] / totals[1]))


@torch.no_grad()
def _mean_cosine(source, dense: Stream, compressed: Stream, ranks) -> float:
    """The mean cosine between the dense and the compressed model's sentence embeddings (the
    model's own output after the blocks, mean-pooled over the attention mask), over every
    process's batches: the in-memory path's ``mean_cosine``."""
    totals = torch.zeros(2, dtype=torch.float64, device=ranks.device)
    outputs = [head_forward(source, stream, "last_hidden_state") for stream in (dense, compressed)]
    for j, batch in enumerate(compressed.batches):
        pair = [mean_pool(out(source.model, j).float(), batch["attention_mask"]) for out in outputs]
        totals[0] += F.cosine_similarity(*pair, dim=-1).double().sum()
        totals[1] += len(pair[0])
    ranks.sum_(totals)
    return float(totals[0] / totals[1])


def head_forward(source: ModelSource, stream: Stream, output: str = "logits"):
    """``forward(model, j)``: the model's ``output`` (logits; an encoder's last hidden state) on
    batch j from the stream's hidden states (the blocks' outputs). The model itself runs, its blocks replaced by :class:`_Replay`, so that what
    follows the blocks is its own code: final norm, head, logit scaling or soft-capping."""
    blocks = source.blocks

    def run(model, j):
        replays = nn.ModuleList(_Replay(stream.hidden[j] if i == 0 else None, stream.tuples) for i in range(len(blocks)))
        set_module(model, source.family.blocks, replays)
        try:
            return getattr(_run_model(model, stream.batches[j]), output)
        finally:
            set_module(model, source.family.blocks, blocks)

    return run


def _report_dict(report: LayerReport) -> dict:
    return {"name": report.name, "shape": list(report.shape), "n_params_dense": report.n_params_dense,
            "n_params": report.n_params, "error": report.error, "weighted_error": report.weighted_error,
            "seconds": round(report.seconds, 3)}


def _report_of(row: dict) -> LayerReport:
    return LayerReport(**{**row, "shape": tuple(row["shape"])})
