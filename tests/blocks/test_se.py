"""SqueezeExcite against the SE block of Hu et al. (CVPR 2018), written out."""

import pytest
import torch

from attnact.blocks import SqueezeExcite, se_hidden_channels


@pytest.mark.parametrize(
    ("channels", "reduction", "min_hidden", "hidden"),
    [
        (16, 16, 4, 4), (64, 16, 4, 4), (256, 16, 4, 16),
        (16, 16, 1, 1), (32, 16, 1, 2), (3, 16, 4, 3),
    ],
)
def test_hidden_width(channels, reduction, min_hidden, hidden):
    assert se_hidden_channels(channels, reduction, min_hidden) == hidden
    m = SqueezeExcite(channels, reduction=reduction, min_hidden=min_hidden)
    assert m.fc1.out_features == hidden
    # 2·C·h weights + h + C biases
    assert sum(p.numel() for p in m.parameters()) == 2 * channels * hidden + hidden + channels


def test_forward_matches_formula_and_backward():
    torch.manual_seed(0)
    m = SqueezeExcite(32)
    x = torch.randn(3, 32, 5, 6, requires_grad=True)
    s = x.mean(dim=(2, 3))
    gate = torch.sigmoid(torch.relu(s @ m.fc1.weight.T + m.fc1.bias) @ m.fc2.weight.T + m.fc2.bias)
    expected = x * gate[:, :, None, None]
    out = m(x)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in m.parameters())


def test_one_gate_per_channel():
    torch.manual_seed(0)
    x = torch.rand(2, 16, 4, 4) + 0.5  # positive, so out / x is the gate
    ratio = SqueezeExcite(16)(x) / x
    torch.testing.assert_close(ratio, ratio[:, :, :1, :1].expand_as(ratio))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"channels": 0}, "channels"), ({"channels": 8, "reduction": 0}, "reduction"),
     ({"channels": 8, "min_hidden": True}, "min_hidden")],
)
def test_bad_arguments(kwargs, name):
    channels = kwargs.pop("channels")
    with pytest.raises(ValueError, match=name):
        SqueezeExcite(channels, **kwargs)


def test_wrong_input_channels():
    with pytest.raises(ValueError, match="16"):
        SqueezeExcite(16)(torch.randn(2, 8, 4, 4))
