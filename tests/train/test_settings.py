"""Typed procedure settings (TrainConfig.maml, TrainConfig.transfer): YAML round trips, bad
input, and configs written before them (``extra:``, ``tensorboard:``) read as today's.

The fixtures/legacy_*.yaml files were written by attnact before this change (commit 3902cc4,
``TrainConfig.to_yaml`` of the arelu-meta and arelu-transfer quick specs and of the demo
preset), and the hashes below are what that version's ``config_hash`` recorded for them.
"""

import warnings
from pathlib import Path

import pytest
import torch

from attnact.experiments.arelu_meta import meta_spec
from attnact.experiments.arelu_transfer import AReLUTransfer
from attnact.experiments.keys import RunSpec
from attnact.experiments.store import RunStore, StoreConflictError
from attnact.train import TrainConfig, fit
from attnact.train.checkpoint import load_checkpoint, save_checkpoint
from attnact.train.config import migrate_config_dict
from attnact.train.provenance import config_hash
from attnact.train.rundir import RunDirectory
from attnact.train.settings import MAMLSettings, TransferDomain, TransferSettings

FIXTURES = Path(__file__).with_name("fixtures")
# config_hash as recorded by the version before typed settings (see the module docstring)
OLD_HASH_DEFAULT = "sha256:0c3973951d0a07be0cac82b3cdf8c23c73fdc7f409cd1d46f158ca697d6c01e9"
OLD_HASH_DEMO = "sha256:4c6f14d587c9551dfe425fb598eb28bfa87b8f44c8f9cd9dd93f9f41458f1859"
TRANSFER = {"source": {"dataset": "mnist"},
            "target": {"dataset": "svhn", "train_offset": 10, "limit_train": 50},
            "finetune_epochs": 3}


def test_yaml_round_trip_is_exact(tmp_path):
    maml = TrainConfig(maml=MAMLSettings(shots=5, train_classes=[0, 1, 2], first_order=True))
    transfer = TrainConfig(transfer=TRANSFER)
    for config in (maml, transfer, TrainConfig()):
        path = tmp_path / "c.yaml"
        config.to_yaml(path)
        assert TrainConfig.from_yaml(path) == config
    assert isinstance(transfer.transfer.target, TransferDomain)
    assert transfer.transfer == TransferSettings(
        TransferDomain("mnist"), TransferDomain("svhn", train_offset=10, limit_train=50),
        finetune_epochs=3)
    text = maml.to_yaml()
    assert "maml:\n  ways: 5\n  shots: 5\n" in text and "extra" not in text


def test_overrides_set_one_setting():
    config = TrainConfig().with_overrides(["maml.shots=5", "maml.inner_lr=1e-2"])
    assert config.maml == MAMLSettings(shots=5, inner_lr=0.01)
    config = TrainConfig(transfer=TRANSFER).with_overrides(["transfer.pretrain_epochs=2"])
    assert config.transfer.pretrain_epochs == 2 and config.transfer.source.dataset == "mnist"
    assert TrainConfig(maml={}).with_overrides(["maml=null"]).maml is None


