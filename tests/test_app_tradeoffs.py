"""AppTest of the Trade-offs page: a run against compress_model, the download, the CLI command, Stop,
bad budgets, and the cached model left as it was."""

import shlex

import pytest
import streamlit as st

from _apptest import cached_model_state, charts, click_and_wait, open_page, problems, same_state
from dsf_core.checkpoint import load_compressed
from dsf_core.cli import _parser
from dsf_core.compress import compress_model
from dsf_core.models import load_builtin


@pytest.fixture(scope="module")
def bundle():
    return load_builtin("digits-cnn")


@pytest.fixture
def downloads(monkeypatch):
    """The data handed to every st.download_button, as bytes."""
    given = []
    original = st.download_button

    def recording(label, data, *args, **kwargs):
        given.append(data() if callable(data) else data)
        return original(label, data, *args, **kwargs)

    monkeypatch.setattr(st, "download_button", recording)
    return given


def open_with_fast_settings(method="svd"):
    at = open_page("4_Trade-offs.py")
    assert not problems(at)
    at.multiselect(key="trade_layers").set_value(["fc", "head"]).run()
    at.selectbox(key="trade_method").set_value(method).run()
    return at


def test_a_run_shows_the_metric_of_compress_model_and_downloads_its_checkpoint(bundle, downloads, tmp_path):
    before = cached_model_state()
    at = open_with_fast_settings()
    click_and_wait(at, "trade_run", "trade_job")
    assert not problems(at)
    again = compress_model(bundle, "svd", 0.3, layers="fc,head", calibration=64, sequential=False)
    expected = bundle.evaluate(again.model)["accuracy"]
    (row,) = at.dataframe[0].value.to_dict("records")
    assert row["accuracy"] == pytest.approx(expected) and row["status"] == "2 layers"
    dense = bundle.evaluate(bundle.model)["accuracy"]
    metric_plots = [f for f in charts(at) if f["layout"]["title"]["text"].startswith("accuracy against")]
    assert len(metric_plots) == 2
    for figure in metric_plots:
        assert [t["name"] for t in figure["data"]] == ["svd", "dense model"]
        assert figure["data"][0]["y"] == [pytest.approx(expected)] and figure["data"][1]["y"] == [pytest.approx(dense)]
    assert at.download_button(key="trade_download")
    path = tmp_path / "downloaded.safetensors"
    path.write_bytes(downloads[-1])
    assert bundle.evaluate(load_compressed(path, bundle.model))["accuracy"] == pytest.approx(expected)
    command = at.code[-1].value.splitlines()[0]
    args = _parser().parse_args(shlex.split(command)[3:])
    assert (args.model, args.method, args.density, args.layers, args.calibration, args.sequential) == (
        "digits-cnn", "svd", 0.3, "fc,head", 64, False)
    assert args.output_weighting is False
    assert same_state(before, cached_model_state())


def test_a_second_run_adds_a_line_and_the_run_picker_shows_its_layers():
    at = open_with_fast_settings()
    click_and_wait(at, "trade_run", "trade_job")
    at.selectbox(key="trade_method").set_value("magnitude").run()
    click_and_wait(at, "trade_run", "trade_job")
    figures = charts(at)
    assert [t["name"] for t in figures[0]["data"]] == ["svd", "magnitude", "dense model"]
    table = at.dataframe[0].value.set_index("run")
    assert figures[-1]["layout"]["title"]["text"] == "Per-layer error of run #2 magnitude at density 0.30"
    at.selectbox(key="trade_pick").set_value(1).run()
    bars = charts(at)[-1]
    assert bars["layout"]["title"]["text"] == "Per-layer error of run #1 svd at density 0.30"
    assert bars["data"][0]["x"] == ["fc", "head"] and table.loc[1, "method"] == "svd"


