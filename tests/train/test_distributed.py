"""torchrun data parallelism: 2 gloo processes on the CPU vs 1 process with the same global batch.

The model has no BatchNorm: with BN each process normalises with the statistics of its half
batch, so 2 processes are not the same computation as 1 (SyncBatchNorm, which would make them
the same, exists only for accelerators). Without BN, DDP's averaged gradient equals the
global-batch gradient up to float rounding (summation order); after 2 epochs x 4 SGD steps the
weights agree to 1e-5.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnact.train import load_checkpoint
from attnact.train.distributed import (
    DistEnv,
    per_rank_batch,
    select_device,
    setup_distributed,
    wrap_model,
)

WORKER = Path(__file__).with_name("ddp_worker.py")
TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_per_rank_batch():
    assert per_rank_batch(256, 2) == 128
    with pytest.raises(ValueError, match="not divisible by the world size 3"):
        per_rank_batch(128, 3)


def test_single_process_without_torchrun(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    env = setup_distributed("cpu")
    assert (env.rank, env.world_size, env.is_main, env.distributed) == (0, 1, True, False)
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, env) is model


def test_device_selection():
    assert select_device("cpu", 3) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert select_device("auto", 1) == torch.device("cpu")
        with pytest.raises(ValueError, match="cuda"):
            select_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        select_device("gpu")


def test_sync_bn_on_cpu_is_an_error():
    env = DistEnv(rank=0, world_size=2, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="sync_bn needs a CUDA device"):
        wrap_model(torch.nn.BatchNorm2d(3), env, sync_bn=True)


def run_worker(args, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, *args, str(WORKER), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return torch.load(out / "weights.pt"), json.loads((out / "result.json").read_text())


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    single_w, single = run_worker([], tmp_path / "one")
    torchrun = [
        "-m", "torch.distributed.run",
        "--nnodes", "1",
        "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()),
    ]  # fmt: skip
    ddp_w, ddp = run_worker(torchrun, tmp_path / "two")
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    diff = max((single_w[k] - ddp_w[k]).abs().max().item() for k in single_w)
    print(f"max abs weight difference, 2 processes vs 1: {diff:.3g}")
    assert diff < TOLERANCE, f"max abs weight difference {diff:.3g}"
    # metrics are all-reduced: the same numbers (up to rounding) from the sharded evaluation
    for a, b in zip(single["history"], ddp["history"], strict=True):
        assert a["test_top1"] == pytest.approx(b["test_top1"], abs=1e-9)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-5)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    # only rank 0 wrote the run directory, and it is complete
    run = tmp_path / "two" / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        ".writer.lock",  # rank 0's, the only writer
        "checkpoint.pt",
        "config.yaml",
        "metrics.csv",
        "summary.json",
    ]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished"
    # each rank's RNG state is kept (and the ranks draw different dropout masks)
    rng = load_checkpoint(run / "checkpoint.pt")["rng_per_rank"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])
