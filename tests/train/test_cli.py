"""`attnact train` (attnact.train.cli): config resolution, exit codes, real runs on Fashion-MNIST.

The end-to-end tests use the embedded Fashion-MNIST (Debian package dataset-fashion-mnist) with
small limits, through the real attnact.models / attnact.data path; they are skipped where the
dataset is not installed.
"""

import argparse
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from attnact.train import TrainConfig, load_checkpoint
from attnact.train.cli import add_train_subparser, config_from_args, main


def parse(argv):
    parser = argparse.ArgumentParser(prog="attnact")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_subparser(sub)
    return parser.parse_args(["train", *argv])


def test_subparser_wires_the_handler():
    args = parse(["--preset", "demo"])
    assert args.func.__name__ == "run_train"


def test_precedence_preset_file_flags_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 7\nlr: 0.3\nbatch_size: 32\nact: relu\n")
    args = parse(
        [
            "--preset", "atac-cifar",
            "--config", str(cfg_file),
            "--lr", "0.4",
            "--set", "batch_size=64",
            "--out", str(tmp_path / "run"),
            "--resume",
            "seed=3",
            "act_kwargs.r=4",
        ]
    )  # fmt: skip
    c = config_from_args(args)
    assert (c.optimizer, c.milestones) == ("nag", [300, 350])  # preset
    assert (c.epochs, c.act) == (7, "relu")  # file over preset
    assert c.lr == 0.4  # flag over file
    assert (c.batch_size, c.seed, c.act_kwargs) == (64, 3, {"r": 4})  # overrides over all
    assert c.out_dir == str(tmp_path / "run") and c.resume is True


def test_default_out_dir_names_the_run():
    c = config_from_args(parse(["--preset", "demo", "--seed", "2"]))
    assert c.out_dir == os.path.join("runs", "demo-arelu-fashion_mnist-seed2")


