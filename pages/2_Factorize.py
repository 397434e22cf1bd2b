"""Factorize: run one method on the chosen matrix, live, and see everything about its result."""

import pandas as pd
import streamlit as st

from dsf_app import factorize_run as fr
from dsf_app import figures, in_model, job_results, jobs, layer_stats, method_settings, numbers, session, state
from dsf_app.figures import downsample
from dsf_app.messages import plain_message
from dsf_core import METHODS
from dsf_core.plan import budget

JOB = "fact_job"
RESULTS = "fact_results"  # the bounded cache of outcomes (job_results), keyed by fr.run_key
MODEL_METRICS = "fact_model_metrics"  # the model's evaluation with one run's layer swapped in, by fr.run_key
AWARE = "Activation-aware"
QUICK_WAIT_SECONDS = 2.0  # a run this short shows its result at once (the 2 s target); longer ones go live

session.setup_page("Factorize")
st.title("Factorize")
target = session.choose_target(session.current_model())  # a big checkpoint: this layer alone
density = session.choose_density()
session.warn_if_no_cuda()
device = session.device()
m, n = target.matrix.shape
st.caption(
    f"Approximate **{target.label}** within {density:.0%} of its {m * n:,} parameters "
    f"({budget((m, n), density):,} stored numbers). Matrix and density are chosen in the sidebar."
)


def option_widget(key: str, name: str, option, value, automatic=None):
    """One widget for a method option: a selectbox for choices, else a number input (behind an
    "auto" checkbox when the default is the method's own choice, ``automatic`` here)."""
    if option.choices is not None:
        return st.selectbox(name, option.choices, index=option.choices.index(value), persist_state="session", key=key, help=option.help)
    if value is None:
        if st.checkbox(f"{name}: auto", value=True, persist_state="session", key=f"{key}_auto", help=option.help):
            return None
        value = fr.start_value(option) if automatic is None else automatic
    kind = option.kind
    return st.number_input(
        name,
        min_value=None if option.low is None else kind(option.low),
        max_value=None if option.high is None else kind(option.high),
        value=kind(value),
        step=1 if kind is int else None,
        format=None if kind is int else "%g",
        persist_state="session", key=key,
        help=f"{option.help} Allowed: {option.range_text()}.",
    )


def option_widgets(method: str, quick: bool) -> dict:
    """The method's options as widgets; returns their values (None: automatic)."""
    spec = METHODS[method]
    if not spec.options:
        st.caption(f"{method} has no options: the density alone decides what it keeps.")
        return {}
    base = fr.resolve_options(method, method_settings.options(method, quick))
    automatic = fr.automatic_values(method, (m, n), density)
    mode = "quick" if quick else "full"
    columns = st.columns(3)
    values = {}
    for i, (name, option) in enumerate(spec.options.items()):
        with columns[i % 3]:
            key = f"fact_opt_{method}_{mode}_{name}"
            option_from_url(key, method, name, option)
            values[name] = option_widget(key, name, option, base[name], automatic.get(name))
            state.to_url(f"opt_{name}", values[name], base[name])
    for param in [p for p in st.query_params if p.startswith("opt_") and p[4:] not in spec.options]:
        del st.query_params[param]  # another method's option
    return values


def option_from_url(key: str, method: str, name: str, option) -> None:
    """A link's ``opt_<name>`` value for the option widget ``key``, checked as the method checks it."""
    state.from_url(key, lambda text: option.check(method, name, option.kind(text)), f"opt_{name}")
    if key in st.session_state and option.default is None:
        st.session_state.setdefault(f"{key}_auto", False)  # a number from the link, not "auto"


def aware_choice(method: str) -> bool:
    """Data-free or activation-aware, where both make sense; says why not otherwise."""
    if not method_settings.reads_gram(method):
        st.caption(f"{method} is data-free only: it never reads calibration inputs.")
        return False
    if target.gram is None:
        st.caption(f"Activation-aware runs need calibration inputs, and this matrix has none ({target.gram_source}).")
        return False
    state.from_url("fact_aware", state.parse_choice(["Data-free", AWARE]), "objective")
    choice = st.radio(
        "Objective",
        ["Data-free", AWARE],
        persist_state="session", key="fact_aware",
        horizontal=True,
        help="Data-free minimises ||W - W_hat||_F; activation-aware minimises the layer's output error "
        "on the calibration inputs, sqrt(tr(D G D^T) / tr(W G W^T)) with D = W - W_hat.",
    )
    state.to_url("objective", choice, "Data-free")
    if choice == AWARE:
        st.caption(f"Input Gram from {target.gram_source}, damped by 1% of its mean diagonal for the fit.")
    return choice == AWARE


