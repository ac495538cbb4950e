"""Atomic writes, checkpoints that load with weights_only=True, RNG capture/restore."""

import json
import os
import random

import numpy as np
import pytest
import torch

from attnact.train import (
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from attnact.train.checkpoint import capture_rng_state, restore_rng_state


def test_atomic_write_text_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failed_checkpoint_pickling_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(Exception):  # noqa: B017 (torch.save's error type is not stable)
        save_checkpoint(path, {"epoch": 2, "bad": lambda: None})
    assert load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_json_writes_null_for_non_finite(tmp_path):
    path = tmp_path / "s.json"
    atomic_write_json(path, {"a": float("nan"), "b": [1.5, float("inf")], "c": torch.tensor(2.0)})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5, None], "c": 2.0}


def draw():
    return (
        torch.rand(3).tolist(),
        np.random.rand(3).tolist(),
        np.random.randn(),
        [random.random() for _ in range(3)],
    )


def test_rng_state_round_trip_through_a_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leave a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    first = draw()
    draw()
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert draw() == first


def test_checkpoint_with_model_and_optimizer_loads_weights_only(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": capture_rng_state(),
        "config": {"lr": 0.1, "milestones": [1, 2], "act_kwargs": {}},
        "best": None,
    }
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    for k, v in net.state_dict().items():
        assert torch.equal(loaded["model"][k], v)
    opt2 = torch.optim.Adam(net.parameters())
    opt2.load_state_dict(loaded["optimizer"])
    assert loaded["config"] == state["config"]


def test_load_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
