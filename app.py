"""DSF Explorer, Home: choose the model and the device, and see what the model holds."""

from pathlib import Path

import pandas as pd
import streamlit as st

from dsf_app import in_model, numbers, session, state
from dsf_app.messages import or_stop, plain_message
from dsf_core.layers import list_layers
from dsf_core.limits import human_bytes
from dsf_core.models import BUILTIN_MODELS
from dsf_core.models.loaders import check_torchvision_classifier

session.setup_page("Home")
st.title("DSF Explorer")
st.markdown(
    "Look inside neural-network weight matrices and compress them by sparse factorization: "
    "**DSF** (`W ~ A B`, both factors sparse), **PALM4MSA** (a product of sparse factors), "
    "**SVD**, **tensor-train** and pruning baselines, all at the same parameter budget. "
    "Pick a model here, then open a page on the left: *Layer inspector*, *Factorize*, *Compare*, "
    "*Trade-offs* or *Learn*."
)

SOURCES = {
    "builtin": "Built-in model",
    "torchvision": "torchvision architecture + weights file",
    "hf": "Hugging Face model directory",
    "checkpoint": "Upload a checkpoint",
}


class Blamed(Exception):
    """A load failure and the key of the control whose value caused it."""

    def __init__(self, control: str, cause: BaseException):
        super().__init__(plain_message(cause))
        self.control = control


def blame(control: str, function, *args):
    """``function(*args)``; a failure is blamed on the control ``control``."""
    try:
        return function(*args)
    except Exception as exc:  # the user's file, path or form: said under that control
        raise Blamed(control, exc) from exc


# the control blamed when a model of each source fails to load (its file, directory or name)
LOADED_FROM = {"builtin": "home_builtin", "torchvision": "home_tv_path", "hf": "home_hf_path", "checkpoint": "home_upload"}


def load(make_choice) -> None:
    """Make the model ``make_choice()`` names the model of every page, if it loads; otherwise
    keep the current one and remember why and which control caused it, for :func:`load_error` to
    show under that control. A widget callback, so the whole page (and the sidebar) is then drawn
    for the new model."""
    st.session_state.home_load_error = None
    try:
        choice = make_choice()
        blame(LOADED_FROM[choice.kind], session.cached_model, choice)  # a big Hugging Face checkpoint: its headers only
    except Blamed as failed:
        st.session_state.home_load_error = (failed.control, str(failed))
        return
    state.switch_model(st.session_state.model_choice.label, choice.label)
    st.session_state.model_choice = choice


def load_error(control: str) -> None:
    """Why the last load failed, in plain words, right under ``control`` if it caused it."""
    failed = st.session_state.get("home_load_error")
    if failed and failed[0] == control:
        st.error(f"Could not load the model: {failed[1]}")


def torchvision_choice() -> session.ModelChoice:
    state = st.session_state
    arch = state.home_tv_arch.strip()
    blame("home_tv_arch", check_torchvision_classifier, arch)
    shape = blame("home_tv_shape", session.parse_input_shape, state.home_tv_shape)
    path = state.home_tv_path.strip()
    classes = int(state.home_tv_classes) or None
    return session.ModelChoice("torchvision", arch, path, classes, shape, session.file_version(path))


def hf_choice() -> session.ModelChoice:
    directory = Path(st.session_state.home_hf_path.strip()).expanduser()
    if not directory.is_dir():  # a hub id would make this server download it
        raise Blamed("home_hf_path", FileNotFoundError(f"No such directory on this server: '{directory}'."))
    return session.ModelChoice("hf", path=str(directory), version=session.file_version(str(directory)))


def upload_choice() -> session.ModelChoice:
    state = st.session_state
    upload = state.home_upload
    arch = state.home_up_arch.strip()
    if arch:
        blame("home_up_arch", check_torchvision_classifier, arch)
    shape = blame("home_up_shape", session.parse_input_shape, state.home_up_shape)
    path = blame("home_upload", session.save_upload, upload.name, upload.getvalue())
    return session.ModelChoice("checkpoint", arch, str(path), int(state.home_up_classes) or None, shape)


