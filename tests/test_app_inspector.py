"""AppTest of the Layer inspector: its numbers against independent recomputation (numpy and
dsf_core), the shared pickers, the spectra cache, Stop, and densities too low for a method."""

import math
import threading

import numpy as np
import pytest
from _apptest import PAGES, cached_model_state, open_page, problems, same_state
from streamlit.testing.v1 import AppTest

from dsf_app import layer_stats, session
from dsf_core.examples import synthetic_matrix
from dsf_core.layers import weight_matrix
from dsf_core.models import load_builtin
from dsf_core.plan import budget_plan

PAGE = "1_Layer_inspector.py"


@pytest.fixture(scope="module")
def digits():
    """The default model's weights, loaded independently of the app's cache."""
    return load_builtin(session.DEFAULT_MODEL).model


def _metrics(at) -> dict:
    return {metric.label: metric.value for metric in at.metric}


def _plan(at) -> dict:
    table = at.dataframe[0].value
    return dict(zip(table["method"], table["at this density"]))


def _expected_plan(shape, density) -> dict:
    """What the page should show per method: the plan's summary, or why it is not possible."""
    return {
        name: plan.summary if plan.feasible else f"not possible: {plan.reason}"
        for name, plan in budget_plan(shape, density).items()
    }


def _expected_ranks(W: np.ndarray) -> dict:
    """Effective and stable rank by their definitions, with numpy."""
    s = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    p = s / s.sum()
    return {
        "Effective rank": f"{math.exp(-np.sum(p * np.log(p))):.1f}",
        "Stable rank": f"{np.linalg.norm(W, 'fro') ** 2 / np.linalg.norm(W.astype(np.float64), 2) ** 2:.2f}",
    }


def _set_synthetic(at, m, n):
    at.sidebar.radio(key="_target_source").set_value(session.SYNTHETIC).run()
    at.sidebar.number_input(key="_synthetic_m").set_value(m)
    at.sidebar.number_input(key="_synthetic_n").set_value(n)
    return at.run()


def test_default_layer_shows_its_numbers_and_its_gram(digits):
    before = cached_model_state()
    at = open_page(PAGE)
    assert not problems(at)
    layer = at.session_state["layer"]
    W = weight_matrix(digits.get_submodule(layer)).numpy()
    shown = _metrics(at)
    assert shown["Shape (out x in)"] == f"{W.shape[0]} x {W.shape[1]}"
    assert {k: shown[k] for k in ("Effective rank", "Stable rank")} == _expected_ranks(W)
    assert "Numerical rank of G" in shown and "Effective rank of G" in shown
    assert _plan(at) == _expected_plan(W.shape, at.session_state["density"])
    assert len(at.get("plotly_chart")) == 5  # heatmap, histogram, spectrum, energy, Gram spectrum
    assert same_state(before, cached_model_state())  # the shared model is only read


def test_changing_layer_density_and_k_changes_what_is_shown(digits):
    at = open_page(PAGE)
    at.sidebar.selectbox(key="_layer_picker").set_value("fc").run()
    W = weight_matrix(digits.fc).numpy()
    shown = _metrics(at)
    assert shown["Shape (out x in)"] == "128 x 512"
    assert {k: shown[k] for k in ("Effective rank", "Stable rank")} == _expected_ranks(W)

    before = _plan(at)
    at.sidebar.slider(key="_density_slider").set_value(0.07).run()
    assert _plan(at) == _expected_plan((128, 512), 0.07) != before
    assert any("SVD keeps rank 7:" in caption.value for caption in at.caption)  # 0.07*128*512 // 640

    at.slider(key="insp_k_128x512").set_value(20).run()
    s = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    shown = _metrics(at)
    assert shown["Energy in the top 20"] == f"{np.sum(s[:20] ** 2) / np.sum(s**2):.2%}"
    assert shown["Best rank-20 relative error"] == f"{np.sqrt(np.sum(s[20:] ** 2) / np.sum(s**2)):.3g}"
    assert not problems(at)


