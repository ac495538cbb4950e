"""MNIST-Conv: the small convolutional network of the AReLU paper's MNIST experiments.

Source: D. Chen, J. Li, K. Xu, "AReLU: Attention-based Rectified Linear Unit", 2020, Sec. 4.1-4.5
("three convolutional layers each followed by a max-pooling layer and an AReLU, and finally a
fully connected layer"), as in the authors' code (ConvMNIST in densechen/AReLU):

    conv 5×5, 10 → max pool 2 → act → conv 5×5, 20 → max pool 2 → act
    → conv 3×3, 40 → max pool 2 → act → flatten → linear 40 → classes

Convolutions and the linear layer have biases and PyTorch's default initialisation, as in the
reference code; the output is logits (the reference ends with LogSoftmax; use cross-entropy).
With ReLU and one input channel: 12,930 parameters. Inputs of side 28 to 35 end at 1×1×40
(28×28 MNIST; 32×32 SVHN with ``in_channels=3`` for the transfer experiment of Sec. 4.4).

Activation sites: the three acts, in forward order, built by an ActPlan. A channel-changing unit
(Maxout with pool size k) gets a convolution k times wider in front of it, so every act still
outputs 10/20/40 channels: parameters (25·c_in + 1)·10k + 251·20k + 181·40k + 41·classes
(12,520k + 410 for c_in = 1 and 10 classes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from attnact._checks import check_int
from attnact.models.act_plan import ActLike, ActPlan, ActSite
from attnact.models.registry import register_model

__all__ = ["MNISTConv", "mnist_conv"]

_LAYERS = ((10, 5), (20, 5), (40, 3))  # (output channels of the act, kernel size)


class MNISTConv(nn.Module):
    """MNIST-Conv of the AReLU paper; see :func:`mnist_conv` for the arguments."""

    act_sites: tuple[ActSite, ...]
    block1: nn.Sequential  # registered by name in __init__
    block2: nn.Sequential
    block3: nn.Sequential

    def __init__(self, plan: ActPlan, *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        cin = in_channels
        for i, (cout, k) in enumerate(_LAYERS, start=1):
            # Build the act first: it says how wide the convolution feeding it must be.
            act, conv_out = plan.build_for_output(cout)
            block = nn.Sequential(
                OrderedDict(conv=nn.Conv2d(cin, conv_out, k), pool=nn.MaxPool2d(2), act=act)
            )
            self.add_module(f"block{i}", block)
            cin = cout
        self.fc = nn.Linear(cin, num_classes)
        plan.finish(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(x)))
        if x.shape[-2:] != (1, 1):
            raise ValueError(
                f"mnist_conv needs inputs of side 28 to 35 (they end at 1×1 after three "
                f"conv/pool stages); this input ends at {x.shape[-2]}×{x.shape[-1]}"
            )
        return cast(torch.Tensor, self.fc(torch.flatten(x, 1)))


@register_model(
    "mnist_conv",
    description="MNIST-Conv: 3 × (conv, max pool, act) + linear; AReLU paper Sec. 4.1",
    input_size=(1, 28, 28),
    num_classes=10,
)
def mnist_conv(
    *,
    act: ActLike = "relu",
    num_classes: int = 10,
    in_channels: int = 1,
    base_act: ActLike = "relu",
    act_fraction: float = 1.0,
    order: str = "last_first",
    act_kwargs: Mapping[str, Any] | None = None,
) -> MNISTConv:
    """MNIST-Conv of the AReLU paper (Sec. 4.1; supplementary material), 3 activation sites.

    Args:
        act: unit after each max pool (any registered unit, including Maxout: the convolution
            before it is widened by its pool size).
        num_classes: classes of the final linear layer.
        in_channels: input channels (1 for MNIST, 3 for SVHN).
        base_act, act_fraction, order, act_kwargs: the activation plan; see
            :class:`~attnact.models.act_plan.ActPlan`.
    """
    check_int("num_classes", num_classes)
    check_int("in_channels", in_channels)
    plan = ActPlan(
        act,
        num_sites=len(_LAYERS),
        base_act=base_act,
        act_fraction=act_fraction,
        order=order,
        act_kwargs=act_kwargs,
    )
    return MNISTConv(plan, num_classes=num_classes, in_channels=in_channels)
