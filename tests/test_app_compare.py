"""AppTest of the Compare page: the table and the sweep against direct factorize calls, Stop, bad budgets."""

import pytest
import torch

from _apptest import cached_model_state, charts, click_and_wait, open_page, problems, same_state
from dsf_core import METHODS, damp_gram, factorize
from dsf_core.calibration import collect_grams
from dsf_core.compress import compress_model
from dsf_core.models import load_builtin

LAYER = "convs.2"  # the default layer: the largest of digits-cnn


@pytest.fixture(scope="module")
def layer():
    """The default layer's kernel, its matrix and its undamped calibration Gram, computed here."""
    bundle = load_builtin("digits-cnn")
    kernel = bundle.model.get_submodule(LAYER).weight.detach().clone()
    gram = collect_grams(bundle.model, bundle.forward, bundle.calibration_inputs(64), [LAYER], damp=0.0)[LAYER]
    return kernel, kernel.reshape(kernel.shape[0], -1), gram


def direct(layer, method, density, aware):
    kernel, matrix, gram = layer
    uses = aware and METHODS[method].uses_gram != "no"
    result = factorize(kernel, method, density=density, gram=damp_gram(gram, 0.01) if uses else None,
                       **METHODS[method].presets.get("quick", {}))
    return result, result.error(matrix), result.error(matrix, gram)


def test_table_equals_direct_factorizations_and_is_cached(layer):
    before = cached_model_state()
    at = open_page("3_Compare.py")
    assert not problems(at)
    assert "Press *Run the comparison*" in " ".join(i.value for i in at.info)
    at.radio(key="cmp_mode").set_value("Activation-aware").run()
    job = click_and_wait(at, "cmp_run", "cmp_job")
    assert not problems(at)
    table = at.dataframe[0].value.set_index("method")
    assert list(table.index) == list(METHODS)
    for method in METHODS:
        result, error, output_error = direct(layer, method, 0.3, aware=True)
        row = table.loc[method]
        assert row["relative error"] == pytest.approx(error, rel=1e-4)
        assert row["output error"] == pytest.approx(output_error, rel=1e-4)
        assert (row["parameters"], row["bytes"], row["FLOPs"]) == (result.n_params, result.n_bytes, result.flops)
        assert row["device"] == "cpu"
    best = table["relative error"].idxmin()
    (summary,) = [m.value for m in at.markdown if m.value.startswith("Best here")]
    assert f"lowest relative error: **{best}** ({table['relative error'][best]:.3g})" in summary
    # leaving the density and coming back shows the cached table, without a new job
    at.slider(key="_density_slider").set_value(0.2).run()
    assert not at.dataframe
    at.slider(key="_density_slider").set_value(0.3).run()
    assert at.session_state["cmp_job"] is job and at.dataframe[0].value.shape[0] == len(METHODS)
    assert same_state(before, cached_model_state())


def test_try_each_in_the_model_equals_compress_model_on_that_layer_alone():
    methods = ["dsf", "svd", "magnitude"]
    at = open_page("3_Compare.py")
    at.multiselect(key="cmp_methods").set_value(methods).run()
    click_and_wait(at, "cmp_run", "cmp_job")
    column = "accuracy in the model"
    assert column not in at.dataframe[0].value.columns  # only on request: one evaluation per method
    at.button(key="cmp_try").click().run()
    assert not problems(at) and "cmp_try" not in [button.key for button in at.button]  # the offer is gone once taken
    table = at.dataframe[0].value.set_index("method")
    bundle = load_builtin("digits-cnn")
    for method in methods:
        one_layer = compress_model(bundle, method, 0.3, layers=LAYER, calibration=0,
                                   **METHODS[method].presets.get("quick", {}))
        assert table.loc[method, column] == pytest.approx(one_layer.compressed_metric, rel=1e-6)
    dense = bundle.evaluate(bundle.model)["accuracy"]
    assert f"dense model: accuracy {dense:.4g}" in " ".join(c.value for c in at.caption)
    assert table[column].nunique() > 1  # each method's own layer, not one value repeated
    measured = at.session_state["cmp_model_metrics"]
    at.run()  # a later run shows the cached values, without the button
    assert "cmp_try" not in [button.key for button in at.button]
    assert list(at.dataframe[0].value[column]) == list(table[column]) and at.session_state["cmp_model_metrics"] is measured


