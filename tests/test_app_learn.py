"""AppTest of the Learn page: every toy, the comparison against direct factorize calls, the
Hadamard and low-rank demonstrations, Stop, and a density too low for some methods."""

import base64
import math
import time

import numpy as np
import pytest
from _apptest import charts, click_and_wait, open_page, problems

from dsf_app import learn, toys
from dsf_core import METHODS, factorize

PAGE = "5_Learn.py"


def _toy(at, kind, size, **widgets):
    """Choose a toy on the page; returns the spec it should show."""
    at.selectbox(key="learn_kind").set_value(kind).run()
    at.selectbox(key="learn_size").set_value(size)
    for key, value in widgets.items():
        widget = at.number_input if key == "rank" else at.slider
        widget(key=f"learn_{key}").set_value(value)
    at.run()
    seed = int(at.number_input(key="learn_seed").value)
    return toys.spec_for(kind, size, seed, **widgets)


def _heatmap_values(at) -> np.ndarray:
    """The values of the page's first chart, the toy's heatmap (plotly stores them as base64)."""
    z = charts(at)[0]["data"][0]["z"]
    shape = [int(side) for side in str(z["shape"]).split(",")]
    return np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)


def _rows(at, index=0):
    return at.dataframe[index].value.to_dict("records")


def test_renders_with_the_formulas():
    at = open_page(PAGE)
    assert not problems(at)
    formulas = " ".join(latex.value for latex in at.latex)
    pieces = [
        r"\operatorname{nnz}(A) + \operatorname{nnz}(B) \le",  # DSF
        r"\operatorname{tr}\big((W - AB)\,G\,(W - AB)^\top",  # activation-aware
        r"S_1 S_2 \cdots S_Q",  # PALM4MSA
        r"U_r \Sigma_r V_r^\top",  # SVD
        r"G_1[i_1, j_1]",  # TT
        r"|W_{ij}|\,\|X_j\|_2",  # Wanda
    ]
    for piece in pieces:
        assert piece in formulas


@pytest.mark.parametrize(
    "kind, widgets",
    [
        ("hadamard", {}),
        ("dft", {}),
        ("low_rank", {"rank": 3, "noise": 0.2}),
        ("planted", {"density_a": 0.2, "density_b": 0.05}),
        ("gaussian", {}),
    ],
)
def test_each_toy_is_generated_and_described(kind, widgets):
    at = open_page(PAGE)
    spec = _toy(at, kind, 16, **widgets)
    assert not problems(at)
    toy = toys.make(spec)
    assert any(md.value == toy.note for md in at.markdown)
    np.testing.assert_array_equal(_heatmap_values(at), toy.matrix.float().numpy())
    if toy.natural_density is not None:
        on_grid = math.ceil(toy.natural_density * 100 - 1e-9) / 100
        at.button(key="learn_use_density").click().run()
        assert at.sidebar.slider(key="_density_slider").value == pytest.approx(on_grid)
        assert not problems(at)


def test_comparison_table_matches_factorize_with_the_quick_options():
    at = open_page(PAGE)
    spec = _toy(at, "low_rank", 32, rank=4, noise=0.05)
    at.sidebar.slider(key="_density_slider").set_value(0.3).run()
    job = click_and_wait(at, "learn_compare_run", "learn_compare_job")
    assert job.error is None and not problems(at)
    rows = _rows(at)
    assert [row["method"] for row in rows] == list(METHODS)
    W = toys.make(spec).matrix
    for row in rows:
        result = factorize(W, row["method"], density=0.3, **METHODS[row["method"]].presets.get("quick", {}))
        assert row["relative error"] == pytest.approx(result.error(W), rel=1e-6, abs=1e-12), row["method"]
        assert row["parameters"] == result.n_params
    assert len(at.get("plotly_chart")) == 2  # the toy's heatmap and the error bars
    assert learn.verdict(rows, ("svd",)) in [md.value for md in at.markdown]  # who won, from this run
    at.sidebar.slider(key="_density_slider").set_value(0.31).run()
    assert not at.dataframe  # another budget: the old table is not shown as if it were this one's
    at.sidebar.slider(key="_density_slider").set_value(0.3).run()
    assert _rows(at) == rows  # and back: from the cache, not recomputed
    assert at.session_state["learn_compare_job"] is job


