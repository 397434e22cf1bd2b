"""Learn: toy matrices, each method explained with its formula, and live demonstrations of when
each one wins."""

import math

import pandas as pd
import streamlit as st

from dsf_app import figures, job_results, jobs, learn, numbers, session, toys
from dsf_core import METHODS

COMPARE_JOB, HADAMARD_JOB, LOW_RANK_JOB = "learn_compare_job", "learn_had_job", "learn_lr_job"

session.setup_page("Learn")
density = session.choose_density(label="Density for the comparison (kept fraction)")
session.warn_if_no_cuda()
device = session.device()
results = st.session_state.setdefault("learn_results", {})

st.title("Learn: sparse factorization on toy matrices")
st.markdown(
    "Every method here stores a weight matrix `W` (m x n) in fewer numbers, its **budget**: "
    "`density x m x n` stored parameters. Which method wins depends on the *structure* of `W`. "
    "Make a toy matrix with a known structure, read how each method works, and watch them compete."
)


def show_comparison(result: learn.Comparison, prefix: str, title: str, built_for: tuple[str, ...] = ()) -> None:
    """The table and bar chart of a comparison, with who won (computed from its rows), what Stop
    left out and what could not run."""
    st.markdown(learn.verdict(result.rows, built_for))
    numbers.table(pd.DataFrame(result.rows), key=f"{prefix}_table")
    st.plotly_chart(learn.error_bars(result.rows, title), key=f"{prefix}_bars", width="stretch")
    st.caption(
        f"Relative error ||W - Ŵ||_F / ||W||_F (log scale) at density {result.density:.4g}, "
        f"each method with its quick options, on {result.device}."
    )
    if result.stopped:
        st.info(f"Stopped after {len(result.rows)} of {result.n_methods} methods: the table shows what was done.")
    impossible = result.impossible
    if impossible:
        st.warning(
            f"Not possible at density {result.density:.4g}: {', '.join(impossible)} (the budget is below "
            "their smallest size; the table says what each needs). Raise the density."
        )


def rows_so_far(job: jobs.Job) -> None:
    """A running job's progress: the table rows (or steps) reported so far."""
    rows = [row for row in job.progress if isinstance(row, dict)]
    if rows:
        numbers.table(pd.DataFrame(rows))


def show_job(job_key: str, cache_key, draw) -> None:
    """Draw the running job's progress, its error, or the cached result for ``cache_key``."""
    if jobs.show_running(job_key, rows_so_far):
        return
    result, finished = job_results.result_for(job_key, results, cache_key)
    if finished is not None and finished.error is not None:
        st.error(f"Could not run the demonstration: {finished.error}")
    elif result is not None or finished is not None:
        draw(result if result is not None else finished.result)  # after Stop: what was done


def use_density(value: float) -> None:
    """Set the shared density slider (a button callback, so before the slider is drawn)."""
    st.session_state.density = st.session_state["_density_slider"] = value


# --- 1. the toy -------------------------------------------------------------------------------
st.header("1. Make a toy matrix")
cols = st.columns(3)
kind = cols[0].selectbox("Kind", list(toys.KINDS), format_func=toys.KINDS.get, persist_state="session", key="learn_kind")
size = cols[1].selectbox("Size (n x n)", toys.SIZES, index=toys.SIZES.index(64), persist_state="session", key="learn_size")
deterministic = kind in ("hadamard", "dft")
seed = int(cols[2].number_input("Seed", 0, 1_000_000, 0, persist_state="session", key="learn_seed", disabled=deterministic))
params = {}
if kind == "low_rank":
    cols = st.columns(2)
    params["rank"] = int(cols[0].number_input("Rank (at most the size)", 1, max(toys.SIZES), 8, persist_state="session", key="learn_rank"))
    params["noise"] = cols[1].slider("Noise level", 0.0, 1.0, 0.01, 0.01, persist_state="session", key="learn_noise")
elif kind == "planted":
    cols = st.columns(2)
    params["density_a"] = cols[0].slider("Density of A", 0.01, 1.0, 0.25, 0.01, persist_state="session", key="learn_density_a")
    params["density_b"] = cols[1].slider("Density of B", 0.01, 1.0, 0.25, 0.01, persist_state="session", key="learn_density_b")
toy = toys.make(toys.spec_for(kind, size, seed, **params))

left, right = st.columns([3, 2])
with left:
    st.plotly_chart(figures.heatmap(toy.matrix, toys.KINDS[kind]), key="learn_toy_heatmap", width="stretch")
with right:
    st.markdown(toy.note)
    if toy.natural_density is not None:
        on_grid = min(math.ceil(toy.natural_density * 100 - 1e-9) / 100, 1.0)
        st.markdown(
            f"Its structure fits in density **{toy.natural_density:.4g}**"
            + (f", where {' and '.join(toy.built_for)} can express it. " if toy.built_for else ". ")
            + "Compare the methods there (section 3 says who wins, from the run itself)."
        )
        st.button(
            f"Use density {on_grid:.2f} for the comparison",
            key="learn_use_density",
            on_click=use_density,
            args=(on_grid,),
        )
    else:
        st.markdown("No sparse or low-rank structure stores it exactly at a small density.")

