"""Layer inspector: one weight matrix's values, singular values, input Gram, and what a density
means for each method."""

import pandas as pd
import streamlit as st
import torch

from dsf_app import figures, job_results, jobs, layer_stats, numbers, session
from dsf_core import METHODS
from dsf_core.models import ModelBundle
from dsf_core.plan import budget, budget_plan

SPECTRA_JOB = "insp_spectra_job"

session.setup_page("Layer inspector")
model = session.current_model()
target = session.choose_target(model)  # a big checkpoint: this layer alone
density = session.choose_density()
W = target.matrix
m, n = W.shape

st.title("Layer inspector")
st.caption(f"**{target.label}** · input Gram: {target.gram_source}")
if isinstance(model, ModelBundle):  # a lazily opened checkpoint lists only what it can offer
    session.show_skipped_layers(model)


def start_spectra(target: session.Target) -> jobs.Job:
    work = job_results.reporting(layer_stats.compute_spectra, target.matrix, target.gram)
    return job_results.start(SPECTRA_JOB, target.key, work, f"Spectra of {target.label}")


def spectra_of(target: session.Target) -> layer_stats.Spectra | None:
    """The target's spectra: cached, computed now, or (when that takes long) None while a job
    computes them; after Stop, what the job had found."""
    store = st.session_state.setdefault("insp_spectra", {})
    spectra, finished = job_results.result_for(SPECTRA_JOB, store, target.key)
    if spectra is not None:
        return spectra
    if job_results.result_key(SPECTRA_JOB) != target.key:
        start_spectra(target).wait(layer_stats.INLINE_WAIT_SECONDS)
        spectra, finished = job_results.result_for(SPECTRA_JOB, store, target.key)
        if spectra is not None:
            return spectra
    if jobs.show_running(SPECTRA_JOB, lambda job: st.caption(f"Computing the spectra of a {m} x {n} matrix...")):
        return None
    if finished.error is None:
        return finished.result  # stopped: the singular values without the Gram's eigenvalues
    st.error(f"Could not compute the spectra: {finished.error}")
    if st.button("Try again", key="insp_spectra_retry"):
        start_spectra(target)
        st.rerun()
    return None


def show_values() -> None:
    left, right = st.columns(2)
    with left:
        st.plotly_chart(figures.heatmap(W, "Weight"), key="insp_heatmap", width="stretch")
        st.caption("Each weight as a colour (red positive, blue negative); large matrices are shown as block means.")
    with right:
        st.plotly_chart(figures.histogram(W, "Distribution of the weights"), key="insp_histogram", width="stretch")
        st.caption(f"How the {m * n:,} values are spread (a fixed sample of 200,000 for very large matrices).")


def show_singular_values(s: torch.Tensor) -> None:
    cols = st.columns(4)
    cols[0].metric("Shape (out x in)", f"{m} x {n}")
    cols[1].metric("Effective rank", f"{layer_stats.effective_rank(s):.1f}")
    cols[2].metric("Stable rank", f"{layer_stats.stable_rank(s):.2f}")
    cols[3].metric("Numerical rank", f"{layer_stats.numerical_rank(s, max(m, n), W.dtype)} of {min(m, n)}")
    st.caption(
        "Effective rank (Roy & Vetterli): exp of the entropy of the normalised singular values, "
        "how many directions carry the matrix. Stable rank: ||W||_F² / ||W||_2², at most the rank, "
        "small when a few directions dominate."
    )
    left, right = st.columns(2)
    with left:
        spectrum = figures.spectrum({"singular values": s}, "Singular values")
        st.plotly_chart(spectrum, key="insp_spectrum", width="stretch")
        st.caption("Singular values, largest first (log scale): a fast drop means low rank helps.")
    with right:
        energy = figures.spectrum({"energy in top k": layer_stats.energy_curve(s)}, "Energy in the top k", log=False,
                                  quantity="share of ||W||_F² in the top k")
        st.plotly_chart(energy, key="insp_energy", width="stretch")
        st.caption(
            f"Share of ||W||_F² in the top k singular values: 90% in the top "
            f"{layer_stats.rank_for_energy(s, 0.9)}, 99% in the top {layer_stats.rank_for_energy(s, 0.99)}."
        )
    start_k = max(1, min(layer_stats.svd_rank((m, n), density), s.numel()))
    k = 1  # a matrix with one row or column has a single singular value: nothing to slide
    if s.numel() > 1:
        k = st.slider("k (top singular values)", 1, s.numel(), start_k, persist_state="session", key=f"insp_k_{m}x{n}")
    cols = st.columns(2)
    cols[0].metric(f"Energy in the top {k}", f"{layer_stats.energy(s, k):.2%}")
    cols[1].metric(f"Best rank-{k} relative error", numbers.readable(layer_stats.eckart_young_error(s, k)))
    st.caption("Eckart-Young: no rank-k matrix comes closer to W in Frobenius norm than truncated SVD.")


def show_gram(spectra: layer_stats.Spectra) -> None:
    if target.gram is None:
        st.caption(f"There is no calibration data for this matrix, so no input Gram: {target.gram_source}.")
        return
    if spectra.gram_eigenvalues is None:
        st.info("Stopped before the eigenvalues of the input Gram were computed.")
        if st.button("Compute them", key="insp_spectra_again"):
            start_spectra(target)
            st.rerun()
        return
    eigenvalues = spectra.gram_eigenvalues
    cols = st.columns(2)
    cols[0].metric("Numerical rank of G", f"{layer_stats.numerical_rank(eigenvalues, n, target.gram.dtype)} of {n}")
    cols[1].metric("Effective rank of G", f"{layer_stats.effective_rank(eigenvalues):.1f}")
    figure = figures.spectrum(
        {"eigenvalues of G": eigenvalues}, "Eigenvalues of the input Gram G = XᵀX / rows", quantity="eigenvalue",
        threshold=layer_stats.rank_threshold(eigenvalues, n, target.gram.dtype),
    )
    st.plotly_chart(figure, key="insp_gram", width="stretch")
    st.caption(
        f"From {target.gram_source}. Directions with tiny eigenvalues are inputs the layer barely "
        "sees: activation-aware methods may approximate W badly there at no cost. For the fit, G is "
        "damped by 1% of its mean diagonal, so that a rank-deficient G stays invertible."
    )


def show_plan(spectra: layer_stats.Spectra | None) -> None:
    plan = budget_plan((m, n), density)
    table = {
        "method": list(plan),
        "at this density": [p.summary if p.feasible else f"not possible: {p.reason}" for p in plan.values()],
        "what it stores": [METHODS[name].description for name in plan],
    }
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch", key="insp_plan")
    rank = layer_stats.svd_rank((m, n), density)
    summary = (
        f"Budget: {density:.2f} x {m} x {n} = {budget((m, n), density):,} stored parameters; "
        "each method with its default options."
    )
    if spectra is not None and rank > 0:
        error = layer_stats.eckart_young_error(spectra.singular_values, rank)
        summary += f" SVD keeps rank {rank}: relative error {numbers.readable(error)}."
    st.caption(summary)
    impossible = [name for name, p in plan.items() if not p.feasible]
    if impossible:
        names = ", ".join(impossible)
        st.warning(f"At density {density:.2f}, not possible for this matrix: {names}. Raise the density.")


show_values()
st.subheader("Singular values")
spectra = spectra_of(target)
if spectra is not None:
    show_singular_values(spectra.singular_values)
    st.subheader("Input Gram matrix")
    show_gram(spectra)
st.subheader(f"What density {density:.2f} means for this matrix")
show_plan(spectra)
