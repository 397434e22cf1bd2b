"""The Factorize page (AppTest): shown numbers against dsf_core recomputed, the cache, Stop, bad inputs."""

import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import dsf_core
from dsf_app import session
from dsf_core.compress import compress_model
from dsf_core.models import load_builtin

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "2_Factorize.py")
LAYER = "convs.2"  # the default: digits-cnn's largest layer, 128 x 576
DENSITY = 0.3  # the shared default
QUICK_DSF = dsf_core.METHODS["dsf"].presets["quick"]


@pytest.fixture(scope="module")
def layer():
    """The default layer's kernel, matrix and undamped calibration Gram, outside the app."""
    bundle = load_builtin("digits-cnn")
    gram = session.calibration_gram(session.ModelChoice("builtin", "digits-cnn"), LAYER)
    return session.layer_kernel(bundle, LAYER), session.layer_weight(bundle, LAYER), gram


def page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def factorize_and_show(at: AppTest) -> AppTest:
    """Click Factorize, let the job end, and draw the result."""
    at.button(key="fact_run").click().run()
    job = at.session_state["fact_job"]
    assert job.wait(60)
    at.run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def chart_keys(at: AppTest) -> list[str]:
    return [chart.proto.id.rsplit("-", 1)[-1] for chart in at.get("plotly_chart")]


def chart_spec(at: AppTest, key: str) -> str:
    return next(chart.proto.spec for chart in at.get("plotly_chart") if chart.proto.id.endswith(f"-{key}"))


def cached(at: AppTest) -> list:
    return list(at.session_state["fact_results"].values())


def test_default_render_offers_dsf_with_the_quick_preset():
    at = page()
    assert not at.error and at.selectbox(key="fact_method").value == "dsf"
    assert at.toggle(key="fact_quick").value is True
    assert at.number_input(key="fact_opt_dsf_quick_n_rounds").value == QUICK_DSF["n_rounds"]
    assert "Press **Factorize**" in at.info[0].value
    assert LAYER in at.caption[0].value


def test_dsf_result_matches_the_library_and_is_not_recomputed(layer):
    kernel, matrix, gram = layer
    at = factorize_and_show(page())
    expected = dsf_core.factorize(kernel, "dsf", density=DENSITY, **QUICK_DSF)
    assert not at.error
    assert float(metric(at, "Relative error")) == pytest.approx(expected.error(matrix), rel=5e-3)  # 3 significant digits
    assert float(metric(at, "Output error")) == pytest.approx(expected.error(matrix, gram), rel=5e-3)  # 3 significant digits
    assert metric(at, "Parameters") == f"{expected.n_params:,}"
    assert metric(at, "Device") == "cpu"
    keys = chart_keys(at)
    assert sorted(k for k in keys if k.startswith("fact_spy")) == ["fact_spy_0", "fact_spy_1"]
    assert {"fact_convergence", "fact_spectrum", "fact_original", "fact_approx", "fact_error"} <= set(keys)

    (outcome,) = cached(at)
    job = at.session_state["fact_job"]
    at.run()  # a revisit draws the cached result
    assert '"type":"log"' in chart_spec(at, "fact_spectrum")
    at.toggle(key="fact_spectrum_log").set_value(False).run()  # display only
    assert '"type":"linear"' in chart_spec(at, "fact_spectrum")
    at.selectbox(key="fact_method").set_value("magnitude").run()
    at.selectbox(key="fact_method").set_value("dsf").run()
    assert cached(at)[0] is outcome and at.session_state["fact_job"] is job
    assert metric(at, "Relative error") == f"{outcome.relative_error:.3g}"


def test_svd_shows_the_eckart_young_error(layer):
    _, matrix, _ = layer
    at = factorize_and_show(page())
    dsf_error = float(metric(at, "Relative error"))
    at.selectbox(key="fact_method").set_value("svd").run()
    assert "Press **Factorize**" in at.info[0].value
    factorize_and_show(at)
    m, n = matrix.shape
    rank = int(DENSITY * m * n) // (m + n)
    S = torch.linalg.svdvals(matrix.double())
    eckart_young = float(S[rank:].square().sum().sqrt() / S.square().sum().sqrt())
    shown = float(metric(at, "Relative error"))
    assert shown == pytest.approx(eckart_young, rel=5e-3) and shown != pytest.approx(dsf_error, rel=1e-2)
    assert f"numerical rank {rank} of {m}" in chart_spec(at, "fact_spectrum")


