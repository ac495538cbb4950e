"""xUnit: a spatial activation function with a Gaussian gate.

Source: I. Kligvasser, T. R. Shaham, T. Michaeli, "xUnit: Learning a Spatial Activation Function
for Efficient Image Restoration", CVPR 2018.

    y = x ⊙ g(x),   g = exp(−z²),   z = BN(DWConv_{k×k}(ReLU(BN(x))))

Each output element is the input element scaled by a gate in (0, 1] computed from a k×k
neighbourhood of its own channel, so the activation is spatial but per channel. The ATAC paper
compares against it (Dai et al., Fig. 7).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnact._checks import check_bool, check_positive_int
from attnact.units.inputs import check_float_input
from attnact.units.layout import LazyChannels, as_nchw, check_channel_dim
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
class xUnit(LazyChannels, nn.Module):
    """xUnit: ``y = x ⊙ exp(−z²)`` with ``z = BN(DWConv_{k×k}(ReLU(BN(x))))``.

    Args:
        channels: C; ``None`` (the default): inferred at the first forward from dim
            ``channel_dim`` (a PyTorch lazy module, :mod:`attnact.units.layout`).
        kernel_size: k, the (odd) size of the depthwise convolution (default 9, the paper's
            choice for denoising); padding k // 2 keeps H and W.
        batch_norm: with the two batch norms ``bn_in`` and ``bn_out`` (default True, as in the
            paper's figure); False replaces them by identities.
        inplace: accepted for ``act_layer=`` slots and ignored (x is needed for the product's
            backward pass).
        channel_dim: 1 (default; (N, C, H, W), (N, C, L), (N, C)) or -1 ((N, H, W, C),
            (N, L, C), (N, C)).

    Layouts: xUnit is a spatial unit, its gate sees a k×k neighbourhood of a map. A sequence of
    length L is a 1×L map (only the kernel's middle row acts), so there the gate sees the k
    neighbouring positions (tokens) of its own channel — it mixes neighbouring tokens by design;
    on (N, C) features the map is 1×1 and only the kernel's centre tap acts.

    Submodules: ``bn_in`` (BatchNorm2d or Identity), ``dwconv`` (depthwise Conv2d with bias, PyTorch
    default init), ``bn_out``. Parameters at C = 16, k = 9 with batch norm:
    2·16 + (16·81 + 16) + 2·16 = 1376.

    The Gaussian gate exp(−z²) is the paper's (and the authors' first code release's); their
    later code uses a sigmoid gate, kernel_size=7 and no batch norm by default. This class
    follows the paper. Integer and bool inputs raise ``TypeError``.
    """

    channel_dim: int = 1

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int = 9,
        batch_norm: bool = True,
        inplace: bool = False,
        channel_dim: int = 1,
    ) -> None:
        super().__init__()
        if channels is not None:
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
        self.kernel_size = kernel_size
        self.batch_norm = check_bool("batch_norm", batch_norm)
        self.inplace = inplace
        self.channel_dim = check_channel_dim(channel_dim)
        self._init_channels(channels)

    def _build(self, channels: int) -> None:
        k = self.kernel_size
        self.channels = channels
        self.bn_in: nn.Module = nn.BatchNorm2d(channels) if self.batch_norm else nn.Identity()
        self.dwconv = nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels, bias=True)
        self.bn_out: nn.Module = nn.BatchNorm2d(channels) if self.batch_norm else nn.Identity()

    def _state_channels(self, state_dict: dict[str, Any], prefix: str) -> int | None:
        w = state_dict.get(prefix + "dwconv.weight")
        return None if w is None else int(w.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        check_float_input(x, "xUnit")
        cd = self.channel_dim
        if x.dim() < 2 or x.shape[cd] != self.channels:
            raise ValueError(
                f"xUnit was built for channels={self.channels} (channel_dim={cd}): expected "
                f"{self.channels} input channels, got shape {tuple(x.shape)}"
            )
        x4, restore = as_nchw(x, cd, "xUnit")
        h = self.bn_in(x4)
        # In place only on bn_in's fresh output (batch norm's backward does not need its
        # output); without batch norm h *is* x, which must not be overwritten.
        h = F.relu(h, inplace=self.batch_norm)
        z = self.bn_out(self.dwconv(h))
        return restore(x4 * torch.exp(-z * z))

    def extra_repr(self) -> str:
        s = (
            f"channels={self.channels}, kernel_size={self.kernel_size}, "
            f"batch_norm={self.batch_norm}"
        )
        return s + (f", channel_dim={self.channel_dim}" if self.channel_dim != 1 else "")
