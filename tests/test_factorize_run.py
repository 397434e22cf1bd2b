"""dsf_app.factorize_run: options from widget values, progress bounds, one run's summary, the cache key;
and dsf_app.method_settings, which the runs use."""

import pytest
import torch

import dsf_core
from dsf_app import factorize_run as fr
from dsf_app import method_settings
from dsf_core import METHODS


@pytest.fixture(scope="module")
def weight_and_gram():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(40, 12, generator=g) @ torch.randn(12, 60, generator=g) + 0.1 * torch.randn(40, 60, generator=g)
    X = torch.randn(200, 60, generator=g) * torch.linspace(0.2, 2, 60)
    return W, X.T @ X / 200


def test_options_are_the_quick_preset_or_the_defaults():
    assert method_settings.options("dsf", quick=True) == {"n_rounds": 18}
    assert method_settings.options("dsf", quick=False) == {}
    assert method_settings.options("svd", quick=True) == {}  # no preset: the defaults
    method_settings.options("dsf", quick=True)["n_rounds"] = 1  # a copy: the preset is untouched
    assert METHODS["dsf"].presets["quick"] == {"n_rounds": 18}


def test_widgets_start_from_the_quick_preset_overlaid_on_the_defaults():
    def start(method, quick):  # what the Factorize page's option widgets start from
        return fr.resolve_options(method, method_settings.options(method, quick))

    assert start("dsf", quick=True) == {**start("dsf", quick=False), "n_rounds": 18}
    assert start("dsf", quick=False)["n_rounds"] == METHODS["dsf"].options["n_rounds"].default
    assert start("svd", quick=True) == {"rank": None}
    assert start("magnitude", quick=True) == {"pattern": "unstructured"}


def test_fit_gram_is_damped_only_for_activation_aware_runs_of_methods_that_read_one(weight_and_gram):
    _, G = weight_and_gram
    torch.testing.assert_close(method_settings.fit_gram(G, "dsf", aware=True), dsf_core.damp_gram(G, 0.01))
    assert method_settings.fit_gram(G, "dsf", aware=False) is None
    assert method_settings.fit_gram(G, "tt", aware=True) is None  # TT reads no Gram
    assert method_settings.fit_gram(None, "dsf", aware=True) is None
    assert [m for m in METHODS if method_settings.reads_gram(m)] == ["dsf", "svd", "magnitude", "wanda", "sparsegpt"]


def test_start_values_are_inside_each_options_range():
    for spec in METHODS.values():
        for name, option in spec.options.items():
            if option.default is None:
                assert option.check(spec.name, name, fr.start_value(option)) is not None
    assert fr.start_value(METHODS["dsf"].options["split"]) == 0.5
    assert fr.start_value(METHODS["tt"].options["n_cores"]) == 2


def test_resolve_options_checks_ranges_in_plain_words():
    resolved = fr.resolve_options("dsf", {"split": 0.3, "inner_dim": None, "n_rounds": 5})
    assert resolved["split"] == 0.3 and resolved["n_rounds"] == 5 and set(resolved) == set(METHODS["dsf"].options)
    with pytest.raises(ValueError, match=r"'split'.*range \(0.0, 1.0\)"):
        fr.resolve_options("dsf", {"split": 0.0})
    with pytest.raises(TypeError, match="Unknown option"):
        fr.resolve_options("svd", {"n_rounds": 3})


