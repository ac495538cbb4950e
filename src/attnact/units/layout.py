"""Where the channels are: the layouts the channel-aware units (ATAC, SEActivation, xUnit) take,
and their lazy channel count.

A unit is built for one ``channel_dim``:

* ``channel_dim=1`` (channels first): (N, C) features, (N, C, L) sequences, (N, C, H, W) maps
  (any memory format: a channels_last NCHW tensor is still logically N×C×H×W);
* ``channel_dim=-1`` (channels last): (N, C) features, (N, L, C) token sequences as transformers
  pass them, (N, H, W, C) maps as ConvNeXt/Swin blocks pass them.

Every layout is computed as a 4-D N×C×H×W view, which the units' convolutions and BatchNorm
take: (N, C) as N×C×1×1, a sequence of length L as a 1×L map N×C×1×L, a channels-last tensor
permuted (for a contiguous (N, L, C) or (N, H, W, C) tensor the permuted view is
channels_last-contiguous, and the convolutions keep that format, so nothing is copied; an L×1
view would be ambiguous to the convolution, which then writes NCHW and the kernels copy). So on
tokens a 1×1 convolution is the same linear map over C applied to every token, and BatchNorm
normalises each channel over N·L values, as over N·H·W on maps.

Without a channel count (``ATAC()``, ``xUnit()``) a unit is a PyTorch lazy module
(:class:`torch.nn.modules.lazy.LazyModuleMixin`): its parameters are
``UninitializedParameter`` objects until the first forward reads C off ``channel_dim``; ``.to()``
before that works as for ``nn.LazyConv2d``. Run one forward before building the optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter, is_lazy

__all__ = ["CHANNEL_DIMS", "LazyChannels", "as_nchw", "check_channel_dim"]

CHANNEL_DIMS = (1, -1)

# LazyChannels is only ever mixed into an nn.Module (``class ATAC(LazyChannels, nn.Module)``);
# the type checker is told so, and sees the Module methods the mixin calls on ``self``.
if TYPE_CHECKING:
    _ModuleBase = nn.Module
else:
    _ModuleBase = object


def check_channel_dim(channel_dim: object) -> int:
    if isinstance(channel_dim, bool) or channel_dim not in CHANNEL_DIMS:
        raise ValueError(
            f"channel_dim must be 1 (channels first: (N, C), (N, C, L), (N, C, H, W)) or -1 "
            f"(channels last: (N, C), (N, L, C), (N, H, W, C)), got {channel_dim!r}"
        )
    return int(channel_dim)


def as_nchw(
    x: torch.Tensor, channel_dim: int, unit: str, max_rank: int = 4
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """``x`` as an N×C×H×W view (module docstring) and the function that maps an output of that
    view's shape back to ``x``'s layout."""
    rank = x.dim()
    if rank < 2 or rank > max_rank:
        raise ValueError(
            f"{unit} takes inputs of rank 2 to {max_rank} (channel_dim={channel_dim}), got shape "
            f"{tuple(x.shape)}"
        )
    if rank == 4 and channel_dim == 1:
        return x, _same
    if channel_dim == 1 or rank == 2:
        shape = x.shape
        x4 = x.reshape(shape[0], shape[1], 1, -1)
        return x4, lambda y: y.reshape(shape)
    if rank == 3:  # (N, L, C) -> (N, C, 1, L)
        return x.permute(0, 2, 1).unsqueeze(2), lambda y: y.squeeze(2).permute(0, 2, 1)
    # (N, H, W, C) -> (N, C, H, W)
    return x.permute(0, 3, 1, 2), lambda y: y.permute(0, 2, 3, 1)


def _same(y: torch.Tensor) -> torch.Tensor:
    return y


def channel_count(x: Any, channel_dim: int, unit: str) -> int:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{unit} was built without a channel count and infers it from its first input, "
            f"which must be a tensor (got {type(x).__name__}); build it with channels=C to "
            f"trace it symbolically"
        )
    if x.dim() < 2:
        raise ValueError(f"{unit} needs an input of rank >= 2, got shape {tuple(x.shape)}")
    return int(x.shape[channel_dim])


class LazyChannels(LazyModuleMixin, _ModuleBase):
    """The lazy-channel behaviour shared by ATAC and xUnit.

    A subclass implements ``_build(channels)``, which creates its submodules for C channels, and
    calls :meth:`_init_channels` at the end of ``__init__``. With a count the unit is built at
    once and the mixin's hooks are dropped (a plain module from the start); without, the
    submodules are built for a placeholder C as placeholders whose parameters are replaced by
    ``UninitializedParameter`` objects, and rebuilt for the real C at the first forward
    (:meth:`initialize_parameters`) or when a state_dict is loaded. (The placeholders' buffers,
    BatchNorm's running statistics, stay ordinary tensors: ``copy.deepcopy`` of an
    ``UninitializedBuffer`` fails in torch, e.g. for ``nn.LazyBatchNorm2d``.)
    """

    channels: int | None
    channel_dim: int

    def _build(self, channels: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _state_channels(self, state_dict: dict[str, Any], prefix: str) -> int | None:
        """C read off a state_dict being loaded (None if it holds no tensor of this unit)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _init_channels(self, channels: int | None, placeholder: int = 1) -> None:
        if channels is not None:
            self._build(channels)
            self._drop_lazy_hooks()
            return
        self._build(placeholder)
        self.channels = None
        for m in self.modules():
            for name, p in list(m._parameters.items()):
                if p is not None:
                    setattr(m, name, UninitializedParameter(requires_grad=p.requires_grad))
        self.register_load_state_dict_pre_hook(_materialize_from_state)

    def _drop_lazy_hooks(self) -> None:
        for name in ("_initialize_hook", "_load_hook"):
            handle = getattr(self, name, None)
            if handle is not None:
                handle.remove()
                delattr(self, name)

    def has_uninitialized_params(self) -> bool:
        """Any uninitialized tensor in the unit or its submodules."""
        return any(is_lazy(t) for t in (*self.parameters(), *self.buffers()))

    def _materialize(self, channels: int) -> None:
        placeholder = next(iter(self.parameters()), None)
        place: dict[str, Any] = {} if placeholder is None else {
            "device": placeholder.device, "dtype": placeholder.dtype}
        training = self.training
        self._build(channels)
        self.to(**place)
        self.train(training)

    def initialize_parameters(self, x: Any, *args: Any, **kwargs: Any) -> None:
        """Build the submodules for the channel count of ``x`` (called by the lazy-module
        forward pre-hook, once)."""
        if self.has_uninitialized_params():
            self._materialize(channel_count(x, self.channel_dim, type(self).__name__))

    def _replicate_for_data_parallel(self) -> Any:
        if self.has_uninitialized_params():
            return super()._replicate_for_data_parallel()
        return nn.Module._replicate_for_data_parallel(self)


def _materialize_from_state(module: nn.Module, state_dict: dict[str, Any], prefix: str,
                            *_args: Any) -> None:
    """Load-state-dict pre-hook: a lazy unit takes the channel count of the state it loads."""
    assert isinstance(module, LazyChannels)
    if module.has_uninitialized_params():
        channels = module._state_channels(state_dict, prefix)
        if channels is not None:
            module._materialize(channels)
