"""Weight initialisation shared by the ResNet hosts."""

from __future__ import annotations

from torch import nn

__all__ = ["he_init_"]


def he_init_(model: nn.Module) -> None:
    """He et al. (ICCV 2015) normal init, fan_out mode, for every convolution; BN weight 1, bias 0.

    The ATAC paper (Sec. IV-A) says only "the strategy described by He et al."; its MXNet code
    applies one initialiser to every parameter, so this covers the convolutions inside the
    activation units and blocks too. fan_out (torchvision's choice) keeps the variance of the
    backward pass; for the 3×3 convolutions of a ResNet fan_in and fan_out differ only where the
    width changes. Linear layers keep PyTorch's default (as torchvision does).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