@pytest.mark.parametrize(
    "method, options",
    [
        ("dsf", {"n_rounds": 6, "tol": 0.0}),
        ("palm4msa", {"n_iter": 7, "tol": 0.0}),
        ("hierarchical", {"n_factors": 3, "n_iter": 4, "tol": 0.0}),
        ("sparsegpt", {"blocksize": 5}),
        ("svd", {}),
        ("tt", {}),
        ("magnitude", {}),
        ("wanda", {}),
    ],
)
def test_progress_reaches_one_exactly_at_the_last_possible_step(weight_and_gram, method, options):
    W, G = weight_and_gram
    resolved = fr.resolve_options(method, options)
    steps = []
    gram = G if dsf_core.METHODS[method].uses_gram != "no" else None
    dsf_core.factorize(W, method, density=0.5, gram=gram, callback=lambda step, _: steps.append(step), **options)
    fractions = [fr.progress_fraction(method, tuple(W.shape), resolved, step) for step in steps]
    assert len(steps) <= dsf_core.METHODS[method].steps(tuple(W.shape), resolved)
    assert all(0 < f <= 1 for f in fractions) and fractions == sorted(fractions)
    if method != "hierarchical":  # a hierarchical pass may stop early at rounding level
        assert fractions[-1] == 1.0


def test_svd_run_matches_eckart_young_and_its_rank(weight_and_gram):
    W, G = weight_and_gram
    outcome = fr.run(W, W, G, "svd", {"rank": 4}, density=0.5, aware=False, device=torch.device("cpu"))
    S = torch.linalg.svdvals(W.double())
    eckart_young = float(S[4:].square().sum().sqrt() / S.square().sum().sqrt())
    assert outcome.relative_error == pytest.approx(eckart_young, rel=1e-5)
    assert outcome.output_error == pytest.approx(outcome.result.error(W, G))
    assert outcome.rank == 4 and not outcome.stopped and outcome.steps == 1
    torch.testing.assert_close(outcome.original_values, S)
    torch.testing.assert_close(outcome.approximation, outcome.result.to_matrix())


def test_aware_run_fits_the_damped_gram_and_reports_the_undamped_one(weight_and_gram):
    W, G = weight_and_gram
    # 18 rounds: after 4, which of the two is ahead is noise (it flips with bfloat16-based products)
    outcome = fr.run(W, W, G, "dsf", {"n_rounds": 18}, density=0.4, aware=True, device=torch.device("cpu"))
    direct = dsf_core.factorize(W, "dsf", density=0.4, gram=dsf_core.damp_gram(G, 0.01), n_rounds=18)
    assert outcome.output_error == pytest.approx(direct.error(W, G), rel=1e-6)
    assert outcome.relative_error == pytest.approx(direct.error(W), rel=1e-6)
    data_free = fr.run(W, W, G, "dsf", {"n_rounds": 18}, density=0.4, aware=False, device=torch.device("cpu"))
    assert outcome.output_error < data_free.output_error


def test_a_run_without_gram_has_no_output_error(weight_and_gram):
    W, _ = weight_and_gram
    outcome = fr.run(W, W, None, "magnitude", {}, density=0.3, aware=True, device=torch.device("cpu"))
    assert outcome.output_error is None
    assert outcome.result.n_params == int(0.3 * W.numel())


def test_a_stopped_run_is_marked_with_the_steps_it_ran(weight_and_gram):
    W, _ = weight_and_gram
    options = {"n_rounds": 50, "tol": 0.0}
    stop_after_step_2 = lambda step, _: step < 2  # noqa: E731
    told = []
    outcome = fr.run(W, W, None, "dsf", options, density=0.5, aware=False, device="cpu", callback=stop_after_step_2,
                     on_stop=told.append)
    assert outcome.stopped and outcome.steps == 3 and told == [3]  # told before the summary, with the steps run
    fr.run(W, W, None, "dsf", {"n_rounds": 2}, density=0.5, aware=False, device="cpu", on_stop=told.append)
    assert told == [3]  # a run that ends by itself is not a stop
    assert outcome.relative_error == pytest.approx(outcome.result.error(W))


