"""The loggers (attnact.train.loggers) through the real backends, offline: TensorBoard's event
files read back with its EventAccumulator, W&B's offline ``.wandb`` transaction log read
record by record, MLflow's file store read with its MlflowClient. A run cut short and resumed
logs every step and every epoch once, in every backend."""

import json
import struct
import sys
import zlib
from pathlib import Path

import pytest
import torch

from attnact.train import Callback, TrainConfig, fit
from attnact.train.loggers import check_available, hyperparameters
from attnact.train.rundir import RunDirectory

STEPS = 3  # optimizer steps per epoch in these runs


def config(tmp_path, **kw):
    base = dict(model="tiny", dataset="fake", epochs=2, batch_size=16, lr=0.05,
                max_steps_per_epoch=STEPS, log_every_steps=1, progress=False,
                out_dir=str(tmp_path / "run"))
    base.update(kw)
    return TrainConfig(**base)


def train(fakes, cfg, callbacks=()):
    torch.manual_seed(cfg.seed)
    return fit(cfg, model=fakes.tiny_model(), loaders=fakes.make_loaders(batch_size=16),
               callbacks=callbacks)


class StopInSecondEpoch(Callback):
    """Fails the run after the second step of its second epoch (the first is checkpointed)."""

    def on_step_end(self, state):
        if state.epoch == 1 and state.step == 1:
            raise RuntimeError("stopped for the test")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Every backend's own state under tmp_path; W&B offline; MLflow's default store."""
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE",
                "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------------- readers
def tensorboard_scalars(log_dir):
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return acc, {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
                 for tag in acc.Tags()["scalars"]}


def tensorboard_hparams(acc):
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
            for k, v in info.hparams.items()}


def wandb_records(path):
    """The protobuf records of a ``.wandb`` file: a 7-byte header (``:W&B``, magic 0xBEE1,
    version 0), then LevelDB-log blocks of 32 KiB holding chunks of (CRC-32 of type + data,
    2-byte length, 1-byte type: full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<HB", data[4:7]) == (0xBEE1, 0)
    block, header, pos, buf, out = 32768, 7, 7, b"", []
    while pos + header <= len(data):
        left = block - pos % block
        if left < header:  # the block's tail is padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + header])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + header:pos + header + length]
        pos += header + length
        assert zlib.crc32(bytes([kind]) + chunk) == crc
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            out.append(buf + chunk)
    records = []
    for chunk in out:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        records.append(record)
    return records


def wandb_run(run_dir):
    """``(run ids, config, history rows)`` of every offline session of a run directory."""
    files = sorted((Path(run_dir) / "wandb").glob("offline-run-*/run-*.wandb"))
    ids, config, rows = set(), {}, []
    for path in files:
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.add(record.run.run_id)
                config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            elif kind == "config":
                config.update({i.key: json.loads(i.value_json) for i in record.config.update})
            elif kind == "history":
                rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                             for i in record.history.item})
    return ids, config, rows, files


def mlflow_run(run_dir):
    from mlflow.tracking import MlflowClient

    ids = RunDirectory(run_dir).read_tracking()["mlflow"]
    client = MlflowClient(tracking_uri=ids["tracking_uri"])
    return client, client.get_run(ids["run_id"])


def same(pairs, expected):
    """(step, value) pairs equal to ``expected``: steps exactly, values to float32 rounding."""
    pairs = list(pairs)
    assert [s for s, _ in pairs] == [s for s, _ in expected]
    assert [v for _, v in pairs] == pytest.approx([v for _, v in expected], rel=1e-6)
    return True


def metrics_csv(run_dir):
    return RunDirectory(run_dir).read_metrics()


# ---------------------------------------------------------------------- config and CLI
def test_loggers_field_parses_lists_and_names_the_allowed_values():
    assert TrainConfig(loggers="tensorboard, wandb,tensorboard").loggers == ["tensorboard",
                                                                           "wandb"]
    assert TrainConfig(loggers="none").loggers == [] and TrainConfig().loggers == []
    assert TrainConfig(loggers=("mlflow",)).loggers == ["mlflow"]
    with pytest.raises(ValueError, match=r"unknown logger.*'wandbb'.*tensorboard, wandb, mlflow"):
        TrainConfig(loggers=["wandbb"])
    # an old config's tensorboard flag is the tensorboard logger
    assert TrainConfig.from_dict({"tensorboard": True}).loggers == ["tensorboard"]
    assert TrainConfig.from_dict({"tensorboard": False}).loggers == []
    assert TrainConfig.from_dict({"tensorboard": True, "loggers": "wandb"}).loggers == [
        "wandb", "tensorboard"]