def test_sweep_draws_one_line_per_method(layer):
    at = open_page("3_Compare.py")
    methods = ["svd", "magnitude", "tt"]
    at.multiselect(key="cmp_methods").set_value(methods).run()
    at.multiselect(key="cmp_densities").set_value([0.1, 0.5]).run()
    click_and_wait(at, "cmp_sweep_run", "cmp_sweep_job")
    assert not problems(at)
    (figure,) = [f for f in charts(at) if "against density" in f["layout"]["title"]["text"]]
    assert [trace["name"] for trace in figure["data"]] == methods
    for trace in figure["data"]:
        assert trace["x"] == [0.1, 0.5]
        expected = [direct(layer, trace["name"], d, aware=False)[1] for d in (0.1, 0.5)]
        assert trace["y"] == pytest.approx(expected, rel=1e-4)
    at.radio(key="cmp_sweep_y").set_value("output error").run()  # no new run, the other error
    (figure,) = [f for f in charts(at) if "against density" in f["layout"]["title"]["text"]]
    assert figure["data"][0]["y"][0] == pytest.approx(direct(layer, "svd", 0.1, aware=False)[2], rel=1e-4)


def test_stop_keeps_what_was_done_and_the_page_goes_on():
    at = open_page("3_Compare.py")
    at.toggle(key="cmp_quick").set_value(False).run()
    at.multiselect(key="cmp_methods").set_value(["hierarchical", "palm4msa", "dsf"]).run()
    at.multiselect(key="cmp_densities").set_value([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9]).run()
    at.button(key="cmp_sweep_run").click().run()
    job = at.session_state["cmp_sweep_job"]
    at.button(key="cmp_sweep_job_stop").click().run()
    assert job.wait(30) and job.stopped
    at.run()
    done = len(job.result)
    assert done < 24
    assert [w.value for w in at.warning] == [f"Stopped: the {done} runs done before Stop."]
    assert not problems(at)
    at.multiselect(key="cmp_methods").set_value(["svd"]).run()
    click_and_wait(at, "cmp_run", "cmp_job")
    assert list(at.dataframe[0].value["method"]) == ["svd"]


def test_budget_below_a_method_minimum_is_said_in_words():
    at = open_page("3_Compare.py")
    at.selectbox(key="_layer_picker").set_value("head").run()
    at.slider(key="_density_slider").set_value(0.01).run()
    click_and_wait(at, "cmp_run", "cmp_job")
    assert not problems(at)
    table = at.dataframe[0].value.set_index("method")
    assert table.loc["svd", "note"] == "below the method's minimum: it needs 138 parameters (rank 1), the budget is 12"
    assert torch.isnan(torch.tensor(table.loc["svd", "relative error"]))
    assert table.loc["magnitude", "parameters"] == 12
    at.slider(key="_density_slider").set_value(0.3).run()  # the page still works
    click_and_wait(at, "cmp_run", "cmp_job")
    assert (at.dataframe[0].value["note"] == "").all()


def test_no_method_chosen_says_so():
    at = open_page("3_Compare.py")
    at.multiselect(key="cmp_methods").set_value([]).run()
    assert "Choose at least one method." in [i.value for i in at.info] and not problems(at)


def test_a_synthetic_matrix_is_compared_too():
    at = open_page("3_Compare.py")
    at.radio(key="_target_source").set_value("Synthetic matrix").run()
    at.number_input(key="_synthetic_m").set_value(48).run()
    at.number_input(key="_synthetic_n").set_value(64).run()
    click_and_wait(at, "cmp_run", "cmp_job")
    assert not problems(at)
    table = at.dataframe[0].value
    assert list(table["method"]) == list(METHODS) and (table["parameters"] <= int(0.3 * 48 * 64)).all()
    assert "synthetic 48 x 64" in at.caption[0].value


def test_a_fixed_pattern_goes_to_every_method_that_takes_one(layer):
    patterned = [name for name, spec in METHODS.items() if "pattern" in spec.options]
    assert {"dsf", "magnitude", "wanda", "sparsegpt"} <= set(patterned)
    at = open_page("3_Compare.py")
    at.multiselect(key="cmp_methods").set_value([*patterned, "svd"]).run()
    at.selectbox(key="cmp_pattern").set_value("2:4").run()
    at.slider(key="_density_slider").set_value(0.5).run()
    click_and_wait(at, "cmp_run", "cmp_job")
    assert not problems(at)
    table = at.dataframe[0].value.set_index("method")
    kernel, matrix, _ = layer
    for method in patterned:
        quick = METHODS[method].presets.get("quick", {})
        expected = factorize(kernel, method, density=0.5, pattern="2:4", **quick)
        unstructured = factorize(kernel, method, density=0.5, **quick)
        row = table.loc[method]
        assert row["relative error"] == pytest.approx(expected.error(matrix), rel=1e-4)
        assert row["relative error"] != pytest.approx(unstructured.error(matrix), rel=1e-4)
        assert row["parameters"] == expected.n_params and row["note"] == "2:4 pattern"
    assert table.loc["svd", "note"] == "no n:m pattern (unstructured)"
    assert table.loc["svd", "relative error"] == pytest.approx(direct(layer, "svd", 0.5, aware=False)[1], rel=1e-4)
