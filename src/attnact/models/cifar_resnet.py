"""Pre-activation ResNet-v2 for CIFAR (ResNet-20 at b = 3), the ATAC paper's CIFAR host.

Source: Y. Dai et al., "Attention as Activation", ICPR 2020: Table II (ResNet-20 column),
Fig. 2(a) (the ATAC-ResNet-V2 basic block), Sec. IV-A; the architecture is He et al., "Identity
Mappings in Deep Residual Networks", ECCV 2016, as in the authors' MXNet code (open-atac).

    input BN (no affine) → 3×3 conv, w
    → stage 1: b blocks, w channels,  stride 1
    → stage 2: b blocks, 2w channels, stride 2
    → stage 3: b blocks, 4w channels, stride 2
    → BN → act → global average pool → linear

    block:  out = shortcut(x) + conv₂(act₂(BN₂(conv₁(act₁(BN₁(x))))))

The shortcut is the identity, or a 1×1 stride-s convolution of the block *input* x when the
shape changes (the open-atac ResBlockV2ATAC downsamples the un-normalised input, unlike
gluon-cv's CIFARResNetV2 which downsamples BN₁/ReLU's output). Convolutions have no bias.

Activation sites, in forward order: act₁, act₂ of every block, then the final act — 6b + 1 sites
(19 for ResNet-20). act₁ of a downsampling block sees the block's *input* width. All of them are
built through an :class:`~attnact.models.act_plan.ActPlan`.

Comparison variants of Sec. IV-B/C (``variant=``):

* ``"plain"``: the network above (ATAC-ResNet with ``act="atac"``, SEActivation with
  ``act="se_activation"``).
* ``"nin"`` (Fig. 4): a :class:`~attnact.blocks.NiNBlock` after every activation site, i.e. after
  each 3×3 convolution and the activation that follows it, at that site's width and with the
  host's r — exactly the parameters and MACs of ATAC(C, r) at every site.
* ``"localse"`` (Fig. 5): :class:`~attnact.blocks.LocalSE` on the residual branch of every block,
  ``out = shortcut + L(res)·res``, with reduction r/2 (the paper's r = 1 for r = 2), which matches
  the two ATAC units of r per block (C² each at r = 2) with one gate of 2C².
* ``"se"``: :class:`~attnact.blocks.SqueezeExcite` on the residual branch (SENet, Hu et al. 2018).
* ``"ge"``: :class:`~attnact.blocks.GatherExcite` GE-θ⁺ on the residual branch (Hu et al. 2018);
  the gather is designed for ``image_size`` inputs.

``variant_kwargs`` are passed to the variant's block (e.g. ``{"min_hidden": 1}`` for SE,
``{"gather": "full"}`` for GE, ``{"r": 2}`` to override LocalSE's or NiN's reduction).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from torch import nn

from attnact._checks import check_choice, check_int, check_kwargs, check_positive_number
from attnact.blocks import GatherExcite, LocalSE, NiNBlock, SqueezeExcite
from attnact.models._init import he_init_
from attnact.models.act_plan import ActLike, ActPlan, ActSite
from attnact.models.registry import register_model
from attnact.units.norm_act import norm_then_act

__all__ = ["VARIANTS", "PreActBasicBlock", "ResNetCifar", "resnet_cifar"]

VARIANTS = ("plain", "nin", "localse", "se", "ge")


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class PreActBasicBlock(nn.Module):
    """Basic pre-activation block (ATAC paper Fig. 2(a)); its two activations come from ``plan``.

    ``nin`` builds a NiN block after each activation from its width; ``attention`` builds the
    block applied to the residual branch before the addition (SE, GE, LocalSE) from the output
    width and ``feat_size``, the side of the output map.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int,
        plan: ActPlan,
        *,
        nin: Callable[[int], nn.Module] | None = None,
        attention: Callable[[int, int], nn.Module] | None = None,
        feat_size: int = 0,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.act1 = plan.build(in_channels)  # sees the block input's width
        self.nin1 = nin(in_channels) if nin is not None else None
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act2 = plan.build(channels)
        self.nin2 = nin(channels) if nin is not None else None
        self.conv2 = _conv3x3(channels, channels)
        self.attention = attention(channels, feat_size) if attention is not None else None
        self.downsample: nn.Conv2d | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = norm_then_act(self.bn1, self.act1, x)  # one node for BN → ATAC (norm_act)
        if self.nin1 is not None:
            out = self.nin1(out)
        out = self.conv1(out)
        out = norm_then_act(self.bn2, self.act2, out)
        if self.nin2 is not None:
            out = self.nin2(out)
        out = self.conv2(out)
        if self.attention is not None:
            out = self.attention(out)
        return cast(torch.Tensor, out + shortcut)


