"""convert_activations finds each site's channel axis (issue #12): token sequences, channels-last
maps, explicit channel_dim, clear refusals; match by name; warnings and errors."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnact
from attnact import convert_activations


class TokenMlp(nn.Module):
    """A transformer feed-forward block: (N, L, C) -> Linear -> GELU -> Linear."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's block: depthwise conv on NCHW, then channels-last LayerNorm/Linear/GELU."""

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, 4 * dim)
        self.pw2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).permute(0, 2, 3, 1)
        h = self.pw2(F.gelu(self.pw1(self.norm(h))))
        return x + h.permute(0, 3, 1, 2)


def _eval_mixing(model: nn.Module, x: torch.Tensor, index: tuple) -> bool:
    model.eval()
    x2 = x.clone()
    x2[index] += 1.0
    with torch.no_grad():
        d = (model(x2) - model(x)).abs()
    d[index[0], index[1]] = 0  # the changed token itself may change
    return bool(d.max() > 0)


@pytest.mark.parametrize("example", [True, False])
def test_tokens_convert_to_atac_over_the_channel_axis(example: bool) -> None:
    model = TokenMlp()
    x = torch.randn(2, 5, 8)
    out = convert_activations(model, "atac", match="gelu",
                              example_input=x if example else None)
    (site,) = out.conversion_report.replaced
    assert site.channel_dim == -1 and site.channels == 16
    assert "Linear fc1" in site.axis_source
    assert "| -1 (Linear fc1) |" in out.conversion_report.to_markdown()
    assert out.act.channel_dim == -1 and out.act.channels == 16
    for length in (5, 11, 1):
        y = out(torch.randn(2, length, 8))
        assert y.shape == (2, length, 8)
    # no token mixing (the bug: dim 1 = sequence length)
    assert not _eval_mixing(out, torch.randn(2, 5, 8), (slice(None), 1))


def test_channels_last_block_converts_and_runs_at_other_sizes() -> None:
    model = ConvNeXtBlock()
    out = convert_activations(model, "atac", match=(F.gelu,),
                              example_input=torch.randn(2, 6, 8, 8))
    (site,) = out.conversion_report.replaced
    assert (site.channel_dim, site.channels) == (-1, 24)
    for hw in ((8, 8), (5, 7)):
        assert out(torch.randn(2, 6, *hw)).shape == (2, 6, *hw)
    out.train()
    loss = out(torch.randn(2, 6, 5, 5)).square().mean()
    loss.backward()
    unit = out.get_submodule(site.site)
    assert all(p.grad is not None for p in unit.parameters())


def test_cnn_sites_keep_axis_one() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 5), nn.ReLU())
    out = convert_activations(model, "atac", example_input=torch.randn(2, 3, 6, 6))
    axes = [(s.channel_dim, s.channels, s.axis_source.split()[0])
            for s in out.conversion_report.replaced]
    assert axes == [(1, 4, "BatchNorm2d"), (-1, 5, "Linear")]


class Ambiguous(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(torch.cat([x, x], dim=2))


def test_unknown_axis_is_refused_and_channel_dim_decides() -> None:
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"cannot be told.*\(2, 3, 8\).*channel_dim=1.*-1"):
        convert_activations(Ambiguous(), "atac", example_input=x)
    last = convert_activations(Ambiguous(), "atac", example_input=x, channel_dim=-1)
    (site,) = last.conversion_report.replaced
    assert (site.channel_dim, site.channels, site.axis_source) == (-1, 8, "channel_dim argument")
    first = convert_activations(Ambiguous(), "atac", example_input=x, channel_dim=1)
    assert first.conversion_report.replaced[0].channels == 3
    # element-wise units do not need the axis
    ok = convert_activations(Ambiguous(), "arelu", example_input=x)
    assert ok.conversion_report.replaced[0].channel_dim is None
    with pytest.raises(ValueError, match="channel_dim must be None, 1 or -1"):
        convert_activations(Ambiguous(), "atac", channel_dim=2)


class AttentionOut(nn.Module):
    """An activation on an attention output (no layer produces it), read by a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.act, self.proj = nn.Hardswish(), nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(x @ x.transpose(1, 2), dim=-1) @ x
        return self.proj(self.act(a))


class AttentionOutHooks(AttentionOut):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 1e9:  # data-dependent control flow: fx cannot trace, hooks are used
            return x
        return super().forward(x)


@pytest.mark.parametrize("cls", [AttentionOut, AttentionOutHooks])
def test_axis_from_the_consuming_layer(cls) -> None:
    out = convert_activations(cls(), "atac", match="hard_swish",
                              example_input=torch.randn(2, 5, 6))
    (site,) = out.conversion_report.replaced
    assert (site.channel_dim, site.channels) == (-1, 6)
    assert site.axis_source.startswith("read by Linear")
    assert out.conversion_report.method == "module"
    assert out(torch.randn(2, 9, 6)).shape == (2, 9, 6)


def test_match_by_registered_name() -> None:
    out = convert_activations(TokenMlp(), "arelu", match=("gelu",))
    assert isinstance(out.act, attnact.AReLU)
    out = convert_activations(ConvNeXtBlock(), "arelu", match="gelu")  # F.gelu calls too
    assert len(out.conversion_report.replaced) == 1


def test_nothing_matched_warns_with_the_types_seen() -> None:
    with pytest.warns(UserWarning, match=r"matched no activation.*GELU \(module\) x1"):
        out = convert_activations(TokenMlp(), "atac")
    assert out.conversion_report.replaced == []
    with pytest.warns(UserWarning, match=r"F.gelu \(call\) x1"):
        convert_activations(ConvNeXtBlock(), "arelu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert_activations(TokenMlp(), "arelu", match="gelu")


def test_torchscript_module_is_refused() -> None:
    scripted = torch.jit.script(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    with pytest.raises(TypeError, match=r"TorchScript module.*eager model first"):
        convert_activations(scripted, "arelu")


def test_models_with_lazy_units_convert() -> None:
    # a model built with act_layer=attnact.ATAC (no widths yet), its ReLUs converted to AReLU
    model = nn.Sequential(nn.Conv2d(3, 4, 3), attnact.ATAC(), nn.Conv2d(4, 4, 1), nn.ReLU())
    x = torch.randn(2, 3, 8, 8)
    out = convert_activations(model, "arelu", example_input=x)
    assert any("lazy modules materialised" in n for n in out.conversion_report.notes)
    assert out[1].channels == 4 and model[1].channels is None  # the copy, not the original
    assert isinstance(out[3], attnact.AReLU) and out(x).shape == (2, 4, 6, 6)
    with pytest.warns(UserWarning, match="fx could not trace"):
        unchecked = convert_activations(model, "arelu")
    assert any("not materialised yet" in n for n in unchecked.conversion_report.notes)