def test_activation_aware_run_shows_the_output_error_on_calibration_inputs(layer):
    kernel, matrix, gram = layer
    at = page()
    at.radio(key="fact_aware").set_value("Activation-aware").run()
    factorize_and_show(at)
    aware = dsf_core.factorize(kernel, "dsf", density=DENSITY, gram=dsf_core.damp_gram(gram, 0.01), **QUICK_DSF)
    assert float(metric(at, "Output error")) == pytest.approx(aware.error(matrix, gram), rel=5e-3)
    assert any("output error on the inputs of 64 calibration samples" in c.value for c in at.caption)


def test_stop_returns_the_partial_result(layer):
    _, matrix, _ = layer
    at = page()
    at.toggle(key="fact_quick").set_value(False).run()
    at.number_input(key="fact_opt_dsf_full_n_rounds").set_value(2000)
    at.number_input(key="fact_opt_dsf_full_tol").set_value(0.0)
    at.button(key="fact_run").click().run()
    job = at.session_state["fact_job"]
    assert job.running, "a 2000-round run should still be going"
    deadline = time.monotonic() + 30
    while not job.progress and time.monotonic() < deadline:  # a loaded machine may lag
        time.sleep(0.1)
    at.run()
    assert "fact_live_convergence" in chart_keys(at) and at.get("progress")
    at.button(key="fact_job_stop").click().run()
    assert job.wait(30)
    at.run()
    (outcome,) = cached(at)
    assert not at.exception and not at.error
    assert outcome.stopped and 0 < outcome.steps < 2000
    assert any(f"Stopped after {outcome.steps} step" in info.value for info in at.info)
    assert float(metric(at, "Relative error")) == pytest.approx(outcome.result.error(matrix), rel=5e-3)
    assert metric(at, "Steps run") == str(outcome.steps)


def test_stop_inside_the_first_round_of_a_large_matrix():
    """A 2048 x 2048 DSF round with 40 ADMM steps per half takes about ten seconds (2 CPU threads):
    the bar moves inside it, and Stop does not wait for it."""
    at = page()
    at.radio(key="_target_source").set_value("Synthetic matrix").run()
    at.number_input(key="_synthetic_m").set_value(2048)
    at.number_input(key="_synthetic_n").set_value(2048).run()
    at.toggle(key="fact_quick").set_value(False).run()
    at.number_input(key="fact_opt_dsf_full_admm_steps").set_value(40).run()  # the default round: under 2 s
    at.button(key="fact_run").click().run()
    job = at.session_state["fact_job"]
    deadline = time.monotonic() + 60
    while job.fraction is None and time.monotonic() < deadline:
        time.sleep(0.05)
    at.run()
    assert job.running and not job.progress, "the first round should still be going"
    assert at.get("progress") and any("first step is under way" in c.value for c in at.caption)
    at.button(key="fact_job_stop").click().run()
    # the solver's stop is said at once, while the job still measures what it reached (two 2048 x 2048 SVDs)
    assert job.running and "Stopped during the first step; measuring what it reached..." in [i.value for i in at.info]
    assert job.wait(60)
    at.run()
    (outcome,) = cached(at)
    assert not at.exception and not at.error
    assert outcome.stopped and outcome.steps == 0
    assert any("Stopped during the first step" in info.value for info in at.info)
    assert any("no curve to draw" in c.value for c in at.caption)
    assert not any("not iterative" in c.value for c in at.caption)


def test_budget_below_the_minimum_is_a_plain_message_and_the_page_recovers():
    at = page()
    at.selectbox(key="_layer_picker").set_value("convs.0")
    at.slider(key="_density_slider").set_value(0.05)
    at.selectbox(key="fact_method").set_value("svd").run()
    factorize_and_show(at)
    assert len(at.error) == 1 and "Could not factorize" in at.error[0].value
    assert "raise the density" in at.error[0].value
    at.slider(key="_density_slider").set_value(0.5).run()
    factorize_and_show(at)
    assert not at.error and float(metric(at, "Relative error")) < 1


