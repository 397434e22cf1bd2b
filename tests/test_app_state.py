"""Choices outlive a page: per model across model switches, and in the URL (a reload or a shared
link restores them)."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from dsf_core.layers import list_layers
from dsf_core.models import load_builtin

ROOT = Path(__file__).resolve().parents[1]
TRADE = "pages/4_Trade-offs.py"
FACTORIZE = str(ROOT / "pages" / "2_Factorize.py")


def _home() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()


def _switch_model(at: AppTest, name: str) -> None:
    at.switch_page("app.py").run()
    at.selectbox(key="home_builtin").set_value(name).run()
    assert not at.exception and not at.error


def test_each_model_keeps_its_own_layer_choices_across_switches():
    at = _home()
    at.switch_page(TRADE).run()
    at.multiselect(key="trade_layers").set_value(["fc"]).run()
    at.number_input(key="trade_calibration").set_value(32).run()
    at.switch_page("pages/1_Layer_inspector.py").run()
    at.sidebar.selectbox(key="_layer_picker").set_value("fc").run()

    _switch_model(at, "minilm")
    at.switch_page(TRADE).run()
    minilm_layers = [layer.name for layer in list_layers(load_builtin("minilm").model)]
    assert at.multiselect(key="trade_layers").value == minilm_layers  # not emptied by digits' choice
    assert at.checkbox(key="trade_output_weighting").value is True  # minilm's own recommendation
    assert at.number_input(key="trade_calibration").value != 32

    _switch_model(at, "digits-cnn")
    at.switch_page(TRADE).run()
    assert at.multiselect(key="trade_layers").value == ["fc"]
    assert at.number_input(key="trade_calibration").value == 32
    assert at.checkbox(key="trade_output_weighting").value is False
    at.switch_page("pages/1_Layer_inspector.py").run()
    assert at.sidebar.selectbox(key="_layer_picker").value == "fc"


def test_a_link_restores_model_layer_density_method_and_options():
    at = AppTest.from_file(FACTORIZE, default_timeout=120)
    at.query_params.update({
        "model": "tiny-lm", "layer": "blocks.1.mlp.fc", "density": "0.42", "method": "svd", "quick": "0",
        "opt_rank": "5",
    })
    at.run()
    assert not at.exception and not at.error and not at.warning
    assert at.session_state.model_choice.name == "tiny-lm"
    assert at.sidebar.selectbox(key="_layer_picker").value == "blocks.1.mlp.fc"
    assert at.sidebar.slider(key="_density_slider").value == 0.42
    assert at.selectbox(key="fact_method").value == "svd"
    assert at.toggle(key="fact_quick").value is False
    assert at.number_input(key="fact_opt_svd_full_rank").value == 5
    assert at.checkbox(key="fact_opt_svd_full_rank_auto").value is False


def test_the_url_follows_the_choices():
    at = AppTest.from_file(FACTORIZE, default_timeout=120).run()
    assert "model" not in at.query_params  # the default model needs no parameter
    at.sidebar.slider(key="_density_slider").set_value(0.25).run()
    at.selectbox(key="fact_method").set_value("dsf").run()
    at.checkbox(key="fact_opt_dsf_quick_inner_dim_auto").set_value(False).run()
    at.number_input(key="fact_opt_dsf_quick_inner_dim").set_value(20).run()
    params = dict(at.query_params)
    assert params["density"] == "0.25" and params["layer"] == at.session_state.layer
    assert params["opt_inner_dim"] == "20" and "method" not in params  # dsf is the default
    at.selectbox(key="fact_method").set_value("magnitude").run()
    assert at.query_params["method"] == "magnitude"
    assert not any(p.startswith("opt_inner_dim") for p in at.query_params)  # not an option of magnitude

    reloaded = AppTest.from_file(FACTORIZE, default_timeout=120)
    reloaded.query_params.update(dict(at.query_params))
    reloaded.run()
    assert reloaded.selectbox(key="fact_method").value == "magnitude"
    assert reloaded.sidebar.slider(key="_density_slider").value == 0.25
    assert reloaded.session_state.layer == at.session_state.layer


def test_bad_link_parameters_are_ignored_and_said():
    at = AppTest.from_file(FACTORIZE, default_timeout=120)
    at.query_params.update({"model": "/etc", "density": "7", "method": "nope", "opt_n_rounds": "-3"})
    at.run()
    assert not at.exception
    warned = " ".join(w.value for w in at.warning)
    for param in ("model", "density", "method", "opt_n_rounds"):
        assert param in warned
    assert at.session_state.model_choice.name == "digits-cnn"
    assert at.sidebar.slider(key="_density_slider").value == 0.3
    assert at.selectbox(key="fact_method").value == "dsf"