# --- 2. the methods ---------------------------------------------------------------------------
st.header("2. The methods")
for tab, (intro, formulas, remark) in zip(st.tabs(list(learn.METHOD_NOTES)), learn.METHOD_NOTES.values()):
    with tab:
        st.markdown(intro)
        for formula in formulas:
            st.latex(formula)
        st.markdown(remark)

# --- 3. all methods at one budget --------------------------------------------------------------
st.header("3. Every method at the same budget")
given = "; ".join(
    f"{method} with " + ", ".join(f"{name} = {value}" for name, value in options.items())
    for method, options in toy.method_options.items()
)
st.caption(
    f"Runs all {len(METHODS)} methods on the toy above at the sidebar's density "
    f"({density:.2f}), each with its quick options" + (f" ({given}: what it needs for this structure)." if given else ".")
)
compare_key = ("compare", toy.spec, density, device.type)
if st.button("Run the comparison", key="learn_compare_run", type="primary"):
    work = job_results.reporting(learn.compare, toy.matrix, density, device=device, method_options=toy.method_options)
    job_results.start(COMPARE_JOB, compare_key, work, f"Every method on the {toys.KINDS[kind].lower()}")
show_job(COMPARE_JOB, compare_key,
         lambda result: show_comparison(result, "learn_compare", "Error per method", toy.built_for))

# --- 4. Hadamard ----------------------------------------------------------------------------------
st.header("4. Hadamard: butterflies beat low rank")
st.markdown(
    "A Hadamard matrix `H_n` (n = 2^L) is the product of `L` butterfly factors, each with exactly 2 "
    "nonzeros per row and column: `2 n L` numbers in all. Its singular values are all equal to "
    "`sqrt(n)`, so SVD at the same budget keeps only `L` of `n` directions."
)
had_size = st.selectbox("Hadamard size", [4, 8, 16, 32, 64, 128, 256], index=3, persist_state="session", key="learn_had_size")
levels = int(math.log2(had_size))
st.caption(
    f"Hierarchical PALM4MSA with {levels} factors, projection splincol, k = 2, at density "
    f"{learn.butterfly_density(had_size):.4g} (what the {levels} butterflies store); SVD at the "
    f"{toys.butterfly_params(had_size):,} parameters that {levels} butterflies store."
)
hadamard_key = ("hadamard", had_size, device.type)
if st.button("Find the butterflies", key="learn_had_run", type="primary"):
    work = job_results.reporting(learn.hadamard_demo, had_size, device)
    job_results.start(HADAMARD_JOB, hadamard_key, work, "Hierarchical PALM4MSA")


def show_hadamard(demo: learn.HadamardDemo) -> None:
    cols = st.columns(3)
    cols[0].metric("Hierarchical PALM4MSA error", numbers.readable(demo.hierarchical_error))
    cols[1].metric(f"SVD error (rank {demo.svd.info['rank']})", numbers.readable(demo.svd_error))
    cols[2].metric("Stored parameters", f"{demo.hierarchical.n_params:,} vs {demo.svd.n_params:,}")
    if demo.stopped:
        st.info("Stopped before the search finished: the factors below are where it had got to.")
    factors = demo.hierarchical.factors
    st.caption(f"Sparsity patterns of the {len(factors)} factors, left to right (ran on {demo.svd.device.type}):")
    per_row = 4
    for i, factor in enumerate(factors):
        if i % per_row == 0:
            cols = st.columns(per_row)
        cols[i % per_row].plotly_chart(figures.spy(factor, f"S{i + 1}"), key=f"learn_had_spy_{i}", width="stretch")


show_job(HADAMARD_JOB, hadamard_key, show_hadamard)

# --- 5. low rank ---------------------------------------------------------------------------------
st.header("5. Low rank")
st.markdown(
    "A 128 x 128 matrix of rank `r` plus a little noise, at exactly the budget of rank-`r` SVD, "
    "`r (128 + 128)` numbers. SVD keeps the whole signal and leaves only the noise; sparse methods "
    "spread the same budget over entries that are all needed."
)
cols = st.columns(2)
lr_rank = int(cols[0].number_input("Rank r", 1, 64, 8, persist_state="session", key="learn_lr_rank"))
lr_noise = cols[1].slider("Noise level", 0.0, 0.5, 0.01, 0.01, persist_state="session", key="learn_lr_noise")
low_rank_key = ("low_rank", lr_rank, lr_noise, device.type)
if st.button("Run the low-rank demo", key="learn_lr_run", type="primary"):
    work = job_results.reporting(learn.low_rank_demo, 128, lr_rank, lr_noise, device=device)
    job_results.start(LOW_RANK_JOB, low_rank_key, work, "Low-rank demo")
show_job(LOW_RANK_JOB, low_rank_key, lambda result: show_comparison(result, "learn_lr", "Error per method", ("svd",)))
