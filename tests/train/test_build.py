"""From a config and its dataset to the model: the one path (attnact.train.build)."""

from __future__ import annotations

import copy

import pytest
import torch

from attnact.models import create_model, fit_to_input, model_spec
from attnact.train.build import (
    DataShape,
    ModelDataMismatchError,
    build_model,
    check_model_takes_data,
    data_shape,
    model_cost,
    preflight,
)
from attnact.train.config import TrainConfig


def test_fit_to_input_sets_only_what_the_builder_takes_and_kwargs_leave_open():
    cifar = model_spec("resnet_cifar")  # has in_channels and image_size
    assert fit_to_input(cifar, (1, 28, 28), {}) == {"in_channels": 1, "image_size": 28}
    assert fit_to_input(cifar, (1, 24, 30), {}) == {"in_channels": 1, "image_size": 30}
    assert fit_to_input(cifar, (1, 28, 28), {"in_channels": 3}) == {
        "in_channels": 3, "image_size": 28}
    mnist = model_spec("mnist_conv")  # in_channels only
    assert fit_to_input(mnist, (3, 32, 32), {"act_fraction": 0.5}) == {
        "act_fraction": 0.5, "in_channels": 3}
    with pytest.raises(ValueError, match=r"input_size must be \(C, H, W\)"):
        fit_to_input(mnist, (3, 32), {})


def test_create_model_input_size_gives_the_first_layer_the_data_channels():
    net = create_model("resnet18", num_classes=10, input_size=(1, 28, 28), width=0.125)
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 1
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_data_shape_from_the_catalog_and_pad_to():
    assert data_shape(TrainConfig(dataset="fashion_mnist")) == DataShape(
        "fashion_mnist", (1, 28, 28), 10)
    assert data_shape(TrainConfig(dataset="fashion_mnist", pad_to=32)).input_size == (1, 32, 32)
    assert data_shape(TrainConfig(dataset="cifar100")) == DataShape("cifar100", (3, 32, 32), 100)
    assert data_shape(TrainConfig(dataset="imagenet")).input_size == (3, 224, 224)
    with pytest.raises(ValueError, match="unknown dataset 'bogus'"):
        data_shape(TrainConfig(dataset="bogus"))


def test_build_model_fits_every_registered_model_to_grey_28x28():
    shape = DataShape("fashion_mnist", (1, 28, 28), 10)
    for name in ("mnist_conv", "resnet_cifar", "resnet18", "vgg16", "mobilenet_v2",
                 "shufflenet_v2", "se_resnet18", "resnet50_v1b"):
        kwargs = {"width": 0.125} if "width" in model_spec(name).arguments and \
            name != "resnet_cifar" else {}
        config = TrainConfig(model=name, act="arelu", model_kwargs=kwargs)
        net = build_model(config, shape)
        check_model_takes_data(net, config, shape)  # raises if it cannot
        assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10), name


def test_explicit_model_kwargs_win_and_a_mismatch_names_model_dataset_and_fix():
    config = TrainConfig(model="mnist_conv", model_kwargs={"in_channels": 3})
    shape = DataShape("fashion_mnist", (1, 28, 28), 10)
    net = build_model(config, shape)
    with pytest.raises(ModelDataMismatchError) as err:
        check_model_takes_data(net, config, shape)
    msg = str(err.value)
    assert "mnist_conv (act relu) cannot take dataset fashion_mnist" in msg
    assert "1×28×28" in msg and "drop model_kwargs.in_channels" in msg


def test_too_small_an_input_suggests_padding_to_the_model_default():
    config = TrainConfig(model="mnist_conv")
    shape = DataShape("tiny", (1, 8, 8), 10)
    with pytest.raises(ModelDataMismatchError, match=r"1×8×8.*try pad_to=28"):
        check_model_takes_data(build_model(config, shape), config, shape)