def test_sweep_stop_keeps_the_runs_done_and_the_page_goes_on():
    before = cached_model_state()
    at = open_page("4_Trade-offs.py")
    at.toggle(key="trade_quick").set_value(False).run()  # DSF at full quality: a sweep of several seconds
    at.multiselect(key="trade_sweep_densities").set_value([0.05, 0.1, 0.2, 0.3, 0.5, 0.7]).run()
    at.button(key="trade_sweep_run").click().run()
    job = at.session_state["trade_sweep_job"]
    at.button(key="trade_sweep_job_stop").click().run()
    assert job.wait(60) and job.stopped
    at.run()
    kept = len(job.result.runs)
    assert kept < 6
    assert at.warning[0].value.startswith(f"Stopped: {kept} run(s) kept")
    if kept:
        table = at.dataframe[0].value
        assert len(table) == kept and table["status"].iloc[-1].startswith("stopped after")
    assert not problems(at)
    at.selectbox(key="trade_method").set_value("magnitude").run()
    click_and_wait(at, "trade_run", "trade_job")
    assert at.dataframe[0].value["method"].iloc[-1] == "magnitude" and not problems(at)
    assert same_state(before, cached_model_state())


def test_bad_inputs_are_plain_messages():
    at = open_with_fast_settings()
    at.multiselect(key="trade_layers").set_value([]).run()
    assert "Choose at least one layer." in [i.value for i in at.info] and not problems(at)
    at.multiselect(key="trade_layers").set_value(["convs.0", "convs.1", "convs.2", "fc", "head"]).run()
    at.slider(key="_density_slider").set_value(0.01).run()
    click_and_wait(at, "trade_run", "trade_job")  # convs.0, convs.1 and head cannot reach rank 1: kept dense
    assert not problems(at)
    (row,) = at.dataframe[0].value.to_dict("records")
    assert row["layers"] == "all; 3 kept dense" and row["status"] == "5 layers"
    kept = next(c.value for c in at.caption if c.value.startswith("Kept dense"))
    assert "**convs.0**: Method 'svd' needs 41 parameters" in kept and "**head**" in kept
    at.text_area(key="trade_overrides").set_value("fc=2").run()
    assert [e.value for e in at.error] == ["per-layer density 'fc=2': expected PATTERN=DENSITY with a density in (0, 1]"]
    at.text_area(key="trade_overrides").set_value("fc=1").run()
    at.slider(key="_density_slider").set_value(0.3).run()
    at.selectbox(key="trade_method").set_value("magnitude").run()
    click_and_wait(at, "trade_run", "trade_job")
    table = at.dataframe[0].value
    assert not problems(at) and list(table["method"]) == ["svd", "magnitude"]
    assert table["layers"].iloc[-1] == "all; 1 kept dense"
    assert "--layer-density fc=1" in at.code[0].value and "--keep-infeasible" in at.code[0].value


def test_a_stopped_run_is_partial_and_its_checkpoint_is_offered_only_on_request():
    at = open_page("4_Trade-offs.py")
    at.toggle(key="trade_quick").set_value(False).run()  # full-quality DSF: several seconds per layer
    at.button(key="trade_run").click().run()
    job = at.session_state["trade_job"]
    at.button(key="trade_job_stop").click().run()
    assert job.wait(120) and job.result.runs[0].stopped
    at.run()
    assert not problems(at)
    assert at.dataframe[0].value["layers"].iloc[0].startswith("partial: ")
    assert any("was stopped" in w.value and "partial one" in w.value for w in at.warning)
    assert not at.get("download_button")
    at.checkbox(key="trade_partial_ok").check().run()
    assert at.download_button(key="trade_download").proto.label == "Download the partial checkpoint"


def test_output_weighting_is_offered_where_the_method_can_weigh_rows():
    at = open_with_fast_settings("dsf")
    box = at.checkbox(key="trade_output_weighting")
    assert not box.value and not box.disabled  # digits-cnn does not recommend it
    box.check().run()
    assert "--output-weighting" in shlex.split(at.code[-1].value.splitlines()[0])
    at.selectbox(key="trade_method").set_value("tt").run()
    assert at.checkbox(key="trade_output_weighting").disabled
    assert "--no-output-weighting" in shlex.split(at.code[-1].value.splitlines()[0])