class ResNetCifar(nn.Module):
    """ResNet-v2 of Table II with b blocks per stage; see :func:`resnet_cifar` for the arguments."""

    act_sites: tuple[ActSite, ...]

    def __init__(
        self,
        plan: ActPlan,
        *,
        blocks: int,
        num_classes: int,
        in_channels: int,
        width: int,
        variant: str,
        nin: Callable[[int], nn.Module] | None,
        attention: Callable[[int, int], nn.Module] | None,
        image_size: int,
    ) -> None:
        super().__init__()
        self.blocks = blocks
        self.variant = variant
        # Input normalisation without scale/shift (MXNet BatchNorm(scale=False, center=False)).
        self.input_bn = nn.BatchNorm2d(in_channels, affine=False)
        self.stem = _conv3x3(in_channels, width)
        cin, size = width, image_size
        stages = []
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(blocks):
                s = stride if j == 0 else 1
                size = (size - 1) // s + 1  # 3×3 conv, padding 1, stride s
                layers.append(
                    PreActBasicBlock(
                        cin, cout, s, plan, nin=nin, attention=attention, feat_size=size
                    )
                )
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(cin)
        self.act = plan.build(cin)
        self.nin = nin(cin) if nin is not None else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        he_init_(self)
        plan.finish(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.input_bn(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = norm_then_act(self.bn, self.act, x)
        if self.nin is not None:
            x = self.nin(x)
        return cast(torch.Tensor, self.fc(torch.flatten(self.pool(x), 1)))


def _variant_blocks(
    variant: str, r: float, kwargs: Mapping[str, Any]
) -> tuple[Callable[[int], nn.Module] | None, Callable[[int, int], nn.Module] | None]:
    """(NiN factory by width, attention factory by width and map size) for a variant."""
    if variant == "plain":
        if kwargs:
            raise ValueError(
                f"variant_kwargs are for the variants nin, localse, se, ge; variant='plain' "
                f"got {kwargs!r}"
            )
        return None, None
    block = {"nin": NiNBlock, "localse": LocalSE, "se": SqueezeExcite, "ge": GatherExcite}[variant]
    params = inspect.signature(block).parameters
    allowed = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]
    for key in kwargs:
        if key not in allowed:
            raise ValueError(
                f"variant_kwargs for variant={variant!r} ({block.__name__}) may set "
                f"{', '.join(allowed)}; got {key!r}"
            )
    if variant == "nin":
        nin_kw = {"r": r, **kwargs}
        return (lambda c: NiNBlock(c, **nin_kw)), None
    if variant == "localse":
        # Reduction r/2: one gate with 2C²/(r/2) = 4C²/r weights per block, as many as the two
        # ATAC units of reduction r (2C²/r each) it stands in for; r = 2 gives the paper's r = 1.
        lse_kw = {"r": r / 2, **kwargs}
        return None, (lambda c, size: LocalSE(c, **lse_kw))
    if variant == "se":
        return None, (lambda c, size: SqueezeExcite(c, **kwargs))
    return None, (lambda c, size: GatherExcite(c, size, **kwargs))


@register_model(
    "resnet_cifar",
    description="pre-activation ResNet-v2, b blocks/stage (b=3: ResNet-20); ATAC paper Table II",
    input_size=(3, 32, 32),
    num_classes=10,
)
def resnet_cifar(
    *,
    blocks: int = 3,
    act: ActLike = "relu",
    num_classes: int = 10,
    in_channels: int = 3,
    variant: str = "plain",
    r: int | float = 2,
    base_act: ActLike = "relu",
    act_fraction: float = 1.0,
    order: str = "last_first",
    act_kwargs: Mapping[str, Any] | None = None,
    width: int = 16,
    image_size: int = 32,
    variant_kwargs: Mapping[str, Any] | None = None,
) -> ResNetCifar:
    """CIFAR ResNet-v2 host of the ATAC paper (Table II, Fig. 2(a), Sec. IV-A/B/C).

    Args:
        blocks: b, basic blocks per stage (b = 3 is ResNet-20; the paper uses b = 1 … 5).
        act: unit at the activation sites (``"atac"`` gives ATAC-ResNet, 6b + 1 units).
        num_classes: classes of the final linear layer (10 or 100 for CIFAR).
        in_channels: input channels.
        variant: ``"plain"``, ``"nin"``, ``"localse"``, ``"se"`` or ``"ge"`` (module docstring).
        r: channel reduction of ATAC-style units and of the NiN/LocalSE blocks (paper: 2).
        base_act, act_fraction, order, act_kwargs: the activation plan (Fig. 6 protocol);
            see :class:`~attnact.models.act_plan.ActPlan`.
        width: channels of stage 1 (stages have w, 2w, 4w; paper: 16).
        image_size: input side the GE gather is designed for (other variants ignore it).
        variant_kwargs: extra arguments for the variant's block.

    Raises:
        ValueError: a bad argument (named in the message), or an activation that changes the
            channel count (Maxout): this host has no layer to widen before its activations.
    """
    check_int("blocks", blocks)
    check_int("num_classes", num_classes)
    check_int("in_channels", in_channels)
    check_int("width", width)
    check_int("image_size", image_size)
    check_choice("variant", variant, VARIANTS)
    check_positive_number("r", r)
    vkw = check_kwargs("variant_kwargs", variant_kwargs)
    plan = ActPlan(
        act,
        num_sites=6 * blocks + 1,
        base_act=base_act,
        act_fraction=act_fraction,
        order=order,
        act_kwargs=act_kwargs,
        unit_defaults={"r": r},
    )
    plan.require_same_channels("resnet_cifar")
    nin, attention = _variant_blocks(variant, r, vkw)
    return ResNetCifar(
        plan,
        blocks=blocks,
        num_classes=num_classes,
        in_channels=in_channels,
        width=width,
        variant=variant,
        nin=nin,
        attention=attention,
        image_size=image_size,
    )