@pytest.mark.parametrize("changes, message", [
    (dict(maml={"shots": 1}, transfer=TRANSFER), "exclude each other"),
    (dict(maml={"shot": 1}), "unknown MAML setting.*'shot'; did you mean shots"),
    (dict(maml={"inner_steps": -1}), "maml.inner_steps"),
    (dict(maml={"split": "classes", "train_classes": [0, 1], "test_classes": [1]}), "disjoint"),
    (dict(transfer={"source": {"dataset": "mnist"}}), "needs source and target"),
    (dict(transfer={**TRANSFER, "target": {"dataset": "svhn", "style": "bw"}}), "style"),
    (dict(transfer={**TRANSFER, "source": {"dataset": "mnist", "limit": 5}}),
     "unknown transfer.source key 'limit'"),
    (dict(transfer={**TRANSFER, "pretrain_lr": 0}), "transfer.pretrain_lr"),
])
def test_bad_settings_name_what_is_wrong(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_old_extra_reads_as_typed_settings():
    maml = TrainConfig.from_dict({"extra": {"ways": 5, "shots": 5}})
    assert maml.maml == MAMLSettings(shots=5) and maml.transfer is None
    transfer = TrainConfig.from_dict({"extra": TRANSFER})
    assert transfer.transfer == TrainConfig(transfer=TRANSFER).transfer
    assert TrainConfig.from_dict({"extra": {}}) == TrainConfig()
    with pytest.raises(ValueError, match=r"unknown MAML setting.*'wayz'"):
        TrainConfig.from_dict({"extra": {"wayz": 5}})
    with pytest.raises(ValueError, match="both extra"):
        TrainConfig.from_dict({"extra": {"ways": 5}, "maml": {"ways": 5}})
    with pytest.raises(ValueError, match="needs source and target"):
        TrainConfig.from_dict({"extra": {"pretrain_epochs": 3}})


def test_stored_configs_of_the_previous_version_load_as_todays_specs():
    maml = TrainConfig.from_yaml(FIXTURES / "legacy_maml.yaml")
    assert maml == meta_spec("quick", "arelu", 5, 1).config.replace(out_dir="runs/x",
                                                                     resume=True)
    transfer = TrainConfig.from_yaml(FIXTURES / "legacy_transfer.yaml")
    assert transfer == AReLUTransfer().spec("quick", "relu", 0).config.replace(
        out_dir="runs/y", resume=True)
    demo = TrainConfig.from_yaml(FIXTURES / "legacy_plain.yaml")  # tensorboard: true
    assert demo == TrainConfig.preset("demo", seed=3, out_dir="runs/z", loggers=["tensorboard"])


def test_config_hash_of_plain_runs_is_unchanged():
    assert config_hash(TrainConfig()) == OLD_HASH_DEFAULT
    assert config_hash(TrainConfig.from_yaml(FIXTURES / "legacy_plain.yaml")) == OLD_HASH_DEMO
    # run-local settings stay out of it; settings that change what a run computes do not
    assert config_hash(TrainConfig(loggers=["wandb"], log_every_steps=3)) == OLD_HASH_DEFAULT
    assert config_hash(TrainConfig(maml={"shots": 1})) != config_hash(
        TrainConfig(maml={"shots": 5}))


def test_store_reuses_runs_whose_config_yaml_has_extra(tmp_path):
    store = RunStore(tmp_path)
    for fixture, config in (("legacy_maml", meta_spec("quick", "arelu", 5, 1).config),
                            ("legacy_transfer", AReLUTransfer().spec("quick", "relu", 0).config)):
        spec = RunSpec(fixture.replace("_", "-"), {"seed": 0}, config)
        store.files(spec.key).path.mkdir(parents=True)
        store.files(spec.key).write_config((FIXTURES / f"{fixture}.yaml").read_text())
        store.check_config(spec)  # no conflict: the stored run is this spec's
        other = RunSpec(spec.key, {"seed": 0}, config.replace(seed=9))
        with pytest.raises(StoreConflictError, match="seed"):
            store.check_config(other)


def test_engine_resumes_a_checkpoint_of_the_previous_version(tmp_path, fakes):
    """A checkpoint whose config has ``extra: {}`` and ``tensorboard:`` resumes without a
    changed-config warning and ends where an uninterrupted run does."""

    def train(cfg):
        torch.manual_seed(cfg.seed)
        return fit(cfg, model=fakes.tiny_model(), loaders=fakes.make_loaders(batch_size=16))

    base = dict(model="tiny", dataset="fake", batch_size=16, lr=0.05, max_steps_per_epoch=3,
                deterministic=True, progress=False)
    straight = train(TrainConfig(**base, epochs=2, out_dir=str(tmp_path / "a")))
    train(TrainConfig(**base, epochs=1, out_dir=str(tmp_path / "b")))
    files = RunDirectory(tmp_path / "b")
    ckpt = load_checkpoint(files.checkpoint_path)
    old = {k: v for k, v in ckpt["config"].items()
           if k not in ("loggers", "log_every_steps", "mlflow_tracking_uri", "maml", "transfer")}
    ckpt["config"] = {**old, "tensorboard": False, "extra": {}}
    save_checkpoint(files.checkpoint_path, ckpt)
    assert migrate_config_dict(ckpt["config"]) == {**old}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        resumed = train(TrainConfig(**base, epochs=2, out_dir=str(tmp_path / "b"), resume=True))
    assert not [w for w in seen if "changed config" in str(w.message)]
    assert resumed.final["test_top1"] == straight.final["test_top1"]
    assert resumed.final["train_loss"] == straight.final["train_loss"]
