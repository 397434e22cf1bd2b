"""What every page shares: the chosen model and device, the chosen layer and density, and the
cached loads of models, weights and calibration Grams."""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError
import torch

from dsf_core.calibration import collect_grams
from dsf_core.examples import synthetic_matrix
from dsf_core.layers import LayerInfo, list_layers, skipped_layers, weight_matrix
from dsf_core.limits import human_bytes, limit
from dsf_core.models import BUILTIN_MODELS, ModelBundle, load_builtin
from dsf_core.models.loaders import load_checkpoint, load_hf, load_torchvision
from dsf_core.streaming.lazy import LazyModel, opens_lazily

from . import state
from .messages import or_stop, plain_message
from .scratch import scratch_folder

DEFAULT_MODEL = "digits-cnn"
MAX_UPLOAD_MB = 200  # also server.maxUploadSize in .streamlit/config.toml
CALIBRATION_SAMPLES = 64
CPU, CUDA = "CPU", "CUDA"


@dataclass(frozen=True)
class ModelChoice:
    """Where a model comes from; hashable, so it keys the model cache.

    ``kind``: ``"builtin"`` (``name``), ``"torchvision"`` (architecture ``name``, weights file
    ``path``), ``"hf"`` (directory ``path``) or ``"checkpoint"`` (file ``path``; ``name`` is a
    torchvision architecture for a state dict, or empty for TorchScript).
    """

    kind: str
    name: str = ""
    path: str = ""
    num_classes: int | None = None
    input_shape: tuple[int, int, int] = (3, 224, 224)  # classifier inputs (channels, height, width)
    version: int = 0  # the file's (or directory's newest file's) modification time: a changed file reloads

    @property
    def label(self) -> str:
        if self.kind == "builtin":
            return self.name
        if self.kind == "torchvision":
            return f"torchvision:{self.name} ({Path(self.path).name})"
        if self.kind == "hf":
            return f"Hugging Face: {Path(self.path).name}"
        return f"checkpoint: {Path(self.path).name}"

    @property
    def replayable(self) -> bool:
        """Whether ``python -m dsf_core`` can load this model from :attr:`spec` alone (a state dict
        also needs its architecture, class count and weights file, which only Python takes)."""
        return self.kind in ("builtin", "hf") or (self.kind == "checkpoint" and not self.name)

    @property
    def spec(self) -> str:
        """The model argument of ``python -m dsf_core`` for this choice (see :attr:`replayable`);
        also what a compressed checkpoint records as its base model."""
        if self.kind == "builtin":
            return self.name
        if self.kind == "torchvision":
            return f"torchvision:{self.name}"
        return self.path


def load_choice(choice: ModelChoice) -> ModelBundle:
    """Load the model ``choice`` names (uncached; see :func:`cached_bundle`)."""
    if choice.kind == "builtin":
        return load_builtin(choice.name)
    if choice.kind == "torchvision":
        return load_torchvision(
            choice.name, choice.path, num_classes=choice.num_classes, input_shape=choice.input_shape
        )
    if choice.kind == "hf":
        return load_hf(choice.path)
    if choice.kind == "checkpoint":
        if choice.name:
            return load_torchvision(
                choice.name, choice.path, num_classes=choice.num_classes, input_shape=choice.input_shape,
                max_bytes=MAX_UPLOAD_MB << 20,  # an upload unpacks to no more than it may weigh
            )
        return load_checkpoint(choice.path, input_shape=choice.input_shape, max_bytes=MAX_UPLOAD_MB << 20)
    raise ValueError(f"Unknown model source {choice.kind!r}.")


@st.cache_resource(max_entries=4, show_spinner="Loading the model...")
def cached_bundle(choice: ModelChoice) -> ModelBundle:
    """The loaded model, shared by all pages and sessions; pages must never modify it."""
    bundle = load_choice(choice)
    for parameter in bundle.model.parameters():
        parameter.requires_grad_(False)
    return bundle


@st.cache_resource(max_entries=4, show_spinner="Reading the model's layers from its safetensors headers...")
def cached_lazy(choice: ModelChoice) -> LazyModel:
    """A Hugging Face directory opened without its weights (see :func:`is_lazy`)."""
    return LazyModel(choice.path)


