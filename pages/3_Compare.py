"""Compare: every method on the chosen matrix at the same budget, and across densities."""

import streamlit as st

from dsf_app import comparison, in_model, job_results, jobs, numbers, session, state
from dsf_core import METHODS
from dsf_core.methods._common import PATTERNS
from dsf_core.plan import budget

session.setup_page("Compare")
target = session.choose_target(session.current_model())  # a big checkpoint: this layer alone
density = session.choose_density()
device = session.device()

st.title("Compare methods at equal budget")
st.caption(
    f"Every method on **{target.label}** with the same budget of stored parameters "
    f"(density {density:.2f}: {budget(target.matrix.shape, density):,} parameters). "
    f"Device: **{device.type}**."
)
session.warn_if_no_cuda()

left, middle, right = st.columns([3, 2, 1])
state.from_url("cmp_methods", state.parse_choices(list(METHODS)), "methods")
methods = left.multiselect("Methods", list(METHODS), default=list(METHODS), persist_state="session", key="cmp_methods")
state.to_url("methods", methods, list(METHODS))
modes = ["Data-free", "Activation-aware"]
state.from_url("cmp_mode", state.parse_choice(modes), "objective")
state.from_url("cmp_quick", state.parse_bool, "quick")
mode = middle.radio(
    "Objective", modes, horizontal=True, persist_state="session", key="cmp_mode", disabled=target.gram is None,
    help=f"Activation-aware, the methods that read a Gram ({', '.join(comparison.GRAM_METHODS)}) fit the layer's "
    "outputs on the calibration inputs instead of its weights; the others always work data-free.",
)
state.to_url("objective", mode, modes[0])
aware = mode == modes[1] and target.gram is not None
quick = right.toggle(
    "Quick presets", value=True, persist_state="session", key="cmp_quick", help="Fewer iterations: about 1 s per 512 x 512 matrix."
)
state.to_url("quick", quick, True)
patterned = comparison.patterned_methods()
pattern = left.selectbox(
    "Sparsity pattern", PATTERNS, persist_state="session", key="cmp_pattern",
    help=f"An n:m pattern (e.g. 2:4 for sparse tensor cores) for every method that takes one ({', '.join(patterned)}); "
    "the others run unstructured.",
)
has_gram = target.gram is not None
st.caption(
    f"Calibration Gram: {target.gram_source}. "
    + ("*Output error* is the layer's relative output error on those inputs." if has_gram else "")
)
if not methods:
    st.info("Choose at least one method.")
    st.stop()


def start(job_key: str, made_for: tuple, run, density, label: str) -> None:
    """Start ``run`` of the chosen methods as job ``job_key``: ``comparison.run_all`` at one
    ``density``, or ``comparison.sweep`` over a list of them."""
    work = job_results.reporting(run, target, density, methods, aware=aware, quick=quick, device=device, pattern=pattern)
    job_results.start(job_key, made_for, work, label)


def progress(total: int):
    """A running job's view: how many of its ``total`` runs are done, and the last few results."""
    return lambda job: st.caption(comparison.progress_text(job.progress, total))


def finished_rows(job_key: str, store: dict, made_for: tuple, failed: str, unit: str):
    """The rows for ``made_for`` once job ``job_key`` has ended (cached, or after Stop the ``unit`` done,
    said in a warning) and the job if it was for ``made_for``; its error shows as ``Could not <failed>``."""
    rows, job = job_results.result_for(job_key, store, made_for)
    if job is not None and job.error:
        st.error(f"Could not {failed}: {job.error}")
    elif rows is None and job is not None and job.stopped:
        st.warning(f"Stopped: the {len(job.result)} {unit} done before Stop.")
        rows = job.result
    return rows, job


# --- one density ---------------------------------------------------------------------------------
st.subheader(f"At density {density:.2f}")
options = (tuple(methods), aware, quick, str(device), pattern)
results = st.session_state.setdefault("cmp_results", {})
MODEL_METRICS = "cmp_model_metrics"  # the model with one compared layer swapped in, by (key, method)
key = (target.key, density, *options)


