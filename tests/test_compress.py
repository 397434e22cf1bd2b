"""Layers, calibration Grams and whole-model compression on small models the tests build."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import dsf_core
from _small_models import cnn_bundle, gpt2_bundle
from dsf_core.calibration import collect_grams, output_sensitivity, sequential_groups
from dsf_core.checkpoint import read_manifest, save_compressed
from dsf_core.compress import compress_model, output_row_weights
from dsf_core.models import ModelBundle
from dsf_core.layers import list_layers, select_layers, set_module, weight_matrix


def test_layers_are_listed_with_matrix_shapes():
    layers = {layer.name: layer for layer in list_layers(cnn_bundle().model)}
    assert list(layers) == ["conv1", "conv2", "fc1", "fc2"]  # the grouped conv is left out
    assert layers["conv2"].type == "Conv2d" and layers["conv2"].shape == (16, 72)
    assert layers["conv2"].weight_shape == (16, 8, 3, 3) and layers["conv2"].n_params == 16 * 72 + 16
    assert layers["fc1"].shape == (32, 576)


def test_transformers_conv1d_is_read_as_out_by_in():
    model = gpt2_bundle().model
    layers = {layer.name: layer for layer in list_layers(model)}
    attn = layers["transformer.h.0.attn.c_attn"]
    assert attn.type == "Conv1D" and attn.shape == (96, 32)
    x = torch.randn(5, 32)
    module = model.get_submodule("transformer.h.0.attn.c_attn")
    torch.testing.assert_close(module(x), x @ weight_matrix(module).T + module.bias)


def test_layer_patterns_select_and_bad_patterns_say_what_exists():
    model = cnn_bundle().model
    assert [layer.name for layer in select_layers(model, "conv*, fc2")] == ["conv1", "conv2", "fc2"]
    with pytest.raises(ValueError, match="No factorizable layer matches 'attn.*'.*conv1"):
        select_layers(model, "attn.*")


def test_conv_gram_predicts_output_energy_for_any_kernel():
    bundle = cnn_bundle()
    batches = bundle.calibration_inputs(64)
    gram = collect_grams(bundle.model, bundle.forward, batches, ["conv2"], damp=0.0)["conv2"]
    conv = bundle.model.conv2
    W = torch.randn(5, 72)
    with torch.no_grad():
        inputs = [F.relu(bundle.model.conv1(b)) for b in batches]
        outputs = [F.conv2d(x, W.reshape(5, 8, 3, 3), None, conv.stride, conv.padding, conv.dilation) for x in inputs]
    rows = sum(o.shape[0] * o.shape[2] * o.shape[3] for o in outputs)
    energy = sum(float(o.square().sum()) for o in outputs) / rows
    assert float(torch.trace(W @ gram @ W.T)) == pytest.approx(energy, rel=1e-4)


def test_linear_gram_is_the_mean_outer_product_and_damping_adds_to_the_diagonal():
    bundle = gpt2_bundle()
    batches = bundle.calibration_inputs(16)
    name = "transformer.h.1.mlp.c_proj"
    captured = []
    handle = bundle.model.get_submodule(name).register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    grams = {d: collect_grams(bundle.model, bundle.forward, batches, [name], damp=d)[name] for d in (0.0, 0.01)}
    handle.remove()
    X = torch.cat([c.reshape(-1, c.shape[-1]) for c in captured[: len(batches)]]).double()
    torch.testing.assert_close(grams[0.0], (X.T @ X / X.shape[0]).float(), rtol=1e-4, atol=1e-5)
    extra = grams[0.01] - grams[0.0]
    torch.testing.assert_close(extra, torch.eye(128) * 0.01 * float(grams[0.0].diagonal().mean()))


def _dense_twin(bundle, result):
    """A copy of the original model whose compressed layers carry the dense approximations."""
    twin = copy.deepcopy(bundle.model)
    for name, factorization in result.factorizations.items():
        module = twin.get_submodule(name)
        dense = factorization.to_matrix()
        dense = (dense.T if type(module).__name__ == "Conv1D" else dense).reshape(module.weight.shape)
        module.weight = torch.nn.Parameter(dense)  # a new tensor: GPT-2 ties lm_head to the embedding
    return twin


@pytest.mark.parametrize("make_bundle", [cnn_bundle, gpt2_bundle])
@pytest.mark.parametrize("method, sequential", [("dsf", True), ("dsf", False), ("svd", True), ("palm4msa", True)])
def test_compressed_model_computes_through_its_factors(make_bundle, method, sequential):
    bundle = make_bundle()
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    result = compress_model(bundle, method, 0.5, calibration=32, sequential=sequential, n_iter=20) if method == "palm4msa" \
        else compress_model(bundle, method, 0.5, calibration=32, sequential=sequential)
    assert all(torch.equal(v, bundle.model.state_dict()[k]) for k, v in before.items())  # original untouched
    batch = bundle.calibration_inputs(8)[0]
    with torch.no_grad():
        torch.testing.assert_close(bundle.forward(result.model, batch), bundle.forward(_dense_twin(bundle, result), batch),
                                   rtol=1e-4, atol=1e-4)
    assert len(result.layers) == len(list_layers(bundle.model))
    assert all(layer.n_params <= 0.5 * layer.n_params_dense for layer in result.layers)
    assert result.n_params_compressed <= 0.5 * result.n_params_dense
    assert result.metric_name == "top1_agreement" and result.dense_metric == 1.0
    assert 0.0 <= result.compressed_metric <= 1.0


def test_activation_aware_layers_report_weighted_errors_and_data_free_do_not():
    bundle = cnn_bundle()
    aware = compress_model(bundle, "dsf", 0.4, calibration=64, layers="fc*", evaluate=False)
    free = compress_model(bundle, "dsf", 0.4, calibration=0, layers="fc*", evaluate=False)
    assert [layer.name for layer in aware.layers] == ["fc1", "fc2"]
    assert all(layer.weighted_error is not None for layer in aware.layers)
    assert all(layer.weighted_error is None for layer in free.layers)
    assert aware.compressed_metric is None


def test_sequential_grams_see_earlier_compression():
    bundle = cnn_bundle()
    seq = compress_model(bundle, "magnitude", 0.2, calibration=64, sequential=True, evaluate=False)
    ind = compress_model(bundle, "magnitude", 0.2, calibration=64, sequential=False, evaluate=False)
    assert seq.layers[0].weighted_error == pytest.approx(ind.layers[0].weighted_error)  # same input
    assert seq.layers[-1].weighted_error != pytest.approx(ind.layers[-1].weighted_error)


def test_callback_reports_progress_and_can_stop():
    seen = []
    result = compress_model(cnn_bundle(), "svd", 0.5, evaluate=False,
                            callback=lambda done, total, report: seen.append((done, total, report.name)) or done < 2)
    assert seen == [(1, 4, "conv1"), (2, 4, "conv2")] and len(result.layers) == 2


def test_a_compressed_model_can_be_copied_and_compressed_again():
    bundle = cnn_bundle()
    first = compress_model(bundle, "dsf", 0.6, layers="fc1", calibration=0, evaluate=False)
    twin = copy.deepcopy(first.model)  # CSR buffers: plain deepcopy cannot copy their storage
    x = bundle.calibration_inputs(4)[0]
    torch.testing.assert_close(twin(x), first.model(x))
    assert twin.fc1.factor_0 is not first.model.fc1.factor_0
    twin.fc1.bias.data.add_(1.0)  # the copy owns its tensors
    assert not torch.equal(twin.fc1.bias, first.model.fc1.bias)
    again = compress_model(dataclasses.replace(bundle, model=first.model), "magnitude", 0.5, layers="fc2", calibration=0)
    assert {layer.name for layer in again.layers} == {"fc2"} and again.compressed_metric is not None


class _Watched(torch.nn.Module):
    """Layers whose inputs relate in every way ``sequential_groups`` must tell apart."""

    def __init__(self):
        super().__init__()
        for name in ("q", "k", "v", "a", "b", "c", "d", "e", "twice", "f"):
            setattr(self, name, torch.nn.Linear(8, 8))

    def forward(self, x):
        x = self.q(x) * self.k(x) + self.v(x)  # q, k, v: the same input tensor
        h = x.clone()
        h.add_(self.a(h))  # a's input is changed in place before b reads it
        y = self.b(h)
        y = self.d(torch.relu(self.c(y * 1.0)))  # c's input is freed; d's may reuse its memory
        z = self.e(y.view(-1, 8))  # a view of d's input: another tensor object
        return self.f(self.twice(self.twice(z)))  # shared weights: called twice


def _watched_bundle() -> ModelBundle:
    torch.manual_seed(0)
    model = _Watched().eval()
    data = torch.randn(48, 8, generator=torch.Generator().manual_seed(1))
    return ModelBundle("watched", model, "encoder", "mean_cosine", True, lambda n: list(data[:n].split(16)),
                       lambda m, batch: m(batch), lambda m: {"mean_cosine": 1.0})


def test_layers_reading_one_unchanged_input_are_grouped_and_shared_layers_run_whole_passes():
    bundle = _watched_bundle()
    names = [layer.name for layer in list_layers(bundle.model)]
    groups = sequential_groups(bundle.model, bundle.forward, bundle.calibration_inputs(16)[0], names)
    assert groups == [(["q", "k", "v"], True), (["a"], True), (["b"], True), (["c"], True), (["d"], True),
                      (["e"], True), (["twice"], False), (["f"], True)]


@pytest.mark.parametrize("make_bundle", [cnn_bundle, gpt2_bundle, _watched_bundle])
def test_passes_stopped_once_every_layer_has_its_input_give_the_same_grams(make_bundle):
    bundle = make_bundle()
    batches = bundle.calibration_inputs(32)
    names = [layer.name for layer in list_layers(bundle.model)]
    for group, called_once in sequential_groups(bundle.model, bundle.forward, batches[0], names):
        stopped = collect_grams(bundle.model, bundle.forward, batches, group, stop_early=called_once)
        whole = collect_grams(bundle.model, bundle.forward, batches, group)
        assert stopped.keys() == whole.keys()
        assert all(torch.equal(stopped[name], whole[name]) for name in group)


@pytest.mark.parametrize("make_bundle", [gpt2_bundle, _watched_bundle])
def test_each_sequential_gram_is_the_one_of_the_model_with_the_earlier_layers_compressed(make_bundle):
    bundle = make_bundle()
    result = compress_model(bundle, "magnitude", 0.4, calibration=32, evaluate=False)
    batches = bundle.calibration_inputs(32)
    model = copy.deepcopy(bundle.model)
    for report in result.layers:  # oracle: whole passes, one layer at a time, as compressed in order
        gram = collect_grams(model, bundle.forward, batches, [report.name])[report.name]
        module = model.get_submodule(report.name)
        factorization = result.factorizations[report.name]
        assert report.weighted_error == pytest.approx(factorization.error(weight_matrix(module), gram), rel=1e-5)
        set_module(model, report.name, factorization.to_module(module.bias))


def _chain(first, second):
    """A model applying ``first`` then ``second``, and its forward."""
    model = torch.nn.Sequential(first, second)
    return model, lambda m, batch: m(batch)


def test_output_sensitivity_is_the_squared_jacobian_column_norm():
    torch.manual_seed(0)
    model, forward = _chain(torch.nn.Linear(6, 5, bias=False), torch.nn.Linear(5, 3, bias=False))
    model[1].weight.requires_grad_(False)
    batches = list(torch.randn(4000, 6).split(1000))
    sensitivity = output_sensitivity(model, forward, batches, ["0", "1"])
    # y = W2 (W1 x): unit i of the first layer moves y by W2[:, i]; the last layer's units by 1.
    torch.testing.assert_close(sensitivity["0"], model[1].weight.pow(2).sum(0), rtol=0.1, atol=0)
    torch.testing.assert_close(sensitivity["1"], torch.ones(3), rtol=0.1, atol=0)
    assert not model[1].weight.requires_grad and all(p.grad is None for p in model.parameters())


def test_output_sensitivity_of_conv_layers_is_per_output_channel():
    torch.manual_seed(0)
    model, forward = _chain(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.Conv2d(6, 4, 1))
    sensitivity = output_sensitivity(model, forward, [torch.randn(16, 3, 16, 16)], ["0"])
    expected = model[1].weight[:, :, 0, 0].pow(2).sum(0).detach()  # a 1x1 conv mixes channels per pixel
    torch.testing.assert_close(sensitivity["0"], expected, rtol=0.1, atol=0)


def test_output_sensitivity_of_an_unused_layer_is_zero_and_gradient_free_forwards_are_refused():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2), torch.nn.Linear(4, 3))

    def forward(m, batch):  # the third layer (a pooler, say) is never used
        return m[1](m[0](batch))

    assert torch.equal(output_sensitivity(model, forward, [torch.randn(8, 4)], ["2"])["2"], torch.zeros(3))
    with pytest.raises(ValueError, match="without gradients"):
        output_sensitivity(model, torch.no_grad()(forward), [torch.randn(8, 4)], ["0"])


def test_output_sensitivity_is_not_changed_by_in_place_activations():
    torch.manual_seed(0)
    batches = [torch.randn(2000, 6)]
    plain = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    in_place = copy.deepcopy(plain)
    in_place[1] = torch.nn.ReLU(inplace=True)
    forward = lambda m, batch: m(batch)  # noqa: E731
    torch.testing.assert_close(output_sensitivity(in_place, forward, batches, ["0"]),
                               output_sensitivity(plain, forward, batches, ["0"]))


def test_output_sensitivity_of_a_frozen_model_with_only_unused_layers_is_zero():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2), torch.nn.Linear(4, 3))
    model.requires_grad_(False)
    forward = lambda m, batch: m[1](m[0](batch))  # noqa: E731
    assert torch.equal(output_sensitivity(model, forward, [torch.randn(8, 4)], ["2"])["2"], torch.zeros(3))
    assert not any(p.requires_grad for p in model.parameters())


def test_output_row_weights_keep_the_order_soften_the_spread_and_average_one():
    weights = output_row_weights({"a": torch.tensor([16.0, 1.0, 0.0, 1e-12]), "b": torch.zeros(3)})["a"]
    assert weights.mean() == pytest.approx(1.0, abs=0.01)
    assert weights[0] / weights[1] == pytest.approx(2.0)  # 16x the sensitivity: 2x the weight
    assert weights[2] == weights[3] == pytest.approx(0.01)  # floored: no row is ignored outright
    assert output_row_weights({"b": torch.zeros(3)})["b"] is None


def _recommending_bundle():
    return dataclasses.replace(
        cnn_bundle(), compress_defaults={"calibration": 32, "sequential": False, "output_weighting": True},
        method_options={"dsf": {"n_rounds": 5}},
    )


def test_a_bundles_recommended_settings_apply_unless_given(tmp_path):
    bundle = _recommending_bundle()
    recommended = compress_model(bundle, "dsf", 0.4, evaluate=False)
    assert recommended.settings == {"calibration": 32, "sequential": False, "damp": 0.01, "output_weighting": True}
    assert recommended.options == {"n_rounds": 5}
    assert all(f.info["row_weighted"] and f.options["n_rounds"] == 5 for f in recommended.factorizations.values())
    path = tmp_path / "m.safetensors"
    save_compressed(path, recommended, "small-cnn")
    assert read_manifest(path)["settings"] == recommended.settings

    given = compress_model(bundle, "dsf", 0.4, calibration=16, sequential=True, damp=0.1, output_weighting=False,
                           n_rounds=3, evaluate=False)
    assert given.settings == {"calibration": 16, "sequential": True, "damp": 0.1, "output_weighting": False}
    assert not any(f.info["row_weighted"] for f in given.factorizations.values())
    assert all(f.options["n_rounds"] == 3 for f in given.factorizations.values())
    plain = compress_model(cnn_bundle(), "dsf", 0.4, evaluate=False)
    assert plain.settings == {"calibration": 128, "sequential": True, "damp": 0.01, "output_weighting": False}
    quick = dsf_core.METHODS["dsf"].presets["quick"]
    assert compress_model(bundle, "dsf", 0.4, evaluate=False, **quick).options == quick  # a preset replaces them
    assert compress_model(bundle, "tt", 0.5, evaluate=False).settings["calibration"] == 0  # reads no data


def test_output_weighting_leaves_the_original_model_as_it_was():
    bundle = _recommending_bundle()
    bundle.model.requires_grad_(False)
    before = copy.deepcopy(bundle.model.state_dict())
    compress_model(bundle, "svd", 0.5, evaluate=False)
    assert not any(p.requires_grad or p.grad is not None for p in bundle.model.parameters())
    assert not any(m._forward_hooks for m in bundle.model.modules())
    assert all(torch.equal(value, before[key]) for key, value in bundle.model.state_dict().items())


def test_output_weighting_follows_what_the_method_can_do():
    bundle = _recommending_bundle()
    # The bundle's choice applies where the method reads Grams and its factors multiply.
    assert not compress_model(bundle, "tt", 0.5, evaluate=False).settings["output_weighting"]
    assert not compress_model(bundle, "palm4msa", 0.5, evaluate=False).settings["output_weighting"]
    assert not compress_model(bundle, "svd", 0.5, calibration=0, evaluate=False).settings["output_weighting"]
    asked = compress_model(bundle, "palm4msa", 0.5, layers="fc*", output_weighting=True, evaluate=False)
    assert all(f.info["row_weighted"] for f in asked.factorizations.values())
    with pytest.raises(ValueError, match="cannot weigh output rows"):
        compress_model(bundle, "tt", 0.5, output_weighting=True)
    with pytest.raises(ValueError, match="needs calibration samples"):
        compress_model(bundle, "magnitude", 0.5, calibration=0, output_weighting=True)
    with pytest.raises(ValueError, match=r"unknown compress settings \['calibraton'\]"):
        compress_model(dataclasses.replace(bundle, compress_defaults={"calibraton": 8}), "svd", 0.5)


def test_layer_densities_give_layers_their_own_budget_and_one_keeps_a_layer_dense():
    bundle = dsf_core.models.load_builtin("digits-cnn")
    result = compress_model(bundle, "magnitude", 0.3, calibration=0, evaluate=False,
                            layer_densities={"fc": 1.0, "convs.[01]": 0.5})
    done = {report.name: report for report in result.layers}
    assert set(done) == {"convs.0", "convs.1", "convs.2", "head"}
    assert result.kept_dense == {"fc": "density 1 for this layer"}
    assert torch.equal(result.model.fc.weight, bundle.model.fc.weight)
    for name, density in (("convs.0", 0.5), ("convs.1", 0.5), ("convs.2", 0.3), ("head", 0.3)):
        assert done[name].n_params == int(density * done[name].n_params_dense)
    with pytest.raises(ValueError, match="density"):
        compress_model(bundle, "magnitude", 0.3, calibration=0, evaluate=False, layer_densities={"fc": 1.5})


def test_a_layer_that_cannot_meet_its_budget_stops_the_run_before_any_work(monkeypatch):
    bundle = dsf_core.models.load_builtin("digits-cnn")

    def started(*args, **kwargs):
        raise AssertionError("the run started before its layers were planned")

    monkeypatch.setattr(dsf_core.compress, "_compress_layer", started)
    monkeypatch.setattr(bundle, "calibration_inputs", started)
    # convs.2 (64 x 288) fits rank 1 at density 0.1; head (10 x 128), last, does not
    with pytest.raises(dsf_core.BudgetError, match=r"^Layer 'head': Method 'svd' needs 138 parameters for rank 1") as caught:
        compress_model(bundle, "svd", 0.1, layers="convs.2,head", calibration=8, evaluate=False)
    assert (caught.value.layer, caught.value.needed, caught.value.budget, caught.value.what) == ("head", 138, 128, "rank 1")
    with pytest.raises(dsf_core.BudgetError, match="'head'"):  # a density of its own is planned too
        compress_model(bundle, "svd", 0.5, layers="convs.2,head", calibration=0, evaluate=False,
                       layer_densities={"head": 0.1})


def test_a_layer_that_cannot_meet_its_budget_is_kept_dense_when_asked(tmp_path):
    bundle = dsf_core.models.load_builtin("digits-cnn")
    with pytest.raises(dsf_core.BudgetError):  # convs.0 (32 x 9), head (10 x 128) at density 0.1: below rank 1
        compress_model(bundle, "svd", 0.1, calibration=0, evaluate=False)
    result = compress_model(bundle, "svd", 0.1, calibration=0, keep_infeasible=True)
    assert list(result.kept_dense) == ["convs.0", "head"] and "needs" in result.kept_dense["head"]
    assert [report.name for report in result.layers] == ["convs.1", "convs.2", "fc"]
    assert not result.stopped and result.compressed_metric is not None
    path = tmp_path / "m.safetensors"
    save_compressed(path, result, "digits-cnn")
    reloaded = dsf_core.checkpoint.load_compressed(path, bundle.model)
    batch = bundle.calibration_inputs(8)[0]
    torch.testing.assert_close(reloaded(batch), result.model(batch))


def test_a_stopped_run_says_so():
    bundle = dsf_core.models.load_builtin("digits-cnn")
    result = compress_model(bundle, "magnitude", 0.3, calibration=0, evaluate=False,
                            callback=lambda done, total, report: done < 2)
    assert result.stopped and len(result.layers) == 2
    assert not compress_model(bundle, "magnitude", 0.3, calibration=0, evaluate=False).stopped
