"""Optimizers, parameter groups and the per-iteration learning-rate schedule."""

import itertools
import math

import pytest
import torch
from torch import nn

from attnact import AReLU
from attnact.train import TrainConfig, build_optimizer, build_scheduler, lr_factor, param_groups


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=True), nn.BatchNorm2d(4), AReLU(), nn.Flatten(), nn.Linear(4, 2)
    )


def test_no_wd_groups_split_weights_from_bn_bias_and_scalars():
    net = small_net()
    groups = param_groups(net, weight_decay=1e-4, no_wd_bn_bias=True)
    decay, no_decay = groups
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == {id(net[0].weight), id(net[4].weight)}
    expected = {net[0].bias, net[1].weight, net[1].bias, net[2].alpha, net[2].beta, net[4].bias}
    assert ids(no_decay["params"]) == ids(expected)


def test_single_group_without_no_wd():
    net = small_net()
    (group,) = param_groups(net, weight_decay=5e-4, no_wd_bn_bias=False)
    assert len(group["params"]) == len(list(net.parameters()))


def test_frozen_parameters_are_left_out():
    net = small_net()
    net[0].weight.requires_grad_(False)
    groups = param_groups(net, weight_decay=1e-4, no_wd_bn_bias=True)
    assert all(p is not net[0].weight for g in groups for p in g["params"])


@pytest.mark.parametrize(
    ("name", "cls", "nesterov"),
    [
        ("sgd", torch.optim.SGD, False),
        ("nag", torch.optim.SGD, True),
        ("adam", torch.optim.Adam, None),
    ],
)
def test_build_optimizer(name, cls, nesterov):
    opt = build_optimizer(small_net(), TrainConfig(optimizer=name, lr=0.3, weight_decay=1e-4))
    assert type(opt) is cls
    assert opt.param_groups[0]["lr"] == 0.3 and opt.param_groups[0]["weight_decay"] == 1e-4
    if nesterov is not None:
        assert opt.param_groups[0]["nesterov"] is nesterov


def test_nag_is_mxnet_nag_update():
    """MXNet nag_mom_update (the ATAC paper's optimizer): g' = g + wd w; v = m v + g';
    w -= lr (g' + m v)."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(5, 3))
    lr, m, wd = 0.2, 0.9, 1e-4
    opt = torch.optim.SGD([w], lr=lr, momentum=m, nesterov=True, weight_decay=wd)
    ref_w, v = w.detach().clone(), torch.zeros(5, 3)
    for _ in range(4):
        g = torch.randn(5, 3)
        w.grad = g.clone()
        opt.step()
        g2 = g + wd * ref_w
        v = m * v + g2
        ref_w = ref_w - lr * (g2 + m * v)
    torch.testing.assert_close(w.detach(), ref_w, rtol=1e-6, atol=1e-7)


def factors(**kw):
    return [lr_factor(s, **kw) for s in range(kw["epochs"] * kw["steps_per_epoch"])]


def test_step_schedule_changes_at_milestone_epochs():
    f = factors(steps_per_epoch=10, epochs=6, schedule="step", milestones=[3, 5], gamma=0.1)
    assert f[29] == 1.0 and f[30] == pytest.approx(0.1) and f[49] == pytest.approx(0.1)
    assert f[50] == pytest.approx(0.01)


def test_warmup_is_linear_then_hands_over():
    f = factors(steps_per_epoch=10, epochs=4, schedule="constant", warmup_epochs=2)
    assert f[:20] == pytest.approx([(i + 1) / 20 for i in range(20)])
    assert f[20:] == [1.0] * 20


def test_cosine_after_warmup():
    f = factors(steps_per_epoch=10, epochs=5, schedule="cosine", warmup_epochs=1)
    assert f[9] == 1.0 and f[10] == 1.0  # end of warm-up, start of the cosine
    assert f[30] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 40)))
    assert 0 < f[-1] < 0.01 and all(a >= b for a, b in itertools.pairwise(f[10:]))


def test_unknown_schedule():
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, steps_per_epoch=1, epochs=1, schedule="poly")


def run_steps(opt, sched, n):
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_scheduler_is_per_iteration_and_restorable():
    cfg = TrainConfig(lr=0.1, schedule="cosine", warmup_epochs=1, epochs=4)
    net = small_net()
    opt = build_optimizer(net, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = run_steps(opt, sched, 20)
    expected = [
        0.1 * lr_factor(i, steps_per_epoch=5, epochs=4, schedule="cosine", warmup_epochs=1)
        for i in range(20)
    ]
    assert lrs == pytest.approx(expected)

    # interrupt after 7 steps, rebuild from the state dicts: the same curve continues
    opt1 = build_optimizer(net, cfg)
    sched1 = build_scheduler(opt1, cfg, steps_per_epoch=5)
    run_steps(opt1, sched1, 7)
    state = {"opt": opt1.state_dict(), "sched": sched1.state_dict()}
    opt2 = build_optimizer(net, cfg)
    sched2 = build_scheduler(opt2, cfg, steps_per_epoch=5)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    assert run_steps(opt2, sched2, 13) == pytest.approx(expected[7:])
