"""In-memory tensor loading (airbench style), with per-batch augmentation and DDP sharding.

The whole dataset is one uint8 tensor (Fashion-MNIST: 47 MB, CIFAR-10: 150 MB) on the target
device; each batch is gathered, padded/cropped/flipped as uint8 and only then converted to
normalised float32. That avoids a Python-level transform per image, which on CPU costs more than
the small networks this library trains.

Determinism: epoch ``e`` of a loader with seed ``s`` draws its permutation and every sample's
augmentation from a generator seeded by ``(s, e)`` alone. So ``set_epoch(e)`` gives the same
batches whenever it is called (exact resume, also mid-epoch via ``start_batch``), and a sample's
crop/flip in an epoch is the same for any ``world_size`` — sharding only decides which rank sees
it.

Sharding (``world_size > 1``): all ranks compute the same permutation; rank ``r`` takes
positions ``r, r + W, r + 2W, …``. With ``drop_remainder=True`` (training) the last
``N mod W`` positions of each epoch's permutation are dropped so all ranks get ``N // W`` samples
and step in lockstep (the dropped samples differ from epoch to epoch when shuffling). Striding
makes the ranks' batch ``b`` together exactly batch ``b`` of a one-process loader with
``batch_size × world_size`` (same seed and epoch; up to the dropped remainder in a final partial
batch), so DDP sees the single-process run's samples, global batch by global batch. With
``drop_remainder=False`` (evaluation) nothing is dropped: shards differ in size by at most one
and together cover every sample exactly once, so all-reduced counts are exact — do not run
per-batch collectives then.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F

from attnact._checks import check_bool, check_int
from attnact.data.catalog import DatasetInfo, dataset_info, find_split_files
from attnact.data.formats import ImageFolder

__all__ = [
    "AUGMENTATIONS",
    "FolderLoader",
    "TensorLoader",
    "epoch_generator",
    "load_arrays",
    "make_loaders",
]

Augment = Literal["none", "crop", "flip", "cifar"]
AUGMENTATIONS: tuple[str, ...] = ("none", "crop", "flip", "cifar")
Batch = tuple[torch.Tensor, torch.Tensor]


def load_arrays(
    name: str, split: str, data_dir: str | os.PathLike[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a whole split: uint8 images ``N×C×H×W`` and int64 labels ``N`` (CPU tensors).

    Raises:
        DatasetNotFoundError: the split is not found locally (the message says how to get it).
        ValueError: the files do not hold what the catalog describes.
    """
    info = dataset_info(name)
    info.check_split(split)
    if info.reader is None:
        raise ValueError(
            f"{info.name} is streamed from image folders, not loaded into memory; "
            "use make_loaders() or attnact.data.ImageFolder"
        )
    paths = find_split_files(info.name, split, data_dir)
    images, labels = info.reader(paths, split)
    where = ", ".join(str(p) for p in paths)
    expected = (info.channels, *info.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"{where}: images of shape {tuple(images.shape)}, but {info.name} has "
            f"N×{'×'.join(map(str, expected))}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise ValueError(
            f"{where}: labels span {labels.min()}..{labels.max()}, {info.name} has "
            f"{info.num_classes} classes"
        )
    # Readers may return read-only views of the file buffer; torch wants writable memory.
    images = images if images.flags.writeable else images.copy()
    return (
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.from_numpy(labels.astype(np.int64, copy=False)),
    )


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator determined by ``(seed, epoch)`` alone.

    SeedSequence mixes the pair, so nearby pairs such as (0, 1) and (1, 0) give unrelated
    streams (``seed + epoch`` would make them collide).
    """
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass(frozen=True)
class _Shard:
    """One rank's view of one epoch: global sample indices and their augmentation draws."""

    index: torch.Tensor  # int64, positions into the (limited) dataset
    shift: torch.Tensor  # int64 2×M, crop offsets (dy, dx) in [0, 2·pad]
    flip: torch.Tensor  # bool M


def _shard_positions(n: int, rank: int, world_size: int, drop_remainder: bool) -> torch.Tensor:
    stop = (n // world_size) * world_size if drop_remainder else n
    return torch.arange(rank, stop, world_size)


def _check_common(
    batch_size: int, seed: int, rank: int, world_size: int, limit: int | None
) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank}, "
            f"world_size={world_size}"
        )
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")


