"""Squeeze-and-Excitation block: global channel attention on a residual branch.

Source: J. Hu, L. Shen, G. Sun, "Squeeze-and-Excitation Networks", CVPR 2018 (Fig. 1-3).
The ATAC paper (Dai et al., ICPR 2020) compares against SENet in Fig. 8 and Table IV.

    s = σ(FC₂(δ(FC₁(GAP(X)))))        one weight per channel
    X' = s ⊗ X                         broadcast over H×W

FC₁ maps C → h, FC₂ maps h → C, both with bias (as in the paper's fully connected layers);
δ is ReLU and σ the sigmoid. In SE-ResNet the block rescales the residual branch before the
addition with the shortcut.

What the paper leaves open for small networks: it uses reduction r = 16 throughout, which on the
16/32/64 channels of CIFAR ResNet-20 gives bottlenecks of 1/2/4 units. A one-unit bottleneck makes
every channel's gate a function of one scalar; we floor the hidden width at ``min_hidden`` = 4 by
default (``min_hidden=1`` gives the paper's formula exactly).
"""

from __future__ import annotations

import torch
from torch import nn

from attnact._checks import check_positive_int

__all__ = ["SqueezeExcite", "se_hidden_channels"]


def se_hidden_channels(channels: int, reduction: int = 16, min_hidden: int = 4) -> int:
    """Bottleneck width h = max(C // reduction, min_hidden), never more than C."""
    check_positive_int("channels", channels)
    check_positive_int("reduction", reduction)
    check_positive_int("min_hidden", min_hidden)
    return min(channels, max(channels // reduction, min_hidden))


class SqueezeExcite(nn.Module):
    """SE block (Hu et al., CVPR 2018, Fig. 2): X · σ(FC₂(ReLU(FC₁(GAP(X))))).

    Args:
        channels: C, channels of the input (dim 1).
        reduction: r of the paper; the bottleneck has ``se_hidden_channels(C, r, min_hidden)``
            units.
        min_hidden: lower bound on the bottleneck width (see the module docstring).

    Parameters: 2·C·h + h + C.
    """

    def __init__(self, channels: int, *, reduction: int = 16, min_hidden: int = 4) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.hidden = se_hidden_channels(channels, reduction, min_hidden)
        self.reduction = reduction
        self.fc1 = nn.Linear(channels, self.hidden)
        self.fc2 = nn.Linear(self.hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"SqueezeExcite was built for N×{self.channels}×H×W inputs, "
                f"got shape {tuple(x.shape)}"
            )
        s = x.mean(dim=(2, 3))  # squeeze: global average pooling
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))  # excitation
        return x * s[:, :, None, None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}, reduction={self.reduction}"
