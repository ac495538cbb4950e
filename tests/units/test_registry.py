"""The activation registry: names, construction, channels handling, errors."""

import pytest
import torch
from torch import nn

import attnact
from attnact import ATAC, AReLU, activation_spec, create_act_layer, list_activations

REQUIRED = [
    "relu", "relu6", "leaky_relu", "rrelu", "elu", "celu", "selu", "gelu", "swish", "softplus",
    "sigmoid", "tanh", "maxout", "prelu", "apl", "pau", "slaf", "mixture", "arelu", "atac",
    "se_activation", "xunit",
]
# The 18 comparison activations of the AReLU paper's Table 1 (13 fixed + 5 learnable).
TABLE1 = [
    "relu", "relu6", "leaky_relu", "rrelu", "elu", "celu", "selu", "gelu", "swish", "softplus",
    "sigmoid", "tanh", "maxout", "prelu", "apl", "pau", "slaf", "mixture",
]


def test_required_names_present():
    names = list_activations()
    missing = [n for n in REQUIRED if n not in names]
    assert not missing, missing
    assert names == sorted(names)
    assert all(n == n.lower() for n in names)


def test_every_table1_activation_has_an_elsa_variant():
    names = set(list_activations())
    assert {f"elsa_{n}" for n in TABLE1} <= names
    assert "elsa_arelu" not in names  # AReLU already is ELSA over ReLU
    assert not any(n.startswith("elsa_") for n in list_activations(include_elsa=False))


@pytest.mark.parametrize("name", list_activations())
def test_every_name_builds_and_runs_forward_backward(name):
    torch.manual_seed(0)
    channels = 8
    m = create_act_layer(name, channels=channels)
    assert isinstance(m, nn.Module)
    x = torch.randn(4, channels, 6, 6, requires_grad=True)
    y = m(x)
    spec = activation_spec(name)
    if spec.changes_channels:
        assert y.shape[0] == 4 and y.shape[2:] == (6, 6) and y.shape[1] != channels
    else:
        assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for p in m.parameters():
        assert p.grad is not None, f"{name}: parameter without gradient"
    assert spec.learnable == any(True for _ in m.parameters())


@pytest.mark.parametrize("name", list_activations())
def test_every_name_accepts_inplace(name):
    """act_layer(inplace=True) slots: the unit builds, computes what the unit without the flag
    computes, and leaves its input as the caller can still expect it for non-inplace units."""
    torch.manual_seed(0)
    plain = create_act_layer(name, channels=8)
    torch.manual_seed(0)
    flagged = create_act_layer(name, channels=8, inplace=True)
    assert type(flagged) is type(plain)
    x = torch.randn(2, 8, 4, 4)
    for m in (plain, flagged):
        m.eval()
    expected = plain(x.clone())
    assert torch.allclose(flagged(x.clone()), expected, atol=1e-6), name


@pytest.mark.parametrize("name", list_activations())
def test_fresh_module_per_call(name):
    a = create_act_layer(name, channels=8)
    b = create_act_layer(name, channels=8)
    assert a is not b
    pa, pb = list(a.parameters()), list(b.parameters())
    assert all(x is not y for x, y in zip(pa, pb, strict=True))


@pytest.mark.parametrize("name", list_activations())
def test_every_name_documented(name):
    spec = activation_spec(name)
    assert spec.formula and spec.source


def test_channels_only_reach_units_that_need_them():
    assert isinstance(create_act_layer("arelu", channels=16), AReLU)
    m = create_act_layer("atac", channels=16, r=4)
    assert isinstance(m, ATAC) and m.channels == 16 and m.inter_channels == 4
    needing = {n for n in list_activations() if activation_spec(n).needs_channels}
    assert {"atac", "se_activation", "xunit", "elsa_atac"} <= needing
    assert "relu" not in needing and "prelu" not in needing


@pytest.mark.parametrize("name", ["atac", "se_activation", "xunit", "elsa_atac"])
def test_missing_channels_builds_a_lazy_unit(name):
    m = create_act_layer(name, inplace=True)  # what act_layer(inplace=True) slots call
    assert m.has_uninitialized_params() if hasattr(m, "has_uninitialized_params") else True
    x = torch.randn(2, 6, 4, 4)
    assert m(x).shape == x.shape
    assert all(not isinstance(p, torch.nn.parameter.UninitializedParameter) for p in m.parameters())


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown activation 'arelux'.*did you mean.*arelu"):
        create_act_layer("arelux")
    with pytest.raises(ValueError, match="unknown activation"):
        create_act_layer("no_such_thing_at_all")


def test_names_are_case_and_dash_insensitive():
    assert isinstance(create_act_layer("AReLU"), AReLU)
    assert isinstance(create_act_layer("leaky-relu"), nn.LeakyReLU)


def test_create_from_class():
    assert isinstance(create_act_layer(AReLU, alpha=0.5), AReLU)
    assert isinstance(create_act_layer(ATAC, channels=8), ATAC)
    assert isinstance(create_act_layer(nn.ReLU), nn.ReLU)

    class Custom(nn.Module):  # unregistered, declares channels in its signature
        def __init__(self, channels: int):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(channels))

    assert create_act_layer(Custom, channels=3).scale.numel() == 3
    with pytest.raises(ValueError, match="Custom needs the channel count"):
        create_act_layer(Custom)


def test_register_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        attnact.register_activation("relu", formula="x", source="s")(nn.ReLU)


def test_bad_name_type():
    with pytest.raises(ValueError, match="name_or_class"):
        create_act_layer(3)