@st.cache_resource(max_entries=16, show_spinner=False)
def is_lazy(choice: ModelChoice) -> bool:
    """Whether ``choice`` is a Hugging Face directory the pages open lazily: its layers from the
    headers, one layer's weight at a time, the whole model only when a page needs it and the user asks."""
    return choice.kind == "hf" and opens_lazily(choice.path)


def cached_model(choice: ModelChoice) -> ModelBundle | LazyModel:
    """What the one-layer pages work from: the lazy model where possible, else the loaded one."""
    return cached_lazy(choice) if is_lazy(choice) else cached_bundle(choice)


@st.cache_resource(max_entries=4, show_spinner="Reading the layer's weights from the shards...")
def lazy_layer_weight(choice: ModelChoice, layer_name: str) -> torch.Tensor:
    """One layer's ``out x in`` float32 weight, read alone from a lazily opened model's shards."""
    return weight_matrix(cached_lazy(choice).module(layer_name)).float().clone()


@st.cache_resource(max_entries=8, show_spinner="Collecting the layer's calibration Gram, block by block...")
def lazy_gram(choice: ModelChoice, layer_name: str, n_samples: int = CALIBRATION_SAMPLES) -> torch.Tensor:
    """The layer's undamped input Gram, streaming the blocks before it (see ``LazyModel.gram``)."""
    return cached_lazy(choice).gram(layer_name, n_samples)


@st.cache_resource(max_entries=4, show_spinner="Measuring the dense model...")
def dense_metrics(choice: ModelChoice) -> dict:
    """The dense model's evaluation (its headline metric and the rest)."""
    bundle = cached_bundle(choice)
    return {k: float(v) for k, v in bundle.evaluate(bundle.model).items()}


@st.cache_resource(max_entries=32, show_spinner="Collecting the layer's calibration Gram...")
def calibration_gram(choice: ModelChoice, layer_name: str, n_samples: int = CALIBRATION_SAMPLES) -> torch.Tensor:
    """The layer's undamped input Gram ``X^T X / rows`` over ``n_samples`` calibration samples of
    the dense model (one layer at a time: all of a large model's Grams would not fit in memory)."""
    bundle = cached_bundle(choice)
    model = copy.deepcopy(bundle.model)  # hooks on the shared model would see other sessions' inputs
    batches = bundle.calibration_inputs(n_samples)
    return collect_grams(model, bundle.forward, batches, [layer_name], damp=0.0)[layer_name]


MAX_INPUT_VALUES = 3 * 1024 * 1024  # an input image of at most 3 x 1024 x 1024 values


