"""Grad-CAM heat maps and the figure of AReLU Fig. 5 (ReLU vs. AReLU feature maps of ResNet-18).

Grad-CAM (Selvaraju et al., 2017) weights each channel k of a layer's output A by the spatial mean
of the target logit's gradient, w_k = mean_{i,j} ∂y_c/∂A_k[i,j], and keeps the positive part of
Σ_k w_k A_k. The AReLU paper applies it to the *first* feature map of ResNet-18 on CIFAR-100 test
images. The attribution itself is captum's ``LayerGradCam``; this module adds the bookkeeping a
figure needs (eval mode, predicted targets, upsampling to the input, a common [0, 1] scale) and
the grid that puts the maps of several models side by side.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attnact.report.figures import figure_grid

__all__ = ["gradcam", "gradcam_grid"]

# The grid's geometry in inches at DPI dots per inch, fixed (no tight bounding box) so that the
# PNG's size in pixels follows from the number of rows and columns alone.
DPI = 100
CELL = 1.2  # one image panel
LEFT = 0.5  # row labels
TOP = 0.3  # column titles
SUPTITLE = 0.3  # extra room for ``title``
BOTTOM = 0.05
RIGHT = 0.05


def _check_images(images: object) -> Tensor:
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must be 4-D (N, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got N = 0")
    return images


def _check_targets(targets: object, n: int, device: torch.device) -> Tensor:
    t = torch.as_tensor(targets, device=device)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices, got dtype {t.dtype}")
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(
            f"targets must be one class index per image, shape ({n},), got {tuple(t.shape)}"
        )
    return t.long()


def _normalise(maps: Tensor) -> Tensor:
    """Scale each map of (N, H, W) to [0, 1] by its own minimum and maximum; a map whose range is
    zero (or rounding noise: at most eps times its largest magnitude) becomes all zeros."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1).values
    hi = flat.max(dim=1).values
    span = hi - lo
    scale = torch.maximum(lo.abs(), hi.abs())
    flat_ok = span > torch.finfo(maps.dtype).eps * scale
    safe = torch.where(flat_ok, span, torch.ones_like(span))
    out = (maps - lo[:, None, None]) / safe[:, None, None]
    return torch.where(flat_ok[:, None, None], out, torch.zeros_like(out))