left, right = st.columns([2, 1])
with left:
    current = session.current_choice()
    source = st.radio(
        "Model source",
        list(SOURCES),
        index=list(SOURCES).index(current.kind),
        format_func=SOURCES.get,
        horizontal=True,
        persist_state="session", key="home_source",
    )
    if source == "builtin":
        names = list(BUILTIN_MODELS)
        st.selectbox(
            "Built-in model",
            names,
            index=names.index(current.name) if current.kind == "builtin" else None,
            format_func=lambda n: f"{n}: {BUILTIN_MODELS[n][1]}",
            placeholder="Choose a built-in model",
            key="home_builtin",
            on_change=lambda: load(lambda: session.ModelChoice("builtin", st.session_state.home_builtin)),
        )
        load_error("home_builtin")
    elif source == "torchvision":
        arch = st.text_input("Architecture (e.g. resnet18)", persist_state="session", key="home_tv_arch")
        load_error("home_tv_arch")
        path = st.text_input("Weights file on this server (a state dict: .pth, .pt or .safetensors)", persist_state="session", key="home_tv_path")
        load_error("home_tv_path")
        classes = st.number_input("Number of classes (0: the architecture's default)", 0, 100_000, 0, persist_state="session", key="home_tv_classes")
        shape = st.text_input("Input shape (channels, height, width)", "3, 224, 224", persist_state="session", key="home_tv_shape")
        load_error("home_tv_shape")
        st.button("Load", key="home_tv_load", disabled=not (arch and path), on_click=load, args=(torchvision_choice,))
    elif source == "hf":
        if current.kind == "hf":
            st.session_state.setdefault("home_hf_path", current.path)
        path = st.text_input("Model directory on this server (config.json + .safetensors)", persist_state="session", key="home_hf_path")
        load_error("home_hf_path")
        st.button("Load", key="home_hf_load", disabled=not path, on_click=load, args=(hf_choice,))
    else:
        st.caption(
            f"A state dict of a torchvision architecture (read without unpickling code: safetensors or "
            f"`weights_only=True`), or a TorchScript file (compiled code that runs here: only load files you "
            f"trust); at most {session.MAX_UPLOAD_MB} MB."
        )
        upload = st.file_uploader("Checkpoint", type=["pt", "pth", "safetensors"], key="home_upload")
        empty = upload is not None and upload.size == 0
        if empty:  # said at once: there is nothing to load
            st.error(f"'{upload.name}' is empty (0 bytes): expected a checkpoint file.")
        else:
            load_error("home_upload")
        arch = st.text_input("torchvision architecture of a state dict (empty for TorchScript)", persist_state="session", key="home_up_arch")
        load_error("home_up_arch")
        classes = st.number_input("Number of classes (0: the architecture's default)", 0, 100_000, 0, persist_state="session", key="home_up_classes")
        shape = st.text_input("Input shape (channels, height, width)", "3, 224, 224", persist_state="session", key="home_up_shape")
        load_error("home_up_shape")
        st.button("Load", key="home_up_load", disabled=upload is None or empty, on_click=load, args=(upload_choice,))
with right:
    options = [session.CPU, session.CUDA]
    st.radio(
        "Device",
        options,
        index=options.index(st.session_state.device),
        format_func=lambda d: session.cuda_label() if d == session.CUDA else "CPU",
        key="home_device",
        on_change=lambda: st.session_state.update(device=st.session_state.home_device),
    )
    session.warn_if_no_cuda()


def lazy_summary(lazy) -> None:
    """A Hugging Face checkpoint opened lazily: its layers from the headers; the dense model's
    evaluation only when asked for (it loads the whole model)."""
    st.caption(f"{lazy.source.config.model_type} checkpoint in `{lazy.directory}`, opened lazily: "
               f"{human_bytes(lazy.stored_bytes())} of weights on disk, none read yet.")
    cols = st.columns(3)
    cols[0].metric("Parameters", f"{lazy.n_params:,}")
    cols[1].metric("Factorizable layers", len(lazy.layers))
    cols[2].metric("In those layers", f"{sum(layer.n_params for layer in lazy.layers) / max(lazy.n_params, 1):.0%}")
    st.dataframe(
        pd.DataFrame(
            {
                "layer": [layer.name for layer in lazy.layers],
                "type": [layer.type for layer in lazy.layers],
                "matrix (out x in)": [f"{layer.shape[0]} x {layer.shape[1]}" for layer in lazy.layers],
                "weight shape": ["x".join(map(str, layer.weight_shape)) for layer in lazy.layers],
                "dtype": [lazy.dtype(layer.name) for layer in lazy.layers],
                "parameters": [layer.n_params for layer in lazy.layers],
            }
        ),
        hide_index=True,
        width="stretch",
    )
    st.caption("The Layer inspector and Factorize pages read the chosen layer's weight alone.")
    if session.whole_model_allowed("Evaluating the dense model loads the whole model"):
        bundle = session.current_bundle()
        metrics = or_stop("evaluate the model", session.dense_metrics, session.current_choice())
        st.metric(in_model.metric_label(bundle), numbers.readable(metrics[bundle.metric_name], 4))


model = session.current_model()
choice = session.current_choice()
st.subheader(choice.label)
if session.is_lazy(choice):
    lazy_summary(model)
    st.stop()
bundle = model
st.caption(f"{bundle.description or bundle.task} · weights from `{bundle.source}`")
layers = list_layers(bundle.model)
metrics = or_stop("evaluate the model", session.dense_metrics, choice)
n_params = sum(p.numel() for p in bundle.model.parameters())
cols = st.columns(4)
cols[0].metric("Parameters", f"{n_params:,}")
cols[1].metric("Factorizable layers", len(layers))
cols[2].metric("In those layers", f"{sum(layer.n_params for layer in layers) / max(n_params, 1):.0%}")
cols[3].metric(in_model.metric_label(bundle), numbers.readable(metrics[bundle.metric_name], 4))
if not layers:
    st.warning(
        "This model has no layer DSF Explorer can factorize (Linear, ungrouped Conv2d, transformers Conv1D). "
        "A TorchScript file keeps its layers compiled, so its weights cannot be swapped for factors: "
        "load a state dict of its architecture instead."
    )
st.dataframe(
    pd.DataFrame(
        {
            "layer": [layer.name for layer in layers],
            "type": [layer.type for layer in layers],
            "matrix (out x in)": [f"{layer.shape[0]} x {layer.shape[1]}" for layer in layers],
            "weight shape": ["x".join(map(str, layer.weight_shape)) for layer in layers],
            "parameters": [layer.n_params for layer in layers],
        }
    ),
    hide_index=True,
    width="stretch",
)
session.show_skipped_layers(bundle)
other = {k: v for k, v in metrics.items() if k != bundle.metric_name}
if other:
    st.caption("Other measures of the dense model: " + ", ".join(f"{k} = {numbers.readable(v, 4)}" for k, v in other.items()))
