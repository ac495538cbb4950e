"""ActPlan: which sites get `act` (ATAC paper Fig. 6 protocol), fresh modules, recorded sites."""

import math

import pytest
import torch
from torch import nn

from attnact import ATAC, AReLU
from attnact.models import ORDERS, ActPlan


def _selected(n, fraction, order="last_first"):
    plan = ActPlan("atac", num_sites=n, act_fraction=fraction, order=order)
    return sorted(plan.selected_indices)


def test_last_first_takes_the_last_sites():
    assert _selected(19, 0.5) == list(range(9, 19))  # round(9.5) = 10, halves up
    assert _selected(19, 0.5, "first_first") == list(range(10))
    assert _selected(19, 0.0) == []
    assert _selected(19, 1.0) == list(range(19))
    assert _selected(3, 0.5) == [1, 2]  # 1.5 rounds up to 2
    assert _selected(4, 0.125) == [3]  # 0.5 rounds up to 1
    assert _selected(0, 1.0) == []


@pytest.mark.parametrize("n", [1, 7, 19, 32])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_count_is_round_half_up(n, fraction):
    k = math.floor(fraction * n + 0.5)
    assert _selected(n, fraction) == list(range(n - k, n))
    assert _selected(n, fraction, "first_first") == list(range(k))


def test_orders_agree_with_convert_activations():
    from attnact.units.convert import ORDERS as CONVERT_ORDERS

    assert ORDERS == CONVERT_ORDERS


def test_builds_fresh_units_and_records_sites():
    plan = ActPlan("atac", num_sites=3, act_fraction=2 / 3, unit_defaults={"r": 4})
    model = nn.Sequential(plan.build(8), plan.build(8), plan.build(16))
    sites = plan.finish(model)
    assert model.act_sites == sites
    assert [type(m) for m in model] == [nn.ReLU, ATAC, ATAC]
    assert model[1] is not model[2]
    assert model[1].r == 4  # the host's r reaches units that declare it
    assert [(s.index, s.path, s.unit, s.in_channels, s.selected) for s in sites] == [
        (0, "0", "relu", 8, False),
        (1, "1", "atac", 8, True),
        (2, "2", "atac", 16, True),
    ]


def test_act_kwargs_win_over_unit_defaults_and_skip_units_without_the_argument():
    plan = ActPlan("atac", num_sites=1, act_kwargs={"r": 1}, unit_defaults={"r": 4})
    assert plan.build(8).r == 1
    plan = ActPlan("arelu", num_sites=1, unit_defaults={"r": 4})  # AReLU has no r
    assert isinstance(plan.build(8), AReLU)


def test_classes_and_factories_as_act():
    plan = ActPlan(nn.GELU, num_sites=2, base_act=lambda: nn.Tanh())
    plan2 = ActPlan(nn.GELU, num_sites=2, act_fraction=0.5, base_act=lambda: nn.Tanh())
    assert isinstance(plan.build(4), nn.GELU)
    assert [type(plan2.build(4)) for _ in range(2)] == [nn.Tanh, nn.GELU]


def test_factory_returning_the_same_module_is_rejected():
    shared = nn.ReLU()
    plan = ActPlan(lambda: shared, num_sites=2)
    plan.build(4)
    with pytest.raises(ValueError, match="fresh module"):
        plan.build(4)


def test_miscounted_host_fails_loudly():
    plan = ActPlan(num_sites=2)
    model = nn.Sequential(plan.build(4))
    with pytest.raises(RuntimeError, match=r"counted 2 .* built 1"):
        plan.finish(model)
    plan = ActPlan(num_sites=1)
    plan.build(4)
    with pytest.raises(RuntimeError, match="more activation sites"):
        plan.build(4)
    plan = ActPlan(num_sites=1)
    plan.build(4)
    with pytest.raises(RuntimeError, match="not registered"):
        plan.finish(nn.Sequential())


def test_channel_changing_units():
    plan = ActPlan("maxout", num_sites=2, act_fraction=0.5, act_kwargs={"pool_size": 3})
    assert plan.changes_channels
    relu, cin = plan.build_for_output(10)
    assert isinstance(relu, nn.ReLU) and cin == 10
    maxout, cin = plan.build_for_output(10)
    assert cin == 30
    assert maxout(torch.randn(2, 30, 2, 2)).shape == (2, 10, 2, 2)
    with pytest.raises(ValueError, match="changes the channel count"):
        ActPlan("maxout", num_sites=1).build(8)
    with pytest.raises(ValueError, match="mnist_conv"):
        ActPlan("maxout", num_sites=1).require_same_channels("some_host")
    # a channel-changing act that is never used does not count
    assert not ActPlan("maxout", num_sites=4, act_fraction=0.0).changes_channels


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"act_fraction": 1.5}, r"act_fraction must be a number in \[0, 1\]"),
        ({"act_fraction": -0.1}, r"act_fraction must be a number in \[0, 1\]"),
        ({"act_fraction": float("nan")}, "act_fraction"),
        ({"act_fraction": True}, "act_fraction"),
        ({"order": "middle"}, "order must be one of 'last_first', 'first_first'"),
        ({"act": "atc"}, "unknown activation 'atc'.*atac"),
        ({"act": 3}, "act must be a registered activation name"),
        ({"act": nn.ReLU()}, "not a module instance"),
        ({"base_act": "nope"}, "unknown activation 'nope'"),
        ({"act_kwargs": [1]}, "act_kwargs must be a dict"),
        ({"num_sites": -1}, "num_sites"),
    ],
)
def test_bad_arguments(kwargs, pattern):
    kwargs = {"num_sites": 3, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        ActPlan(**kwargs)
