"""LocalSE: the ATAC local channel attention used once per residual block, as in SENet.

Source: Y. Dai, S. Oehmcke, F. Gieseke, Y. Wu, K. Barnard, "Attention as Activation", ICPR 2020,
Sec. IV-B(2) and Fig. 5 ("LocalSENet").

The gate is Eq. (4) of the paper, the same as in an ATAC unit,

    L(X) = σ(B(PWConv₂(δ(B(PWConv₁(X))))))        PWConv₁: C → C/r, PWConv₂: C/r → C

but it is not an activation: it refines the output of the residual branch once per block,
``out = shortcut + L(res) ⊗ res``, i.e. an SE block without the global average pooling. The
paper sets r = 1 so that one LocalSE block (2C² weights) costs as much as the two ATAC units
with r = 2 (C² each) it is compared with.

The state_dict layout (``conv1.weight``, ``bn1.*``, ``conv2.weight``, ``bn2.*``) is that of
:class:`attnact.ATAC`, so the two gates can be compared weight for weight.
"""

from __future__ import annotations

import torch
from torch import nn

from attnact.blocks._checks import check_positive_int, check_positive_number

__all__ = ["LocalSE"]


class LocalSE(nn.Module):
    """Local channel attention on a residual branch (ATAC paper, Fig. 5): X · L(X), Eq. (4).

    Args:
        channels: C, channels of the input (dim 1).
        r: channel reduction ratio; the bottleneck has ``int(C // r)`` channels. The paper uses
            r = 1 (parameter parity with two ATAC units of r = 2 per block).

    Parameters: 2·C·(C//r) + 2·(C//r) + 2·C (BN affine included) — exactly those of ATAC(C, r).
    """

    def __init__(self, channels: int, *, r: int | float = 1) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.r = check_positive_number("r", r)
        inter = int(channels // r)
        if inter < 1:
            raise ValueError(f"channels // r must be at least 1, got channels={channels}, r={r}")
        self.inter_channels = inter
        self.conv1 = nn.Conv2d(channels, inter, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inter)
        self.conv2 = nn.Conv2d(inter, channels, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """L(X) of Eq. (4): one weight per element, from that position's channel vector."""
        z = torch.relu(self.bn1(self.conv1(x)))
        return torch.sigmoid(self.bn2(self.conv2(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"LocalSE was built for N×{self.channels}×H×W inputs, got shape {tuple(x.shape)}"
            )
        return self.gate(x) * x

    def extra_repr(self) -> str:
        return f"channels={self.channels}, r={self.r:g}"
