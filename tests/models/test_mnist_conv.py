"""MNIST-Conv of the AReLU paper (Sec. 4.1), including Maxout's widened convolutions."""

import pytest
import torch
from torch import nn

from attnact import AReLU
from attnact.models import count_macs, count_parameters, mnist_conv


def conv(cin, cout, k):
    return cin * cout * k * k + cout  # with bias


def params(in_ch=1, classes=10, widen=(1, 1, 1)):
    """Parameters from the layer shapes; ``widen`` multiplies each conv's output channels."""
    k1, k2, k3 = widen
    convs = conv(in_ch, 10 * k1, 5) + conv(10, 20 * k2, 5) + conv(20, 40 * k3, 3)
    return convs + 40 * classes + classes


def test_relu_has_12930_parameters():
    assert count_parameters(mnist_conv()) == 12_930 == params()
    assert count_parameters(mnist_conv(in_channels=3)) == params(in_ch=3) == 13_430


@pytest.mark.parametrize("pool_size", [2, 3])
def test_maxout_widens_each_conv(pool_size):
    model = mnist_conv(act="maxout", act_kwargs={"pool_size": pool_size})
    k = pool_size
    assert count_parameters(model) == params(widen=(k, k, k)) == 12_520 * k + 410
    assert [model.block1.conv.out_channels, model.block2.conv.out_channels,
            model.block3.conv.out_channels] == [10 * k, 20 * k, 40 * k]
    assert [(s.in_channels, s.out_channels) for s in model.act_sites] == [
        (10 * k, 10), (20 * k, 20), (40 * k, 40)
    ]


def test_maxout_only_where_the_plan_puts_it():
    model = mnist_conv(act="maxout", act_fraction=1 / 3)  # last site only
    assert count_parameters(model) == params(widen=(1, 1, 2))
    assert [s.unit for s in model.act_sites] == ["relu", "relu", "maxout"]


@pytest.mark.parametrize(
    "act", ["relu", "atac", "arelu", "se_activation", "prelu", "swish", "maxout"]
)
@pytest.mark.parametrize(("in_ch", "side"), [(1, 28), (3, 32)])
def test_forward_backward_every_act(act, in_ch, side):
    torch.manual_seed(0)
    model = mnist_conv(act=act, in_channels=in_ch)
    out = model(torch.randn(2, in_ch, side, side))
    assert out.shape == (2, 10)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_structure_is_conv_pool_act():
    model = mnist_conv(act="arelu")
    assert [type(m) for m in model.block2] == [nn.Conv2d, nn.MaxPool2d, AReLU]
    assert [m.kernel_size for m in (model.block1.conv, model.block2.conv, model.block3.conv)] == [
        (5, 5), (5, 5), (3, 3)
    ]
    assert [s.path for s in model.act_sites] == ["block1.act", "block2.act", "block3.act"]
    assert len({id(m) for m in (model.block1.act, model.block2.act, model.block3.act)}) == 3


def test_macs_by_hand():
    # conv1 24²·10·25, conv2 8²·20·250, conv3 2²·40·180, linear 40·10
    assert count_macs(mnist_conv(), (1, 28, 28)) == 144_000 + 320_000 + 28_800 + 400


def test_input_size_outside_28_to_35_is_an_error():
    model = mnist_conv()
    for side in (28, 35):
        model(torch.randn(2, 1, side, side))
    with pytest.raises(ValueError, match="side 28 to 35"):
        model(torch.randn(2, 1, 40, 40))


def test_bad_arguments():
    with pytest.raises(ValueError, match="in_channels"):
        mnist_conv(in_channels=0)
    with pytest.raises(ValueError, match="order must be one of"):
        mnist_conv(order="backwards")