def test_cli_logger_flag_and_the_tensorboard_alias(tmp_path):
    import argparse

    from attnact.train.cli import add_train_subparser, config_from_args

    parser = argparse.ArgumentParser()
    add_train_subparser(parser.add_subparsers(dest="command"))

    def loggers(*argv):
        return config_from_args(parser.parse_args(["train", *argv])).loggers

    assert loggers() == []
    assert loggers("--logger", "tensorboard,wandb,mlflow") == ["tensorboard", "wandb", "mlflow"]
    assert loggers("--tensorboard") == ["tensorboard"]
    assert loggers("--logger", "mlflow", "--tensorboard") == ["mlflow", "tensorboard"]
    assert loggers("--logger", "none") == []
    with pytest.raises(ValueError, match="unknown logger"):
        loggers("--logger", "comet")


def test_cli_logger_on_compare_and_reproduce_parsers():
    from attnact.cli import build_parser

    parser = build_parser()
    for argv in (["compare", "--logger", "wandb"],
                 ["reproduce", "arelu-meta", "--logger", "wandb"]):
        assert parser.parse_args(argv).loggers == "wandb"


def test_hyperparameters_flatten_the_config_and_name_the_code():
    cfg = TrainConfig(act="arelu", act_kwargs={"alpha": 0.5}, maml={"shots": 5})
    provenance = {"attnact": "0.1.0", "git": {"commit": "abc", "dirty": False},
                  "torch": "2.13.0", "config_sha256": "sha256:x"}
    flat = hyperparameters(cfg.to_dict(), provenance, **{"run.params": 12})
    assert flat["lr"] == 0.01 and flat["act_kwargs.alpha"] == 0.5
    assert flat["maml.shots"] == 5 and flat["maml.ways"] == 5 and "maml" not in flat
    assert flat["model_kwargs"] == {} and flat["milestones"] == []
    assert flat["provenance.attnact"] == "0.1.0" and flat["provenance.commit"] == "abc"
    assert flat["provenance.dirty"] is False and flat["run.params"] == 12
    # every config field is there, under its own name or as a dotted prefix
    for name in cfg.to_dict():
        assert name in flat or any(k.startswith(name + ".") for k in flat)


def test_missing_package_names_the_tracking_extra(tmp_path, fakes, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now fails
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'attnact\[tracking\]'"):
        check_available(["wandb"])
    with pytest.raises(ModuleNotFoundError, match="wandb logger"):
        train(fakes, config(tmp_path, loggers=["wandb"]))
    assert not (tmp_path / "run" / RunDirectory.CHECKPOINT).exists()  # failed before training


def test_loggers_need_a_run_directory(fakes):
    with pytest.raises(ValueError, match=r"loggers.*need a run directory"):
        train(fakes, TrainConfig(model="tiny", dataset="fake", out_dir=None,
                                 loggers=["tensorboard"], progress=False))


# ---------------------------------------------------------------------- backends
def test_tensorboard_scalars_and_hparams(tmp_path, fakes):
    pytest.importorskip("tensorboard")
    train(fakes, config(tmp_path, loggers=["tensorboard"]))
    run_dir = tmp_path / "run"
    acc, scalars = tensorboard_scalars(run_dir / RunDirectory.TENSORBOARD)
    rows = metrics_csv(run_dir)
    assert same(scalars["test/top1"], [(3, rows[0]["test_top1"]), (6, rows[1]["test_top1"])])
    assert [s for s, _ in scalars["train/step_loss"]] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in scalars["epoch"]] == [1, 2]
    assert {"train/loss", "train/acc", "test/loss", "lr", "time/epoch_s",
            "time/images_per_s"} <= set(scalars)
    assert "test/top5" in scalars  # 10 classes
    hp = tensorboard_hparams(acc)
    assert hp["lr"] == pytest.approx(0.05) and hp["model"] == "tiny"
    assert hp["provenance.attnact"] and "provenance.config_sha256" in hp


