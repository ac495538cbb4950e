"""Stand-ins for attnact.data loaders and a tiny model, shared by the train tests and the torchrun
worker script (loaded by file path: the tests run in importlib mode without packages).

FakeLoader has the TensorLoader interface the engine relies on: iteration yields
(float images N x C x H x W, int64 labels), ``len()`` is the number of batches per rank and
``set_epoch(epoch)`` makes order and augmentation a function of (seed, epoch) only. Sharding
splits every GLOBAL batch of ``batch_size * world_size`` samples into contiguous per-rank slices,
so W ranks together see exactly the batches one process sees with the global batch.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn


def synthetic(n: int, *, num_classes: int, channels: int, size: int, seed: int):
    """Learnable data: a fixed random prototype per class plus noise."""
    g = torch.Generator().manual_seed(1234)
    protos = torch.randn(num_classes, channels, size, size, generator=g)
    g.manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = protos[labels] + 0.8 * torch.randn(n, channels, size, size, generator=g)
    return images, labels


class FakeLoader:
    def __init__(
        self, images, labels, *, batch_size, shuffle, seed=0, rank=0, world_size=1, augment=False
    ):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.augment = rank, world_size, augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        global_batch = self.batch_size * self.world_size
        if self.shuffle:  # training: drop the last incomplete global batch
            return len(self.labels) // global_batch
        return -(-len(self.labels) // global_batch)

    def __iter__(self):
        n = len(self.labels)
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        global_batch = self.batch_size * self.world_size
        for i in range(len(self)):
            idx = order[i * global_batch : (i + 1) * global_batch]
            flips = torch.rand(len(idx), generator=g) < 0.5
            idx = idx[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            flips = flips[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            x = self.images[idx].clone()
            if self.augment:
                x[flips] = x[flips].flip(-1)
            yield x, self.labels[idx].clone()


def make_loaders(
    *,
    batch_size=16,
    n_train=128,
    n_test=64,
    num_classes=10,
    channels=1,
    size=8,
    seed=0,
    rank=0,
    world_size=1,
    augment=True,
):
    train = synthetic(n_train, num_classes=num_classes, channels=channels, size=size, seed=1)
    test = synthetic(n_test, num_classes=num_classes, channels=channels, size=size, seed=2)
    info = SimpleNamespace(num_classes=num_classes, channels=channels, image_size=size)
    return (
        FakeLoader(
            *train,
            batch_size=batch_size,
            shuffle=True,
            seed=seed,
            rank=rank,
            world_size=world_size,
            augment=augment,
        ),
        FakeLoader(*test, batch_size=batch_size, shuffle=False, rank=rank, world_size=world_size),
        info,
    )


def tiny_model(
    num_classes: int = 10, *, channels: int = 1, bn: bool = True, dropout: float = 0.2
) -> nn.Module:
    """Conv (+BN) + AReLU + pooling + dropout + linear: learnable parameters of every kind the
    optimizer groups care about, and dropout so that exact resumption needs the RNG state."""
    from attnact import AReLU

    layers: list[nn.Module] = [nn.Conv2d(channels, 8, 3, padding=1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(8))
    layers += [AReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(32, num_classes))
    return nn.Sequential(*layers)