def file_version(path: str) -> int:
    """Modification time (ns) of a file, or of the newest file in a directory; 0 if missing."""
    where = Path(path).expanduser()
    files = [f for f in where.iterdir() if f.is_file()] if where.is_dir() else [where]
    return max((f.stat().st_mtime_ns for f in files if f.exists()), default=0)


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """``"3, 224, 224"`` -> ``(3, 224, 224)``; a plain-words ValueError otherwise (also for inputs
    so large that calibration batches would exhaust the server's memory)."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"The input shape must be three positive numbers 'channels, height, width'. Got {text!r}.")
    if shape[0] * shape[1] * shape[2] > MAX_INPUT_VALUES:
        raise ValueError(f"The input shape {text!r} is too large: at most {MAX_INPUT_VALUES:,} values (3 x 1024 x 1024).")
    return shape


def save_upload(name: str, data: bytes) -> Path:
    """Write an uploaded file (bounded by ``MAX_UPLOAD_MB``) into this server's own private folder
    (see :func:`scratch_folder`), in a subfolder named by its content, so that the same upload is
    written once. The file is written whole or not at all."""
    if len(data) > MAX_UPLOAD_MB << 20:
        raise ValueError(f"'{name}' is {len(data) / 2**20:.0f} MB; uploads are limited to {MAX_UPLOAD_MB} MB.")
    if not data:
        raise ValueError(f"'{name}' is empty.")
    folder = scratch_folder("uploads") / hashlib.sha256(data).hexdigest()[:16]
    folder.mkdir(exist_ok=True)
    path = folder / (Path(name).name if Path(name).name not in ("", ".", "..") else "upload")
    if not (path.is_file() and not path.is_symlink() and path.read_bytes() == data):
        handle, temporary = tempfile.mkstemp(dir=folder)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    return path


# --- session state -----------------------------------------------------------------------------

DEFAULTS = {"model_choice": ModelChoice("builtin", DEFAULT_MODEL), "device": CPU, "layer": None, "density": 0.3}


ICON = Path(__file__).with_name("icon.png")  # the app's favicon, served by this server
NARROW_STYLE = Path(__file__).with_name("narrow.css")  # the layout of a window 900 px wide or less

# the sidebar's page links (Streamlit's own list would call the Home page "app")
NAVIGATION = [
    ("app.py", "Home", ":material/home:"),
    ("pages/1_Layer_inspector.py", "Layer inspector", ":material/search:"),
    ("pages/2_Factorize.py", "Factorize", ":material/call_split:"),
    ("pages/3_Compare.py", "Compare", ":material/compare_arrows:"),
    ("pages/4_Trade-offs.py", "Trade-offs", ":material/balance:"),
    ("pages/5_Learn.py", "Learn", ":material/school:"),
]


def setup_page(title: str) -> None:
    """Page config, shared session defaults (or what the URL says), page links and the sidebar
    summary; call first on every page."""
    # the tab's icon is a bundled image: a ':material/...:' one is fetched from fonts.gstatic.com
    st.set_page_config(page_title=f"{title} · DSF Explorer", page_icon=str(ICON), layout="wide")
    st.html(NARROW_STYLE)  # style only: drawn nowhere on the page
    state.from_url("model_choice", model_from_url, "model")
    state.from_url("layer", str)
    state.from_url("density", state.parse_density)
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    try:
        for path, label, icon in NAVIGATION:
            st.sidebar.page_link(path, label=label, icon=icon)
    except StreamlitPageNotFoundError:  # a page run on its own (AppTest.from_file): nothing to link
        pass
    choice = st.session_state.model_choice
    st.sidebar.caption(f"Model: **{choice.label}** · device: **{device().type}**")
    state.to_url("model", state.model_parameter(choice.kind, choice.name, choice.path), DEFAULT_MODEL)


def model_from_url(text: str) -> ModelChoice:
    """The model a link names, opened once to be sure it opens (a big checkpoint lazily; a ValueError says why not)."""
    kind, name, path = state.parse_model(text, list(BUILTIN_MODELS))
    choice = ModelChoice(kind, name, path, version=file_version(path) if path else 0)
    try:
        cached_model(choice)  # a big Hugging Face checkpoint: its headers only
    except Exception as exc:  # the directory a link names may not hold a model any more
        raise ValueError(plain_message(exc)) from exc
    return choice


def current_choice() -> ModelChoice:
    return st.session_state.model_choice


def current_bundle() -> ModelBundle:
    """The chosen model, loaded (cached); on failure the page shows why and stops. A lazily opened
    model is loaded only once the user asks for it (see :func:`whole_model_allowed`)."""
    choice = current_choice()
    if is_lazy(choice) and not whole_model_allowed("This page works on the whole model"):
        st.stop()
    return or_stop("load the model", cached_bundle, choice)


def current_model() -> ModelBundle | LazyModel:
    """What one-layer pages work from (see :func:`cached_model`); on failure the page says why and stops."""
    return or_stop("open the model", cached_model, current_choice())


def whole_model_allowed(why: str) -> bool:
    """For a lazily opened model: whether the user has asked to load all of it, with a button that
    states its size; a model over the ``DSF_MAX_MODEL_PARAMS`` limit is refused."""
    choice = current_choice()
    if st.session_state.get("whole_model") == choice:
        return True
    lazy = current_model()
    size = f"{lazy.n_params:,} parameters, {human_bytes(lazy.dense_bytes())} in float32"
    top = limit("DSF_MAX_MODEL_PARAMS")
    if lazy.n_params > top:
        st.error(f"{why}, which would need all of it in memory ({size}), over the limit of {top:,} parameters "
                 "(DSF_MAX_MODEL_PARAMS). The Layer inspector and Factorize pages read one layer at a time.")
        return False
    st.info(f"{why}: loading it takes {size}. The Layer inspector and Factorize pages need only one layer.")
    if st.button(f"Load the whole model ({human_bytes(lazy.dense_bytes())})", key="load_whole_model"):
        st.session_state.whole_model = choice
        return True
    return False


def cuda_label() -> str:
    if torch.cuda.is_available():
        return f"{CUDA} ({torch.cuda.get_device_name(0)})"
    return f"{CUDA} (no GPU found)"


def device() -> torch.device:
    """Where factorizations run: CUDA when chosen and present, else the CPU."""
    if st.session_state.get("device") == CUDA and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def warn_if_no_cuda() -> None:
    if st.session_state.get("device") == CUDA and not torch.cuda.is_available():
        st.warning(
            "CUDA was chosen, but this server has no CUDA GPU (torch.cuda.is_available() is False), "
            "or its torch is a CPU build. Everything runs on the CPU instead."
        )


def layers_or_stop(model: ModelBundle | LazyModel) -> list[LayerInfo]:
    """The model's factorizable layers; if it has none, the page says so and stops."""
    found = model.layers if isinstance(model, LazyModel) else list_layers(model.model)
    if not found:
        st.error("This model has no factorizable layer (Linear, Conv2d without groups, or Conv1D).")
        st.stop()
    return found


