"""Five mainstream CIFAR networks for the AReLU paper's CIFAR-100 comparison of activations.

Source: D. Chen, J. Li, K. Xu, "AReLU: Attention-based Rectified Linear Unit", arXiv 2020,
Fig. 4: the activations compared on CIFAR-100 in mainstream networks (ResNet-18, SE-ResNet-18,
VGG-16, MobileNetV2, ShuffleNetV2). The paper names the networks but not their CIFAR variants; these
are the variants of the widely used CIFAR training code (kuangliu/pytorch-cifar), whose
parameter counts are the reference numbers below. The code here is written from the papers and
those layer tables, not copied.

* ``resnet18``: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (Table 1,
  18-layer column) with the CIFAR stem: 3×3 conv 64 stride 1 → BN → act, no max pool; basic
  blocks [2, 2, 2, 2], widths 64/128/256/512, strides 1/2/2/2; global average pool → linear.
  Block: ``act₂(BN₂(conv₂(act₁(BN₁(conv₁(x))))) + shortcut(x))``, shortcut the identity or a
  1×1 stride-s conv + BN. 11,173,962 parameters with 10 classes, 11,220,132 with 100.
* ``se_resnet18``: the same with a squeeze-and-excitation module (Hu, Shen, Sun, "Squeeze-and-
  Excitation Networks", CVPR 2018, Fig. 3) of reduction 16 on each block's residual branch,
  before the addition (:class:`~attnact.blocks.SqueezeExcite`, bottleneck max(C // 16, 4), i.e.
  exactly C / 16 at width 1). The SE's inner ReLU and sigmoid gate belong to the attention
  module and are not activation sites. 11,263,042 parameters with 10 classes.
* ``vgg16``: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
  Recognition", ICLR 2015 (configuration D) with BatchNorm after every convolution (Ioffe &
  Szegedy, ICML 2015), CIFAR style: the 13 convolutions (with bias, as in torchvision's
  vgg16_bn) and 5 max pools, then one Linear(512, classes). 14,728,266 parameters.
  The max pools use ``ceil_mode=True`` so that 28×28 inputs end at 1×1 (28→14→7→4→2→1) instead
  of an empty map; on 32×32 inputs every pool divides evenly and ceil_mode changes nothing.
* ``mobilenet_v2``: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
  CVPR 2018 (Table 2) for CIFAR: stem 3×3 conv 32 stride 1, the (t, c, n, s) table with the
  second stage's stride 2 → 1 (so 32×32 ends at 4×4), last 1×1 conv 1280, average pool →
  linear. Each inverted residual is 1×1 expand → BN → act, 3×3 depthwise stride s → BN → act,
  1×1 project → BN (linear bottleneck); the activation sites replace ReLU6. As in the common
  CIFAR code (and unlike Sandler et al.), the t = 1 block keeps its 1×1 expansion conv, and a
  stride-1 block whose width changes gets a 1×1 conv + BN shortcut; stride-2 blocks have none.
  2,296,922 parameters (the paper's variant would have 2,236,682).
* ``shufflenet_v2``: Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN
  Architecture Design", ECCV 2018 (Fig. 3(c, d), Table 5, 1.0×) for CIFAR: stem 3×3 conv 24
  stride 1, no max pool; stages of out channels 116/232/464, each one downsampling unit and then
  3/7/3 basic units; last 1×1 conv 1024, average pool → linear. Basic unit: split the channels
  in halves, x₂ → 1×1 → BN → act → 3×3 depthwise → BN → 1×1 → BN → act, concatenate with x₁,
  shuffle (2 groups). Downsampling unit: left 3×3 depthwise /2 → BN → 1×1 → BN → act, right
  1×1 → BN → act → 3×3 depthwise /2 → BN → 1×1 → BN → act, each to half the out channels,
  concatenate, shuffle. 1,263,854 parameters.

Convolutions have no bias (except VGG's), all networks end with adaptive average pooling to 1×1
so that 28×28 and 32×32 inputs both work, and convolutions get He normal initialisation
(:func:`~attnact.models._init.he_init_`, as the ResNet hosts of this package).

Width: ``width`` multiplies every channel count; each is rounded half up to an integer ≥ 1, and
ShuffleNetV2's stage widths to an even number ≥ 2 (the unit splits them in halves). MobileNetV2's
expansion width is t times the scaled input width. width = 1 is the standard network.

Stem: every model has ``model.stem``, an ``nn.Sequential`` of (conv, bn, act) — the first-layer
features (Grad-CAM of the AReLU paper hooks its output).

Activation sites (every ReLU of the standard network except inside SE, in forward order, built
by an :class:`~attnact.models.act_plan.ActPlan` with each site's channel count):

============== ===================================================== =====
model           sites                                                 n
============== ===================================================== =====
resnet18        stem + 2 per basic block (after BN₁, after the add)   17
se_resnet18     the same                                              17
vgg16           one after each of the 13 conv/BN pairs                13
mobilenet_v2    stem + 2 per inverted residual (17) + last conv       36
shufflenet_v2   stem + 3 per down unit (3) + 2 per basic unit (13)    37
                + last conv
============== ===================================================== =====

Channel-changing units (Maxout) are refused: several sites follow a residual addition or a
concatenation, with no single layer to widen.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from attnact._checks import check_int, check_positive_number
from attnact.blocks import SqueezeExcite
from attnact.models._init import he_init_
from attnact.models.act_plan import ActLike, ActPlan, ActSite
from attnact.models.registry import register_model
from attnact.units.norm_act import norm_then_act

__all__ = [
    "MOBILENET_V2_SETTINGS",
    "RESNET18_BLOCKS",
    "RESNET18_WIDTHS",
    "SHUFFLENET_V2_STAGES",
    "VGG16_CONFIG",
    "BasicBlock",
    "InvertedResidual",
    "MobileNetV2Cifar",
    "ResNetCifarV1",
    "ShuffleDownUnit",
    "ShuffleNetV2Cifar",
    "ShuffleUnit",
    "VGGCifar",
    "channel_shuffle",
    "mobilenet_v2",
    "resnet18",
    "scaled_channels",
    "se_resnet18",
    "shufflenet_v2",
    "vgg16",
]

RESNET18_BLOCKS = (2, 2, 2, 2)
RESNET18_WIDTHS = (64, 128, 256, 512)

# VGG-16 (configuration D): output channels of each 3×3 conv, "M" for a 2×2 max pool.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)

# MobileNetV2 (t, c, n, s): expansion, output channels, repeats, stride of the first repeat.
MOBILENET_V2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 in the ImageNet network; 1 for 32×32 inputs
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# ShuffleNetV2 1.0×: (out channels, basic units after the downsampling unit) per stage.
SHUFFLENET_V2_STAGES: tuple[tuple[int, int], ...] = ((116, 3), (232, 7), (464, 3))


# --------------------------------------------------------------------------------------------------
# shared pieces


def scaled_channels(channels: int, width: float, multiple: int = 1) -> int:
    """``channels · width`` rounded half up to a multiple of ``multiple``, at least ``multiple``."""
    return max(multiple, int(channels * width / multiple + 0.5) * multiple)


def _check_width(width: object) -> float:
    value = check_positive_number("width", width)
    if not math.isfinite(value):
        raise ValueError(f"width must be a finite positive number, got {width!r}")
    return value


def _conv_bn(
    cin: int, cout: int, kernel: int, *, stride: int = 1, groups: int = 1, bias: bool = False
) -> nn.Sequential:
    conv = nn.Conv2d(
        cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=bias
    )
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(cout)))


def _conv_bn_act(
    cin: int,
    cout: int,
    kernel: int,
    plan: ActPlan,
    *,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
) -> nn.Sequential:
    """conv → BN → act, the act a fresh activation site of ``cout`` channels."""
    block = _conv_bn(cin, cout, kernel, stride=stride, groups=groups, bias=bias)
    block.add_module("act", plan.build(cout))
    return block


class _Classifier(nn.Module):
    """Adaptive average pool to 1×1 → flatten → linear."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.fc(torch.flatten(self.pool(x), 1)))


