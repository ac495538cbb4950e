"""NiN-style micro-block: point-wise convolutions that deepen a network after an activation.

Sources: M. Lin, Q. Chen, S. Yan, "Network In Network", ICLR 2014 (the mlpconv layer), in the
form used as a baseline by Y. Dai et al., "Attention as Activation", ICPR 2020, Sec. IV-B(2),
Fig. 4 ("NiN"), applied "after each convolution layer and the associated ReLU".

    PWConv(C → C/r) → BN → ReLU → PWConv(C/r → C) → BN → ReLU

What the paper leaves open: Fig. 4 is not specified beyond "an increased number of parameters
compared to its original implementation to be on-par with the other modules". We take the
bottleneck of the ATAC unit at the same r, so a NiN block has *exactly* the parameters of an ATAC
unit at the same width — 2·C·(C//r) weights plus 2·(C//r) + 2·C BN affine parameters — and the
same MACs (2·C·(C//r) per position). It differs from ATAC only in feeding the result forward
instead of using it as a sigmoid gate on its input, which is the comparison Q2 of the paper makes.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from attnact._checks import check_positive_int, check_positive_number

__all__ = ["NiNBlock"]


class NiNBlock(nn.Sequential):
    """NiN micro-block of the ATAC paper's Fig. 4, parameter-matched to ATAC(C, r).

    Args:
        channels: C, channels of input and output.
        r: bottleneck reduction; the hidden layer has ``int(C // r)`` channels (ATAC's rule).

    Submodules ``conv1``, ``bn1``, ``relu1``, ``conv2``, ``bn2``, ``relu2`` (a ``Sequential``).
    """

    def __init__(self, channels: int, *, r: int | float = 2) -> None:
        check_positive_int("channels", channels)
        check_positive_number("r", r)
        inter = int(channels // r)
        if inter < 1:
            raise ValueError(f"channels // r must be at least 1, got channels={channels}, r={r}")
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(channels, inter, kernel_size=1, bias=False),
                bn1=nn.BatchNorm2d(inter),
                relu1=nn.ReLU(inplace=True),
                conv2=nn.Conv2d(inter, channels, kernel_size=1, bias=False),
                bn2=nn.BatchNorm2d(channels),
                relu2=nn.ReLU(inplace=True),
            )
        )
        self.channels = channels
        self.r = float(r)
        self.inter_channels = inter
