"""ResNet-50-v1b for ImageNet, the ATAC paper's ImageNet host (Table II, Fig. 2(b), Table IV).

Source: Y. Dai et al., "Attention as Activation", ICPR 2020, Sec. IV-A: "only the ReLUs in the
last two stages of ResNet-50-v1b are replaced with our ATAC units". The architecture is He et
al., "Deep Residual Learning for Image Recognition", CVPR 2016, in its "v1b" form (gluon-cv;
torchvision's ResNet-50 is the same): the stride of a downsampling bottleneck sits on its 3×3
convolution, not on the first 1×1.

    7×7 conv 64 /2 → BN → ReLU → 3×3 max pool /2
    → stages of [3, 4, 6, 3] bottlenecks, planes 64/128/256/512, expansion 4, strides 1/2/2/2
    → global average pool → linear

    bottleneck: out = ReLU(BN₃(conv₃(act₂(BN₂(conv₂(act₁(BN₁(conv₁(x))))))) + shortcut(x))

shortcut: identity, or 1×1 conv stride s + BN when the shape changes.

Cost at 224×224: 25,557,032 parameters and 4.09 GMACs with ReLU; 27,934,760 and 4.40 GMACs with
ATAC (Table IV: 28.0M, 4.4). Table IV's 3.86 for plain ResNet-50 is the original v1 (stride on the
first 1×1 convolution, 3.86 GMACs), quoted from the SENet paper, so its ResNet-50 and ATAC rows
are not the same backbone.

Activation sites (as in open-atac's BottleneckV1bATAC): act₁ and act₂ of every bottleneck in the
last ``act_stages`` stages, in forward order — 2·(6 + 3) = 18 for the paper's ``act_stages=2``.
The activation plan (``act``, ``base_act``, ``act_fraction``, ``order``) applies to those sites.
The stem ReLU, the ReLU after every residual addition and act₁/act₂ of the earlier stages are
fixed ReLUs, not sites.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from attnact._checks import check_int, check_positive_number
from attnact.models._init import he_init_
from attnact.models.act_plan import ActLike, ActPlan, ActSite
from attnact.models.registry import register_model
from attnact.units.norm_act import norm_then_act

__all__ = ["BottleneckV1b", "ResNetV1b", "resnet50_v1b"]


class BottleneckV1b(nn.Module):
    """Bottleneck with the stride on the 3×3 convolution (ATAC paper Fig. 2(b)).

    ``plan`` builds act₁ and act₂ when given; otherwise they are plain ReLUs.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        plan: ActPlan | None,
        *,
        zero_init_last_bn: bool = False,
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = plan.build(planes) if plan is not None else nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = plan.build(planes) if plan is not None else nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.zero_init_last_bn = zero_init_last_bn
        self.relu = nn.ReLU(inplace=True)  # after the addition: always ReLU (open-atac relu3)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        # one node for BN → ATAC (units/norm_act.py), act(bn(·)) for any other unit
        out = norm_then_act(self.bn1, self.act1, self.conv1(x))
        out = norm_then_act(self.bn2, self.act2, self.conv2(out))
        out = self.bn3(self.conv3(out))
        return cast(torch.Tensor, self.relu(out + shortcut))


class ResNetV1b(nn.Module):
    """ResNet-v1b with bottlenecks; see :func:`resnet50_v1b` for the arguments."""

    act_sites: tuple[ActSite, ...]

    def __init__(
        self,
        plan: ActPlan,
        *,
        layers: Sequence[int],
        act_stages: int,
        num_classes: int,
        in_channels: int,
        zero_init_last_bn: bool,
    ) -> None:
        super().__init__()
        self.act_stages = act_stages
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        first_act_stage = len(layers) - act_stages
        stages = []
        for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            stage_plan = plan if i >= first_act_stage else None
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(
                    BottleneckV1b(
                        cin, planes, stride, stage_plan, zero_init_last_bn=zero_init_last_bn
                    )
                )
                cin = planes * BottleneckV1b.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        he_init_(self)
        if zero_init_last_bn:
            # Each residual branch starts as zero, so every block starts as the identity
            # (Goyal et al., 2017); gluon-cv's last_gamma.
            for m in self.modules():
                if isinstance(m, BottleneckV1b):
                    nn.init.zeros_(m.bn3.weight)
        plan.finish(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return cast(torch.Tensor, self.fc(torch.flatten(self.avgpool(x), 1)))


@register_model(
    "resnet50_v1b",
    description="ResNet-50-v1b (stride on the 3×3 conv); act in the last 2 stages; ATAC Table IV",
    input_size=(3, 224, 224),
    num_classes=1000,
)
def resnet50_v1b(
    *,
    act: ActLike = "relu",
    num_classes: int = 1000,
    in_channels: int = 3,
    act_stages: int = 2,
    r: int | float = 2,
    base_act: ActLike = "relu",
    act_fraction: float = 1.0,
    order: str = "last_first",
    act_kwargs: Mapping[str, Any] | None = None,
    zero_init_last_bn: bool = False,
) -> ResNetV1b:
    """ResNet-50-v1b host of the ATAC paper (Table II, Fig. 2(b), Table IV; Sec. IV-A).

    Args:
        act: unit at act₁/act₂ of the bottlenecks of the last ``act_stages`` stages
            (``"atac"``: ATAC-ResNet-50, 18 units, ≈ 28.0M parameters).
        num_classes: classes of the final linear layer.
        in_channels: input channels.
        act_stages: how many of the 4 stages, counted from the last, have activation sites
            (paper: 2; 4 puts sites in every bottleneck).
        r: channel reduction of ATAC-style units (paper: 2).
        base_act, act_fraction, order, act_kwargs: the activation plan over those sites; see
            :class:`~attnact.models.act_plan.ActPlan`.
        zero_init_last_bn: initialise the last BN of every bottleneck to zero.

    Raises:
        ValueError: a bad argument (named in the message), or a channel-changing activation.
    """
    layers = (3, 4, 6, 3)
    check_int("num_classes", num_classes)
    check_int("in_channels", in_channels)
    check_int("act_stages", act_stages, minimum=0, maximum=len(layers))
    check_positive_number("r", r)
    if not isinstance(zero_init_last_bn, bool):
        raise ValueError(f"zero_init_last_bn must be True or False, got {zero_init_last_bn!r}")
    plan = ActPlan(
        act,
        num_sites=2 * sum(layers[len(layers) - act_stages :]),
        base_act=base_act,
        act_fraction=act_fraction,
        order=order,
        act_kwargs=act_kwargs,
        unit_defaults={"r": r},
    )
    plan.require_same_channels("resnet50_v1b")
    return ResNetV1b(
        plan,
        layers=layers,
        act_stages=act_stages,
        num_classes=num_classes,
        in_channels=in_channels,
        zero_init_last_bn=zero_init_last_bn,
    )