# --------------------------------------------------------------------------------------------------
# ResNet-18 and SE-ResNet-18


class BasicBlock(nn.Module):
    """Post-activation basic block (He et al. 2016), optionally with SE on the residual branch.

    ``out = act₂(BN₂(conv₂(act₁(BN₁(conv₁(x))))) [· SE] + shortcut(x))``; act₁ and act₂ are
    activation sites of ``channels`` channels; ``se_reduction`` adds a
    :class:`~attnact.blocks.SqueezeExcite` of that reduction before the addition.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int,
        plan: ActPlan,
        *,
        se_reduction: int | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = plan.build(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.se = (
            SqueezeExcite(channels, reduction=se_reduction) if se_reduction is not None else None
        )
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_channels != channels:
            self.shortcut = _conv_bn(in_channels, channels, 1, stride=stride)
        self.act2 = plan.build(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = norm_then_act(self.bn1, self.act1, self.conv1(x))  # BN → ATAC: one node
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return cast(torch.Tensor, self.act2(out + shortcut))


class ResNetCifarV1(nn.Module):
    """CIFAR ResNet-18 / SE-ResNet-18; see :func:`resnet18` and :func:`se_resnet18`."""

    act_sites: tuple[ActSite, ...]
    layer1: nn.Sequential  # registered by name in __init__
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        plan: ActPlan,
        *,
        num_classes: int,
        in_channels: int,
        width: float,
        blocks: Sequence[int] = RESNET18_BLOCKS,
        se_reduction: int | None = None,
    ) -> None:
        super().__init__()
        widths = [scaled_channels(c, width) for c in RESNET18_WIDTHS]
        self.stem = _conv_bn_act(in_channels, widths[0], 3, plan)
        cin = widths[0]
        for i, (cout, n) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(
                    BasicBlock(
                        cin, cout, stride if j == 0 else 1, plan, se_reduction=se_reduction
                    )
                )
                cin = cout
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.head = _Classifier(cin, num_classes)
        he_init_(self)
        plan.finish(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return cast(torch.Tensor, self.head(x))


# --------------------------------------------------------------------------------------------------
# VGG-16 (BN)


class VGGCifar(nn.Module):
    """CIFAR VGG with BatchNorm; see :func:`vgg16`. ``stem`` is the first conv/BN/act."""

    act_sites: tuple[ActSite, ...]

    def __init__(
        self,
        plan: ActPlan,
        *,
        config: Sequence[int | str],
        num_classes: int,
        in_channels: int,
        width: float,
    ) -> None:
        super().__init__()
        first, *rest = config
        if not isinstance(first, int):
            raise ValueError(f"a VGG configuration starts with a convolution, got {first!r}")
        cin = scaled_channels(first, width)
        self.stem = _conv_bn_act(in_channels, cin, 3, plan, bias=True)
        layers: list[nn.Module] = []
        for item in rest:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))  # see the module docstring
            else:
                cout = scaled_channels(int(item), width)
                layers.append(_conv_bn_act(cin, cout, 3, plan, bias=True))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.head = _Classifier(cin, num_classes)
        he_init_(self)
        plan.finish(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.head(self.features(self.stem(x))))


# --------------------------------------------------------------------------------------------------
# MobileNetV2


class InvertedResidual(nn.Module):
    """MobileNetV2 block (Sandler et al. 2018, Table 1), CIFAR-code form.

    1×1 expand to t·C_in → BN → act, 3×3 depthwise stride s → BN → act, 1×1 project → BN. With
    stride 1 the block adds a shortcut: the input itself, or a 1×1 conv + BN of it when the width
    changes. The expand conv is kept for t = 1 (module docstring).
    """

    def __init__(
        self, in_channels: int, out_channels: int, expansion: int, stride: int, plan: ActPlan
    ) -> None:
        super().__init__()
        hidden = expansion * in_channels
        self.expand = _conv_bn_act(in_channels, hidden, 1, plan)
        self.depthwise = _conv_bn_act(hidden, hidden, 3, plan, stride=stride, groups=hidden)
        self.project = _conv_bn(hidden, out_channels, 1)
        self.use_shortcut = stride == 1
        self.shortcut: nn.Sequential | None = None
        if stride == 1 and in_channels != out_channels:
            self.shortcut = _conv_bn(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if not self.use_shortcut:
            return cast(torch.Tensor, out)
        return cast(torch.Tensor, out + (x if self.shortcut is None else self.shortcut(x)))


class MobileNetV2Cifar(nn.Module):
    """CIFAR MobileNetV2; see :func:`mobilenet_v2`."""

    act_sites: tuple[ActSite, ...]

    def __init__(
        self, plan: ActPlan, *, num_classes: int, in_channels: int, width: float
    ) -> None:
        super().__init__()
        cin = scaled_channels(32, width)
        self.stem = _conv_bn_act(in_channels, cin, 3, plan)
        blocks = []
        for t, c, n, s in MOBILENET_V2_SETTINGS:
            cout = scaled_channels(c, width)
            for j in range(n):
                blocks.append(InvertedResidual(cin, cout, t, s if j == 0 else 1, plan))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        last = scaled_channels(1280, width)
        self.last = _conv_bn_act(cin, last, 1, plan)
        self.head = _Classifier(last, num_classes)
        he_init_(self)
        plan.finish(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.head(self.last(self.blocks(self.stem(x)))))


# --------------------------------------------------------------------------------------------------
# ShuffleNetV2


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups (ShuffleNet, Zhang et al., CVPR 2018)."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 basic unit (Ma et al. 2018, Fig. 3(c)); ``channels`` must be even."""

    def __init__(self, channels: int, plan: ActPlan) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"a ShuffleNetV2 unit splits its channels in halves, got {channels}")
        half = channels // 2
        self.branch = nn.Sequential(
            _conv_bn_act(half, half, 1, plan),
            _conv_bn(half, half, 3, groups=half),
            _conv_bn_act(half, half, 1, plan),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((x1, self.branch(x2)), dim=1), 2)