def draw_live(job: jobs.Job) -> None:
    """The convergence so far, from the library's callback."""
    history = [objective for _, objective in job.progress]
    if history:
        figure = figures.convergence(history, "Convergence so far")
        st.plotly_chart(figure, key="fact_live_convergence", width="stretch")
        st.caption(f"{steps_text(len(history))} so far; latest objective {numbers.readable(history[-1])}.")
    elif job.fraction is not None:
        st.caption(f"The first step is under way ({job.fraction:.0%} of the run done); its objective comes when it ends.")


def steps_text(count: int) -> str:
    return f"{count} step" + ("" if count == 1 else "s")


def stopped_text(steps: int) -> str:
    return "Stopped during the first step" if steps == 0 else f"Stopped after {steps_text(steps)}"


def collect_finished_job(cache: dict) -> None:
    """Move the result of a job that just ended into the cache (or keep its error to show)."""
    job = job_results.take_once(JOB)
    if job is None:
        return
    key = job_results.result_key(JOB)
    if job.error is not None:
        st.session_state.fact_failed = (key, job.error)
    else:
        job_results.remember(cache, key, job.result, limit=fr.cache_limit(job.result))


def draw_metrics(outcome: fr.Outcome) -> None:
    result = outcome.result
    dense = fr.dense_sizes(result.shape, result.factors[0].element_size())
    first = st.columns(4)
    first[0].metric("Relative error", numbers.readable(outcome.relative_error), help="||W - W_hat||_F / ||W||_F")
    if outcome.output_error is None:
        first[1].metric("Output error", "-", help="Needs calibration inputs.")
    else:
        help_text = "sqrt(tr(D G D^T) / tr(W G W^T)), D = W - W_hat"
        first[1].metric("Output error", numbers.readable(outcome.output_error), help=help_text)
    share = f"{result.n_params / dense['n_params']:.1%} of dense"
    first[2].metric("Parameters", f"{result.n_params:,}", share, delta_color="off", delta_arrow="off")
    first[3].metric("Bytes", f"{result.n_bytes:,}", f"dense: {dense['n_bytes']:,}", delta_color="off", delta_arrow="off",
                    help="Sparse factors as CSR (values, int32 column indices, row pointers), dense ones as values.")
    second = st.columns(4)
    second[0].metric("FLOPs per input row", f"{result.flops:,}", f"dense: {dense['flops']:,}", delta_color="off", delta_arrow="off")
    second[1].metric("Seconds", f"{result.seconds:.3f}")
    second[2].metric("Device", str(result.device))
    second[3].metric("Steps run", outcome.steps)
    if outcome.output_error is None:
        st.caption(f"No output error: {target.gram_source}.")
    else:
        st.caption(
            f"Output error: the layer's relative output error on the inputs of {target.gram_source} "
            "(activation-weighted error with the undamped Gram), whichever objective the run used."
        )
    with st.expander("All numbers, beside the dense matrix's"):
        numbers.table(pd.DataFrame(fr.summary_rows(outcome)))
        st.caption("What the method reports about its run:")
        st.dataframe(pd.DataFrame({"item": list(result.info), "value": [str(v) for v in result.info.values()]}),
                     hide_index=True, width="stretch")


def draw_side_by_side(charts: dict) -> None:
    """Figures in rows of up to three columns; ``charts`` maps each chart's key to its figure."""
    columns = st.columns(min(len(charts), 3))
    for i, (key, figure) in enumerate(charts.items()):
        columns[i % len(columns)].plotly_chart(figure, key=key, width="stretch")


def draw_factors(outcome: fr.Outcome) -> None:
    result = outcome.result
    if result.kind == "tt":
        st.subheader("Tensor-train cores")
        st.caption(
            "Each core (r_prev, m_k, n_k, r_next) is dense; shown unfolded as (r_prev m_k) x (n_k r_next). "
            f"Core shapes: {', '.join(str(tuple(core.shape)) for core in result.factors)}."
        )
        draw_side_by_side({
            f"fact_core_{i}": figures.heatmap(fr.core_matrix(core), f"Core {fr.factor_label(result, i)} {tuple(core.shape)}")
            for i, core in enumerate(result.factors)
        })
        return
    st.subheader("Sparsity pattern of each factor")
    dense_note = " These factors are dense: every entry is stored." if not any(result.sparse) else ""
    st.caption(
        "Black where a factor entry is nonzero (large factors are shown as blocks whose grey level is "
        f"their fraction of nonzeros); the product of the factors, left to right, is the approximation.{dense_note}"
    )
    draw_side_by_side({
        f"fact_spy_{i}": figures.spy(factor, fr.factor_label(result, i)) for i, factor in enumerate(result.factors)
    })