def test_padding_is_suggested_only_where_pad_to_applies(monkeypatch):
    # pad_to zero-pads images held in memory; a dataset streamed from image folders (no reader
    # in its catalog entry) is cropped to size instead, whatever its name
    import dataclasses

    from attnact.data import catalog

    folder = dataclasses.replace(catalog.DATASETS["imagenet"], name="tiny_folders",
                                 channels=1, image_size=(8, 8), num_classes=10)
    arrays = dataclasses.replace(catalog.DATASETS["fashion_mnist"], name="tiny_arrays",
                                 image_size=(8, 8))
    monkeypatch.setitem(catalog.DATASETS, "tiny_folders", folder)
    monkeypatch.setitem(catalog.DATASETS, "tiny_arrays", arrays)
    config = TrainConfig(model="mnist_conv")
    for name, hinted in (("tiny_arrays", True), ("tiny_folders", False)):
        shape = DataShape(name, (1, 8, 8), 10)
        with pytest.raises(ModelDataMismatchError) as err:
            check_model_takes_data(build_model(config, shape), config, shape)
        assert ("pad_to=28" in str(err.value)) is hinted, (name, str(err.value))
        assert f"cannot take dataset {name}" in str(err.value)
    padded = TrainConfig(model="mnist_conv", pad_to=8)
    shape = DataShape("tiny_folders", (1, 8, 8), 10)
    with pytest.raises(ModelDataMismatchError) as err:
        check_model_takes_data(build_model(padded, shape), padded, shape)
    assert "pad_to" not in str(err.value) and "choose a model" in str(err.value)


def test_wrong_number_of_outputs_is_a_mismatch():
    config = TrainConfig(model="mnist_conv")
    shape = DataShape("fashion_mnist", (1, 28, 28), 10)
    net = build_model(config, shape, num_classes=5)
    with pytest.raises(ModelDataMismatchError, match=r"output is \(2, 5\), not \(2, 10\)"):
        check_model_takes_data(net, config, shape)
    check_model_takes_data(net, config, shape, num_classes=5)


def test_the_check_changes_no_state():
    """A run that checks first must train exactly as one that does not."""
    config = TrainConfig(model="resnet_cifar", act="atac", model_kwargs={"blocks": 1})
    shape = DataShape("cifar10", (3, 32, 32), 10)
    torch.manual_seed(0)
    net = build_model(config, shape).train()
    before = copy.deepcopy(net.state_dict())
    rng = torch.get_rng_state()
    check_model_takes_data(net, config, shape)
    assert net.training
    assert torch.equal(torch.get_rng_state(), rng)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics too


def test_preflight_checks_each_distinct_model_once(monkeypatch):
    import attnact.train.build as build

    reads = []

    def fake_batch(config, n=2):
        reads.append(config.dataset)
        from attnact.data import dataset_info

        return torch.randn(n, 1, 28, 28), dataset_info(config.dataset)

    monkeypatch.setattr(build, "_first_batch", fake_batch)
    base = TrainConfig(model="mnist_conv")
    grid = [base.replace(act=a, seed=s, lr=lr) for a in ("relu", "arelu") for s in (0, 1)
            for lr in (0.1, 0.01)]
    assert preflight(grid) == 2  # seeds and learning rates cannot make a model reject data
    assert reads == ["fashion_mnist"]  # the data is read once
    bad = base.replace(act="selu", model_kwargs={"in_channels": 3})
    with pytest.raises(ModelDataMismatchError, match="mnist_conv \\(act selu\\)"):
        preflight([*grid, bad])


def test_model_cost_counts_at_the_data_size_and_says_why_when_it_cannot(monkeypatch):
    config = TrainConfig(model="mnist_conv")
    cost = model_cost(config)
    assert cost.params == 12930 and cost.macs is not None and cost.macs_error is None
    import attnact.models.profile as profile

    def broken(model, size):
        raise NotImplementedError("no meta kernel for this op")

    monkeypatch.setattr(profile, "count_macs", broken)
    cost = model_cost(config)
    assert cost.params == 12930 and cost.macs is None
    assert cost.macs_error == "NotImplementedError: no meta kernel for this op"