def try_in_model(rows) -> tuple[str, dict] | None:
    """Each compared layer swapped into a copy of the model, evaluated once asked for (cached by run):
    the table's column name and its value per method, or None until then."""
    ran = [row for row in rows if row.result is not None]
    found = in_model.model_layer(target) if ran else None
    if found is None:
        return None
    choice, layer_name = found
    measured = {row.method: in_model.cached_metrics(MODEL_METRICS, (key, row.method)) for row in ran}
    if None in measured.values():
        ask = st.empty()  # the offer, gone once taken
        with ask.container():
            st.caption(f"Swap each method's factorized layer into a copy of {choice.label} (every other layer dense) "
                       "and measure the model: one evaluation per method.")
            clicked = st.button("Try each in the model", key="cmp_try", icon=":material/model_training:")
        if not clicked:
            return None
        ask.empty()
        bundle = session.current_bundle()
        with st.spinner(f"Evaluating the model with {layer_name} factorized by each method..."):
            measured = {row.method: in_model.measure(MODEL_METRICS, (key, row.method), bundle, layer_name, row.result)
                        for row in ran}
    bundle = session.current_bundle()
    dense = session.dense_metrics(choice)
    st.caption(f"*{in_model.metric_label(bundle)} in the model*: {choice.label} with {layer_name} alone replaced by "
               f"each method's factors, every other layer dense; {in_model.dense_text(bundle, dense)}. "
               + in_model.better_text(bundle))
    name = f"{in_model.metric_label(bundle)} in the model"
    return name, {method: metrics[bundle.metric_name] for method, metrics in measured.items()}


def table(rows):
    slot = st.container()  # the table above the button that adds its model column
    measured = try_in_model(rows)
    with slot:
        # a table with the model column is a new element: the grid keeps a redrawn table's column formats
        numbers.table(comparison.table(rows, with_output_error=has_gram, in_model=measured),
                      key="cmp_table_in_model" if measured else "cmp_table")
        if comparison.best(rows, "error"):
            st.markdown(comparison.winners(rows))


if st.button("Run the comparison", key="cmp_run", type="primary", icon=":material/play_arrow:"):
    start("cmp_job", key, comparison.run_all, density, f"{len(methods)} methods at density {density:.2f}")
if not jobs.show_running("cmp_job", progress(len(methods))):
    rows, job = finished_rows("cmp_job", results, key, "compare the methods", "methods")
    if rows is not None:
        table(rows)
    elif job is None:
        st.info("Press *Run the comparison* to factorize the matrix with every chosen method.")
st.caption(
    "Relative error is ||W - W_hat||_F / ||W||_F. Parameters are stored values (nonzeros of sparse "
    "factors, every entry of dense ones); bytes count CSR indices; FLOPs are those of one "
    "matrix-vector product through the factors."
)

# --- error against density ---------------------------------------------------------------------
st.subheader("Error against density")
densities = st.multiselect(
    "Densities", comparison.SWEEP_DENSITIES, default=[d for d in comparison.SWEEP_DENSITIES if d >= 0.05],
    format_func=lambda d: f"{d:.2f}", persist_state="session", key="cmp_densities",
)
y_choices = ["relative error", "output error"] if has_gram else ["relative error"]
y_axis = st.radio("Plot", y_choices, horizontal=True, persist_state="session", key="cmp_sweep_y")
sweeps = st.session_state.setdefault("cmp_sweeps", {})
sweep_key = (target.key, tuple(sorted(densities)), *options)


def plot(rows):
    fig = comparison.sweep_figure(rows, methods, output_error=y_axis == "output error")
    st.plotly_chart(fig, key="cmp_sweep_plot", width="stretch")


if st.button("Run the sweep", key="cmp_sweep_run", icon=":material/show_chart:", disabled=not densities):
    label = f"{len(methods)} methods x {len(densities)} densities"
    start("cmp_sweep_job", sweep_key, comparison.sweep, densities, label)
if not jobs.show_running("cmp_sweep_job", progress(len(methods) * len(densities))):
    rows, job = finished_rows("cmp_sweep_job", sweeps, sweep_key, "run the sweep", "runs")
    if rows is not None:
        plot(rows)
        missing = [f"{r.method} at {r.density:.2f}: {r.note}" for r in rows if not r.ok]
        if missing:
            st.caption("Not plotted: " + "; ".join(missing) + ".")
    elif not densities:
        st.info("Choose at least one density.")
    elif job is None:
        st.info("Press *Run the sweep* to see where the methods cross over.")
st.caption("Each point is one factorization of the matrix; where lines cross, the better method changes.")
