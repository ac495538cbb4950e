"""xUnit: a spatial activation function with a Gaussian gate.

Source: I. Kligvasser, T. R. Shaham, T. Michaeli, "xUnit: Learning a Spatial Activation Function
for Efficient Image Restoration", CVPR 2018.

    y = x ⊙ g(x),   g = exp(−z²),   z = BN(DWConv_{k×k}(ReLU(BN(x))))

Each output element is the input element scaled by a gate in (0, 1] computed from a k×k
neighbourhood of its own channel, so the activation is spatial but per channel. The ATAC paper
compares against it (Dai et al., Fig. 7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnact._checks import check_positive_int
from attnact.units.registry import register_activation

__all__ = ["xUnit"]


@register_activation(
    "xunit",
    formula="x * exp(-z^2), z = BN(DWConv_kxk(ReLU(BN(x)))), k=9",
    source="Kligvasser, Shaham, Michaeli, CVPR 2018",
    needs_channels=True,
    learnable=True,
    elementwise=False,
)
class xUnit(nn.Module):
    """xUnit: ``y = x ⊙ exp(−z²)`` with ``z = BN(DWConv_{k×k}(ReLU(BN(x))))``.

    Args:
        channels: C, the channel count of the (N, C, H, W) input.
        kernel_size: k, the (odd) size of the depthwise convolution (default 9, the paper's
            choice for denoising); padding k // 2 keeps H and W.
        batch_norm: with the two batch norms ``bn_in`` and ``bn_out`` (default True, as in the
            paper's figure); False replaces them by identities.
        inplace: accepted for ``act_layer=`` slots and ignored (x is needed for the product's
            backward pass).

    Submodules: ``bn_in`` (BatchNorm2d or Identity), ``dwconv`` (depthwise Conv2d with bias, PyTorch
    default init), ``bn_out``. Parameters at C = 16, k = 9 with batch norm:
    2·16 + (16·81 + 16) + 2·16 = 1376.

    The Gaussian gate exp(−z²) is the paper's (and the authors' first code release's); their
    later code uses a sigmoid gate, kernel_size=7 and no batch norm by default. This class
    follows the paper.
    """

    def __init__(
        self, channels: int, kernel_size: int = 9, batch_norm: bool = True, inplace: bool = False
    ) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        if (
            isinstance(kernel_size, bool)
            or not isinstance(kernel_size, int)
            or kernel_size < 1
            or kernel_size % 2 == 0
        ):
            raise ValueError(
                f"kernel_size must be a positive odd integer (padding k//2 keeps the spatial "
                f"size only for odd k), got {kernel_size!r}"
            )
        self.channels = channels
        self.kernel_size = kernel_size
        self.batch_norm = bool(batch_norm)
        self.inplace = inplace
        self.bn_in: nn.Module = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.dwconv = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=True
        )
        self.bn_out: nn.Module = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"xUnit expects a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.channels:
            raise ValueError(
                f"xUnit was built for channels={self.channels}: expected {self.channels} "
                f"input channels, got {x.shape[1]}"
            )
        h = self.bn_in(x)
        # In place only on bn_in's fresh output (batch norm's backward does not need its
        # output); without batch norm h *is* x, which must not be overwritten.
        h = F.relu(h, inplace=self.batch_norm)
        z = self.bn_out(self.dwconv(h))
        return x * torch.exp(-z * z)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, kernel_size={self.kernel_size}, "
            f"batch_norm={self.batch_norm}"
        )