def test_synthetic_target():
    at = _set_synthetic(open_page(PAGE), 48, 80)
    W, G = synthetic_matrix(48, 80)
    shown = _metrics(at)
    assert shown["Shape (out x in)"] == "48 x 80"
    assert {k: shown[k] for k in ("Effective rank", "Stable rank")} == _expected_ranks(W.numpy())
    eigenvalues = np.linalg.eigvalsh(G.double().numpy())
    p = eigenvalues / eigenvalues.sum()
    assert shown["Effective rank of G"] == f"{math.exp(-np.sum(p * np.log(p))):.1f}"
    assert _plan(at) == _expected_plan((48, 80), at.session_state["density"])
    assert not problems(at)


def test_spectra_are_cached_per_matrix(monkeypatch):
    calls = []
    compute = layer_stats.compute_spectra
    monkeypatch.setattr(layer_stats, "compute_spectra", lambda *a, **k: calls.append(a[0].shape) or compute(*a, **k))
    at = open_page(PAGE)
    at.sidebar.slider(key="_density_slider").set_value(0.5).run()
    assert len(calls) == 1  # a new density needs no new spectrum
    at.sidebar.selectbox(key="_layer_picker").set_value("fc").run()
    at.sidebar.selectbox(key="_layer_picker").set_value("convs.2").run()
    assert len(calls) == 2 and not problems(at)  # back to the first layer: from the cache


def test_without_calibration_data_a_caption_says_so(monkeypatch):
    def no_data(choice, layer_name):
        raise RuntimeError("the calibration inputs could not be read")

    monkeypatch.setattr(session, "calibration_gram", no_data)
    at = open_page(PAGE)
    assert not problems(at)
    assert any("There is no calibration data" in c.value and "could not be read" in c.value for c in at.caption)
    assert "Numerical rank of G" not in _metrics(at)


def test_stop_keeps_the_singular_values_and_can_compute_the_rest(monkeypatch):
    release = threading.Event()
    compute = layer_stats.singular_values
    monkeypatch.setattr(layer_stats, "INLINE_WAIT_SECONDS", 0.1)
    monkeypatch.setattr(layer_stats, "singular_values", lambda W: release.wait(30) and compute(W))
    at = _set_synthetic(open_page(PAGE), 64, 96)
    stop = at.button(key="insp_spectra_job_stop")
    assert "Effective rank" not in _metrics(at)  # still running
    stop.click().run()
    release.set()
    assert at.session_state["insp_spectra_job"].wait(30)
    at.run()
    assert not problems(at)
    assert any("Stopped before the eigenvalues" in info.value for info in at.info)
    assert "Effective rank" in _metrics(at) and "Effective rank of G" not in _metrics(at)
    at.button(key="insp_spectra_again").click().run()
    assert at.session_state["insp_spectra_job"].wait(30)
    at.run()
    assert "Effective rank of G" in _metrics(at) and not at.info and not problems(at)


def test_a_density_too_low_for_some_methods_says_not_possible():
    at = _set_synthetic(open_page(PAGE), 8, 8)
    at.sidebar.slider(key="_density_slider").set_value(0.05).run()  # 3 parameters
    assert not problems(at)
    expected = [name for name, plan in budget_plan((8, 8), 0.05).items() if not plan.feasible]
    assert {"svd", "tt", "palm4msa"} <= set(expected)
    assert [name for name, text in _plan(at).items() if text.startswith("not possible")] == expected
    assert [w.value for w in at.warning] == [
        f"At density 0.05, not possible for this matrix: {', '.join(expected)}. Raise the density."
    ]
    at.sidebar.slider(key="_density_slider").set_value(0.6).run()
    assert not at.warning and not problems(at)
    assert not any(text.startswith("not possible") for text in _plan(at).values())


def test_a_pointwise_convolution_of_efficientnet_is_inspected_with_its_gram():
    at = AppTest.from_file(str(PAGES / PAGE), default_timeout=120)
    at.session_state["model_choice"] = session.ModelChoice("builtin", "efficientnet-lite0")
    at.session_state["layer"] = "_blocks.15._project_conv"
    at.run()
    assert not problems(at)
    W = weight_matrix(load_builtin("efficientnet-lite0").model.get_submodule("_blocks.15._project_conv")).numpy()
    shown = _metrics(at)
    assert shown["Shape (out x in)"] == "320 x 1152"
    assert {k: shown[k] for k in ("Effective rank", "Stable rank")} == _expected_ranks(W)
    assert "Numerical rank of G" in shown and len(at.get("plotly_chart")) == 5  # the Gram of real photographs
