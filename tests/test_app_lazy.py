"""A Hugging Face checkpoint in the app (AppTest): Home lists its layers from the headers, the
Layer inspector and Factorize pages read one layer alone, and the whole model loads only when the
user asks; against load_hf and dsf_core run outside the app."""

from pathlib import Path

import pytest
from _hf_models import save_model
from streamlit.testing.v1 import AppTest

import dsf_core
from dsf_app import session
from dsf_core.layers import list_layers, weight_matrix
from dsf_core.models.loaders import load_hf

ROOT = Path(__file__).resolve().parents[1]
LAYER = "model.layers.1.mlp.down_proj"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_model("llama", tmp_path_factory.mktemp("app") / "llama", with_tokenizer=False)


@pytest.fixture
def no_whole_model(monkeypatch):
    """Loading the whole model fails the test."""

    def refuse(choice):
        raise AssertionError(f"the whole model was loaded: {choice}")

    monkeypatch.setattr(session, "load_choice", refuse)


def choice_of(directory) -> session.ModelChoice:
    return session.ModelChoice("hf", path=str(directory), version=session.file_version(str(directory)))


def page_on(directory, page: str, layer: str | None = None) -> AppTest:
    """``page`` drawn once with the checkpoint ``directory`` chosen (and ``layer``)."""
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=60)
    at.session_state["model_choice"] = choice_of(directory)
    if layer is not None:
        at.session_state["layer"] = layer
    return at.run()


def test_home_lists_the_layers_without_loading_the_model(model_dir, no_whole_model, monkeypatch):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.radio(key="home_source").set_value("hf").run()
    at.text_input(key="home_hf_path").set_value(str(model_dir)).run()
    at.button(key="home_hf_load").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert at.session_state.model_choice == choice_of(model_dir)
    monkeypatch.undo()
    loaded = load_hf(str(model_dir))
    expected = list_layers(loaded.model)
    table = at.dataframe[0].value
    assert list(table["layer"]) == [layer.name for layer in expected]
    assert list(table["matrix (out x in)"]) == [f"{a} x {b}" for a, b in (layer.shape for layer in expected)]
    assert list(table["parameters"]) == [layer.n_params for layer in expected]
    assert set(table["dtype"]) == {"F32"}
    shown = {m.label: m.value for m in at.metric}
    assert shown["Parameters"] == f"{sum(p.numel() for p in loaded.model.parameters()):,}"
    assert "next token agreement" not in shown  # evaluating needs the whole model: asked for first
    at.button(key="load_whole_model").click().run()
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.metric}["next token agreement"] == "1"


def test_factorize_reads_one_layer_and_offers_its_gram_with_its_cost(model_dir, no_whole_model):
    at = page_on(model_dir, "2_Factorize.py", LAYER)
    assert not at.exception and not at.error, (at.exception, at.error)
    assert any("Needs the model up to block 2" in c.value and "8 block forward passes" in c.value for c in at.sidebar.caption)
    at.selectbox(key="fact_method").set_value("svd").run()
    assert not [r for r in at.radio if r.key == "fact_aware"]  # no Gram until asked for
    at.button(key="fact_run").click().run()
    assert at.session_state["fact_job"].wait(60)
    at.run()
    assert not at.exception and not at.error
    shown = {m.label: m.value for m in at.metric}
    weight = weight_matrix(load_hf(str(model_dir)).model.get_submodule(LAYER)).float()
    result = dsf_core.factorize(weight, "svd", density=0.3)
    assert shown["Relative error"] == f"{result.error(weight):.3g}"
    assert shown["Output error"] == "-"
    at.toggle(key="_lazy_gram").set_value(True).run()
    assert not at.exception and not at.error
    at.radio(key="fact_aware").set_value("Activation-aware").run()
    assert any("calibration samples of Hugging Face" in c.value for c in at.caption)


def test_trade_offs_loads_the_whole_model_only_when_asked(model_dir, no_whole_model):
    at = page_on(model_dir, "4_Trade-offs.py")
    assert not at.exception and not at.error
    assert "in float32" in at.info[0].value
    assert at.button(key="load_whole_model").label.startswith("Load the whole model (")


def test_layer_inspector_shows_one_layer_read_alone(model_dir, no_whole_model):
    at = page_on(model_dir, "1_Layer_inspector.py", LAYER)
    assert not at.exception and not at.error, (at.exception, at.error)
    assert {m.label: m.value for m in at.metric}["Shape (out x in)"] == "32 x 64"
    assert any("switch on 'Calibration Gram'" in c.value for c in at.caption)


def test_a_link_to_a_checkpoint_opens_it_lazily_on_its_layer(model_dir, no_whole_model):
    at = AppTest.from_file(str(ROOT / "pages" / "2_Factorize.py"), default_timeout=60)
    at.query_params.update({"model": f"hf:{model_dir}", "layer": LAYER, "method": "svd"})
    at.run()
    assert not at.exception and not at.error and not at.warning, (at.exception, at.error, at.warning)
    assert at.session_state.model_choice == choice_of(model_dir)
    assert at.sidebar.selectbox(key="_layer_picker").value == LAYER
    assert at.selectbox(key="fact_method").value == "svd"
