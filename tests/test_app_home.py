"""The Home page (app.py) in Streamlit's AppTest: model choice, device, summary, and bad input."""

import hashlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors
from streamlit.testing.v1 import AppTest
from torch import nn

from dsf_app import session
from dsf_core._torchvision_compat import import_torchvision
from dsf_core.layers import list_layers, skipped_layers
from dsf_core.models import load_builtin

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def home() -> AppTest:
    return AppTest.from_file(APP, default_timeout=60).run()


def metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def test_default_model_summary_matches_the_library():
    at = home()
    assert not at.exception and not at.error
    reference = load_builtin("digits-cnn")
    shown = metrics(at)
    assert shown["Parameters"] == f"{sum(p.numel() for p in reference.model.parameters()):,}"
    assert shown["accuracy"] == f"{reference.evaluate(reference.model)['accuracy']:.4g}"
    table = at.dataframe[0].value
    assert list(table["layer"]) == [layer.name for layer in list_layers(reference.model)]
    assert list(table["parameters"]) == [layer.n_params for layer in list_layers(reference.model)]


def test_choosing_another_builtin_changes_the_summary_and_persists():
    at = home()
    at.selectbox(key="home_builtin").set_value("tiny-lm").run()
    assert not at.exception and not at.error
    assert at.session_state.model_choice == session.ModelChoice("builtin", "tiny-lm")
    assert "perplexity" in metrics(at)
    assert len(at.dataframe[0].value) == len(list_layers(load_builtin("tiny-lm").model))
    at.run()  # a later run keeps the choice
    assert "perplexity" in metrics(at)


def test_efficientnet_opens_with_its_unfactorizable_convolutions_explained():
    at = home()
    at.selectbox(key="home_builtin").set_value("efficientnet-lite0").run()
    assert not at.exception and not at.error
    reference = load_builtin("efficientnet-lite0")
    assert metrics(at)["top1 agreement"] == "1"
    assert list(at.dataframe[0].value["layer"]) == [layer.name for layer in list_layers(reference.model)]
    skipped = at.dataframe[1].value
    assert list(skipped["layer"]) == [layer.name for layer in skipped_layers(reference.model)]
    assert skipped["why not"].str.contains("depthwise convolution").sum() == 16
    assert "17 layers are not factorizable" in at.expander[0].label


def test_cuda_choice():
    at = home()
    at.radio(key="home_device").set_value("CUDA").run()
    assert not at.exception
    if torch.cuda.is_available():
        assert not at.warning
    else:
        assert "no CUDA GPU" in at.warning[0].value
        assert "accuracy" in metrics(at)  # the page keeps working on the CPU


def _upload(at, name, data, arch="", shape="3, 224, 224"):
    at.radio(key="home_source").set_value("checkpoint").run()
    at.file_uploader(key="home_upload").set_value((name, data, "application/octet-stream")).run()
    at.text_input(key="home_up_arch").set_value(arch)
    at.text_input(key="home_up_shape").set_value(shape)
    return at.button(key="home_up_load").click().run()


