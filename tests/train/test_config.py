"""TrainConfig: validation, YAML round trip, key=value overrides, the papers' presets."""

import pytest

from attnact.train import PRESETS, TrainConfig, list_presets


def test_defaults_are_valid():
    c = TrainConfig()
    assert c.optimizer == "sgd" and c.schedule == "constant" and c.out_dir is None


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(name):
    c = TrainConfig.preset(name)
    assert isinstance(c, TrainConfig)
    # one epoch leaves no room for a warm-up (atac-imagenet has five)
    assert TrainConfig.preset(name, epochs=1, warmup_epochs=0).epochs == 1


def test_atac_cifar_preset_is_sec_iv_a():
    c = TrainConfig.preset("atac-cifar")
    assert (c.model, c.dataset, c.optimizer) == ("resnet_cifar", "cifar10", "nag")
    assert (c.lr, c.epochs, c.weight_decay, c.batch_size) == (0.2, 400, 1e-4, 128)
    assert (c.schedule, c.milestones, c.gamma) == ("step", [300, 350], 0.1)


def test_atac_imagenet_preset():
    c = TrainConfig.preset("atac-imagenet")
    assert (c.model, c.dataset, c.optimizer, c.lr) == ("resnet50_v1b", "imagenet", "nag", 0.075)
    assert (c.schedule, c.warmup_epochs, c.label_smoothing) == ("cosine", 5, 0.1)
    assert (c.no_wd_bn_bias, c.weight_decay, c.epochs, c.batch_size) == (True, 1e-4, 160, 256)


def test_arelu_presets():
    sgd = TrainConfig.preset("arelu-mnist-sgd", lr=1e-4)
    assert (sgd.model, sgd.dataset, sgd.optimizer, sgd.momentum) == (
        "mnist_conv",
        "mnist",
        "sgd",
        0.9,
    )
    assert sgd.lr == 1e-4 and sgd.schedule == "constant"
    adam = TrainConfig.preset("arelu-mnist-adam")
    assert (adam.optimizer, adam.lr, adam.schedule) == ("adam", 1e-3, "constant")
    c100 = TrainConfig.preset("arelu-cifar100")
    assert (c100.dataset, c100.lr, c100.batch_size, c100.weight_decay, c100.momentum) == (
        "cifar100",
        0.1,
        64,
        5e-4,
        0.9,
    )
    demo = TrainConfig.preset("demo")
    assert (demo.model, demo.dataset) == ("mnist_conv", "fashion_mnist")


def test_unknown_preset_lists_the_allowed():
    with pytest.raises(ValueError, match="atac-cifar") as info:
        TrainConfig.preset("atac-cifr")
    assert "did you mean" in str(info.value)
    assert list_presets() == sorted(PRESETS)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"optimizer": "rmsprop"}, ["optimizer", "sgd, nag, adam"]),
        ({"schedule": "linear"}, ["schedule", "constant, step, cosine"]),
        ({"device": "tpu"}, ["device", "auto, cpu, cuda"]),
        ({"lr": -1.0}, ["lr"]),
        ({"epochs": 0}, ["epochs"]),
        ({"batch_size": -2}, ["batch_size"]),
        ({"optimizer": "nag", "momentum": 0.0}, ["momentum", "nag"]),
        ({"momentum": 1.0}, ["momentum"]),
        ({"milestones": [5, 3], "schedule": "step"}, ["milestones"]),
        ({"schedule": "step"}, ["milestones"]),
        ({"label_smoothing": 1.0}, ["label_smoothing"]),
        ({"gamma": 0.0}, ["gamma"]),
        ({"resume": True}, ["resume", "out_dir"]),
        ({"epochs": "many"}, ["epochs", "integer"]),
        ({"bf16": "yes please"}, ["bf16"]),
        ({"model": ""}, ["model"]),
        ({"limit_train": 0}, ["limit_train"]),
    ],
)
def test_invalid_values_name_the_field(changes, words):
    with pytest.raises(ValueError) as info:
        TrainConfig(**changes)
    for word in words:
        assert word in str(info.value)


def test_numbers_from_yaml_strings_are_coerced():
    c = TrainConfig(lr="1e-3", epochs=3.0, milestones=2, schedule="step")
    assert c.lr == 1e-3 and isinstance(c.lr, float)
    assert c.epochs == 3 and isinstance(c.epochs, int)
    assert c.milestones == [2]