def test_run_key_holds_everything_that_decides_the_result():
    base = dict(target_key=("synthetic", 8, 8), method="dsf", options={"a": 1, "b": None})
    base.update(density=0.3, aware=False, device="cpu")
    key = fr.run_key(**base)
    assert key == fr.run_key(**{**base, "options": {"b": None, "a": 1}})
    hash(key)
    changes = [
        ("target_key", ("synthetic", 8, 9)),
        ("method", "svd"),
        ("options", {"a": 2, "b": None}),
        ("density", 0.31),
        ("aware", True),
        ("device", torch.device("cuda")),
    ]
    for name, value in changes:
        assert fr.run_key(**{**base, name: value}) != key, name


def test_summary_rows_put_the_dense_matrix_beside_the_result(weight_and_gram):
    W, G = weight_and_gram
    outcome = fr.run(W, W, G, "svd", {"rank": 3}, density=0.5, aware=False, device=torch.device("cpu"))
    rows = {row["quantity"]: row for row in fr.summary_rows(outcome)}
    assert rows["Parameters"]["factorization"] == f"{3 * 100:,} ({300 / 2400:.1%})"
    assert rows["Parameters"]["dense matrix"] == "2,400"
    assert rows["Bytes (CSR for sparse factors)"]["factorization"] == f"{outcome.result.n_bytes:,}"
    assert rows["FLOPs per input row"]["dense matrix"] == f"{2 * 2400:,}"
    assert rows["Rank of the product"]["factorization"] == "3"
    assert rows["Device"]["factorization"] == "cpu"


def test_factor_labels_and_tt_core_unfolding(weight_and_gram):
    W, _ = weight_and_gram
    dsf = dsf_core.factorize(W, "dsf", density=0.5, n_rounds=2)
    palm = dsf_core.factorize(W, "palm4msa", density=0.5, n_factors=3, n_iter=2)
    pruned = dsf_core.factorize(W, "magnitude", density=0.5)
    assert [fr.factor_label(dsf, i) for i in range(2)] == ["A", "B"]
    tt = dsf_core.factorize(W, "tt", density=0.5, n_cores=3)
    assert [fr.factor_label(palm, i) for i in range(3)] == ["S_1", "S_2", "S_3"]
    assert [fr.factor_label(tt, i) for i in range(3)] == ["G_1", "G_2", "G_3"]
    assert fr.factor_label(pruned, 0) == "Pruned W"
    core = torch.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5)
    unfolded = fr.core_matrix(core)
    assert unfolded.shape == (6, 20) and unfolded[4, 7] == core[1, 1, 1, 2]


def test_the_cache_keeps_fewer_large_results(monkeypatch):
    W = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    outcome = fr.run(W, W, None, "svd", {}, density=0.5, aware=False, device=None)
    assert outcome.memory_bytes == sum(
        t.numel() * t.element_size()
        for t in (*outcome.result.factors, outcome.approximation, outcome.singular_values, outcome.original_values)
    )
    assert fr.cache_limit(outcome) == 16  # small: the usual bound
    monkeypatch.setattr(fr, "CACHE_BYTES", 3 * outcome.memory_bytes)
    assert fr.cache_limit(outcome) == 3
    monkeypatch.setattr(fr, "CACHE_BYTES", 1)
    assert fr.cache_limit(outcome) == 1  # the newest is always kept


@pytest.mark.parametrize("method, option", [("svd", "rank"), ("palm4msa", "k"), ("tt", "ranks")])
def test_automatic_values_are_what_the_method_picks(method, option):
    W = torch.randn(48, 40, generator=torch.Generator().manual_seed(0))
    picked = fr.automatic_values(method, (48, 40), 0.3)[option]
    result = dsf_core.factorize(W, method, density=0.3)
    assert picked == result.info["chosen"][option]
    given = dsf_core.factorize(W, method, density=0.3, **{option: picked})
    if method == "palm4msa":  # an automatic k also tops each factor up to its share of the budget
        assert given.info["chosen"][option] == picked and given.n_params < result.n_params <= 0.3 * 48 * 40
    else:
        assert given.n_params == result.n_params
    assert fr.automatic_values(method, (48, 40), 0.001) == {}  # below the minimum: nothing to offer
