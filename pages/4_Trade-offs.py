"""Trade-offs: compress the whole model (or some layers) and see its metric against its size."""

from pathlib import Path

import streamlit as st

from dsf_app import job_results, jobs, method_settings, numbers, session, state, tradeoffs
from dsf_app.messages import or_stop
from dsf_core import METHODS

session.setup_page("Trade-offs")
bundle = session.current_bundle()
choice = session.current_choice()
density = session.choose_density()

st.title("Trade-offs: model metric against size")
better = "higher" if bundle.higher_is_better else "lower"
st.caption(
    f"Compress a copy of **{choice.label}** layer by layer and measure its **{bundle.metric_name}** "
    f"({better} is better) against what it stores. The loaded model itself is never changed. "
    "Runs on the CPU."
)
if "trade_folder" not in st.session_state:
    st.session_state.trade_folder = tradeoffs.checkpoint_folder()

# --- settings ------------------------------------------------------------------------------------
layers = session.layers_or_stop(bundle)
names = [layer.name for layer in layers]
shapes = {layer.name: "x".join(map(str, layer.shape)) for layer in layers}
left, right = st.columns(2)
state.from_url("trade_method", state.parse_choice(list(METHODS)), "method")
method = left.selectbox("Method", list(METHODS), persist_state="session", key="trade_method")
state.to_url("method", method, list(METHODS)[0])
left.caption(METHODS[method].description)
picked = right.multiselect(
    "Layers", names, default=names, persist_state="session", key="trade_layers", format_func=lambda n: f"{n} ({shapes[n]})"
)
calibration = int(left.number_input(
    "Calibration samples (0: data-free)", 0, 512, session.CALIBRATION_SAMPLES, 16, persist_state="session", key="trade_calibration"
))
reads_gram = calibration > 0 and method_settings.reads_gram(method)
sequential = right.checkbox(
    "Sequential Grams (on the partly compressed model)", value=False,
    persist_state="session", key="trade_sequential", disabled=not reads_gram,
    help="Later layers then see (and correct for) earlier layers' errors, at the cost of one pass over the "
    "calibration samples per layer; otherwise one pass over the original model collects every Gram.",
)
weighs_rows = reads_gram and METHODS[method].takes_row_weights
output_weighting = right.checkbox(
    "Output weighting", value=bundle.compress_defaults.get("output_weighting", False),
    persist_state="session", key="trade_output_weighting", disabled=not weighs_rows,
    help="Weigh each layer's output rows by how much they move the model's output (one backward pass per "
    "calibration batch). Recommended for some models (minilm); measured slightly worse on others.",
) and weighs_rows
state.from_url("trade_quick", state.parse_bool, "quick")
quick = right.toggle("Quick presets", value=True, persist_state="session", key="trade_quick")
state.to_url("quick", quick, True)
if not reads_gram:
    why = "no calibration samples." if calibration == 0 else "it reads no Gram."
    st.caption(f"{method} works data-free here: {why}")
with st.expander("Per-layer densities", expanded=False):
    keep_below = int(st.number_input(
        "Keep layers with fewer parameters than this dense (0: none)", 0, 10**12, 0, step=1000,
        persist_state="session", key="trade_keep_below",
    ))
    overrides = st.text_area(
        "Densities of their own, one PATTERN=DENSITY per line (glob patterns of layer names; 1 keeps a layer "
        "dense; the first matching line wins, before the rule above)",
        persist_state="session", key="trade_overrides", placeholder="fc=0.5\nconvs.*=0.2",
    )
    st.caption(
        "Every other layer gets the density of the sidebar. A layer whose budget is too small for the method "
        "(e.g. below rank 1 for SVD) is kept dense and listed with the run, instead of failing it."
    )
try:
    own_densities = tradeoffs.layer_densities(layers, keep_below, overrides)
except ValueError as exc:
    st.error(str(exc))
    st.stop()
chosen_layers = tuple(picked) if len(picked) < len(names) else ()
settings = tradeoffs.Settings(
    method, density, chosen_layers, calibration, sequential, output_weighting, quick, own_densities
)
NOT_REPLAYABLE = (
    "The command line takes built-in models, Hugging Face directories and TorchScript files; this model "
    "(a state dict with its architecture) loads from Python: `dsf_core.models.loaders.load_torchvision`, "
    "then `dsf_core.compress.compress_model`."
)
if choice.replayable:
    st.caption("The same run from a terminal (it prints each layer's error and writes the checkpoint):")
    st.code(tradeoffs.cli_command(settings, choice.spec), language="bash", wrap_lines=True)
else:
    st.caption(NOT_REPLAYABLE)


def show_progress(job):
    done = [item for item in job.progress if item is not None]
    if done:
        st.caption(f"{len(done)} layers compressed; last: {done[-1].name}, relative error {numbers.readable(done[-1].error)}")
    elif job.fraction:
        st.caption("The first layers were kept dense (their own density, or a budget too small for the method).")


def start(job_key: str, runs: list, label: str):
    work = job_results.reporting(tradeoffs.sweep, bundle, runs, choice.spec, st.session_state.trade_folder)
    job_results.start(job_key, choice, work, label)


if not picked:
    st.info("Choose at least one layer.")
elif st.button("Compress", key="trade_run", type="primary", icon=":material/compress:"):
    start("trade_job", [settings], f"Compressing with {settings.label}")
