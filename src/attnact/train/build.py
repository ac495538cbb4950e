"""From a training config and its dataset to the model that trains on it.

Every command that builds a model for a config goes through :func:`build_model`: ``train`` (the
engine), ``compare`` (its runs and its step-time and MAC columns), ``reproduce``, MAML, transfer
learning and the reports. So a model is fitted to its data in one place: input channels and
input side (after any ``pad_to`` the recipe asks for) by
:func:`attnact.models.registry.fit_to_input`, classes from the dataset.

:func:`check_model_takes_data` pushes a batch through a model and turns a shape failure deep
inside it into an error that names the model, the dataset and the override that would fix it;
:func:`preflight` does that with one batch of the real data for every distinct model of a grid,
before the first run trains, so a mismatch fails in seconds rather than after hours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attnact.train.config import TrainConfig, check_plain_training

__all__ = [
    "DataShape",
    "ModelCost",
    "ModelDataMismatchError",
    "build_model",
    "check_model_takes_data",
    "data_shape",
    "model_cost",
    "preflight",
]


class ModelDataMismatchError(ValueError):
    """A model cannot take a dataset's batches (channels, input size, classes)."""


@dataclass(frozen=True)
class DataShape:
    """What a model must accept from a dataset.

    Attributes:
        dataset: the catalog name.
        input_size: one sample as the model sees it, (C, H, W) after any ``pad_to``.
        num_classes: the labels' range.
    """

    dataset: str
    input_size: tuple[int, int, int]
    num_classes: int


def data_shape(config: TrainConfig, info: Any = None) -> DataShape:
    """The :class:`DataShape` of ``config``'s dataset, from its catalog entry (no data is read).

    Args:
        config: gives ``dataset`` and ``pad_to``.
        info: the dataset's description if it is already at hand (the loaders return one;
            tests pass stand-ins with ``name``, ``channels``, ``image_size``, ``num_classes``).
    """
    if info is None:
        from attnact.data import dataset_info  # lazy: the data stack is not needed to build

        info = dataset_info(config.dataset)
    if config.pad_to is not None and config.pad_to < max(info.image_size):
        raise ValueError(
            f"TrainConfig.pad_to={config.pad_to} is smaller than the images of "
            f"{getattr(info, 'name', config.dataset)} ({'x'.join(map(str, info.image_size))}); "
            f"use None or >= {max(info.image_size)}"
        )
    height, width = (config.pad_to, config.pad_to) if config.pad_to else info.image_size
    name = getattr(info, "name", config.dataset)
    return DataShape(name, (int(info.channels), int(height), int(width)), int(info.num_classes))


def build_model(
    config: TrainConfig,
    shape: DataShape | None = None,
    *,
    act: Any = None,
    num_classes: int | None = None,
) -> nn.Module:
    """A freshly initialised ``config.model`` fitted to the data it trains on.

    Args:
        config: model, activation, ``act_kwargs`` and ``model_kwargs`` (which win over anything
            derived from the data, e.g. an explicit ``model_kwargs.in_channels``).
        shape: the data (default: :func:`data_shape` of the config).
        act: the activation instead of ``config.act`` (a comparison's other units).
        num_classes: outputs instead of the dataset's classes (MAML's ways).
    """
    from attnact.models import create_model  # lazy, like the loaders

    shape = data_shape(config) if shape is None else shape
    kwargs = dict(config.model_kwargs)
    if config.act_kwargs:
        kwargs["act_kwargs"] = dict(config.act_kwargs)
    return create_model(
        config.model,
        act=config.act if act is None else act,
        num_classes=shape.num_classes if num_classes is None else num_classes,
        input_size=shape.input_size,
        **kwargs,
    )