def test_print_config(capsys):
    assert main(["--preset", "demo", "--print-config", "epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 2" in out and "optimizer: sgd" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["epochs=0"], "epochs"),
        (["lrr=0.1"], "did you mean lr"),
        (["--optimizer", "lbfgs"], "sgd, nag, adam"),
        (["--config", "/nonexistent.yaml"], "no such file"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "attnact train: error" in err and message in err


def have_fashion_mnist() -> bool:
    from attnact.data import is_available

    return is_available("fashion_mnist")


needs_data = pytest.mark.skipif(not have_fashion_mnist(), reason="Fashion-MNIST not installed")
SMALL = ["--no-progress", "--set", "limit_train=512", "--set", "limit_test=256", "--set",
         "batch_size=32", "--set", "deterministic=true"]  # fmt: skip


@needs_data
def test_real_run(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--preset", "demo", "--out", str(out), "--epochs", "1", *SMALL]
    assert main([*argv, "--set", "max_steps_per_epoch=4"]) == 0
    printed = capsys.readouterr().out
    assert "finished: 1/1 epochs of mnist_conv + arelu on fashion_mnist" in printed
    assert "run directory" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["params"] == 12936  # MNIST-Conv + AReLU
    assert load_checkpoint(out / "checkpoint.pt")["global_step"] == 4
    assert main(argv) == 2  # the run directory is taken
    assert "--resume" in capsys.readouterr().err


@needs_data
@pytest.mark.slow
def test_real_resume_is_exact(tmp_path):
    """Through the real loaders (set_epoch) and model registry: 1 + 1 epochs == 2 epochs.
    (Constant lr: the demo's cosine schedule depends on the number of epochs.)"""
    args = ["--preset", "demo", *SMALL, "--set", "schedule=constant"]
    assert main([*args, "--out", str(tmp_path / "straight"), "--epochs", "2"]) == 0
    assert main([*args, "--out", str(tmp_path / "split"), "--epochs", "1"]) == 0
    assert main([*args, "--out", str(tmp_path / "split"), "--epochs", "2", "--resume"]) == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    summary = json.loads((tmp_path / "split" / "summary.json").read_text())
    assert summary["epochs_completed"] == 2
    assert TrainConfig.from_yaml(tmp_path / "split" / "config.yaml").epochs == 2


@needs_data
def test_real_divergence_exits_3(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--preset", "demo", "--out", str(out), "--lr", "1e6", "momentum=0", *SMALL]
    assert main(argv) == 3
    assert "diverged" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_data
@pytest.mark.slow
def test_torchrun_cli_matches_one_process(tmp_path):
    """`torchrun -m attnact.train.cli` with 2 processes vs 1: MNIST-Conv has no BatchNorm, the
    data loader's shards of a global batch are exactly the one-process batch, so the weights
    agree up to float summation order (tolerance 1e-5)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    common = ["-m", "attnact.train.cli", "--preset", "demo", "--epochs", "1", *SMALL]
    torchrun = [
        "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
    ]  # fmt: skip
    for name, prefix in (("one", []), ("two", torchrun)):
        proc = subprocess.run(
            [sys.executable, *prefix, *common, "--out", str(tmp_path / name)],
            env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert proc.stdout.count("finished: 1/1 epochs") == 1  # printed by rank 0 only
    one = load_checkpoint(tmp_path / "one" / "checkpoint.pt")
    two = load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    diff = max((one["model"][k] - two["model"][k]).abs().max().item() for k in one["model"])
    assert diff < 1e-5, diff
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["world_size"] == 2
    assert s1["final"]["test_top1"] == pytest.approx(s2["final"]["test_top1"], abs=0.5)
    assert torch.isfinite(torch.tensor(s2["final"]["test_loss"]))


def test_overrides_may_follow_flags_in_any_order(capsys):
    from attnact.cli import main

    assert main(["train", "--epochs", "1", "lr=0.1", "--seed", "3", "batch_size=64",
                 "--print-config"]) == 0
    printed = capsys.readouterr().out
    for line in ("lr: 0.1", "seed: 3", "batch_size: 64", "epochs: 1"):
        assert line in printed.splitlines()
    with pytest.raises(SystemExit):
        main(["train", "--epochs", "1", "lr=0.1", "--bogus", "--print-config"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_compare_reads_its_config_through_the_same_path_as_train(monkeypatch, tmp_path):
    """compare --limit-train/--batch-size/--config/key=value resolve exactly as train's."""
    import attnact.experiments.compare as cmp
    from attnact.cli import main

    seen = {}

    def fake_compare(acts, config, out, **kw):
        seen["config"] = config
        (out / "table.md").parent.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text("t")
        return type("R", (), {"files": {}})()

    monkeypatch.setattr(cmp, "compare", fake_compare)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 0.5\nepochs: 4\n")
    args = ["--preset", "demo", "--config", str(cfg), "--limit-train", "256", "--epochs", "2",
            "limit_test=100", "--batch-size", "64", "momentum=0.5"]
    assert main(["compare", "--acts", "relu", "--out", str(tmp_path / "o"), *args]) == 0
    from attnact.cli import build_parser
    from attnact.train.cli import config_from_args, parse_args_with_overrides

    expected = config_from_args(parse_args_with_overrides(build_parser(), ["train", *args]))
    assert seen["config"] == expected.replace(out_dir=None)
    assert (seen["config"].lr, seen["config"].epochs, seen["config"].limit_train) == (0.5, 2, 256)


def test_warmup_is_checked_on_the_final_config_and_nested_floats_are_numbers():
    # the flag shortens the run below the preset's 5 warm-up epochs; a later override fixes it
    c = config_from_args(parse(["--preset", "atac-imagenet", "--epochs", "3", "warmup_epochs=1",
                                "act_kwargs.alpha=1e30"]))
    assert (c.epochs, c.warmup_epochs, c.act_kwargs) == (3, 1, {"alpha": 1e30})
    c = config_from_args(parse(["--preset", "atac-imagenet", "epochs=3", "--set",
                                "warmup_epochs=0"]))
    assert (c.epochs, c.warmup_epochs) == (3, 0)
    with pytest.raises(ValueError, match=r"warmup_epochs \(5\) must be less than epochs \(3\)"):
        config_from_args(parse(["--preset", "atac-imagenet", "--epochs", "3"]))
