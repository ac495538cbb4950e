"""Side-by-side step-time ratios: structure exactly, speed only where the gap is unmistakable."""

import pytest
import torch
from torch import nn

from attnact.perf.steptime import relative_step_times


def _mlp(width: int, depth: int) -> nn.Module:
    layers = [nn.Flatten(), nn.Linear(64, width), nn.ReLU()]
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def test_baseline_is_one_and_heavier_model_is_slower():
    torch.manual_seed(0)
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    ratios = relative_step_times(
        {"small": lambda: _mlp(16, 1), "large": lambda: _mlp(512, 6)},
        x, y, baseline="small", rounds=7, warmup=1,
    )
    assert set(ratios) == {"small", "large"}
    # ~400x the FLOPs: slower by far more than any scheduling noise
    assert ratios["large"] > 2.0


def test_models_actually_train():
    torch.manual_seed(0)
    model = _mlp(8, 0)
    before = [p.detach().clone() for p in model.parameters()]
    relative_step_times({"m": lambda: model}, torch.randn(8, 64), torch.randint(0, 10, (8,)),
                        baseline="m", rounds=1, warmup=0)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_bad_arguments():
    x, y = torch.randn(2, 64), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="baseline 'relu' is not among"):
        relative_step_times({"a": lambda: _mlp(4, 0)}, x, y, baseline="relu")
    with pytest.raises(ValueError, match="rounds"):
        relative_step_times({"a": lambda: _mlp(4, 0)}, x, y, baseline="a", rounds=0)