jobs.show_running("trade_job", show_progress)

st.subheader("Sweep")
cols = st.columns(2)
sweep_methods = cols[0].multiselect("Methods", list(METHODS), default=[method], persist_state="session", key="trade_sweep_methods")
sweep_densities = cols[1].multiselect(
    "Densities", [0.05, 0.1, 0.2, 0.3, 0.5, 0.7], default=[0.1, 0.3, 0.5], persist_state="session", key="trade_sweep_densities",
    format_func=lambda d: f"{d:.2f}",
)
grid = tradeoffs.grid(settings, sweep_methods, sweep_densities)
st.caption(f"{len(grid)} runs, each a compression of the chosen layers with the settings above.")
if st.button("Run the sweep", key="trade_sweep_run", icon=":material/show_chart:", disabled=not (grid and picked)):
    start("trade_sweep_job", grid, f"Sweep of {len(grid)} runs")
jobs.show_running("trade_sweep_job", show_progress)

# --- results -------------------------------------------------------------------------------------
runs_by_model = st.session_state.setdefault("trade_runs", {})
for job_key in ("trade_job", "trade_sweep_job"):
    finished = job_results.take_once(job_key)
    if finished is not None and finished.result is not None and finished.result.runs:
        store = runs_by_model.setdefault(job_results.result_key(job_key), [])
        tradeoffs.keep(store, finished.result.runs)
        if store is runs_by_model.get(choice):
            st.session_state.trade_pick = store[-1].number  # show the newest run's details
    job = jobs.current(job_key)
    if job is None or job.running or job_results.result_key(job_key) != choice:
        continue
    if job.error:
        st.error(f"Could not compress the model: {job.error}")
    for failure in job.result.failures if job.result else []:
        st.error(f"Could not compress: {failure}")
    if job.stopped:
        kept = len(job.result.runs) if job.result else 0
        st.warning(f"Stopped: {kept} run(s) kept; the table says which ones were stopped part-way.")

runs = runs_by_model.get(choice, [])
if not runs:
    st.info("Press *Compress* or *Run the sweep*; each run adds a point to the plots.")
    st.stop()

references = st.session_state.setdefault("trade_dense", {})
dense = job_results.recall(references, choice)
if dense is None:
    metric = or_stop("evaluate the dense model", session.dense_metrics, choice)[bundle.metric_name]
    dense = tradeoffs.dense_reference(bundle, metric)
    job_results.remember(references, choice, dense, limit=4)

st.subheader("Runs")
plots = st.columns(2)
for column, axis in zip(plots, tradeoffs.AXES):
    fig = tradeoffs.metric_figure(
        runs, dense, x=axis, metric_name=bundle.metric_name, higher_is_better=bundle.higher_is_better
    )
    column.plotly_chart(fig, key=f"trade_plot_{axis}", width="stretch")
st.caption(
    "Each point is one compressed model (stopped runs are left out); the star and dashed line are the "
    "dense model. Stored values count every number the model keeps (nonzeros of sparse factors, biases, layers "
    "left dense), so they exceed the command line's `n_params_compressed`, which counts the compressed layers' "
    "weights alone; checkpoint bytes are the size of its compressed safetensors file."
)
numbers.table(tradeoffs.runs_table(runs, bundle.metric_name))

by_number = {run.number: run for run in runs}
number = st.selectbox(
    "Details of run", list(reversed(by_number)), format_func=lambda k: by_number[k].name, persist_state="session", key="trade_pick"
)
run = by_number[number]
st.plotly_chart(tradeoffs.layer_error_figure(run), key="trade_layer_errors", width="stretch")
if run.kept_dense:
    st.caption("Kept dense: " + "; ".join(f"**{name}**: {why}" for name, why in run.kept_dense.items()))
if dense.latency_ms is not None and run.latency_ms is not None:
    st.caption(
        f"Measured latency (median of {tradeoffs.LATENCY_REPEATS} forward passes on {tradeoffs.LATENCY_BATCH} samples, "
        f"this server's CPU): dense {dense.latency_ms:.2f} ms, this run {run.latency_ms:.2f} ms."
    )
st.caption(
    "Relative error of each layer's weight and, with calibration data, its activation-weighted error on "
    "the layer's (damped) calibration Gram: how much its outputs change."
)
if run.stopped:
    st.warning(
        f"Run {run.name} was stopped: only {len(run.layers)} of its {run.n_layers} layers are compressed, so its "
        "checkpoint is a partial one."
    )
if not run.stopped or st.checkbox("Download the partial checkpoint anyway", key="trade_partial_ok"):
    st.download_button(
        "Download the partial checkpoint" if run.stopped else "Download the compressed checkpoint",
        data=Path(run.checkpoint).read_bytes,
        file_name=tradeoffs.download_name(run, choice.label), mime="application/octet-stream",
        key="trade_download", icon=":material/download:",
    )
if choice.replayable:
    st.caption("Load it with `dsf_core.checkpoint.load_compressed(path, base_model)`, or evaluate it from a terminal:")
    st.code(
        f"{tradeoffs.cli_command(run.settings, choice.spec)}\n{tradeoffs.cli_evaluate_command(choice.spec)}",
        language="bash", wrap_lines=True,
    )
else:
    st.caption("Load it with `dsf_core.checkpoint.load_compressed(path, base_model)`. " + NOT_REPLAYABLE)