class ShuffleDownUnit(nn.Module):
    """ShuffleNetV2 spatial downsampling unit (Ma et al. 2018, Fig. 3(d)), stride 2.

    Both branches see the whole input and output half of ``out_channels`` (which must be even).
    """

    def __init__(self, in_channels: int, out_channels: int, plan: ActPlan) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(
                f"a ShuffleNetV2 downsampling unit needs an even out_channels, got {out_channels}"
            )
        half = out_channels // 2
        self.left = nn.Sequential(
            _conv_bn(in_channels, in_channels, 3, stride=2, groups=in_channels),
            _conv_bn_act(in_channels, half, 1, plan),
        )
        self.right = nn.Sequential(
            _conv_bn_act(in_channels, half, 1, plan),
            _conv_bn(half, half, 3, stride=2, groups=half),
            _conv_bn_act(half, half, 1, plan),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(torch.cat((self.left(x), self.right(x)), dim=1), 2)


class ShuffleNetV2Cifar(nn.Module):
    """CIFAR ShuffleNetV2 1.0×; see :func:`shufflenet_v2`."""

    act_sites: tuple[ActSite, ...]
    stage1: nn.Sequential  # registered by name in __init__
    stage2: nn.Sequential
    stage3: nn.Sequential

    def __init__(
        self, plan: ActPlan, *, num_classes: int, in_channels: int, width: float
    ) -> None:
        super().__init__()
        cin = scaled_channels(24, width)
        self.stem = _conv_bn_act(in_channels, cin, 3, plan)
        for i, (c, n) in enumerate(SHUFFLENET_V2_STAGES):
            cout = scaled_channels(c, width, multiple=2)
            units: list[nn.Module] = [ShuffleDownUnit(cin, cout, plan)]
            units += [ShuffleUnit(cout, plan) for _ in range(n)]
            self.add_module(f"stage{i + 1}", nn.Sequential(*units))
            cin = cout
        last = scaled_channels(1024, width)
        self.last = _conv_bn_act(cin, last, 1, plan)
        self.head = _Classifier(last, num_classes)
        he_init_(self)
        plan.finish(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return cast(torch.Tensor, self.head(self.last(x)))


# --------------------------------------------------------------------------------------------------
# builders


_BUILDER_ARGS = """
    Args:
        act: unit at every activation site (module docstring); units that need the channel
            count get each site's.
        num_classes: classes of the final linear layer (100 for CIFAR-100).
        in_channels: input channels.
        width: channel multiplier (> 0; 1 is the standard network; see the module docstring).
        base_act, act_fraction, order, act_kwargs: the activation plan; see
            :class:`~attnact.models.act_plan.ActPlan`.

    Raises:
        ValueError: a bad argument (named in the message), or a channel-changing unit (Maxout).
"""


def _zoo_model(
    name: str,
    network: Callable[..., nn.Module],
    num_sites: int,
    *,
    title: str,
    description: str,
    note: str = "",
    **network_kwargs: Any,
) -> Callable[..., nn.Module]:
    """Register the builder of one zoo network: all five take the same arguments, check them
    alike and build ``network`` from an :class:`ActPlan` of ``num_sites`` sites."""

    def builder(
        *,
        act: ActLike = "relu",
        num_classes: int = 100,
        in_channels: int = 3,
        width: float = 1.0,
        base_act: ActLike = "relu",
        act_fraction: float = 1.0,
        order: str = "last_first",
        act_kwargs: Mapping[str, Any] | None = None,
    ) -> nn.Module:
        check_int("num_classes", num_classes)
        check_int("in_channels", in_channels)
        checked_width = _check_width(width)
        plan = ActPlan(act, num_sites=num_sites, base_act=base_act, act_fraction=act_fraction,
                       order=order, act_kwargs=act_kwargs)
        plan.require_same_channels(name)
        return network(plan, num_classes=num_classes, in_channels=in_channels,
                       width=checked_width, **network_kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"{title}, {num_sites} activation sites.\n"
                       + (f"\n    {note}\n" if note else "") + _BUILDER_ARGS)
    return register_model(name, description=description, input_size=(3, 32, 32),
                          num_classes=100)(builder)


resnet18 = _zoo_model(
    "resnet18", ResNetCifarV1, 1 + 2 * sum(RESNET18_BLOCKS),
    title="CIFAR ResNet-18 (He et al. 2016; AReLU paper Fig. 4)",
    description="CIFAR ResNet-18 (3×3 stem, no max pool); AReLU paper Fig. 4",
)
se_resnet18 = _zoo_model(
    "se_resnet18", ResNetCifarV1, 1 + 2 * sum(RESNET18_BLOCKS), se_reduction=16,
    title="CIFAR SE-ResNet-18 (Hu et al. 2018; AReLU paper Fig. 4)",
    description="CIFAR SE-ResNet-18 (SE r=16 on each residual branch); AReLU paper Fig. 4",
    note="The SE modules' own ReLU and sigmoid gate are part of the attention, not sites.",
)
vgg16 = _zoo_model(
    "vgg16", VGGCifar, sum(1 for item in VGG16_CONFIG if item != "M"), config=VGG16_CONFIG,
    title="CIFAR VGG-16 with BN (Simonyan & Zisserman 2015; AReLU paper Fig. 4)",
    description="CIFAR VGG-16 with BatchNorm, one linear layer; AReLU paper Fig. 4",
)
mobilenet_v2 = _zoo_model(
    "mobilenet_v2", MobileNetV2Cifar, 1 + 2 * sum(n for _, _, n, _ in MOBILENET_V2_SETTINGS) + 1,
    title="CIFAR MobileNetV2 (Sandler et al. 2018; AReLU paper Fig. 4)",
    description="CIFAR MobileNetV2 (stride-1 stem and second stage); AReLU paper Fig. 4",
    note="The sites replace the network's ReLU6 units.",
)
shufflenet_v2 = _zoo_model(
    "shufflenet_v2", ShuffleNetV2Cifar, 1 + sum(3 + 2 * n for _, n in SHUFFLENET_V2_STAGES) + 1,
    title="CIFAR ShuffleNetV2 1.0× (Ma et al. 2018; AReLU paper Fig. 4)",
    description="CIFAR ShuffleNetV2 1.0× (stride-1 stem, no max pool); AReLU paper Fig. 4",
)