def test_yaml_round_trip(tmp_path):
    c = TrainConfig.preset(
        "atac-cifar", act_kwargs={"r": 4}, model_kwargs={"blocks": 5}, out_dir=str(tmp_path)
    )
    path = tmp_path / "config.yaml"
    text = c.to_yaml(path)
    assert path.read_text() == text
    assert TrainConfig.from_yaml(path) == c


def test_dict_fields_hold_plain_data(tmp_path):
    c = TrainConfig(model_kwargs={"variant_kwargs": {"sizes": (1, 2)}})
    assert c.model_kwargs == {"variant_kwargs": {"sizes": [1, 2]}}
    c.to_yaml(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == c


def test_yaml_file_may_start_from_a_preset(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: atac-cifar\nepochs: 10\nlr: 1e-2\n")
    c = TrainConfig.from_yaml(path)
    assert (c.optimizer, c.epochs, c.lr, c.milestones) == ("nag", 10, 0.01, [300, 350])


def test_yaml_unknown_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_yaml(path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        TrainConfig.from_yaml(path)


def test_overrides_parse_yaml_values():
    c = TrainConfig().with_overrides(
        [
            "lr=1e-3",
            "epochs=3",
            "schedule=step",
            "milestones=[1, 2]",
            "act_kwargs={alpha: 0.5}",
            "act_kwargs.beta=1.5",
            "data_dir=null",
            "bf16=true",
            "out_dir=runs/x",
        ]
    )
    assert c.lr == 1e-3 and c.epochs == 3 and c.milestones == [1, 2]
    assert c.act_kwargs == {"alpha": 0.5, "beta": 1.5}
    assert c.data_dir is None and c.bf16 is True and c.out_dir == "runs/x"


def test_override_errors():
    base = TrainConfig()
    with pytest.raises(ValueError, match="did you mean lr"):
        base.with_overrides(["lrr=0.1"])
    with pytest.raises(ValueError, match="key=value"):
        base.with_overrides(["epochs"])
    with pytest.raises(ValueError, match="epochs"):
        base.with_overrides(["epochs=abc"])
    with pytest.raises(ValueError, match="not a dict field"):
        base.with_overrides(["lr.x=1"])
    with pytest.raises(ValueError, match="did you mean"):
        TrainConfig.preset("demo", epoch=3)


def test_overrides_do_not_mutate():
    base = TrainConfig()
    changed = base.with_overrides(["act_kwargs.alpha=0.3"])
    assert base.act_kwargs == {} and changed.act_kwargs == {"alpha": 0.3}
    assert base.diff(changed) == {"act_kwargs": ({}, {"alpha": 0.3})}


def test_nested_overrides_read_yaml11_floats_as_numbers():
    # PyYAML (YAML 1.1) leaves 1e30 and 5e-4 strings; typed fields convert them, and entries of
    # the untyped dict fields must too, whether set one by one or as a whole mapping.
    c = TrainConfig().with_overrides(
        ["act_kwargs.alpha=1e30", "act_kwargs.beta=-2.5E-3", "model_kwargs={width: 5e-1}"]
    )
    assert c.act_kwargs == {"alpha": 1e30, "beta": -2.5e-3}
    assert type(c.act_kwargs["alpha"]) is float and c.model_kwargs == {"width": 0.5}
    kept = TrainConfig().with_overrides(["act_kwargs.activation=relu", "act_kwargs.r=4",
                                         "act_kwargs.tag='1e3'", "act_kwargs.v=1.5e3"])
    assert kept.act_kwargs == {"activation": "relu", "r": 4, "tag": "1e3", "v": 1500.0}


def test_warmup_must_end_before_training_does():
    with pytest.raises(ValueError, match=r"warmup_epochs \(3\) must be less than epochs \(3\)"):
        TrainConfig(epochs=3, warmup_epochs=3)
    with pytest.raises(ValueError, match=r"warmup_epochs \(5\).*epochs \(2\)"):
        TrainConfig.preset("atac-imagenet", epochs=2)
    assert TrainConfig(epochs=3, warmup_epochs=2.5).warmup_epochs == 2.5
    # validated on the final config: overrides that shorten the run and its warm-up together
    c = TrainConfig.preset("atac-imagenet").with_overrides(["epochs=2", "warmup_epochs=0.5"])
    assert (c.epochs, c.warmup_epochs) == (2, 0.5)
    c = TrainConfig.from_dict({"preset": "atac-imagenet", "epochs": 2}, ["warmup_epochs=1"])
    assert (c.epochs, c.warmup_epochs) == (2, 1)
