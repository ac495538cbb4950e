"""The file of a converted model (``attnact weights import-open-atac --out model.pt``).

A ``torch.save``d dict of tensors, containers and Python scalars only, so that it loads with
``torch.load(weights_only=True)``: the registry name and builder arguments rebuild the network,
the state dict fills it, and the evaluation preprocessing and provenance travel with it.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnact.fileio import atomic_write_bytes
from attnact.weights.preprocess import EvalPreprocessing

__all__ = ["FORMAT", "load_converted", "save_converted"]

FORMAT = "attnact-converted-model/1"


def save_converted(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write a model from :func:`~attnact.weights.load_open_atac` (atomically)."""
    arch = getattr(model, "open_atac", None)
    if arch is None:
        raise ValueError("save_converted needs a model from load_open_atac (model.open_atac)")
    pre = getattr(model, "preprocessing", None)
    state: dict[str, Any] = {
        "format": FORMAT,
        "model": arch.model,
        "kwargs": dict(arch.kwargs),
        "gluon": arch.gluon,
        "source": getattr(model, "open_atac_source", ""),
        "preprocessing": dataclasses.asdict(pre) if pre is not None else None,
        "state_dict": model.state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_converted(path: str | os.PathLike[str]) -> nn.Module:
    """The model :func:`save_converted` wrote, in eval mode, with ``model.preprocessing``.

    Raises:
        ValueError: the file is not such a model file.
    """
    from attnact.models import create_model

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a foreign file
        raise ValueError(f"{path}: not a converted attnact model file ({err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a converted attnact model file (format {FORMAT!r})")
    model = create_model(state["model"], **state["kwargs"])
    model.load_state_dict(state["state_dict"])
    if state["preprocessing"] is not None:
        pre = dict(state["preprocessing"])
        pre["mean"], pre["std"] = tuple(pre["mean"]), tuple(pre["std"])
        # any attribute may be set on a module (torch types __setattr__ for tensors and modules)
        model.preprocessing = EvalPreprocessing(**pre)  # type: ignore[assignment]
    return model.eval()