def gradcam(
    model: nn.Module,
    layer: nn.Module,
    images: Tensor,
    targets: Tensor | None = None,
    *,
    relu: bool = True,
) -> Tensor:
    """Grad-CAM maps of ``layer``'s output for ``images``, one per image, at the input resolution.

    Args:
        model: a classifier returning logits (N, classes). It runs in eval mode for the call (the
            training flag of every submodule is restored afterwards, also on an error); gradients
            are taken with ``torch.autograd.grad`` with respect to the layer output only, so no
            parameter's ``.grad`` is created or changed.
        layer: a submodule of ``model`` whose output is a feature map (N, K, h, w).
        images: (N, C, H, W) model inputs (already normalised as the model expects).
        targets: the class per image whose logit is explained, (N,) or one index for all;
            ``None`` takes the model's prediction (argmax of the logits).
        relu: keep only the positive part of Σ_k w_k A_k, as in the Grad-CAM paper; ``False``
            keeps the sign (0 is then the most negative value after scaling).

    Returns:
        (N, H, W) float tensor on the images' device: the map upsampled bilinearly (captum's
        ``LayerAttribution.interpolate``, ``align_corners=False``) and scaled per image to
        [0, 1] by its minimum and maximum; a constant map (e.g. all zero after the ReLU) is zeros.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    images = _check_images(images).detach()
    if not isinstance(model, nn.Module) or not isinstance(layer, nn.Module):
        raise ValueError("model and layer must be nn.Module instances")
    if not any(m is layer for m in model.modules()):
        raise ValueError(
            f"layer must be a submodule of model; {type(layer).__name__} is not in "
            f"{type(model).__name__}"
        )
    n, _, height, width = images.shape

    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        if targets is None:
            with torch.no_grad():
                logits = model(images)
            if logits.dim() != 2 or logits.shape[0] != n:
                raise ValueError(
                    f"model must return logits (N, classes) with N = {n}, got shape "
                    f"{tuple(logits.shape)}"
                )
            targets = logits.argmax(dim=1)
        target = _check_targets(targets, n, images.device)
        cam = LayerGradCam(model, layer).attribute(images, target=target, relu_attributions=relu)
    finally:
        for m, training in modes.items():
            m.train(training)
    if not isinstance(cam, Tensor) or cam.dim() != 4:
        shape = tuple(cam.shape) if isinstance(cam, Tensor) else type(cam).__name__
        raise ValueError(
            f"layer output must be one feature map (N, K, h, w); Grad-CAM of it has shape {shape}"
        )
    up = LayerAttribution.interpolate(cam, (height, width), interpolate_mode="bilinear")
    return _normalise(up[:, 0].detach())


def _to_display(images: Tensor, mean: Any, std: Any) -> np.ndarray:
    """(N, C, H, W) → (N, H, W, C) numpy in [0, 1], denormalised as x·std + mean if given."""
    channels = images.shape[1]
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 (gray) or 3 (RGB) channels, got {channels}")
    if (mean is None) != (std is None):
        raise ValueError("give mean and std together (or neither)")
    x = images.detach().to("cpu", torch.float64)
    if mean is not None:
        stats = []
        for name, value in (("mean", mean), ("std", std)):
            v = torch.as_tensor(value, dtype=torch.float64).flatten()
            if v.numel() not in (1, channels):
                raise ValueError(
                    f"{name} must have 1 or {channels} values (one per channel), got {v.numel()}"
                )
            stats.append(v.reshape(1, -1, 1, 1))
        x = x * stats[1] + stats[0]
    return x.clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()


def _titles(labels: Any, class_names: Sequence[str] | None, n: int) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, Tensor):
        labels = labels.tolist()
    if isinstance(labels, str) or len(labels) != n:
        raise ValueError(f"labels must give one label per image ({n}), got {labels!r}")
    titles = []
    for label in labels:
        if isinstance(label, str):
            titles.append(label)
        elif class_names is not None:
            if not 0 <= int(label) < len(class_names):
                raise ValueError(
                    f"label {label} is out of range for {len(class_names)} class names"
                )
            titles.append(str(class_names[int(label)]))
        else:
            titles.append(str(label))
    return titles


def gradcam_grid(
    rows: Mapping[str, Tensor],
    images: Tensor,
    path: str | os.PathLike[str],
    *,
    labels: Sequence[str] | Sequence[int] | Tensor | None = None,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    title: str = "",
) -> Path:
    """The figure of AReLU Fig. 5: one column per image, the images on top, then one row per
    entry of ``rows`` (e.g. ``{"ReLU": ..., "AReLU": ...}``) with its heat map over the image.

    Args:
        rows: row label → heat maps (N, h, w) in [0, 1] (e.g. from :func:`gradcam`), drawn with
            the jet colormap at alpha 0.5 and stretched over the image if h, w differ from it.
        images: (N, C, H, W) with C = 1 (gray) or 3 (RGB); shown clipped to [0, 1] after
            denormalising as x·std + mean when ``mean`` and ``std`` are given.
        path: where the PNG goes (written atomically).
        labels: the true label per image, as class indices (named through ``class_names`` if
            given) or as strings; they become the column titles.
        title: a title over the whole figure.

    The PNG measures (LEFT + N·CELL + RIGHT) × (TOP [+ SUPTITLE] + (1 + len(rows))·CELL + BOTTOM)
    inches at ``DPI`` (no tight bounding box, so the size depends on the grid alone).
    """
    images = _check_images(images)
    n, _, height, width = images.shape
    shown = _to_display(images, mean, std)
    maps: dict[str, np.ndarray] = {}
    for name, heat in rows.items():
        if not isinstance(heat, Tensor) or heat.dim() != 3 or heat.shape[0] != n:
            shape = tuple(heat.shape) if isinstance(heat, Tensor) else type(heat).__name__
            raise ValueError(
                f"rows[{name!r}] must hold one heat map per image, shape ({n}, h, w), got {shape}"
            )
        maps[str(name)] = heat.detach().to("cpu", torch.float64).numpy()
    titles = _titles(labels, class_names, n)

    nrows = 1 + len(maps)
    top = TOP + (SUPTITLE if title else 0.0)
    fig_w = LEFT + n * CELL + RIGHT
    fig_h = top + nrows * CELL + BOTTOM
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # heat maps cover the image exactly
    with figure_grid(
        path, nrows=nrows, ncols=n, figsize=(fig_w, fig_h), dpi=DPI, squeeze=False
    ) as (fig, axes):
        fig.subplots_adjust(
            left=LEFT / fig_w,
            right=1.0 - RIGHT / fig_w,
            bottom=BOTTOM / fig_h,
            top=1.0 - top / fig_h,
            wspace=0.05,
            hspace=0.05,
        )
        row_names = ["input", *maps]
        for r, row_name in enumerate(row_names):
            for c in range(n):
                ax = axes[r, c]
                img = shown[c]
                if img.shape[2] == 1:
                    ax.imshow(img[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0)
                else:
                    ax.imshow(img)
                if r > 0:
                    ax.imshow(
                        maps[row_name][c],
                        cmap="jet",
                        alpha=0.5,
                        vmin=0.0,
                        vmax=1.0,
                        extent=extent,
                        interpolation="bilinear",
                    )
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(row_name, fontsize=9)
                if r == 0 and titles is not None:
                    ax.set_title(titles[c], fontsize=8)
        if title:
            fig.suptitle(title, fontsize=10, y=1.0 - 0.05 / fig_h)
    return Path(path)
