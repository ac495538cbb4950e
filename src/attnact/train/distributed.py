"""Data-parallel training under ``torchrun``: process group, device, DDP, metric reduction.

``torchrun --nproc-per-node N -m attnact train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. Each process:

- uses ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU (nothing calls ``.cuda()``);
- joins a process group (``nccl`` on CUDA, ``gloo`` on the CPU);
- trains a :class:`~torch.nn.parallel.DistributedDataParallel` copy of the model on its shard of
  every global batch (``batch_size // world_size`` samples); DDP averages the gradients, so one
  step equals a single-process step on the global batch, except for BatchNorm, which normalises
  with per-process statistics unless ``sync_bn`` (CUDA only) is set;
- sums its metrics with the others (``all_reduce``);
- leaves files, checkpoints and progress bars to rank 0.

Without those variables (a plain ``python`` / ``attnact`` call) everything runs in one process
with no process group.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "DistEnv",
    "all_reduce_sum",
    "barrier",
    "per_rank_batch",
    "select_device",
    "setup_distributed",
    "teardown_distributed",
    "wrap_model",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank, world size, local rank, device.

    ``owns_group`` is true when :func:`setup_distributed` created the process group (and
    :func:`teardown_distributed` should destroy it); a group created by the caller is left alone.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def select_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``cuda:local_rank`` if CUDA is available (or required), else the CPU.

    ``preference``: ``"auto"``, ``"cpu"`` or ``"cuda"`` (an error without CUDA).
    """
    if preference == "cpu":
        return torch.device("cpu")
    if preference not in ("auto", "cuda"):
        raise ValueError(f"device must be one of auto, cpu, cuda; got {preference!r}")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if preference == "cuda":
        raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False")
    return torch.device("cpu")


def setup_distributed(device_preference: str = "auto") -> DistEnv:
    """Read the torchrun environment, pick the device, join (or reuse) the process group."""
    if dist.is_available() and dist.is_initialized():
        # Someone (a test, a notebook, an outer framework) already set up the group: use it.
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK", rank)
        device = select_device(device_preference, local_rank)
        return DistEnv(rank, world, local_rank, device, owns_group=False)

    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = select_device(device_preference, local_rank)
    if world <= 1:
        return DistEnv(0, 1, local_rank, device, owns_group=False)
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    # env:// rendezvous reads MASTER_ADDR / MASTER_PORT, which torchrun sets.
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(minutes=30),
    )
    return DistEnv(rank, world, local_rank, device, owns_group=True)


def teardown_distributed(env: DistEnv, *, clean: bool = True) -> None:
    """Wait for every rank (only after a clean run: a failed rank would never arrive) and
    destroy the process group if :func:`setup_distributed` created it."""
    if not (env.distributed and dist.is_initialized()):
        return
    if clean:
        barrier(env)
    if env.owns_group:
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    """``dist.barrier()`` when distributed; nothing otherwise."""
    if env.distributed and dist.is_initialized():
        if env.device.type == "cuda":
            dist.barrier(device_ids=[env.device.index])
        else:
            dist.barrier()


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Samples per process and step; the global batch must split evenly."""
    if global_batch % world_size:
        raise ValueError(
            f"batch_size={global_batch} (the global batch) is not divisible by the world size "
            f"{world_size}; use a multiple of {world_size}"
        )
    return global_batch // world_size


def wrap_model(model: nn.Module, env: DistEnv, *, sync_bn: bool = False) -> nn.Module:
    """DDP-wrap ``model`` (already on ``env.device``) when distributed; else return it.

    ``sync_bn`` converts BatchNorm to :class:`~torch.nn.SyncBatchNorm`, whose statistics span
    the global batch. PyTorch implements SyncBatchNorm for accelerators only, so on the CPU it
    is an error rather than a silent no-op.
    """
    if not env.distributed:
        return model
    if sync_bn:
        if env.device.type == "cpu":
            raise ValueError(
                "sync_bn needs a CUDA device (torch.nn.SyncBatchNorm has no CPU kernel); on the "
                "CPU each process normalises with its own batch statistics"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (and return it); identity in one process."""
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