def test_wandb_offline_run_holds_config_and_namespaced_history(tmp_path, fakes, offline):
    pytest.importorskip("wandb")
    train(fakes, config(tmp_path, loggers=["wandb"]))
    run_dir = tmp_path / "run"
    stored = RunDirectory(run_dir).read_tracking()["wandb"]["run_id"]
    ids, cfg, history, files = wandb_run(run_dir)
    assert ids == {stored} and len(files) == 1
    assert cfg["lr"] == 0.05 and cfg["model"] == "tiny" and cfg["max_steps_per_epoch"] == STEPS
    assert cfg["provenance.attnact"] and cfg["run.params"] > 0
    epochs = [r for r in history if "test/top1" in r]
    rows = metrics_csv(run_dir)
    assert [r["_step"] for r in epochs] == [3, 6]
    assert [r["test/top1"] for r in epochs] == pytest.approx([r["test_top1"] for r in rows])
    assert [r["_step"] for r in history if "train/step_loss" in r] == [1, 2, 3, 4, 5, 6]
    assert {"train/loss", "train/acc", "test/loss", "test/top5", "lr", "time/epoch_s",
            "epoch"} <= {k for r in history for k in r}


def test_mlflow_file_store_holds_params_and_metric_histories(tmp_path, fakes, offline):
    pytest.importorskip("mlflow")
    train(fakes, config(tmp_path, loggers=["mlflow"]))
    run_dir = tmp_path / "run"
    client, run = mlflow_run(run_dir)
    assert run.info.status == "FINISHED"
    assert RunDirectory(run_dir).read_tracking()["mlflow"]["tracking_uri"] == (
        run_dir / RunDirectory.MLFLOW).resolve().as_uri()
    params = run.data.params
    assert params["lr"] == "0.05" and params["model"] == "tiny" and params["act_kwargs"] == "{}"
    assert params["provenance.attnact"] and "provenance.commit" in params
    rows = metrics_csv(run_dir)
    top1 = client.get_metric_history(run.info.run_id, "test/top1")
    assert same(sorted((m.step, m.value) for m in top1),
                [(3, rows[0]["test_top1"]), (6, rows[1]["test_top1"])])
    steps = client.get_metric_history(run.info.run_id, "train/step_loss")
    assert sorted(m.step for m in steps) == [1, 2, 3, 4, 5, 6]


