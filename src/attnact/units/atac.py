"""ATAC: the local channel attention activation unit of Dai et al., "Attention as Activation"
(ICPR 2020), and its global-context ablation SEActivation (the paper's Fig. 3).

    L(X) = σ(B(PWConv₂(δ(B(PWConv₁(X))))))      Eq. (4)
    X'   = L(X) ⊗ X                              Eq. (5)

PWConv₁ maps C → C/r channels and PWConv₂ maps C/r → C, both 1×1 and without bias; B is batch
normalisation, δ is ReLU and σ the sigmoid. The unit replaces a ReLU ("fully attentional network").
Compared with a 3×3 convolution C → C it adds 2C²/r weights, i.e. 2/(9r) of the convolution.
"""

from __future__ import annotations

import torch
from torch import nn

from attnact._checks import check_positive_int
from attnact.units.registry import register_activation

__all__ = ["ATAC", "SEActivation"]


@register_activation(
    "atac",
    formula="x * sigmoid(BN(PWConv2(ReLU(BN(PWConv1(x))))))",
    source="Dai, Oehmcke, Gieseke, Wu & Barnard, ICPR 2020 (Eq. 4-5)",
    needs_channels=True,
    learnable=True,
    elementwise=False,
)
class ATAC(nn.Module):
    """Attentional activation unit (ATAC), Eq. (4)-(5) of the ATAC paper.

    Args:
        channels: number of input channels C (dim 1 of the input).
        r: channel reduction ratio; the bottleneck has C // r channels (paper: r = 2).
        use_relu: keep the ReLU δ between the two point-wise convolutions (ablation switch).
        use_global: global-average-pool the input before PWConv₁, so one gate per channel is
            broadcast over H×W. This is the SEActivation unit of the paper's Fig. 3.
        inplace: accepted for ``act_layer=`` compatibility; ignored (the input is needed twice).

    The state_dict keys ``conv1.weight``, ``bn1.*``, ``conv2.weight``, ``bn2.*`` are part of the
    public API. Inputs may be (N, C), (N, C, L) or (N, C, H, W); point-wise convolutions act on
    every position alike, so lower-rank inputs are viewed as N×C×1×1 or N×C×L×1.
    """

    def __init__(
        self,
        channels: int,
        r: int | float = 2,
        use_relu: bool = True,
        use_global: bool = False,
        inplace: bool = False,
    ) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        if r <= 0:
            raise ValueError(f"r (the reduction ratio) must be positive, got {r!r}")
        inter = int(channels // r)
        if inter < 1:
            raise ValueError(
                f"channels // r must be at least 1, got channels={channels}, r={r} "
                f"(use r <= {channels})"
            )
        self.channels = channels
        self.r = r
        self.inter_channels = inter
        self.use_relu = use_relu
        self.use_global = use_global
        self.conv1 = nn.Conv2d(channels, inter, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inter)
        self.conv2 = nn.Conv2d(inter, channels, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def gate(self, x4: torch.Tensor) -> torch.Tensor:
        """The attention map L(X) of Eq. (4) for a 4-D input (N×C×1×1 with ``use_global``)."""
        z = x4.mean(dim=(2, 3), keepdim=True) if self.use_global else x4
        z = self.bn1(self.conv1(z))
        if self.use_relu:
            z = torch.relu(z)
        return torch.sigmoid(self.bn2(self.conv2(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.channels:
            shape = tuple(x.shape)
            raise ValueError(
                f"ATAC was built for {self.channels} channels (dim 1), got input of shape {shape}"
            )
        if x.dim() == 4:
            return self.gate(x) * x
        if x.dim() > 4:
            raise ValueError(f"ATAC takes inputs of rank 2 to 4, got shape {tuple(x.shape)}")
        x4 = x.reshape(*x.shape, *([1] * (4 - x.dim())))
        return (self.gate(x4) * x4).reshape(x.shape)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, r={self.r}, use_relu={self.use_relu}, "
            f"use_global={self.use_global}"
        )


@register_activation(
    "se_activation",
    formula="x * sigmoid(BN(PWConv2(ReLU(BN(PWConv1(GAP(x)))))))",
    source="Dai et al., ICPR 2020, Fig. 3 (SE block of Hu et al., CVPR 2018, used as activation)",
    needs_channels=True,
    learnable=True,
    elementwise=False,
)
def SEActivation(
    channels: int, r: int | float = 2, use_relu: bool = True, inplace: bool = False
) -> ATAC:
    """SEActivation (ATAC paper, Fig. 3): ATAC with global average pooling before PWConv₁.

    Same parameters as ATAC, but one gate per channel shared over the whole feature map, i.e.
    global rather than local context; the paper's Table III shows this loses badly.
    """
    return ATAC(channels, r=r, use_relu=use_relu, use_global=True, inplace=inplace)
