"""GatherExcite GE-θ⁺ (Hu et al., NeurIPS 2018): structure, parameter counts, global extent."""

import math

import pytest
import torch
from torch import nn

from attnact.blocks import GatherExcite


def _mlp_params(c: int, h: int) -> int:
    return 2 * c * h + h + c


@pytest.mark.parametrize(("feat_size", "steps"), [(32, 5), (16, 4), (8, 3), (7, 3), (1, 0)])
def test_strided_gather_reaches_global_extent(feat_size, steps):
    c = 8
    m = GatherExcite(c, feat_size)
    convs = [x for x in m.gather if isinstance(x, nn.Conv2d)]
    assert len(convs) == steps
    assert all(cv.groups == c and cv.stride == (2, 2) and cv.kernel_size == (3, 3) for cv in convs)
    # receptive field of `steps` stacked 3×3 stride-2 convs covers the map
    assert 2 ** (steps + 1) - 1 >= feat_size
    g = m.gather(torch.randn(2, c, feat_size, feat_size))
    assert g.shape[-2:] == (1, 1)
    # ReLU between the convolutions only
    assert sum(isinstance(x, nn.ReLU) for x in m.gather) == max(steps - 1, 0)
    expected = steps * (9 * c + 2 * c) + _mlp_params(c, 4)
    assert sum(p.numel() for p in m.parameters()) == expected


def test_full_gather_parameters():
    c, s = 16, 8
    m = GatherExcite(c, s, gather="full", mlp=False)
    assert sum(p.numel() for p in m.parameters()) == c * s * s + 2 * c
    m = GatherExcite(c, s, gather="full", reduction=4, min_hidden=1)
    assert sum(p.numel() for p in m.parameters()) == c * s * s + 2 * c + _mlp_params(c, 4)


@pytest.mark.parametrize("gather", ["strided", "full"])
@pytest.mark.parametrize("size", [8, 11])
def test_gate_is_global_and_shape_kept(gather, size):
    torch.manual_seed(0)
    m = GatherExcite(16, 8, gather=gather)
    x = torch.rand(2, 16, size, size, requires_grad=True)
    out = m(x)
    assert out.shape == x.shape
    ratio = out / x  # global extent: one gate per (sample, channel), broadcast over H×W
    torch.testing.assert_close(ratio, ratio[:, :, :1, :1].expand_as(ratio))
    assert ((ratio > 0) & (ratio < 1)).all()
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_full_gather_rejects_small_maps():
    with pytest.raises(ValueError, match="8×8"):
        GatherExcite(4, 8, gather="full")(torch.randn(2, 4, 4, 4))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"gather.*'strided', 'full'"):
        GatherExcite(4, 8, gather="pool")
    with pytest.raises(ValueError, match="feat_size"):
        GatherExcite(4, 0)
    with pytest.raises(ValueError, match="channels"):
        GatherExcite(-1, 8)


def test_steps_formula():
    for s in (2, 3, 4, 5, 8, 9, 31, 32, 33, 56, 64, 65):
        m = GatherExcite(2, s, mlp=False)
        n = sum(isinstance(x, nn.Conv2d) for x in m.gather)
        assert n == math.ceil(math.log2(s))
        assert m.gather(torch.randn(2, 2, s, s)).shape[-2:] == (1, 1)
