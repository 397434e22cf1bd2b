"""The app on the real ImageNet CNN efficientnet-lite0, chosen on Home as a user would: the Layer
inspector, Factorize, Compare and Trade-offs against dsf_core called directly, on a small pointwise
convolution and on the classifier; its depthwise convolutions are listed with the reason."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _apptest import click_and_wait, problems
from streamlit.testing.v1 import AppTest

from dsf_app import session
from dsf_core import METHODS, damp_gram, factorize
from dsf_core.compress import compress_model
from dsf_core.layers import list_layers, skipped_layers, weight_matrix
from dsf_core.stats import stored_values

APP = str(Path(__file__).resolve().parents[1] / "app.py")
POINTWISE = "_blocks.2._project_conv"  # a 1x1 convolution, 24 x 144
CLASSIFIER = "_fc"  # 1000 x 1280
DEPTHWISE = "_blocks.3._depthwise_conv"  # 144 groups of one 5x5 filter
DENSITY = 0.3  # the shared default


@pytest.fixture(scope="module")
def app():
    """One user's session: the app started on Home with efficientnet-lite0 chosen there, on the
    pointwise layer (so that no page first collects the classifier's Gram)."""
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert any(o.startswith("efficientnet-lite0: ") for o in at.selectbox(key="home_builtin").options)
    at.selectbox(key="home_builtin").set_value("efficientnet-lite0").run()
    assert not problems(at) and metrics(at)["top1 agreement"] == "1"
    at.session_state["layer"] = POINTWISE
    return at


@pytest.fixture(scope="module")
def bundle(app):
    """The model as the app loaded it (one load per process: it is large)."""
    return session.cached_bundle(session.ModelChoice("builtin", "efficientnet-lite0"))


@pytest.fixture(scope="module")
def pointwise(bundle):
    """The pointwise layer's 4-D kernel, its matrix and its undamped Gram on 64 calibration crops."""
    kernel = bundle.model.get_submodule(POINTWISE).weight.detach().clone()
    gram = session.calibration_gram(session.ModelChoice("builtin", "efficientnet-lite0"), POINTWISE)
    return kernel, weight_matrix(bundle.model.get_submodule(POINTWISE)), gram


def visit(app: AppTest, page: str) -> AppTest:
    app.switch_page(page).run()
    assert not problems(app)
    assert "efficientnet-lite0" in app.sidebar.caption[0].value
    return app


def pick_layer(at: AppTest, name: str) -> AppTest:
    at.selectbox(key="_layer_picker").set_value(name).run()
    assert not problems(at)
    return at


def run_job(at: AppTest, button: str, job_key: str) -> None:
    click_and_wait(at, button, job_key)
    assert not problems(at)


def metrics(at: AppTest) -> dict:
    return {m.label: m.value for m in at.metric}


def test_the_inspector_lists_only_what_can_be_factorized_and_says_why_not(app, bundle):
    at = visit(app, "pages/1_Layer_inspector.py")
    options = at.selectbox(key="_layer_picker").options
    assert [o.split()[0] for o in options] == [layer.name for layer in list_layers(bundle.model)]
    assert not any("depthwise" in o for o in options)
    (skipped,) = [d.value for d in at.dataframe if "why not" in d.value]
    reasons = dict(zip(skipped["layer"], skipped["why not"]))
    assert reasons.keys() == {layer.name for layer in skipped_layers(bundle.model)}
    assert reasons[DEPTHWISE].startswith("depthwise convolution (groups=144)")
    assert "144 separate 1 x 25 matrices" in reasons[DEPTHWISE]


def test_inspector_numbers_of_a_pointwise_layer(app, pointwise):
    _, W, _ = pointwise
    at = pick_layer(visit(app, "pages/1_Layer_inspector.py"), POINTWISE)
    s = np.linalg.svd(W.double().numpy(), compute_uv=False)
    p = s / s.sum()
    shown = metrics(at)
    assert shown["Shape (out x in)"] == "24 x 144"
    assert shown["Effective rank"] == f"{math.exp(-np.sum(p * np.log(p))):.1f}"
    assert shown["Stable rank"] == f"{(s ** 2).sum() / s[0] ** 2:.2f}"
    assert shown["Numerical rank of G"].endswith("of 144")
    assert "64 calibration samples of efficientnet-lite0" in at.caption[0].value


def test_factorize_a_pointwise_layer_and_the_classifier(app, bundle, pointwise):
    kernel, W, gram = pointwise
    at = pick_layer(visit(app, "pages/2_Factorize.py"), POINTWISE)
    at.selectbox(key="fact_method").set_value("dsf").run()
    at.radio(key="fact_aware").set_value("Activation-aware").run()
    run_job(at, "fact_run", "fact_job")
    quick = METHODS["dsf"].presets["quick"]
    expected = factorize(kernel, "dsf", density=DENSITY, gram=damp_gram(gram, 0.01), **quick)
    shown = metrics(at)
    assert float(shown["Relative error"]) == pytest.approx(expected.error(W), rel=5e-3)  # 3 significant digits
    assert float(shown["Output error"]) == pytest.approx(expected.error(W, gram), rel=5e-3)  # 3 significant digits
    assert shown["Parameters"] == f"{expected.n_params:,}" and expected.n_params <= int(DENSITY * 24 * 144)

    pick_layer(at, CLASSIFIER)
    at.radio(key="fact_aware").set_value("Data-free").run()
    at.selectbox(key="fact_method").set_value("svd").run()
    run_job(at, "fact_run", "fact_job")
    fc = bundle.model.get_submodule(CLASSIFIER).weight.detach().double()
    rank = int(DENSITY * 1000 * 1280) // (1000 + 1280)
    S = torch.linalg.svdvals(fc)
    eckart_young = float(S[rank:].square().sum().sqrt() / S.square().sum().sqrt())
    assert float(metrics(at)["Relative error"]) == pytest.approx(eckart_young, rel=5e-3)


def test_compare_every_method_on_a_pointwise_layer(app, pointwise):
    kernel, W, gram = pointwise
    at = pick_layer(visit(app, "pages/3_Compare.py"), POINTWISE)
    at.radio(key="cmp_mode").set_value("Activation-aware").run()
    run_job(at, "cmp_run", "cmp_job")
    table = at.dataframe[0].value.set_index("method")
    assert list(table.index) == list(METHODS)
    for method, spec in METHODS.items():
        uses_gram = spec.uses_gram != "no"
        result = factorize(kernel, method, density=DENSITY, gram=damp_gram(gram, 0.01) if uses_gram else None,
                           **spec.presets.get("quick", {}))
        row = table.loc[method]
        assert row["relative error"] == pytest.approx(result.error(W), rel=1e-4), method
        assert row["output error"] == pytest.approx(result.error(W, gram), rel=1e-4), method
        assert row["parameters"] == result.n_params <= int(DENSITY * 24 * 144), method


def test_tradeoffs_compresses_two_layers_as_compress_model_does(app, bundle):
    at = visit(app, "pages/4_Trade-offs.py")
    layers = [POINTWISE, "_blocks.3._project_conv"]
    assert DEPTHWISE not in at.multiselect(key="trade_layers").options
    at.multiselect(key="trade_layers").set_value(layers).run()
    at.selectbox(key="trade_method").set_value("svd").run()
    at.number_input(key="trade_calibration").set_value(16).run()
    run_job(at, "trade_run", "trade_job")
    (row,) = at.dataframe[0].value.to_dict("records")
    again = compress_model(bundle, "svd", DENSITY, layers=",".join(layers), calibration=16, sequential=False,
                           evaluate=False)
    expected = bundle.evaluate(again.model)["top1_agreement"]
    assert row["top1_agreement"] == pytest.approx(expected) and row["status"] == "2 layers"
    assert row["stored values"] == stored_values(again.model) < stored_values(bundle.model)
    bars = [c for c in at.get("plotly_chart") if "Per-layer error" in c.proto.spec]
    assert bars and all(name in bars[0].proto.spec for name in layers)
