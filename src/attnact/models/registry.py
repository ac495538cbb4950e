"""Model registry: host network names → builders, with each model's default input and classes.

Builders register with :func:`register_model`; :func:`create_model` builds one by name, checking
keyword arguments against the builder's signature so that a misspelt argument is an error that
names it, not a silently ignored default.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from attnact._checks import check_int

__all__ = [
    "ModelSpec",
    "create_model",
    "fit_to_input",
    "list_models",
    "model_spec",
    "register_model",
]


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one host network.

    Attributes:
        name: registered name (``"resnet_cifar"``).
        builder: keyword-only function returning a fresh ``nn.Module``.
        description: one line: what it is and which paper/table defines it.
        input_size: default input as (C, H, W).
        num_classes: default number of classes.
    """

    name: str
    builder: Callable[..., nn.Module]
    description: str
    input_size: tuple[int, int, int]
    num_classes: int

    @property
    def arguments(self) -> tuple[str, ...]:
        """Keyword arguments the builder accepts."""
        return tuple(inspect.signature(self.builder).parameters)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    description: str,
    input_size: tuple[int, int, int],
    num_classes: int,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a builder under ``name``.

    The builder must take keyword-only arguments including ``act`` and ``num_classes``.
    """
    key = name.lower()
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (C, H, W), got {input_size!r}")
    for i, v in enumerate(input_size):
        check_int(f"input_size[{i}]", v)
    check_int("num_classes", num_classes)

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if key in _REGISTRY:
            raise ValueError(f"model name {key!r} is registered twice")
        params = inspect.signature(builder).parameters
        for required in ("act", "num_classes"):
            if required not in params:
                raise ValueError(f"builder for {key!r} must accept {required}=")
        positional = [p for p in params.values() if p.kind is not p.KEYWORD_ONLY]
        if positional:
            raise ValueError(
                f"builder for {key!r} must take keyword-only arguments, got positional "
                f"{', '.join(p.name for p in positional)}"
            )
        _REGISTRY[key] = ModelSpec(
            key, builder, description, tuple(input_size), num_classes  # type: ignore[arg-type]
        )
        return builder

    return decorate


def list_models() -> list[str]:
    """Registered model names, sorted.

    Examples:
        >>> import attnact
        >>> attnact.list_models()  # doctest: +NORMALIZE_WHITESPACE
        ['mnist_conv', 'mobilenet_v2', 'resnet18', 'resnet50_v1b', 'resnet_cifar',
         'se_resnet18', 'shufflenet_v2', 'vgg16']
    """
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name`` (case-insensitive, ``-`` = ``_``).

    Examples:
        >>> import attnact
        >>> spec = attnact.model_spec("MNIST-conv")
        >>> spec.name, spec.input_size, spec.num_classes
        ('mnist_conv', (1, 28, 28), 10)
    """
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {name!r}")
    key = name.lower().replace("-", "_")
    try:
        return _REGISTRY[key]
    except KeyError:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}{hint} (registered: {', '.join(list_models())})"
        ) from None


def create_model(
    name: str,
    act: Any = "relu",
    num_classes: int | None = None,
    *,
    input_size: Sequence[int] | None = None,
    pretrained: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a fresh host network by registered name.

    Args:
        name: a name from :func:`list_models`.
        act: the activation under study (registered name, ``nn.Module`` class or factory).
        num_classes: output classes; None means the model's default (``model_spec(name)``).
        input_size: the (C, H, W) of the data the model will see; None is the model's default.
            It sets the builder's ``in_channels`` and ``image_size`` (the longer side) where the
            builder has them and ``kwargs`` does not give them (:func:`fit_to_input`).
        pretrained: a name from :func:`attnact.weights.list_pretrained`: the trained network,
            downloaded (verified, cached) and converted, in eval mode.
        **kwargs: the builder's other keyword arguments (see its docstring).

    Raises:
        ValueError: unknown name, an argument the builder does not take, or a bad value.

    Examples:
        MNIST-Conv (AReLU paper, Sec. 4.1) with ATAC at its three activation sites:

        >>> import torch, attnact
        >>> model = attnact.create_model("mnist_conv", act="atac")
        >>> model(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
        >>> [site.unit for site in model.act_sites]
        ['atac', 'atac', 'atac']
    """
    spec = model_spec(name)
    if input_size is not None:
        kwargs = fit_to_input(spec, input_size, kwargs)
    allowed = [a for a in spec.arguments if a not in ("act", "num_classes")]
    for key in kwargs:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{spec.name} has no argument {key!r}{hint}; its arguments are act, num_classes, "
                f"{', '.join(allowed)}"
            )
    if pretrained is not None:
        from attnact.weights.pretrained import check_request, load_pretrained, pretrained_info

        check_request(pretrained_info(pretrained), spec.name, act, num_classes, kwargs)
        return load_pretrained(pretrained)
    if num_classes is None:
        num_classes = spec.num_classes
    return spec.builder(act=act, num_classes=num_classes, **kwargs)


def fit_to_input(
    spec: ModelSpec, input_size: Sequence[int], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """``kwargs`` with the builder arguments that fit the model to (C, H, W) inputs.

    The one rule every command uses: ``in_channels = C`` (MNIST-Conv on 3-channel SVHN, a CIFAR
    network on grey images) and ``image_size = max(H, W)`` (the side the GE gather of
    ``resnet_cifar`` is designed for), each only where the builder takes it and ``kwargs``
    does not set it.
    """
    if isinstance(input_size, (str, bytes)) or not isinstance(input_size, Sequence):
        raise ValueError(f"input_size must be a sequence (C, H, W), got {input_size!r}")
    size = tuple(input_size)
    if len(size) != 3:
        raise ValueError(f"input_size must be (C, H, W), got {input_size!r}")
    for i, v in enumerate(size):
        check_int(f"input_size[{i}]", v)
    fitted = dict(kwargs)
    derived = {"in_channels": size[0], "image_size": max(size[1], size[2])}
    for key, value in derived.items():
        if key in spec.arguments and key not in fitted:
            fitted[key] = value
    return fitted
