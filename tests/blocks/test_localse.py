"""LocalSE (ATAC paper Fig. 5) is the ATAC gate of Eq. (4), applied as a block."""

import pytest
import torch

from attnact import ATAC
from attnact.blocks import LocalSE


@pytest.mark.parametrize("r", [1, 2, 4])
def test_same_gate_as_atac(r):
    torch.manual_seed(0)
    lse = LocalSE(16, r=r)
    for bn in (lse.bn1, lse.bn2):
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_(0, 0.3)
    atac = ATAC(16, r=r)
    atac.load_state_dict(lse.state_dict())  # same keys, same shapes
    x = torch.randn(4, 16, 5, 5)
    torch.testing.assert_close(lse(x), atac(x))
    assert sum(p.numel() for p in lse.parameters()) == sum(p.numel() for p in atac.parameters())


def test_default_r_is_one_and_parameter_count():
    m = LocalSE(32)
    assert m.inter_channels == 32
    # 2C² weights + BN(C) + BN(C)
    assert sum(p.numel() for p in m.parameters()) == 2 * 32 * 32 + 4 * 32


def test_backward_and_bad_args():
    m = LocalSE(8)
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in m.parameters())
    with pytest.raises(ValueError, match=r"r \(the reduction ratio\) must be positive"):
        LocalSE(8, r=0)
    with pytest.raises(ValueError, match="channels // r"):
        LocalSE(2, r=4)
