"""Maxout: the maximum over groups of consecutive channels.

Source: I. J. Goodfellow, D. Warde-Farley, M. Mirza, A. Courville, Y. Bengio, "Maxout Networks",
ICML 2013.

A maxout unit takes the maximum of k affine feature maps. The affine maps are the preceding
layer (a linear or convolutional layer with k times the channels); this module is the max that
follows it, so it CHANGES THE CHANNEL COUNT: C input channels become C / k output channels. It
cannot replace a ReLU in an existing network without widening the layer before it (or narrowing
the one after it); :meth:`Maxout.out_channels` says by how much.
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from attnact._checks import check_int, check_positive_int
from attnact.units.inputs import check_float_input
from attnact.units.registry import register_activation

__all__ = ["Maxout"]


@register_activation(
    "maxout",
    formula="y_j = max_{0<=i<k} x_{j*k+i} (channels j*k..j*k+k-1), k=2",
    source="Goodfellow, Warde-Farley, Mirza, Courville, Bengio, ICML 2013",
    changes_channels=True,
    elementwise=False,
)
class Maxout(nn.Module):
    """Channel maxout: output channel j is the max of input channels j·k … j·k + k − 1.

    The input has shape (N, C, ...) with C divisible by k = ``pool_size``; the output has shape
    (N, C / k, ...). Grouping consecutive channels matches the paper's formulation
    ``h_i(x) = max_{j ∈ [1, k]} z_ij`` with the k pieces of unit i stored next to each other.

    Args:
        pool_size: k, the number of pieces per unit (default 2). k = 1 is rejected: it is the
            identity, not an activation (a degenerate default seen in re-implementations).
        inplace: accepted for ``act_layer=`` slots and ignored (the output has another shape).

    No parameters. Where several channels of a group tie for the maximum, the gradient is split
    equally between them (``torch.amax``); the paper does not specify tie handling.
    """

    def __init__(self, pool_size: int = 2, inplace: bool = False) -> None:
        super().__init__()
        self.pool_size = check_int("pool_size", pool_size, 2, why="pool_size=1 is the identity")
        self.inplace = inplace

    def out_channels(self, in_channels: int) -> int:
        """Channel count of the output for an input with ``in_channels`` channels."""
        check_positive_int("in_channels", in_channels)
        if in_channels % self.pool_size:
            raise ValueError(
                f"Maxout with pool_size={self.pool_size} needs a channel count divisible by "
                f"{self.pool_size}, got {in_channels} channels"
            )
        return in_channels // self.pool_size

    def forward(self, x: Tensor) -> Tensor:
        check_float_input(x, "Maxout")
        if x.dim() < 2:
            raise ValueError(
                f"Maxout needs an input of shape (N, C, ...), got shape {tuple(x.shape)}"
            )
        groups = self.out_channels(x.shape[1])
        # (N, C, ...) -> (N, C/k, k, ...): the k pieces of each unit are consecutive channels.
        # Tensor.unflatten is unannotated in torch
        return cast(Tensor, x.unflatten(1, (groups, self.pool_size))).amax(dim=2)

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}"
