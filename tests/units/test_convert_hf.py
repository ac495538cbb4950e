"""convert_activations on real third-party models: Hugging Face ``transformers`` architectures
built from small configs with random weights (no download), convolutional and transformer.

For each architecture and each of ``atac``, ``arelu``, ``elsa_gelu``: the replaced sites equal
an independent count of activation calls (forward hooks on the original model), forward and
backward run at two input sizes, every new unit receives gradients, the state_dict round-trips,
and no ATAC unit mixes tokens or pixels (eval mode: perturbing one position of a unit's input
changes that position only)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")
from transformers.activations import ACT2CLS  # noqa: E402

import attnact  # noqa: E402
from attnact import convert_activations  # noqa: E402

# every activation class a transformers config can name, and torch's own
ACT_CLASSES = {v[0] if isinstance(v, tuple) else v for v in ACT2CLS.values()}
ACT_CLASSES |= {nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh}

T = transformers


def _images(size: int, batch: int = 2) -> tuple[torch.Tensor, ...]:
    return (torch.randn(batch, 3, size, size),)


def _tokens(length: int, batch: int = 2) -> tuple[torch.Tensor, ...]:
    return (torch.randint(0, 50, (batch, length)),)


# name: (builder, inputs(size), two sizes, axis of rank-4 sites, forward kwargs at the 2nd size)
ARCHS: dict[str, tuple[Callable[[], nn.Module], Callable[..., tuple], tuple[int, int], int,
                       dict[str, Any]]] = {
    "resnet": (lambda: T.ResNetModel(T.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="bottleneck")),
        _images, (32, 48), 1, {}),
    "regnet": (lambda: T.RegNetModel(T.RegNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8)),
        _images, (32, 48), 1, {}),
    "mobilenet_v2": (lambda: T.MobileNetV2Model(T.MobileNetV2Config(
        depth_multiplier=0.25, image_size=32)), _images, (32, 48), 1, {}),
    "convnext": (lambda: T.ConvNextModel(T.ConvNextConfig(
        hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)), _images, (32, 48), -1, {}),
    "swin": (lambda: T.SwinModel(T.SwinConfig(
        image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
        window_size=2)), _images, (32, 48), -1, {}),
    "vit": (lambda: T.ViTModel(T.ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=24)),
        _images, (32, 48), -1, {"interpolate_pos_encoding": True}),
    "bert": (lambda: T.BertModel(T.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=24, max_position_embeddings=64)), _tokens, (8, 13), -1, {}),
    "dinov2": (lambda: T.Dinov2Model(T.Dinov2Config(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, mlp_ratio=2)), _images, (32, 48), -1, {}),
    # LeViT's attention biases are tied to its resolution: the second "size" is a larger batch
    "levit": (lambda: T.LevitModel(T.LevitConfig(
        image_size=32, hidden_sizes=[16, 24, 32], num_attention_heads=[1, 2, 2],
        depths=[1, 1, 1], key_dim=[8, 8, 8], patch_size=16)),
        lambda s: _images(32, batch=s), (2, 3), 1, {}),
}
TARGETS = {"atac": attnact.ATAC, "arelu": attnact.AReLU, "elsa_gelu": attnact.ELSA}


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return ARCHS[name][0]().eval()


def _output(out: Any) -> torch.Tensor:
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def _loss(out: Any) -> torch.Tensor:
    """Every output tensor counts (the pooler's tanh site feeds pooler_output only)."""
    tensors = [t for t in out.values() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return sum(t.square().mean() for t in tensors)


def _activation_calls(model: nn.Module, args: tuple) -> list[tuple[str, tuple[int, ...]]]:
    """Independent count: every call of an activation module, with its input shape."""
    calls: list[tuple[str, tuple[int, ...]]] = []
    handles = [
        m.register_forward_hook(lambda _m, i, _o, p=p: calls.append((p, tuple(i[0].shape))))
        for p, m in model.named_modules() if type(m) in ACT_CLASSES
    ]
    with torch.no_grad():
        model(*args)
    for h in handles:
        h.remove()
    return calls


def _convert(model: nn.Module, to: str, args: tuple) -> nn.Module:
    classes = tuple({type(m) for m in model.modules() if type(m) in ACT_CLASSES})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fx cannot trace HF models: noted
        return convert_activations(model, to, match=classes, example_input=args)


@pytest.fixture(autouse=True)
def _eager_kernels():
    with attnact.fused_mode(False):
        yield


@pytest.mark.parametrize("to", list(TARGETS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_convert_real_model(arch: str, to: str) -> None:
    _, inputs, (s1, s2), map_axis, kwargs2 = ARCHS[arch]
    model = _build(arch)
    torch.manual_seed(1)
    x1 = inputs(s1)
    calls = _activation_calls(model, x1)
    out = _convert(model, to, x1)
    report = out.conversion_report

    # the replaced sites are exactly the activation calls, one unit each, in the same places
    assert len(report.replaced) == len(calls) > 0
    assert sorted(s.site for s in report.replaced) == sorted(p for p, _ in calls)
    shapes = dict(calls)
    units = {s.site: out.get_submodule(s.site) for s in report.replaced}
    assert all(isinstance(u, TARGETS[to]) for u in units.values())
    if to == "atac":
        for site, unit in units.items():
            shape = shapes[site]
            want_axis = {2: 1, 3: -1, 4: map_axis}[len(shape)]
            # tokens (N, L, C) and ConvNeXt's (N, H, W, C) maps over C, never L or H
            assert unit.channel_dim in ((1, -1) if len(shape) == 2 else (want_axis,)), site
            assert unit.channels == shape[unit.channel_dim], site

    # forward and backward at two input sizes; every new unit gets gradients
    out.train()
    for size, kw in ((s1, {}), (s2, kwargs2)):
        out.zero_grad()
        _loss(out(*inputs(size), **kw)).backward()
        for site, unit in units.items():
            grads = [p.grad for p in unit.parameters()]
            assert grads and all(g is not None for g in grads), site
            assert any(g.abs().sum() > 0 for g in grads), site

    # state_dict round trip into a fresh conversion of the same architecture
    out.eval()
    again = _convert(_build(arch), to, x1)
    again.load_state_dict(out.state_dict())
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(_output(again(*x1)), _output(out(*x1)), rtol=0, atol=0)

    if to == "atac":
        _check_no_mixing(out, x1, units)


def _check_no_mixing(model: nn.Module, args: tuple, units: dict[str, nn.Module]) -> None:
    seen: dict[str, torch.Tensor] = {}
    handles = [u.register_forward_hook(lambda _m, i, _o, s=s: seen.setdefault(s, i[0].detach()))
               for s, u in units.items()]
    with torch.no_grad():
        model(*args)
    for h in handles:
        h.remove()
    for site, x in seen.items():
        unit = units[site]
        if x.dim() == 2:  # (N, C): one position per sample, nothing to mix
            continue
        # the first non-batch, non-channel position of sample 0
        index = [0] * x.dim()
        x2 = x.clone()
        x2[tuple(index[:-1]) if unit.channel_dim == -1 else (0, slice(None), *index[2:])] += 1.0
        with torch.no_grad():
            d = (unit(x2) - unit(x)).abs()
        if unit.channel_dim == -1:
            d[tuple(index[:-1])] = 0
        else:
            d[(0, slice(None), *index[2:])] = 0
        assert d.max() == 0, f"{site} mixes positions"
