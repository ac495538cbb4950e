"""Worker for test_distributed.py: one fit() of a BN-free tiny model on the fake data.

Run as ``python ddp_worker.py OUT`` (one process) or under
``python -m torch.distributed.run --nproc-per-node 2 ddp_worker.py OUT``; both use the same GLOBAL
batch. Rank 0 saves the final weights and the result to OUT/weights.pt and OUT/result.json.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

from attnact.train import TrainConfig, fit

spec = importlib.util.spec_from_file_location("fakes", Path(__file__).with_name("fakes.py"))
fakes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fakes)

GLOBAL_BATCH = 32


def main(out: Path) -> None:
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cfg = TrainConfig(
        model="tiny",
        dataset="fake",
        epochs=2,
        batch_size=GLOBAL_BATCH,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        seed=0,
        deterministic=True,
        progress=False,
        out_dir=str(out / "run"),
    )
    # Rank 1 starts from other weights on purpose: DDP must broadcast rank 0's.
    torch.manual_seed(0 if rank == 0 else 100 + rank)
    model = fakes.tiny_model(bn=False, dropout=0.0)
    loaders = fakes.make_loaders(
        batch_size=GLOBAL_BATCH // world, rank=rank, world_size=world, seed=0
    )
    result = fit(cfg, model=model, loaders=loaders)
    if rank == 0:
        torch.save(result.model.state_dict(), out / "weights.pt")
        (out / "result.json").write_text(
            json.dumps({"world_size": world, "history": result.history})
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
