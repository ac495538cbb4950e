"""NiN micro-block (ATAC paper Fig. 4): parameter parity with ATAC, structure, gradients."""

import pytest
import torch
from torch import nn

from attnact import ATAC
from attnact.blocks import NiNBlock


@pytest.mark.parametrize("channels", [16, 32, 64, 10])
@pytest.mark.parametrize("r", [1, 2, 4])
def test_parameters_equal_atac(channels, r):
    nin = NiNBlock(channels, r=r)
    h = channels // r
    expected = 2 * channels * h + 2 * h + 2 * channels  # two PWConvs, BN(C/r), BN(C)
    assert sum(p.numel() for p in nin.parameters()) == expected
    assert sum(p.numel() for p in ATAC(channels, r=r).parameters()) == expected


def test_structure_forward_backward():
    torch.manual_seed(0)
    m = NiNBlock(16)
    assert [type(x) for x in m] == [
        nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU
    ]
    assert m.conv1.out_channels == 8 and m.conv2.in_channels == 8
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and (y >= 0).all()
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in m.parameters())


def test_bad_args():
    with pytest.raises(ValueError, match="channels"):
        NiNBlock(0)
    with pytest.raises(ValueError, match="r must"):
        NiNBlock(8, r=-2)