class _Epochs:
    """Epoch bookkeeping shared by the loaders: length, ``set_epoch`` and resume."""

    batch_size: int
    drop_last: bool
    epoch: int
    _start_batch: int
    _positions: torch.Tensor

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return len(self._positions)

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting at batch ``start_batch`` (resume).

        Without calls to ``set_epoch`` the loader moves to the next epoch by itself after each
        complete pass; calling it every epoch is the reproducible way.
        """
        if epoch < 0 or not 0 <= start_batch <= len(self):
            raise ValueError(
                f"need epoch >= 0 and 0 <= start_batch <= {len(self)}, got {epoch}, {start_batch}"
            )
        self.epoch = epoch
        self._start_batch = start_batch


class TensorLoader(_Epochs):
    """Batches of normalised float32 images from a uint8 ``N×C×H×W`` tensor held once.

    Args:
        images, labels: uint8 ``N×C×H×W`` and integer ``N`` tensors.
        batch_size: samples per batch (per rank).
        shuffle: a fresh permutation each epoch (else dataset order).
        augment: ``"none"``; ``"crop"`` (random crop after zero-padding by ``crop_padding``,
            torchvision's ``RandomCrop(size, padding=4)``); ``"flip"`` (horizontal, p = 1/2);
            ``"cifar"`` (crop + flip).
        mean, std: per-channel statistics in [0, 1] units; None: images are only scaled to [0, 1].
        pad_to: zero-pad images symmetrically to ``pad_to×pad_to`` first (28→32 for hosts that
            expect 32×32 inputs).
        drop_last: drop each epoch's final partial batch.
        seed: seeds order and augmentation, with the epoch.
        rank, world_size: this process's shard (see the module docstring).
        device: where the uint8 data lives and batches are built.
        channels_last: yield batches in ``torch.channels_last`` memory format.
        limit: use only the first ``limit`` samples.
        drop_remainder: equal shards by dropping ``N mod world_size`` samples per epoch (True),
            or cover every sample with shards differing by one (False).
        crop_padding: zero padding (pixels per side) of the random crop.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool = True,
        augment: Augment = "none",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        pad_to: int | None = None,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        limit: int | None = None,
        drop_remainder: bool = True,
        crop_padding: int = 4,
    ) -> None:
        _check_common(batch_size, seed, rank, world_size, limit)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be a uint8 N×C×H×W tensor, got {images.dtype} {tuple(images.shape)}"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(
                f"labels must be 1-D with one per image: {tuple(labels.shape)} for {len(images)}"
            )
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        _, channels, height, width = images.shape
        if pad_to is not None and pad_to < max(height, width):
            raise ValueError(
                f"pad_to={pad_to} is smaller than the images ({height}×{width}); "
                f"use None or >= {max(height, width)}"
            )
        if limit is not None:
            images, labels = images[:limit], labels[:limit]  # views: no copy
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.pad_to = pad_to
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.channels_last = channels_last
        self.drop_remainder = drop_remainder
        self.crop_padding = crop_padding
        self.epoch = 0
        self._start_batch = 0
        self._positions = _shard_positions(len(self.images), rank, world_size, drop_remainder)
        if drop_last and len(self) == 0:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {self.num_samples} samples per rank, so "
                "drop_last=True leaves no batches; lower batch_size or pass drop_last=False"
            )
        # Normalisation folded into one multiply-add on the uint8 values: x·scale + bias.
        self.scale, self.bias = _affine(channels, mean, std, self.device)

    def _shard(self, epoch: int) -> _Shard:
        n = len(self.images)
        g = epoch_generator(self.seed, epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        # Drawn for every sample of the epoch whatever the augmentation, after the permutation,
        # so order and per-sample draws do not depend on augment, rank or world_size.
        shift = torch.randint(0, 2 * self.crop_padding + 1, (2, n), generator=g)
        flip = torch.randint(0, 2, (n,), generator=g, dtype=torch.bool)
        pos = self._positions
        return _Shard(
            order[pos].to(self.device), shift[:, pos].to(self.device), flip[pos].to(self.device)
        )

    def __iter__(self) -> Iterator[Batch]:
        shard = self._shard(self.epoch)
        start, self._start_batch = self._start_batch, 0
        for b in range(start, len(self)):
            lo = b * self.batch_size
            hi = min(lo + self.batch_size, self.num_samples)
            yield self._batch(shard, lo, hi)
        self.epoch += 1

    def _batch(self, shard: _Shard, lo: int, hi: int) -> Batch:
        idx = shard.index[lo:hi]
        x = self.images[idx]
        if self.pad_to is not None:
            x = _pad_to(x, self.pad_to)
        crop = self.crop_padding if self.augment in ("crop", "cifar") else 0
        flip = shard.flip[lo:hi] if self.augment in ("flip", "cifar") else None
        if crop or flip is not None:
            x = _crop_flip(x, shard.shift[:, lo:hi], flip, crop)
        out = x.to(torch.float32, memory_format=torch.contiguous_format)
        # Normalise in place on a B×C×(H·W) view: broadcasting a 1×C×1 vector over the last
        # dimension is several times faster than a 1×C×1×1 one (TensorIterator strides).
        out.view(out.shape[0], out.shape[1], -1).mul_(self.scale).add_(self.bias)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out, self.labels[idx]


def _affine(
    channels: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    m = torch.tensor(mean if mean is not None else [0.0], dtype=torch.float64)
    s = torch.tensor(std if std is not None else [1.0], dtype=torch.float64)
    for what, t in (("mean", m), ("std", s)):
        if t.ndim != 1 or len(t) not in (1, channels):
            raise ValueError(f"{what} needs 1 or {channels} values, got {t.tolist()}")
    if (s <= 0).any():
        raise ValueError(f"std must be positive, got {s.tolist()}")
    scale = (1.0 / (255.0 * s)).to(torch.float32).view(1, -1, 1).to(device)
    bias = (-m / s).to(torch.float32).view(1, -1, 1).to(device)
    return scale, bias


def _pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (size - h) // 2, (size - w) // 2
    if top == 0 and left == 0 and h == w == size:
        return x
    return F.pad(x, (left, size - w - left, top, size - h - top))


def _crop_flip(
    x: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor | None, pad: int
) -> torch.Tensor:
    """Per-image random crop and/or horizontal flip as one gather over the batch.

    Crop: zero-pad by ``pad`` and take the H×W window at (dy, dx) = ``shift[:, i]``; flip: read
    that window's columns right to left where ``flip[i]``. One gather of precomputed flat
    indices beats both advanced indexing and grouping the batch by offset on CPU
    (benchmarks/README.md), and it has no Python loop over images.
    """
    b, c, h, w = x.shape
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
    else:
        shift = torch.zeros_like(shift)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device).expand(b, w)
    if flip is not None:
        cols = torch.where(flip[:, None], w - 1 - cols, cols)
    flat = (shift[0, :, None, None] + rows[None, :, None]) * (w + 2 * pad) + (
        shift[1, :, None, None] + cols[:, None, :]
    )  # B×H×W indices into each padded (H+2p)·(W+2p) plane
    index = flat.view(b, 1, h * w).expand(b, c, h * w)
    return x.reshape(b, c, -1).gather(2, index).view(b, c, h, w)


# ------------------------------------------------------------------------- image folders


class _SeededItems(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Adapter: items are requested as (index, seed) so augmentation is reproducible."""

    def __init__(self, folder: ImageFolder) -> None:
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item
        return self.folder.load(index, generator=torch.Generator().manual_seed(seed))


class FolderLoader(_Epochs):
    """The :class:`TensorLoader` interface over an :class:`ImageFolder`, decoded by workers.

    Same order, sharding, ``set_epoch`` and resume semantics as :class:`TensorLoader`; each
    sample's augmentation is seeded from ``(seed, epoch)`` too, so results do not depend on
    ``num_workers``.
    """

    def __init__(
        self,
        folder: ImageFolder,
        *,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        limit: int | None = None,
        drop_remainder: bool = True,
        num_workers: int | None = None,
    ) -> None:
        _check_common(batch_size, seed, rank, world_size, limit)
        self.folder = folder
        self.n = min(len(folder), limit) if limit is not None else len(folder)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        self.epoch = 0
        self._start_batch = 0
        self._positions = _shard_positions(self.n, rank, world_size, drop_remainder)

    def __iter__(self) -> Iterator[Batch]:
        g = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        seeds = torch.randint(0, 2**62, (self.n,), generator=g)
        items = list(
            zip(order[self._positions].tolist(), seeds[self._positions].tolist(), strict=True)
        )
        start, self._start_batch = self._start_batch, 0
        batches = [
            items[b * self.batch_size : (b + 1) * self.batch_size] for b in range(start, len(self))
        ]
        loader = torch.utils.data.DataLoader(
            _SeededItems(self.folder),
            batch_sampler=batches,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        for x, y in loader:
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=memory_format)
            yield x, y.to(self.device, non_blocking=True)
        self.epoch += 1


# -------------------------------------------------------------------------------- builder


def _check_loader_arguments(**values: object) -> None:
    """Every argument of :func:`make_loaders` checked by name before any file is read (the
    loaders' own checks cannot say which of the two batch sizes or limits was wrong)."""
    check_int("batch_size", values["batch_size"])
    for name in ("test_batch_size", "pad_to", "limit_train", "limit_test"):
        if values[name] is not None:
            check_int(name, values[name])
    check_int("seed", values["seed"], 0)
    check_int("world_size", values["world_size"])
    check_int("rank", values["rank"], 0, values["world_size"] - 1,  # type: ignore[operator]
              why="0 <= rank < world_size")
    check_bool("channels_last", values["channels_last"])
    check_bool("drop_last", values["drop_last"])
    if values["num_workers"] is not None:
        check_int("num_workers", values["num_workers"], 0)


def _check_device(device: object) -> torch.device:
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be a string or torch.device, got {device!r}")
    try:
        return torch.device(device)
    except RuntimeError as err:  # torch's own message: "Invalid device string: 'gpu0'"
        raise ValueError(f"device {device!r} is not a torch device ({err})") from None


def make_loaders(
    name: str,
    *,
    batch_size: int,
    data_dir: str | os.PathLike[str] | None = None,
    augment: str | None = None,
    pad_to: int | None = None,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    limit_train: int | None = None,
    limit_test: int | None = None,
    test_batch_size: int | None = None,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    drop_last: bool = True,
    num_workers: int | None = None,
) -> tuple[TensorLoader | FolderLoader, TensorLoader | FolderLoader, DatasetInfo]:
    """Training and evaluation loaders for a catalogued dataset, normalised with its mean/std.

    ``augment=None`` takes the catalog's default: ``"cifar"`` (crop + flip) for CIFAR-10/100,
    ``"crop"`` for SVHN (flipping digits makes non-digits), ``"none"`` for the MNIST family (the
    usual protocol; characters are not flip-invariant), Inception-style crops for ImageNet.
    Training shuffles, drops the last partial batch (a batch of one breaks BatchNorm) and drops
    the shard remainder (lockstep DDP); evaluation keeps every sample, in order, unaugmented.
    ``num_workers`` applies to ImageNet folders only.
    """
    info = dataset_info(name)
    _check_loader_arguments(batch_size=batch_size, test_batch_size=test_batch_size,
                            pad_to=pad_to, seed=seed, rank=rank, world_size=world_size,
                            limit_train=limit_train, limit_test=limit_test,
                            channels_last=channels_last, drop_last=drop_last,
                            num_workers=num_workers)
    device = _check_device(device)
    augment = info.default_augment if augment is None else augment
    test_batch_size = test_batch_size or batch_size
    common: dict[str, Any] = {
        "seed": seed,
        "rank": rank,
        "world_size": world_size,
        "device": device,
        "channels_last": channels_last,
    }
    norm: dict[str, Any]  # the normalisation arguments (the two branches take different ones)
    if info.reader is None:  # image folders (ImageNet)
        if augment not in ("imagenet", "none"):
            raise ValueError(
                f"augment for {info.name} must be 'imagenet' or 'none', got {augment!r}"
            )
        if pad_to is not None:
            raise ValueError(f"pad_to does not apply to {info.name} (images are cropped to size)")
        (train_dir,) = find_split_files(info.name, info.train_split, data_dir)
        (eval_dir,) = find_split_files(info.name, info.eval_split, data_dir)
        size, norm = info.image_size[0], {"mean": info.mean, "std": info.std}
        train_tf: Literal["train", "eval"] = "train" if augment == "imagenet" else "eval"
        train: TensorLoader | FolderLoader = FolderLoader(
            ImageFolder(train_dir, transform=train_tf, image_size=size, **norm),
            batch_size=batch_size,
            shuffle=True,
            drop_last=drop_last,
            limit=limit_train,
            num_workers=num_workers,
            **common,
        )
        test: TensorLoader | FolderLoader = FolderLoader(
            ImageFolder(eval_dir, transform="eval", image_size=size, **norm),
            batch_size=test_batch_size,
            shuffle=False,
            drop_remainder=False,
            limit=limit_test,
            num_workers=num_workers,
            **common,
        )
        return train, test, info
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS} or None, got {augment!r}")
    x_train, y_train = load_arrays(info.name, info.train_split, data_dir)
    x_test, y_test = load_arrays(info.name, info.eval_split, data_dir)
    norm = {"mean": info.mean, "std": info.std, "pad_to": pad_to}
    train = TensorLoader(
        x_train,
        y_train,
        batch_size=batch_size,
        shuffle=True,
        augment=cast(Augment, augment),  # checked against AUGMENTATIONS above
        drop_last=drop_last,
        limit=limit_train,
        **norm,
        **common,
    )
    test = TensorLoader(
        x_test,
        y_test,
        batch_size=test_batch_size,
        shuffle=False,
        augment="none",
        drop_remainder=False,
        limit=limit_test,
        **norm,
        **common,
    )
    return train, test, info