def test_mlflow_user_tracking_uri(tmp_path, fakes, offline, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = (tmp_path / "elsewhere").resolve().as_uri()
    train(fakes, config(tmp_path, loggers=["mlflow"], mlflow_tracking_uri=store, epochs=1))
    assert not (tmp_path / "run" / RunDirectory.MLFLOW).exists()
    client, run = mlflow_run(tmp_path / "run")
    assert client.tracking_uri == store and run.info.status == "FINISHED"


@pytest.mark.slow
def test_a_resumed_run_logs_every_step_and_epoch_once(tmp_path, fakes, offline):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    cfg = config(tmp_path, loggers=["tensorboard", "wandb", "mlflow"])
    with pytest.raises(RuntimeError, match="stopped for the test"):
        train(fakes, cfg, callbacks=[StopInSecondEpoch()])
    run_dir = tmp_path / "run"
    first_ids = RunDirectory(run_dir).read_tracking()
    train(fakes, cfg.replace(resume=True))
    assert RunDirectory(run_dir).read_tracking() == first_ids  # the same W&B and MLflow runs
    rows = metrics_csv(run_dir)
    want_top1 = [(3, rows[0]["test_top1"]), (6, rows[1]["test_top1"])]

    _, scalars = tensorboard_scalars(run_dir / RunDirectory.TENSORBOARD)
    assert same(scalars["test/top1"], want_top1)
    assert [s for s, _ in scalars["train/step_loss"]] == [1, 2, 3, 4, 5, 6]

    ids, _, history, files = wandb_run(run_dir)
    assert ids == {first_ids["wandb"]["run_id"]} and len(files) == 2  # two sessions, one run
    assert same([(r["_step"], r["test/top1"]) for r in history if "test/top1" in r], want_top1)
    assert sorted(r["_step"] for r in history if "train/step_loss" in r) == [1, 2, 3, 4, 5, 6]

    client, run = mlflow_run(run_dir)
    assert run.info.status == "FINISHED"
    top1 = client.get_metric_history(run.info.run_id, "test/top1")
    assert same(sorted((m.step, m.value) for m in top1), want_top1)
    steps = client.get_metric_history(run.info.run_id, "train/step_loss")
    assert sorted(m.step for m in steps) == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------------- commands
def test_cli_train_with_a_missing_backend_exits_2_naming_the_extra(tmp_path, monkeypatch,
                                                                   capsys):
    from attnact.cli import main

    monkeypatch.setitem(sys.modules, "mlflow", None)
    code = main(["train", "--preset", "demo", "--out", str(tmp_path / "run"), "--logger",
                 "mlflow", "--no-progress"])
    assert code == 2
    assert "pip install 'attnact[tracking]'" in capsys.readouterr().err
    assert not (tmp_path / "run" / RunDirectory.CHECKPOINT).exists()


def test_cli_train_logs_a_real_run(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from attnact.data import is_available

    if not is_available("fashion_mnist"):
        pytest.skip("Fashion-MNIST is not installed (make data)")
    from attnact.cli import main

    out = tmp_path / "run"
    assert main(["train", "--preset", "demo", "--epochs", "1", "--limit-train", "256",
                 "--limit-test", "128", "--out", str(out), "--tensorboard", "--no-progress",
                 "max_steps_per_epoch=2", "log_every_steps=1"]) == 0
    assert TrainConfig.from_yaml(out / RunDirectory.CONFIG).loggers == ["tensorboard"]
    _, scalars = tensorboard_scalars(out / RunDirectory.TENSORBOARD)
    assert [s for s, _ in scalars["train/step_loss"]] == [1, 2]
    assert same(scalars["test/top1"], [(2, metrics_csv(out)[0]["test_top1"])])


def test_reproduce_passes_loggers_to_the_runs_it_trains(tmp_path):
    from attnact.experiments.experiment import Experiment
    from attnact.experiments.keys import RunSpec, run_key
    from attnact.experiments.reproduction import reproduce
    from attnact.train.checkpoint import save_checkpoint

    seen = []

    def fake_fit(cfg):
        seen.append(cfg.loggers)
        out = Path(cfg.out_dir)
        cfg.to_yaml(out / RunDirectory.CONFIG)
        save_checkpoint(out / RunDirectory.CHECKPOINT, {"epoch": 1})
        (out / RunDirectory.METRICS).write_text("epoch,test_top1,test_loss,epoch_time_s\n"
                                                "1,50.0,1.0,2.0\n")
        (out / RunDirectory.SUMMARY).write_text(json.dumps({"status": "finished"}))

    class Tiny(Experiment):
        name, title, source = "tiny-logged", "Tiny", "a test"

        def grid(self, preset, seeds):
            return [RunSpec(run_key("relu", f"seed{s}"), {"act": "relu", "seed": s},
                            TrainConfig(act="relu", seed=s, progress=False), fit=fake_fit)
                    for s in range(seeds)]

        def required_datasets(self, specs):
            return []

        def report(self, results, out, context):
            return {}

    runs = tmp_path / "runs"
    reproduce(Tiny(), seeds=2, backend="inline", runs=runs, out=tmp_path / "rep",
              loggers="tensorboard,mlflow", log=lambda _m: None)
    assert seen == [["tensorboard", "mlflow"]] * 2
    # loggers are where a run executes, not what it computes: the stored runs are reused
    result = reproduce(Tiny(), seeds=2, backend="inline", runs=runs, out=tmp_path / "rep",
                       log=lambda _m: None)
    assert result.ok and len(seen) == 2
    with pytest.raises(ValueError, match="unknown logger"):
        reproduce(Tiny(), seeds=2, backend="inline", runs=runs, out=tmp_path / "rep",
                  loggers="comet", log=lambda _m: None)


def test_only_rank_0_opens_loggers(tmp_path, fakes, monkeypatch):
    """Under torchrun the other ranks neither import a backend nor write its files (a
    world-of-one stand-in for rank 1: its collectives are no-ops)."""
    import attnact.train.engine as engine
    from attnact.train.distributed import DistEnv

    monkeypatch.setattr(engine, "setup_distributed", lambda _device: DistEnv(rank=1))
    monkeypatch.setitem(sys.modules, "wandb", None)  # importing it would fail the run
    train(fakes, config(tmp_path, loggers=["tensorboard", "wandb"], epochs=1))
    run_dir = tmp_path / "run"
    assert not (run_dir / RunDirectory.TENSORBOARD).exists()
    assert not (run_dir / RunDirectory.TRACKING).exists()
    assert not (run_dir / RunDirectory.WANDB).exists()