def draw_matrices(outcome: fr.Outcome) -> None:
    st.subheader("Original, approximation and error")
    original = target.matrix.detach().float().cpu()
    approximation = outcome.approximation
    limit = max(float(downsample(original).abs().max()), float(downsample(approximation).abs().max())) or 1.0
    error = original - approximation
    error_limit = float(downsample(error).abs().max()) or 1.0
    st.caption(
        f"W and W_hat share one colour scale (±{limit:.3g}); the error has its own (±{error_limit:.3g}, "
        f"{error_limit / limit:.0%} of the weights' scale), so that its pattern shows even when it is small."
    )
    draw_side_by_side({
        "fact_original": figures.heatmap(original, "Original W", zmax=limit),
        "fact_approx": figures.heatmap(approximation, "Approximation W_hat", zmax=limit),
        "fact_error": figures.heatmap(error, "Error W - W_hat", zmax=error_limit),
    })


def draw_spectra(outcome: fr.Outcome) -> None:
    st.subheader("Singular values")
    curves = {"original": outcome.original_values, "approximation": outcome.singular_values}
    title = f"Singular values: the product has numerical rank {outcome.rank} of {min(m, n)}"
    log = st.toggle("Logarithmic axis", value=True, persist_state="session", key="fact_spectrum_log")
    threshold = layer_stats.rank_threshold(outcome.singular_values, max(m, n), outcome.result.factors[0].dtype)
    st.plotly_chart(figures.spectrum(curves, title, log=log, threshold=threshold), key="fact_spectrum", width="stretch")
    st.caption(
        "Sparse factors can keep the full rank where a truncated SVD of the same budget cannot; "
        "the rank counts the approximation's singular values above the dashed line, max(m, n) x float eps x the largest."
    )


def draw_convergence(outcome: fr.Outcome) -> None:
    history = outcome.result.history
    st.subheader("Convergence")
    if outcome.stopped and len(history) <= 1:
        st.caption(f"Stopped after {steps_text(len(history))}: no curve to draw.")
        return
    if len(history) <= 1:
        st.caption(f"{outcome.result.method} is not iterative: it reports a single step.")
        return
    reported = {"relative error (above)": outcome.relative_error}
    if outcome.output_error is not None:
        reported["output error (above)"] = outcome.output_error
    st.plotly_chart(figures.convergence(history, reported=reported), key="fact_convergence", width="stretch")
    st.caption(
        "The objective the method reported at each step: the relative error of the problem it solves, which for "
        "an activation-aware DSF run is a rescaled one (W diag(sqrt(diag G))), not the output error. "
        "The dashed lines are the final errors reported above, on the original weights and inputs."
    )


def draw_in_model(outcome: fr.Outcome, key: tuple) -> None:
    """The what-if at model level (see dsf_app.in_model)."""
    st.subheader("In the model")
    found = in_model.model_layer(target)
    if found is None:
        return
    choice, layer_name = found
    bundle = session.current_bundle()
    name, label = bundle.metric_name, in_model.metric_label(bundle)
    metrics = in_model.cached_metrics(MODEL_METRICS, key)
    if metrics is None:
        st.caption(f"Swap this factorized layer into a copy of {choice.label} (every other layer dense) and "
                   f"measure its {label}.")
        if not st.button("Try in the model", key="fact_try", icon=":material/model_training:"):
            return
        with st.spinner("Evaluating the model with this layer factorized..."):
            metrics = in_model.measure(MODEL_METRICS, key, bundle, layer_name, outcome.result)
    dense = session.dense_metrics(choice)
    columns = st.columns(3)
    columns[0].metric(f"{label}, dense model", numbers.readable(dense[name], 4))
    columns[1].metric(f"with {layer_name} factorized", numbers.readable(metrics[name], 4), f"{metrics[name] - dense[name]:+.3g}",
                      delta_color="normal" if bundle.higher_is_better else "inverse")
    columns[2].metric("Other layers", "dense")
    others = ", ".join(f"{k} {numbers.readable(metrics[k], 4)} (dense {numbers.readable(dense[k], 4)})" for k in metrics if k != name and k in dense)
    st.caption(in_model.better_text(bundle) + (f" Also: {others}." if others else ""))


