"""Gather-Excite GE-θ⁺ with global extent: depth-wise gather, SE-style excite, on a residual branch.

Source: J. Hu, L. Shen, S. Albanie, G. Sun, A. Vedaldi, "Gather-Excite: Exploiting Feature Context
in Convolutional Neural Networks", NeurIPS 2018 (Sec. 3, the parametric pair GE-θ and GE-θ⁺).
The ATAC paper (Dai et al., ICPR 2020) compares against GENet in Fig. 8 and Table IV.

    gather ξ_G:  depth-wise convolutions with BN that pool each channel over the whole map
    excite ξ_E:  X' = X ⊗ σ(interp(MLP(ξ_G(X))))

θ⁺ adds to GE-θ the 1×1-convolution bottleneck of SE (C → h → C with ReLU, h = C // 16) between
gather and sigmoid. With global extent the gathered map is 1×1, so nearest-neighbour
interpolation back to H×W is a broadcast.

Two gathers (``gather=``) because the GE paper describes one and its parameter counts imply the
other:

* ``"strided"`` (default): ⌈log₂ S⌉ depth-wise 3×3 stride-2 convolutions, each followed by BN,
  ReLU between them, for a map of side S — the paper's description of its parametric gather for
  a finite extent, applied until the extent is global (S = 32: 5 convolutions, receptive field
  63 ≥ 32). ~11·C parameters per convolution. Works for any input size: if the map is larger
  than S the rest is averaged.
* ``"full"``: one depth-wise S×S convolution (no padding) plus BN, i.e. a learned per-channel
  weighting of every position. This is what the GE paper's reported sizes imply: on ResNet-50 it
  adds Σ C·S² ≈ 5.5M weights, and 25.6M + 5.5M + the 2.5M of the θ⁺ MLP reproduces the reported
  33.7M of GE-θ⁺-ResNet-50 (31.2M for GE-θ). It needs maps of side ≥ S (on larger maps the
  convolution's output is averaged).

The hidden width of the θ⁺ MLP follows :func:`attnact.blocks.se.se_hidden_channels` (reduction 16,
floored at ``min_hidden``), with bias as in SE.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from attnact._checks import check_choice, check_positive_int
from attnact.blocks.se import se_hidden_channels

__all__ = ["GATHERS", "GatherExcite"]

GATHERS = ("strided", "full")


class GatherExcite(nn.Module):
    """GE-θ⁺ block with global extent (Hu et al., NeurIPS 2018, Sec. 3).

    Args:
        channels: C, channels of the input (dim 1).
        feat_size: S, side of the (square) feature map the gather is designed for.
        gather: ``"strided"`` or ``"full"`` (see the module docstring).
        mlp: True for θ⁺ (the SE bottleneck in the excite), False for plain GE-θ.
        reduction, min_hidden: bottleneck width of the θ⁺ MLP, h = max(C // reduction,
            min_hidden), at most C.

    Parameters: strided ⌈log₂ S⌉·(9C + 2C), full S²·C + 2C; plus 2·C·h + h + C with ``mlp``.
    """

    def __init__(
        self,
        channels: int,
        feat_size: int,
        *,
        gather: str = "strided",
        mlp: bool = True,
        reduction: int = 16,
        min_hidden: int = 4,
    ) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.feat_size = check_positive_int("feat_size", feat_size)
        self.gather_mode = check_choice("gather", gather, GATHERS)
        layers: list[nn.Module] = []
        if gather == "strided":
            steps = math.ceil(math.log2(feat_size)) if feat_size > 1 else 0
            for i in range(steps):
                layers.append(
                    nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels,
                              bias=False)
                )
                layers.append(nn.BatchNorm2d(channels))
                if i < steps - 1:  # no ReLU after the last BN: the excite's MLP/sigmoid follows
                    layers.append(nn.ReLU(inplace=True))
        else:
            layers.append(nn.Conv2d(channels, channels, feat_size, groups=channels, bias=False))
            layers.append(nn.BatchNorm2d(channels))
        self.gather = nn.Sequential(*layers)
        self.mlp: nn.Sequential | None = None
        self.hidden = 0
        if mlp:
            self.hidden = se_hidden_channels(channels, reduction, min_hidden)
            self.mlp = nn.Sequential(
                nn.Conv2d(channels, self.hidden, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(self.hidden, channels, 1),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"GatherExcite was built for N×{self.channels}×H×W inputs, "
                f"got shape {tuple(x.shape)}"
            )
        if self.gather_mode == "full" and min(x.shape[-2:]) < self.feat_size:
            raise ValueError(
                f"GatherExcite(gather='full') was built for {self.feat_size}×{self.feat_size} "
                f"maps, got {x.shape[-2]}×{x.shape[-1]}"
            )
        g = self.gather(x)
        if g.shape[-2:] != (1, 1):
            # A map larger than designed: finish the gather globally so the extent stays global.
            g = F.adaptive_avg_pool2d(g, 1)
        if self.mlp is not None:
            g = self.mlp(g)
        # Excite: a 1×1 map interpolated (nearest) to H×W is a broadcast.
        return x * torch.sigmoid(g)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, feat_size={self.feat_size}, "
            f"gather={self.gather_mode!r}, hidden={self.hidden}"
        )