def _torchscript_net() -> bytes:
    """A traced TorchScript classifier of (N, 1, 8, 8) images, as the bytes of its file."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(net, torch.randn(1, 1, 8, 8)), buffer)
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_upload_torchscript_loads_but_says_it_cannot_be_factorized():
    at = _upload(home(), "net.pt", _torchscript_net(), shape="1, 8, 8")
    assert not at.exception and not at.error
    assert at.session_state.model_choice.kind == "checkpoint"
    assert metrics(at)["top1 agreement"] == "1"
    assert "TorchScript" in at.warning[0].value


def test_upload_torchvision_state_dict():
    tv = import_torchvision()
    model = tv.models.mobilenet_v3_small(num_classes=4)
    data = save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()})
    at = home()
    at.radio(key="home_source").set_value("checkpoint").run()
    at.number_input(key="home_up_classes").set_value(4)
    at = _upload(at, "small.safetensors", data, arch="mobilenet_v3_small", shape="3, 32, 32")
    assert not at.exception and not at.error
    assert len(at.dataframe[0].value) == len(list_layers(model))


def error_under(at, control: str) -> str:
    """The error drawn right after the widget ``control`` (failing if there is none there)."""
    elements = list(at.main)
    place = next(i for i, element in enumerate(elements) if getattr(element, "key", None) == control)
    following = elements[place + 1]
    assert following.type == "error", (control, following)
    assert "Traceback" not in following.value and tempfile.gettempdir() not in following.value  # no server paths
    return following.value


@pytest.mark.parametrize(
    "name, data, arch, shape, control, message",
    [
        ("junk.pt", b"not a checkpoint", "", "3, 8, 8", "home_upload",
         "'junk.pt' is not a readable PyTorch checkpoint: its content is neither safetensors, a torch.save file nor TorchScript"),
        ("notes.pt", b"101 reasons to read this text\n", "resnet18", "3, 8, 8", "home_upload", "is not a readable PyTorch checkpoint"),
        ("w.safetensors", save_safetensors({"x": torch.ones(2)}), "resnet18", "3, 32, 32", "home_upload",
         "The weights do not match the architecture"),
        ("w.safetensors", save_safetensors({"x": torch.ones(2)}), "not_a_net", "3, 32, 32", "home_up_arch",
         "'not_a_net' is not a torchvision model; expected an image classifier such as resnet18, "),
        ("w.safetensors", save_safetensors({"x": torch.ones(2)}), "resnet19", "3, 32, 32", "home_up_arch",
         "expected an image classifier such as resnet18"),
        ("w.safetensors", save_safetensors({"x": torch.ones(2)}), "", "3, 32", "home_up_shape", "three positive numbers"),
        ("w.safetensors", save_safetensors({"x": torch.ones(2)}), "", "3, 4096, 4096", "home_up_shape", "too large"),
    ],
)
def test_bad_uploads_are_plain_messages_under_their_control_and_the_model_stays(name, data, arch, shape, control, message):
    at = _upload(home(), name, data, arch, shape)
    assert not at.exception
    assert message in error_under(at, control) and len(at.error) == 1
    assert at.session_state.model_choice == session.ModelChoice("builtin", "digits-cnn")
    assert "accuracy" in metrics(at)  # the page still shows the current model


def test_an_empty_upload_says_it_is_empty_at_once():
    at = home()
    at.radio(key="home_source").set_value("checkpoint").run()
    at.file_uploader(key="home_upload").set_value(("empty.pt", b"", "application/octet-stream")).run()
    assert error_under(at, "home_upload") == "'empty.pt' is empty (0 bytes): expected a checkpoint file."
    assert at.button(key="home_up_load").disabled  # nothing to load


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_that_does_not_fit_its_inputs_is_one_plain_line_beside_the_upload():
    at = _upload(home(), "net.pt", _torchscript_net(), shape="3, 8, 8")
    assert not at.exception
    message = at.columns[0].error[0].value  # under the upload's controls, not above the page
    assert "does not accept inputs of shape (3, 8, 8)" in message
    assert "Traceback" not in message and "\n" not in message and "dsf-upload-" not in message


def test_upload_over_the_size_limit(monkeypatch):
    monkeypatch.setattr(session, "MAX_UPLOAD_MB", 0)
    at = _upload(home(), "big.pt", b"x" * 2048)
    assert "uploads are limited to 0 MB" in error_under(at, "home_upload")


def test_missing_files_and_directories_are_said_under_their_input(tmp_path):
    at = home()
    at.radio(key="home_source").set_value("torchvision").run()
    at.text_input(key="home_tv_arch").set_value("resnet18")
    at.text_input(key="home_tv_path").set_value(str(tmp_path / "missing.pth")).run()
    at.button(key="home_tv_load").click().run()
    assert not at.exception and "missing.pth" in error_under(at, "home_tv_path")
    weights = tmp_path / "w.pth"
    torch.save({"x": torch.ones(2)}, weights)
    at.text_input(key="home_tv_arch").set_value("Linear")
    at.text_input(key="home_tv_path").set_value(str(weights)).run()
    at.button(key="home_tv_load").click().run()
    assert "expected an image classifier such as resnet18, " in error_under(at, "home_tv_arch") and len(at.error) == 1
    at.radio(key="home_source").set_value("hf").run()
    at.text_input(key="home_hf_path").set_value(str(tmp_path)).run()
    at.button(key="home_hf_load").click().run()
    assert not at.exception and "config.json" in error_under(at, "home_hf_path")
    at.text_input(key="home_hf_path").set_value("gpt2").run()  # a hub id: never downloaded by the server
    at.button(key="home_hf_load").click().run()
    assert "No such directory on this server" in error_under(at, "home_hf_path")
    assert at.session_state.model_choice.name == "digits-cnn"


def test_the_cached_model_is_not_modified():
    at = home()
    bundle = session.cached_bundle(session.ModelChoice("builtin", "digits-cnn"))
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    at.run()
    after = bundle.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_same_upload_is_stored_once():
    first = session.save_upload("a.pt", b"same bytes")
    assert session.save_upload("a.pt", b"same bytes") == first and first.read_bytes() == b"same bytes"
    assert session.save_upload("a.pt", b"other bytes") != first


def test_an_upload_is_written_where_nobody_else_can_plant_a_file(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep me")
    data = b"uploaded bytes"
    shared = Path(tempfile.gettempdir()) / f"dsf-upload-{hashlib.sha256(data).hexdigest()[:16]}"
    shared.mkdir(exist_ok=True)  # where a predictable name would put it: a link to the victim planted there
    (shared / "model.pt").unlink(missing_ok=True)
    (shared / "model.pt").symlink_to(victim)
    path = session.save_upload("model.pt", data)
    assert path.read_bytes() == data and not path.is_symlink() and victim.read_bytes() == b"keep me"
    assert (path.parent.parent.stat().st_mode & 0o077) == 0  # the server's own folder: private
    path.write_bytes(b"trunc")  # a damaged copy is not served again
    assert session.save_upload("model.pt", data).read_bytes() == data
    assert session.save_upload("..", data).parent == path.parent
    (shared / "model.pt").unlink()
    shared.rmdir()


def test_uploads_and_trade_off_checkpoints_go_with_the_server(tmp_path):
    # Each session used to leave a folder of checkpoints in /tmp for good; now all of a server's
    # files live in one private folder, removed when the server's process exits.
    script = (
        "from dsf_app import session, tradeoffs\n"
        "upload = session.save_upload('model.pt', b'bytes')\n"
        "folder = tradeoffs.checkpoint_folder()\n"
        "open(folder + '/run.safetensors', 'wb').write(b'x' * 1000)\n"
        "print(upload.parent.parent.parent, upload, folder)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    root, upload, folder = (Path(p) for p in done.stdout.split())
    assert root.parent == tmp_path and upload.is_relative_to(root) and folder.is_relative_to(root)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_a_changed_weights_file_is_read_again(tmp_path):
    tv = import_torchvision()
    path = tmp_path / "net.pth"
    torch.save(tv.models.mobilenet_v3_small(num_classes=3).state_dict(), path)
    before = session.file_version(str(path))
    torch.manual_seed(1)
    torch.save(tv.models.mobilenet_v3_small(num_classes=3).state_dict(), path)
    assert session.file_version(str(path)) > before  # a new cache key, so the new weights load
    assert session.file_version(str(tmp_path)) == session.file_version(str(path))
    assert session.file_version(str(tmp_path / "missing")) == 0