def draw_history(cache: dict) -> None:
    """The runs on this matrix that the page still holds: a table and their curves overlaid."""
    runs = [(key, outcome) for key, outcome in cache.items() if key[0] == target.key]
    if len(runs) < 2:
        return
    st.subheader(f"Runs on this matrix ({len(runs)})")
    rows = [fr.history_row(key, outcome) for key, outcome in runs]
    numbers.table(pd.DataFrame(rows))
    curves = {row["run"]: outcome.result.history for row, (_, outcome) in zip(rows, runs) if len(outcome.result.history) > 1}
    if curves:
        st.plotly_chart(figures.convergence_overlay(curves), key="fact_history_curves", width="stretch")


def draw_outcome(outcome: fr.Outcome, key: tuple) -> None:
    if outcome.stopped:
        reached = "are the factors it started from" if outcome.steps == 0 else "is what it had reached"
        st.info(f"{stopped_text(outcome.steps)}: below {reached}.")
    draw_metrics(outcome)
    draw_in_model(outcome, key)
    draw_factors(outcome)
    draw_matrices(outcome)
    draw_spectra(outcome)
    draw_convergence(outcome)


def start_run(key: tuple, method: str, options: dict, aware: bool) -> None:
    """Run the factorization as the page's job, reporting each step to its live view."""
    weight, matrix, gram = target.weight, target.matrix, target.gram

    def work(job: jobs.Job) -> fr.Outcome:
        def callback(step: int, objective: float) -> bool:
            return job.report((step, objective), fr.progress_fraction(method, (m, n), options, step))

        def heartbeat(step: int, within: float) -> bool:
            return job.report(None, fr.progress_fraction(method, (m, n), options, step, within))

        return fr.run(
            weight, matrix, gram, method, options, density=density, aware=aware, device=device, callback=callback,
            heartbeat=heartbeat, on_stop=lambda steps: job.halt(f"{stopped_text(steps)}; measuring what it reached..."),
        )

    job = job_results.start(JOB, key, work, f"{method} on {target.label}")
    st.session_state.pop("fact_failed", None)
    job.wait(QUICK_WAIT_SECONDS)  # a short run is drawn at once, without the live view


# --- method and options ------------------------------------------------------------------------

names = list(METHODS)
state.from_url("fact_method", state.parse_choice(names), "method")
method = st.selectbox("Method", names, index=names.index("dsf"), persist_state="session", key="fact_method")
state.to_url("method", method, "dsf")
state.from_url("fact_quick", state.parse_bool, "quick")
st.caption(METHODS[method].description)
quick = st.toggle(
    "Quick preview",
    value=True,
    persist_state="session", key="fact_quick",
    help="Start from the method's 'quick' preset (about 1 s on a 512 x 512 matrix); "
    "off: the papers' quality defaults.",
)
state.to_url("quick", quick, True)
preset = method_settings.options(method, quick=True)
if quick and preset:
    st.caption(f"Quick preview: {method} starts from its 'quick' preset {preset} over the defaults.")
elif quick:
    st.caption(f"Quick preview: {method} has no 'quick' preset (it is fast as it is), so it uses its defaults.")
values = option_widgets(method, quick)
aware = aware_choice(method)

try:
    options = fr.resolve_options(method, values)
except (ValueError, TypeError) as exc:
    st.error(f"Check the options: {plain_message(exc)}")
    options = None

cache = st.session_state.setdefault(RESULTS, {})
key = None if options is None else fr.run_key(target.key, method, options, density, aware, device)
cached = None if key is None else job_results.recall(cache, key)
clicked = st.button("Factorize", key="fact_run", type="primary", disabled=options is None)
if clicked and (cached is None or cached.stopped):  # a finished result is never recomputed
    start_run(key, method, options, aware)

if not jobs.show_running(JOB, draw_live) and key is not None:
    collect_finished_job(cache)
    failed = st.session_state.get("fact_failed")
    outcome = job_results.recall(cache, key)
    if failed is not None and failed[0] == key:
        st.error(f"Could not factorize: {failed[1]}")
    elif outcome is not None:
        draw_outcome(outcome, key)
    else:
        st.info("Press **Factorize** to run this method with these options.")
    draw_history(cache)
