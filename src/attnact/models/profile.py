"""Parameter and MAC counts of a model, per layer, and the markdown report behind ``attnact info``.

MACs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the FLOPs of
matrix products and convolutions (``aten.convolution``, ``mm``, ``addmm``, ``bmm`` …) as 2 per
multiply-accumulate; we report MACs = FLOPs / 2, the unit of the ATAC paper's Table IV ("GFlops"
there are multiply-accumulates: ATAC-ResNet-50-v1b is 4.40 G here and 4.4 there; the table's
3.86 for ResNet-50 is the SENet paper's figure for the original v1, stride on the first 1×1
convolution, which is 3.86 G here too, against 4.09 G for v1b). Element-wise work —
BatchNorm, activations, the sigmoid gates and products of ATAC/SE, pooling, bias additions — is
not counted; it is memory-bound and shows up in time, not in this number (``attnact bench``
measures time and saved bytes).

The count runs one forward pass of batch 1, by default on a copy of the model on the ``meta``
device (shapes only, no arithmetic, no memory), in eval mode (a batch of 1 would make BatchNorm
in training mode fail after global pooling).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from attnact.models.registry import create_model, fit_to_input, model_spec

__all__ = [
    "LayerProfile",
    "count_macs",
    "count_parameters",
    "info_report",
    "profile_table_markdown",
]

# Modules from these packages are reported as one row: an ATAC unit is one activation, not
# two convolutions and two BatchNorms.
_ATOMIC_PACKAGES = ("attnact.units", "attnact.blocks")


@dataclass(frozen=True)
class LayerProfile:
    """One row of the per-layer breakdown.

    Attributes:
        path: qualified module name (``"layer1.0.act1"``); ``"(other)"`` for work done outside
            any reported module (functional calls in a parent's ``forward``).
        type: class name.
        params: parameters of the module and everything inside it.
        macs: multiply-accumulates of one forward pass of batch 1.
    """

    path: str
    type: str
    params: int
    macs: int


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor once); BN running statistics are buffers.

    Examples:
        ATAC with C = 64, r = 2: two 64 × 32 point-wise convolutions and two BatchNorm layers.

        >>> import attnact
        >>> from attnact.models import count_parameters
        >>> count_parameters(attnact.ATAC(64, r=2))
        4288
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _check_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    size = tuple(input_size)
    if not size or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
        raise ValueError(
            f"input_size must be a sequence of positive integers such as (C, H, W), got "
            f"{input_size!r}"
        )
    return size


def _is_atomic(module: nn.Module) -> bool:
    return type(module).__module__.startswith(_ATOMIC_PACKAGES)


def _rows(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules and attnact units/blocks (not their insides), in registration order."""
    rows: list[tuple[str, nn.Module]] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if not name:
            continue
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue
        if _is_atomic(module):
            inside.append(name)
            rows.append((name, module))
        elif not any(True for _ in module.children()):
            rows.append((name, module))
    return rows


def _flop_counts(
    model: nn.Module, input_size: tuple[int, ...], device: str | torch.device | None
) -> tuple[int, dict[str, int]]:
    """Total FLOPs and FLOPs per module path ("" for the root) of one forward of batch 1."""
    if device is None or torch.device(device).type == "meta":
        probe = copy.deepcopy(model).to("meta")
        x = torch.empty(1, *input_size, device="meta")
    else:
        probe = model
        x = torch.zeros(1, *input_size, device=device)
    was_training = probe.training
    probe.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            probe(x)
    finally:
        probe.train(was_training)
    root = type(probe).__name__
    per_path: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        path = "" if key == root else key[len(root) + 1 :] if key.startswith(root + ".") else key
        per_path[path] = int(sum(ops.values()))
    return int(counter.get_total_flops()), per_path


@overload
def count_macs(
    model: nn.Module,
    input_size: Sequence[int],
    *,
    per_layer: Literal[False] = ...,
    device: str | torch.device | None = ...,
) -> int: ...


@overload
def count_macs(
    model: nn.Module,
    input_size: Sequence[int],
    *,
    per_layer: Literal[True],
    device: str | torch.device | None = ...,
) -> tuple[int, list[LayerProfile]]: ...


def count_macs(
    model: nn.Module,
    input_size: Sequence[int],
    *,
    per_layer: bool = False,
    device: str | torch.device | None = None,
) -> int | tuple[int, list[LayerProfile]]:
    """Multiply-accumulates of one forward pass of one input of shape ``input_size`` (C, H, W).

    MACs = FLOPs / 2 as counted by ``FlopCounterMode`` (convolutions and matrix products only;
    see the module docstring).

    Args:
        model: any module; it is not modified (the count runs on a meta-device copy).
        input_size: shape of one input without the batch dimension, e.g. (3, 32, 32).
        per_layer: also return one :class:`LayerProfile` per leaf module / attnact unit or block.
        device: None or ``"meta"`` (default): count on a meta copy. Any other device runs a real
            forward of the model itself there — for units without meta kernels.

    Returns:
        The total, or ``(total, rows)`` with ``per_layer=True``; the rows' params and MACs sum to
        the model's totals (an ``"(other)"`` row holds MACs outside any reported module).

    Examples:
        ATAC's two point-wise convolutions on a 64-channel 8 × 8 map: 2 · 64 · 32 · 64 MACs.

        >>> import attnact
        >>> from attnact.models import count_macs
        >>> count_macs(attnact.ATAC(64, r=2), (64, 8, 8)) == 2 * 64 * 32 * 8 * 8
        True
    """
    size = _check_input_size(input_size)
    total_flops, per_path = _flop_counts(model, size, device)
    total = total_flops // 2
    if not per_layer:
        return total
    rows = [
        LayerProfile(name, type(m).__name__, count_parameters(m), per_path.get(name, 0) // 2)
        for name, m in _rows(model)
    ]
    rest = total - sum(r.macs for r in rows)
    if rest:
        rows.append(LayerProfile("(other)", "", 0, rest))
    return total, rows


def _si(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:g}"


def profile_table_markdown(
    rows: Sequence[LayerProfile], *, skip_empty: bool = False
) -> str:
    """A markdown table of per-layer rows: module, type, params, MACs, share of all MACs.

    ``skip_empty`` leaves out rows with neither parameters nor MACs (pools, fixed activations).
    The last line is the total.
    """
    total_params = sum(r.params for r in rows)
    total_macs = sum(r.macs for r in rows)
    lines = [
        "| module | type | params | MACs | % MACs |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        if skip_empty and not r.params and not r.macs:
            continue
        share = 100.0 * r.macs / total_macs if total_macs else 0.0
        lines.append(f"| `{r.path}` | {r.type} | {r.params:,} | {r.macs:,} | {share:.1f} |")
    lines.append(f"| **total** | | **{total_params:,}** | **{total_macs:,}** | 100.0 |")
    return "\n".join(lines)


def _parse_input_size(
    input_size: Sequence[int] | str | None, default: tuple[int, ...]
) -> tuple[int, ...]:
    if input_size is None:
        return default
    if isinstance(input_size, str):
        try:
            input_size = tuple(int(v) for v in input_size.replace("x", ",").split(","))
        except ValueError:
            raise ValueError(
                f"input_size must look like C,H,W (e.g. 3,32,32), got {input_size!r}"
            ) from None
    size = _check_input_size(input_size)
    if len(size) != 3:
        raise ValueError(f"input_size must be (C, H, W), got {input_size!r}")
    return size


def info_report(
    model_name: str,
    act: Any = "relu",
    input_size: Sequence[int] | str | None = None,
    num_classes: int | None = None,
    **model_kwargs: Any,
) -> str:
    """Markdown report for ``attnact info``: totals, cost over the ReLU model, activation sites,
    and the per-layer table.

    Args:
        model_name: a registered model (:func:`attnact.models.list_models`).
        act: the activation under study.
        input_size: (C, H, W) or ``"C,H,W"``; None is the model's default. The channel count
            also sets the model's ``in_channels``, and a square non-default size its
            ``image_size`` where it has one, unless ``model_kwargs`` gives them.
        num_classes: None is the model's default.
        **model_kwargs: further builder arguments (``blocks=5``, ``variant="se"`` …).
    """
    spec = model_spec(model_name)
    size = _parse_input_size(input_size, spec.input_size)
    # fitted to the input the way every command fits a model to its data
    model_kwargs = fit_to_input(spec, size, model_kwargs)
    model = create_model(spec.name, act=act, num_classes=num_classes, **model_kwargs)
    params = count_parameters(model)
    macs, rows = count_macs(model, size, per_layer=True)
    shape = "×".join(map(str, size))
    extra = "".join(f", {k}={v!r}" for k, v in model_kwargs.items())
    lines = [
        f"# {spec.name}, act={act!r}",
        "",
        f"{spec.description}",
        "",
        f"- arguments: act={act!r}, num_classes={num_classes or spec.num_classes}{extra}",
        f"- input: {shape} (batch 1)",
        f"- parameters: {params:,} ({_si(params)})",
        f"- MACs: {macs:,} ({_si(macs)}; FLOPs/2 of convolutions and matrix products)",
    ]
    if act != "relu":
        base = create_model(spec.name, act="relu", num_classes=num_classes, **model_kwargs)
        base_params, base_macs = count_parameters(base), count_macs(base, size)
        lines.append(
            f"- versus act='relu': {params - base_params:+,} parameters "
            f"(×{params / base_params:.3f}), {macs - base_macs:+,} MACs (×{macs / base_macs:.3f})"
        )
    sites = getattr(model, "act_sites", ())
    if sites:
        counts: dict[str, int] = {}
        for s in sites:
            counts[s.unit] = counts.get(s.unit, 0) + 1
        summary = ", ".join(f"{unit} × {n}" for unit, n in counts.items())
        lines.append(f"- activation sites: {len(sites)} ({summary})")
    lines += ["", "## Per layer", "", profile_table_markdown(rows)]
    return "\n".join(lines) + "\n"