def show_skipped_layers(bundle: ModelBundle) -> None:
    """An expander listing the model's weighted layers that cannot be factorized, each with the
    reason (e.g. depthwise convolutions); nothing when there are none."""
    skipped = skipped_layers(bundle.model)
    if not skipped:
        return
    with st.expander(
        f"{len(skipped)} layers are not factorizable ({sum(layer.n_params for layer in skipped):,} parameters): "
        "the pages leave them as they are"
    ):
        table = {
            "layer": [layer.name for layer in skipped],
            "type": [layer.type for layer in skipped],
            "weight shape": ["x".join(map(str, layer.weight_shape)) for layer in skipped],
            "parameters": [layer.n_params for layer in skipped],
            "why not": [layer.reason for layer in skipped],
        }
        st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")


def choose_layer(model: ModelBundle | LazyModel, where=st.sidebar) -> LayerInfo:
    """A layer picker whose choice is shared by all pages (defaults to the largest layer)."""
    found = layers_or_stop(model)
    names = [layer.name for layer in found]
    if st.session_state.layer not in names and st.query_params.get("layer") == st.session_state.layer:
        st.warning(f"Ignored from the link: layer = {st.session_state.layer!r}, which this model does not have.")
    if st.session_state.layer not in names:
        st.session_state.layer = max(found, key=lambda layer: layer.shape[0] * layer.shape[1]).name
    if st.session_state.get("_layer_picker") not in names:  # first draw, or another model
        st.session_state["_layer_picker"] = st.session_state.layer
    picked = where.selectbox(
        "Layer",
        names,
        format_func=lambda n: f"{n}  ({'x'.join(map(str, found[names.index(n)].shape))})",
        key="_layer_picker",
        persist_state="session",
    )
    st.session_state.layer = picked
    state.to_url("layer", picked)
    return found[names.index(picked)]


def choose_density(where=st.sidebar, label: str = "Density (kept fraction of the weights)") -> float:
    """The density slider whose value is shared by all pages."""
    st.session_state.setdefault("_density_slider", float(st.session_state.density))
    value = where.slider(label, 0.01, 1.0, step=0.01, key="_density_slider", persist_state="session")
    st.session_state.density = value
    state.to_url("density", value, DEFAULTS["density"])
    return value


@dataclass(frozen=True, eq=False)
class Target:
    """The matrix a page works on: a model layer's weight, or a synthetic matrix."""

    label: str  # e.g. "fc (128 x 512)"
    key: tuple  # identifies the matrix, for result caches
    weight: torch.Tensor  # what factorize() takes: out x in, or the 4-D conv kernel
    matrix: torch.Tensor  # out x in
    gram: torch.Tensor | None  # undamped input Gram X^T X / rows, when calibration data exists
    gram_source: str  # where the Gram comes from, in words