def test_option_out_of_range_is_a_plain_message_and_blocks_the_run():
    at = page()
    at.checkbox(key="fact_opt_dsf_quick_split_auto").uncheck().run()
    at.number_input(key="fact_opt_dsf_quick_split").set_value(0.0).run()
    assert "Check the options" in at.error[0].value and "(0.0, 1.0)" in at.error[0].value
    assert at.button(key="fact_run").disabled
    at.number_input(key="fact_opt_dsf_quick_split").set_value(0.4).run()
    factorize_and_show(at)
    assert not at.error and cached(at)[0].result.options["split"] == 0.4


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the warning shown without a GPU")
def test_cuda_without_a_gpu_warns_and_runs_on_the_cpu():
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["device"] = "CUDA"
    at.run()
    assert any("no CUDA GPU" in w.value for w in at.warning)
    factorize_and_show(at)
    assert metric(at, "Device") == "cpu" and not at.error


def test_tt_cores_are_drawn_under_the_names_the_spec_gives(layer):
    at = page()
    at.selectbox(key="fact_method").set_value("tt").run()
    factorize_and_show(at)
    _, matrix, _ = layer
    result = dsf_core.factorize(matrix, "tt", density=DENSITY)
    names = dsf_core.METHODS["tt"].factor_names(len(result.factors))
    titles = [chart_spec(at, f"fact_core_{i}") for i in range(len(result.factors))]
    for name, core, title in zip(names, result.factors, titles):
        assert f"Core {name} {tuple(core.shape)}" in title


def test_try_in_the_model_equals_compress_model_on_that_layer_alone():
    # Full float32 products on both sides: bfloat16-based ones (CPUs with AVX512-BF16) round
    # differently with the thread count, and the page's job and this test's thread may differ.
    at = page()
    at.selectbox(key="fact_opt_dsf_quick_matmul_precision").set_value("highest").run()
    at = factorize_and_show(at)
    assert f"with {LAYER} factorized" not in [m.label for m in at.metric]  # only on request: it costs an evaluation
    at.button(key="fact_try").click().run()
    assert not at.exception and not at.error
    bundle = load_builtin("digits-cnn")
    one_layer = compress_model(bundle, "dsf", DENSITY, layers=LAYER, calibration=0, matmul_precision="highest",
                               **QUICK_DSF)
    name = bundle.metric_name
    (measured,) = at.session_state["fact_model_metrics"].values()
    assert measured[name] == pytest.approx(one_layer.compressed_metric, rel=1e-6)
    assert metric(at, f"with {LAYER} factorized") == f"{one_layer.compressed_metric:.4g}"
    assert metric(at, f"{name.replace('_', ' ')}, dense model") == f"{one_layer.dense_metric:.4g}"
    assert measured["loss"] > bundle.evaluate(bundle.model)["loss"]  # the layer's error shows at model level


def test_runs_on_the_same_matrix_are_kept_side_by_side():
    at = factorize_and_show(page())
    at.selectbox(key="fact_method").set_value("palm4msa").run()
    factorize_and_show(at)
    at.selectbox(key="fact_method").set_value("svd").run()
    factorize_and_show(at)
    assert any(h.value == "Runs on this matrix (3)" for h in at.subheader)
    table = next(frame.value for frame in at.dataframe if "relative error" in frame.value.columns)
    assert [run.split(" ")[0] for run in table["run"]] == ["dsf", "palm4msa", "svd"]
    errors = {outcome.result.method: outcome.relative_error for outcome in cached(at)}
    assert list(table["relative error"]) == [errors["dsf"], errors["palm4msa"], errors["svd"]]
    overlay = chart_spec(at, "fact_history_curves")
    assert "dsf at 0.30" in overlay and "palm4msa at 0.30" in overlay and "svd at 0.30" not in overlay  # svd: one step
