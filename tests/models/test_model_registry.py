"""Model registry: names, specs, argument checking."""

import pytest
from torch import nn

import attnact.models as models
from attnact.models import create_model, list_models, model_spec, register_model


def test_registered_models_and_specs():
    assert {"resnet_cifar", "resnet50_v1b", "mnist_conv"} <= set(list_models())
    assert list_models() == sorted(list_models())
    spec = model_spec("resnet_cifar")
    assert (spec.input_size, spec.num_classes) == ((3, 32, 32), 10)
    assert "Table II" in spec.description
    assert model_spec("ResNet50-v1b").input_size == (3, 224, 224)
    assert model_spec("resnet50_v1b").num_classes == 1000
    assert (model_spec("mnist_conv").input_size, model_spec("mnist_conv").num_classes) == (
        (1, 28, 28),
        10,
    )
    assert "blocks" in spec.arguments


def test_create_model_defaults_and_overrides():
    m = create_model("mnist_conv")
    assert isinstance(m, models.MNISTConv) and m.fc.out_features == 10
    m = create_model("resnet_cifar", act="atac", num_classes=100, blocks=1)
    assert m.fc.out_features == 100
    assert [s.unit for s in m.act_sites] == ["atac"] * 7


def test_unknown_name_lists_close_matches():
    with pytest.raises(
        ValueError, match=r"unknown model 'resnet_cifa'.*did you mean 'resnet_cifar'"
    ):
        create_model("resnet_cifa")
    with pytest.raises(ValueError, match="registered: mnist_conv"):
        model_spec("vgg19_nonexistent")


def test_bad_keyword_is_named():
    with pytest.raises(ValueError, match=r"no argument 'block'.*did you mean 'blocks'"):
        create_model("resnet_cifar", block=3)
    with pytest.raises(ValueError, match="no argument 'variant'"):
        create_model("mnist_conv", variant="se")


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        create_model("mnist_conv", num_classes=0)
    with pytest.raises(ValueError, match="blocks"):
        create_model("resnet_cifar", blocks=0)


def test_register_model_rejects_duplicates_and_positional_builders():
    def builder(*, act="relu", num_classes=10):
        return nn.Identity()

    with pytest.raises(ValueError, match="registered twice"):
        register_model("resnet_cifar", description="x", input_size=(3, 8, 8), num_classes=2)(
            builder
        )

    def positional(act="relu", num_classes=10):
        return nn.Identity()

    with pytest.raises(ValueError, match="keyword-only"):
        register_model("test_positional", description="x", input_size=(3, 8, 8), num_classes=2)(
            positional
        )

    def no_act(*, num_classes=10):
        return nn.Identity()

    with pytest.raises(ValueError, match="act="):
        register_model("test_no_act", description="x", input_size=(3, 8, 8), num_classes=2)(no_act)
    with pytest.raises(ValueError, match="input_size"):
        register_model("test_size", description="x", input_size=(8, 8), num_classes=2)
    assert "test_positional" not in list_models() and "test_no_act" not in list_models()