SYNTHETIC = "Synthetic matrix"


@st.cache_resource(max_entries=4, show_spinner="Making the synthetic matrix...")
def cached_synthetic(m: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``dsf_core.examples.synthetic_matrix(m, n)``, made once (its Gram costs O(n^3))."""
    return synthetic_matrix(m, n)


def choose_target(model: ModelBundle | LazyModel) -> Target:
    """Sidebar pickers for the matrix to work on: a layer of the model (default) or a synthetic
    ``m x n`` matrix (rank 32 plus noise, with a Gram of unequal input scales). For a lazily opened
    model only the layer's weight is read, and its Gram only when asked for."""
    source = st.sidebar.radio("Matrix", ["Model layer", SYNTHETIC], persist_state="session", key="_target_source", horizontal=True)
    if source == SYNTHETIC:
        m = int(st.sidebar.number_input("Rows m", 2, 2048, 512, persist_state="session", key="_synthetic_m"))
        n = int(st.sidebar.number_input("Columns n", 2, 2048, 512, persist_state="session", key="_synthetic_n"))
        W, G = cached_synthetic(m, n)
        return Target(f"synthetic {m} x {n}", ("synthetic", m, n), W, W, G, f"synthetic inputs ({4 * n} rows)")
    layer = choose_layer(model)
    choice = current_choice()
    if isinstance(model, LazyModel):
        return lazy_target(model, choice, layer)
    bundle = model
    try:
        gram = calibration_gram(choice, layer.name)
        gram_source = f"{CALIBRATION_SAMPLES} calibration samples of {choice.label}"
    except Exception as exc:  # the model's own inputs failed: data-free methods still work
        gram, gram_source = None, f"no calibration data ({plain_message(exc)})"
    label = f"{layer.name} ({layer.shape[0]} x {layer.shape[1]})"
    return Target(
        label, (choice, layer.name), layer_kernel(bundle, layer.name), layer_weight(bundle, layer.name), gram, gram_source
    )


def lazy_target(model: LazyModel, choice: ModelChoice, layer: LayerInfo) -> Target:
    """The layer of a lazily opened model: its weight alone; its Gram if the user switches it on,
    after seeing what it costs."""
    cost = model.gram_cost(layer.name, CALIBRATION_SAMPLES)
    gram, gram_source = None, "no calibration data (the layer lies outside the model's blocks and head)"
    if cost is not None:
        wanted = st.sidebar.toggle("Calibration Gram", value=False, key="_lazy_gram")
        st.sidebar.caption(
            f"Needs the model up to block {cost.blocks}: reads {human_bytes(cost.read_bytes)} of weights, "
            f"holds up to {human_bytes(cost.memory_bytes)} at once, {cost.forward_passes} block forward passes "
            f"({CALIBRATION_SAMPLES} samples)."
        )
        gram_source = "no calibration data (switch on 'Calibration Gram' in the sidebar)"
        if wanted:
            try:
                gram = lazy_gram(choice, layer.name)
                gram_source = f"{CALIBRATION_SAMPLES} calibration samples of {choice.label}"
            except Exception as exc:  # the model's own inputs failed: data-free methods still work
                gram_source = f"no calibration data ({plain_message(exc)})"
    weight = or_stop("read the layer's weights", lazy_layer_weight, choice, layer.name)
    label = f"{layer.name} ({layer.shape[0]} x {layer.shape[1]})"
    return Target(label, (choice, layer.name, gram is not None), weight, weight, gram, gram_source)


def layer_weight(bundle: ModelBundle, name: str) -> torch.Tensor:
    """A copy of the layer's weight as an ``out x in`` float32 matrix (the model is not touched)."""
    return weight_matrix(bundle.model.get_submodule(name)).float().clone()


def layer_kernel(bundle: ModelBundle, name: str) -> torch.Tensor:
    """A copy of the layer's weight in its own shape (4-D for a conv kernel)."""
    module = bundle.model.get_submodule(name)
    weight = module.weight.detach()
    if weight.ndim != 4:
        return layer_weight(bundle, name)
    return weight.float().clone()