def test_hadamard_comparison_gives_hierarchical_its_butterflies():
    at = open_page(PAGE)
    spec = _toy(at, "hadamard", 16)
    at.button(key="learn_use_density").click().run()  # 0.5: the 128 numbers of 4 butterflies
    click_and_wait(at, "learn_compare_run", "learn_compare_job")
    assert not problems(at)
    rows = {row["method"]: row for row in _rows(at)}
    assert rows["hierarchical"]["parameters"] == toys.butterfly_params(16) == 128
    assert rows["hierarchical"]["relative error"] < 1e-8 and rows["tt"]["relative error"] < 1e-8
    assert "hierarchical with n_factors = 4, projection = splincol, k = 2" in " ".join(c.value for c in at.caption)
    sentence = learn.verdict(list(rows.values()), toys.make(spec).built_for)
    assert "store it exactly" in sentence and sentence in [md.value for md in at.markdown]


def test_hadamard_demo_recovers_the_butterflies_where_svd_cannot():
    at = open_page(PAGE)
    at.selectbox(key="learn_had_size").set_value(32).run()
    click_and_wait(at, "learn_had_run", "learn_had_job")
    assert not problems(at)
    shown = {metric.label: metric.value for metric in at.metric}
    assert float(shown["Hierarchical PALM4MSA error"]) <= 1e-8
    assert float(shown["SVD error (rank 5)"]) > 0.5
    assert shown["Stored parameters"] == f"{2 * 32 * 5} vs {2 * 32 * 5}"
    assert len(at.get("plotly_chart")) == 1 + 5  # the toy, then one spy plot per butterfly


def test_low_rank_demo_svd_wins_with_the_eckart_young_error():
    at = open_page(PAGE)
    at.number_input(key="learn_lr_rank").set_value(6)
    at.slider(key="learn_lr_noise").set_value(0.05).run()
    click_and_wait(at, "learn_lr_run", "learn_lr_job")
    rows = {row["method"]: row for row in _rows(at)}
    assert set(rows) == set(learn.LOW_RANK_METHODS) and not problems(at)
    assert min(rows, key=lambda name: rows[name]["relative error"]) == "svd"
    s = np.linalg.svd(toys.make(toys.spec_for("low_rank", 128, 0, rank=6, noise=0.05)).matrix.numpy(), compute_uv=False)
    assert rows["svd"]["relative error"] == pytest.approx(np.sqrt(np.sum(s[6:] ** 2) / np.sum(s**2)), rel=1e-9)


def test_stop_shows_the_methods_done_so_far(monkeypatch):
    real = learn.factorize

    def second_method_runs_until_stopped(weight, method, *, callback=None, **kwargs):
        if method == list(METHODS)[1]:
            while callback(0, 1.0) is not False:  # a long run that only Stop ends
                pass
        return real(weight, method, callback=callback, **kwargs)

    monkeypatch.setattr(learn, "factorize", second_method_runs_until_stopped)
    at = open_page(PAGE)
    _toy(at, "gaussian", 16)
    at.button(key="learn_compare_run").click().run()
    job = at.session_state["learn_compare_job"]
    deadline = time.monotonic() + 30
    while not job.progress and time.monotonic() < deadline:  # the first method done, the second running
        time.sleep(0.01)
    at.button(key="learn_compare_job_stop").click().run()
    assert job.wait(30)
    at.run()
    assert not problems(at)
    rows = _rows(at)
    assert [row["method"] for row in rows] == list(METHODS)[:2]
    assert rows[1]["note"].startswith("stopped early")
    stopped = f"Stopped after 2 of {len(METHODS)} methods: the table shows what was done."
    assert [info.value for info in at.info] == [stopped]
    job = click_and_wait(at, "learn_had_run", "learn_had_job")  # the page still works
    assert job.error is None and not problems(at)


def test_a_density_too_low_for_some_methods_says_not_possible():
    at = open_page(PAGE)
    _toy(at, "gaussian", 16)
    at.sidebar.slider(key="_density_slider").set_value(0.01).run()  # 2 of 256 parameters
    click_and_wait(at, "learn_compare_run", "learn_compare_job")
    assert not at.exception and not at.error
    rows = {row["method"]: row for row in _rows(at)}
    impossible = [name for name, row in rows.items() if row["possible"] is False]
    assert {"svd", "tt", "palm4msa", "hierarchical"} <= set(impossible)
    for name in impossible:
        with pytest.raises(ValueError):
            factorize(toys.make(toys.spec_for("gaussian", 16)).matrix, name, density=0.01)
        assert rows[name]["note"].startswith("not possible:") and "raise the density" in rows[name]["note"]
    assert [w.value.split(":")[0] for w in at.warning] == ["Not possible at density 0.01"]
    at.sidebar.slider(key="_density_slider").set_value(0.5).run()
    click_and_wait(at, "learn_compare_run", "learn_compare_job")
    assert not at.warning and not problems(at)
    assert not any(row["note"].startswith(("not possible", "failed", "stopped")) for row in _rows(at))
