"""Small models the tests build: a CNN, and GPT-2 (transformers' Conv1D layers), with bundles."""

import torch
import torch.nn.functional as F
from torch import nn

from dsf_core._torchvision_compat import prepare_transformers
from dsf_core.models import ModelBundle


class SmallCNN(nn.Module):
    """(N, 3, 12, 12) -> (N, 10): two convs (one strided, one dilated) and two Linear layers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)  # (N, 8, 12, 12)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=2, dilation=2)  # (N, 16, 6, 6)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)  # grouped: not factorizable
        self.fc1 = nn.Linear(16 * 6 * 6, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.depthwise(F.relu(self.conv2(x))))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def _agreement(original, forward, inputs):
    reference = forward(original, inputs).argmax(-1)

    def evaluate(model):
        with torch.no_grad():
            return {"top1_agreement": float((forward(model, inputs).argmax(-1) == reference).float().mean())}

    return evaluate


def cnn_bundle(seed=0) -> ModelBundle:
    torch.manual_seed(seed)
    model = SmallCNN().eval()
    g = torch.Generator().manual_seed(seed + 1)
    data = torch.randn(96, 3, 12, 12, generator=g)

    def forward(m, batch):
        return m(batch)

    return ModelBundle(
        name="small-cnn",
        model=model,
        task="classifier",
        metric_name="top1_agreement",
        higher_is_better=True,
        calibration_inputs=lambda n: list(data[:n].split(32)),
        forward=forward,
        evaluate=_agreement(model, forward, data[64:]),
    )


def gpt2_bundle(seed=0) -> ModelBundle:
    prepare_transformers()  # transformers imports torchvision when it is installed
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config).eval()
    tokens = torch.randint(0, 64, (24, 16), generator=torch.Generator().manual_seed(seed + 1))

    def forward(m, batch):
        return m(input_ids=batch).logits

    return ModelBundle(
        name="tiny-gpt2",
        model=model,
        task="language-model",
        metric_name="top1_agreement",
        higher_is_better=True,
        calibration_inputs=lambda n: list(tokens[:n].split(8)),
        forward=forward,
        evaluate=_agreement(model, forward, tokens[16:]),
    )
