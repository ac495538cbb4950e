"""The authors' evaluation preprocessing, as metadata a converted model carries, and its helper.

Source: YimianDai/open-atac. ImageNet (``train_imagenet.py``, validation ``ImageRecordIter`` of
the run that made the released weights, ``--use-rec``): resize the shorter side to
ceil(224 / 0.875) = 256 (bilinear, on 8-bit pixels), centre-crop 224×224, subtract the RGB mean
(123.68, 116.779, 103.939) and divide by the std (58.393, 57.12, 57.375), pixel units 0…255.
CIFAR (``train_cifar.py``): ``ToTensor`` then ``Normalize((0.4914, 0.4822, 0.4465),
(0.2023, 0.1994, 0.2010))``, i.e. the same in pixel units times 255, no resize or crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CIFAR_EVAL", "IMAGENET_EVAL", "EvalPreprocessing", "preprocess"]


@dataclass(frozen=True)
class EvalPreprocessing:
    """Resize (shorter side), centre crop, then ``(pixel − mean) / std`` per RGB channel.

    Attributes:
        resize: the shorter side after a bilinear resize (aspect kept), or None.
        crop: side of the centre crop, or None.
        mean, std: per RGB channel, in pixel units (0…255).
        source: where the numbers come from.
    """

    resize: int | None
    crop: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str

    def __call__(self, images: Any) -> torch.Tensor:
        """uint8 RGB images, (3, H, W) or (N, 3, H, W) (tensor or array) or a PIL image →
        a float32 (N, 3, h, w) batch ready for the model."""
        x = _as_batch(images)
        if self.resize is not None:
            h, w = x.shape[-2:]
            # The shorter side becomes `resize`, the other scales with it (truncated, as
            # MXNet's ImageRecordIter computes it); results go back to 8-bit pixels as there.
            size = (self.resize, int(self.resize * w / h)) if h <= w else (
                int(self.resize * h / w), self.resize)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                              antialias=False).round_().clamp_(0, 255)
        if self.crop is not None:
            h, w = x.shape[-2:]
            if h < self.crop or w < self.crop:
                raise ValueError(f"images of {h}×{w} are smaller than the crop {self.crop}")
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
            x = x[..., top : top + self.crop, left : left + self.crop]
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()


def _as_batch(images: Any) -> torch.Tensor:
    if hasattr(images, "convert") and hasattr(images, "size"):  # a PIL image
        images = np.asarray(images.convert("RGB")).transpose(2, 0, 1)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a uint8 tensor, array or PIL image, got "
                        f"{type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 RGB pixels (0…255), got dtype {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (3, H, W) or (N, 3, H, W) RGB, got shape "
                         f"{tuple(images.shape)}")
    return cast(torch.Tensor, images.to(torch.float32))


IMAGENET_EVAL = EvalPreprocessing(
    resize=256,
    crop=224,
    mean=(123.68, 116.779, 103.939),
    std=(58.393, 57.12, 57.375),
    source="open-atac train_imagenet.py, validation ImageRecordIter (--use-rec)",
)
CIFAR_EVAL = EvalPreprocessing(
    resize=None,
    crop=None,
    mean=(0.4914 * 255, 0.4822 * 255, 0.4465 * 255),
    std=(0.2023 * 255, 0.1994 * 255, 0.2010 * 255),
    source="open-atac train_cifar.py, transform_test (ToTensor, Normalize)",
)


def preprocess(model: nn.Module, images: Any) -> torch.Tensor:
    """Apply the evaluation preprocessing ``model`` carries (a model from
    :func:`~attnact.weights.load_open_atac` or ``create_model(..., pretrained=...)``)."""
    pre = getattr(model, "preprocessing", None)
    if not isinstance(pre, EvalPreprocessing):
        raise ValueError("this model carries no evaluation preprocessing (model.preprocessing); "
                         "only imported or pretrained models do")
    return pre(images)