def check_model_takes_data(
    model: nn.Module,
    config: TrainConfig,
    shape: DataShape,
    batch: torch.Tensor | None = None,
    *,
    num_classes: int | None = None,
) -> None:
    """Push ``batch`` (default: two zero samples of ``shape``) through ``model`` in eval mode.

    Eval mode and ``torch.no_grad`` change no parameter, buffer or random state, so a run that
    checks first trains exactly as one that does not.

    Raises:
        ModelDataMismatchError: the forward fails or gives other than ``(N, classes)`` logits;
            the message names the model, the dataset and what to change.
    """
    x = torch.zeros(2, *shape.input_size) if batch is None else batch
    param = next(iter(model.parameters()), None)
    if param is not None:
        x = x.to(param.device)
    classes = shape.num_classes if num_classes is None else num_classes
    from attnact.units.fused import fused_mode

    was_training = model.training
    model.eval()
    try:
        # Eager kernels: a check must not pay for compiling inference variants it never reuses.
        with torch.no_grad(), fused_mode(False):
            out = model(x)
    except (RuntimeError, ValueError) as err:
        raise ModelDataMismatchError(_mismatch_message(config, shape, str(err))) from None
    finally:
        model.train(was_training)
    expected = (x.shape[0], classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelDataMismatchError(
            _mismatch_message(config, shape, f"its output is {got}, not {expected} logits")
        )


def _mismatch_message(config: TrainConfig, shape: DataShape, reason: str) -> str:
    from attnact.models import model_spec

    c, h, w = shape.input_size
    default = model_spec(config.model).input_size
    paddable = _paddable(shape.dataset)
    hints = []
    if max(h, w) < max(default[1:]) and paddable:
        hints.append(f"pad_to={max(default[1:])} (zero-pad the images to the model's default)")
    if "in_channels" in config.model_kwargs and config.model_kwargs["in_channels"] != c:
        hints.append(f"drop model_kwargs.in_channels (the data has {c} channels)")
    if config.pad_to and paddable:
        hints.append("a different pad_to")
    hint = "; try " + " or ".join(hints) if hints else (
        f"; {config.model} takes {'×'.join(map(str, default))} by default: choose a model "
        "for this input size (attnact list models)"
    )
    first_line = reason.strip().splitlines()[0] if reason.strip() else "the forward failed"
    return (
        f"model {config.model} (act {config.act}) cannot take dataset {shape.dataset}: its "
        f"batches are {c}×{h}×{w} with {shape.num_classes} classes, and {first_line}{hint}"
    )


def _paddable(dataset: str) -> bool:
    """Whether ``pad_to`` applies to ``dataset``: it zero-pads images held in memory (the
    catalog entry has a reader), not those streamed from image folders and cropped to size."""
    from attnact.data import dataset_info

    try:
        return dataset_info(dataset).reader is not None
    except ValueError:  # not a catalog name (a stand-in): nothing says padding cannot apply
        return True


# Config fields that decide the model and the batches it sees; the others (optimiser, seed,
# epochs...) cannot make a model reject its data, so a grid is checked once per distinct value.
_MODEL_FIELDS = (
    "model", "act", "act_kwargs", "model_kwargs", "dataset", "data_dir", "augment", "pad_to",
)


def preflight(
    configs: Iterable[TrainConfig], *, log: Callable[[str], None] | None = None
) -> int:
    """Push one batch of each config's real training data through its model before training.

    Each distinct model and data (see ``_MODEL_FIELDS``) is built and checked once; the data of
    each distinct dataset is read once. Returns the number of models checked.

    Raises:
        ModelDataMismatchError: a model cannot take its data (the message names both).
        ValueError: a dataset cannot be found or read (the data layer's message).
    """
    distinct: dict[str, TrainConfig] = {}
    for config in configs:
        # the plain engine refuses them too, but only once training starts
        check_plain_training(config, "preflight")
        key = repr([getattr(config, f) for f in _MODEL_FIELDS])
        distinct.setdefault(key, config)
    batches: dict[str, tuple[torch.Tensor, Any]] = {}
    for config in distinct.values():
        data_key = repr([config.dataset, config.data_dir, config.augment, config.pad_to])
        if data_key not in batches:
            batches[data_key] = _first_batch(config)
        x, info = batches[data_key]
        shape = data_shape(config, info)
        check_model_takes_data(build_model(config, shape), config, shape, x)
    if log is not None and distinct:
        log(f"checked {len(distinct)} model(s) on one batch of their data")
    return len(distinct)


def _first_batch(config: TrainConfig, n: int = 2) -> tuple[torch.Tensor, Any]:
    """``n`` training images of ``config``'s dataset as the loader gives them, and its info."""
    from attnact.data import make_loaders

    train, _test, info = make_loaders(
        config.dataset, batch_size=n, data_dir=config.data_dir, augment=config.augment,
        pad_to=config.pad_to, limit_train=n, limit_test=n, drop_last=False, num_workers=0,
    )
    x, _y = next(iter(train))
    return x, info


@dataclass(frozen=True)
class ModelCost:
    """Parameters and MACs (one sample) of the model a config trains; ``macs`` is None when they
    could not be counted, and ``macs_error`` then says why (a report shows it, never fails)."""

    params: int
    macs: int | None
    macs_error: str | None = None


def model_cost(
    config: TrainConfig, shape: DataShape | None = None, *, act: Any = None
) -> ModelCost:
    """:class:`ModelCost` of ``build_model(config, shape, act=act)`` at the data's input size."""
    from attnact.models.profile import count_macs, count_parameters

    shape = data_shape(config) if shape is None else shape
    model = build_model(config, shape, act=act)
    try:
        return ModelCost(count_parameters(model), int(count_macs(model, shape.input_size)))
    except Exception as err:  # counting is a report nicety: say why, never fail the report
        return ModelCost(count_parameters(model), None, f"{type(err).__name__}: {err}")
