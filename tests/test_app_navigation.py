"""The app as a whole in AppTest: starting from Home, the model, layer and density chosen on one
page are the ones every other page shows."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "pages").glob("*.py"))


@pytest.fixture(scope="module")
def app():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.selectbox(key="home_builtin").set_value("tiny-lm").run()
    return at


def test_there_are_five_pages():
    assert [Path(p).stem.split("_", 1)[1] for p in PAGES] == [
        "Layer_inspector", "Factorize", "Compare", "Trade-offs", "Learn"
    ]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_on_the_model_chosen_at_home(app, page):
    app.switch_page(page).run()
    assert not app.exception and not app.error
    assert "tiny-lm" in app.sidebar.caption[0].value


def test_layer_and_density_persist_across_pages(app):
    app.switch_page("pages/1_Layer_inspector.py").run()
    app.selectbox(key="_layer_picker").set_value("blocks.1.mlp.fc").run()
    app.slider(key="_density_slider").set_value(0.42).run()
    app.switch_page("pages/3_Compare.py").run()
    assert app.selectbox(key="_layer_picker").value == "blocks.1.mlp.fc"
    assert app.slider(key="_density_slider").value == 0.42
    app.switch_page("app.py").run()
    assert app.selectbox(key="home_builtin").value == "tiny-lm"
    assert "perplexity" in [m.label for m in app.metric]


def test_a_pages_settings_are_kept_while_visiting_other_pages(app):
    app.switch_page("pages/2_Factorize.py").run()
    app.selectbox(key="fact_method").set_value("svd").run()
    app.toggle(key="fact_quick").set_value(False).run()
    app.radio(key="_target_source").set_value("Synthetic matrix").run()
    app.switch_page("pages/5_Learn.py").run()
    app.switch_page("pages/2_Factorize.py").run()
    assert app.selectbox(key="fact_method").value == "svd"
    assert app.toggle(key="fact_quick").value is False
    assert app.radio(key="_target_source").value == "Synthetic matrix"


@pytest.mark.parametrize("model", ["tiny-lm", "minilm"])
def test_every_page_works_on_the_other_builtin_models(model):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.selectbox(key="home_builtin").set_value(model).run()
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception and not at.error, (model, page)
    at.switch_page("pages/2_Factorize.py").run()
    at.button(key="fact_run").click().run()
    assert at.session_state["fact_job"].wait(120)
    at.run()
    assert not at.exception and not at.error
    assert "Relative error" in [m.label for m in at.metric]
