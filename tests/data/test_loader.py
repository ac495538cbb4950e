"""TensorLoader: determinism per (seed, epoch), resume, DDP shards, augmentation, normalisation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from attnact.data import TensorLoader, dataset_info, load_arrays, make_loaders

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def _data(n=21, c=3, h=8, w=8, seed=0):
    """Random images (so every crop/flip view is distinct) and labels = sample index."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8), torch.arange(n)


def _epoch(loader, epoch=None, **kw):
    if epoch is not None:
        loader.set_epoch(epoch, **kw)
    return [(x.clone(), y.clone()) for x, y in loader]


def _labels(batches):
    return torch.cat([y for _, y in batches]).tolist()


def _same(a, b):
    return len(a) == len(b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )


def test_same_seed_and_epoch_give_the_same_batches_whenever_asked():
    x, y = _data()
    kw = {"batch_size": 4, "augment": "cifar", "seed": 7}
    a, b = TensorLoader(x, y, **kw), TensorLoader(x, y, **kw)
    e3 = _epoch(a, 3)
    _epoch(b, 0), _epoch(b, 1)  # history must not matter
    assert _same(_epoch(b, 3), e3)
    assert _same(_epoch(a, 3), e3)
    assert sorted(_labels(e3)) == list(range(21))
    assert not _same(_epoch(a, 4), e3)
    assert _labels(_epoch(a, 4)) != _labels(e3)
    other_seed = TensorLoader(x, y, **{**kw, "seed": 8})
    assert _labels(_epoch(other_seed, 3)) != _labels(e3)


def test_resume_mid_epoch_and_auto_advance():
    x, y = _data()
    loader = TensorLoader(x, y, batch_size=4, augment="cifar", seed=1)
    full = _epoch(loader, 2)
    assert len(full) == len(loader) == 6
    assert _same(_epoch(loader, 2, start_batch=4), full[4:])
    # Without set_epoch, each complete pass moves on to the next epoch.
    fresh = TensorLoader(x, y, batch_size=4, augment="cifar", seed=1)
    assert _labels(list(fresh)) == _labels(_epoch(loader, 0))
    assert _same(_epoch(fresh), _epoch(loader, 1))
    with pytest.raises(ValueError, match="start_batch"):
        loader.set_epoch(0, start_batch=7)


@pytest.mark.parametrize("n", [20, 21, 23])
def test_two_rank_shards_are_disjoint_and_cover_the_one_rank_epoch(n):
    x, y = _data(n)
    kw = {"batch_size": 3, "augment": "cifar", "seed": 5}
    single = _epoch(TensorLoader(x, y, **kw), 1)
    order = _labels(single)
    ranks = [TensorLoader(x, y, rank=r, world_size=2, **kw) for r in (0, 1)]
    shards = [_epoch(r, 1) for r in ranks]
    per = n // 2
    assert [r.num_samples for r in ranks] == [per, per]  # equal: ranks step in lockstep
    assert len(ranks[0]) == len(ranks[1]) == -(-per // 3)
    l0, l1 = _labels(shards[0]), _labels(shards[1])
    assert not set(l0) & set(l1)
    # Rank r takes positions r, r+2, … of the same permutation; the last n mod 2 are dropped.
    assert l0 == order[0 : 2 * per : 2] and l1 == order[1 : 2 * per : 2]
    # A sample's augmented view is the same whatever the world size.
    views = {int(lab): img for xb, yb in single for img, lab in zip(xb, yb, strict=True)}
    for xb, yb in shards[0] + shards[1]:
        for img, lab in zip(xb, yb, strict=True):
            assert torch.equal(img, views[int(lab)])


def test_ranks_batch_b_together_is_the_one_process_global_batch_b():
    x, y = _data(50)
    kw = {"augment": "cifar", "seed": 9, "drop_last": True}
    single = _epoch(TensorLoader(x, y, batch_size=12, **kw), 2)
    ranks = [
        _epoch(TensorLoader(x, y, batch_size=4, rank=r, world_size=3, **kw), 2) for r in range(3)
    ]
    assert len(single) == len(ranks[0]) == 4
    for b, (xs, ys) in enumerate(single):
        together = torch.cat([ranks[r][b][1] for r in range(3)])
        assert sorted(together.tolist()) == sorted(ys.tolist())
        views = dict(zip(ys.tolist(), xs, strict=True))
        for r in range(3):
            for img, lab in zip(*ranks[r][b], strict=True):
                assert torch.equal(img, views[int(lab)])


def test_shards_without_dropping_cover_every_sample_once():
    x, y = _data(23)
    shards = [
        _labels(
            _epoch(TensorLoader(x, y, batch_size=4, rank=r, world_size=3, drop_remainder=False))
        )
        for r in range(3)
    ]
    assert [len(s) for s in shards] == [8, 8, 7]
    assert sorted(lab for shard in shards for lab in shard) == list(range(23))


def _views(img: np.ndarray, pad: int, flips: bool) -> list[np.ndarray]:
    """Every crop (and flip) view of one C×H×W image, computed the obvious way."""
    c, h, w = img.shape
    padded = np.zeros((c, h + 2 * pad, w + 2 * pad), img.dtype)
    padded[:, pad : pad + h, pad : pad + w] = img
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            view = padded[:, dy : dy + h, dx : dx + w]
            out.append(view)
            if flips:
                out.append(view[:, :, ::-1])
    return out


@pytest.mark.parametrize("augment", ["cifar", "crop", "flip"])
def test_augmentation_yields_only_valid_shifted_or_flipped_views(augment):
    x, y = _data(64)
    # mean 0, std 1/255 → the float batch equals the uint8 pixels, so views compare exactly.
    loader = TensorLoader(x, y, batch_size=16, augment=augment, mean=(0.0,), std=(1 / 255,), seed=3)
    crops = augment in ("cifar", "crop")
    flips = augment in ("cifar", "flip")
    changed = flipped = 0
    for xb, yb in _epoch(loader, 0):
        for img, lab in zip(xb, yb, strict=True):
            got = img.round().to(torch.uint8).numpy()
            orig = x[lab].numpy()
            candidates = _views(orig, 4 if crops else 0, flips)
            assert any(np.array_equal(got, v) for v in candidates), f"sample {lab}: not a view"
            changed += not np.array_equal(got, orig)
            flipped += flips and any(
                np.array_equal(got, v[:, :, ::-1]) for v in _views(orig, 4 if crops else 0, False)
            )
    assert changed > 16  # P(identity view) is 1/162, 1/81 or 1/2 per sample (seeded anyway)
    assert (flipped > 10) == flips


def test_one_image_crop_matches_a_hand_computed_reference():
    img = torch.arange(2 * 5 * 6, dtype=torch.uint8).view(1, 2, 5, 6)
    loader = TensorLoader(img, torch.zeros(1), batch_size=1, augment="crop", crop_padding=2)
    loader.set_epoch(0)
    shard = loader._shard(0)  # the draws used for this epoch
    dy, dx = int(shard.shift[0, 0]), int(shard.shift[1, 0])
    ref = np.zeros((2, 9, 10), np.uint8)
    ref[:, 2:7, 2:8] = img[0].numpy()
    ref = ref[:, dy : dy + 5, dx : dx + 6]
    (xb, _) = next(iter(loader))
    np.testing.assert_array_equal((xb[0] * 255).round().to(torch.uint8).numpy(), ref)


def test_normalisation_uses_catalog_statistics(tmp_path, make_mnist):
    arrays = make_mnist(tmp_path / "fashion_mnist")
    train, test, info = make_loaders("fashion_mnist", batch_size=8, data_dir=tmp_path)
    assert info.name == "fashion_mnist" and train.augment == "none" and test.augment == "none"
    xb, yb = next(iter(test))  # evaluation keeps dataset order
    ref = (arrays["test_x"][:8].astype(np.float32) / 255 - info.mean[0]) / info.std[0]
    np.testing.assert_allclose(xb[:, 0].numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(yb.numpy(), arrays["test_y"][:8])
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert len(test) == 2 and len(train) == 2  # 10 test → 8 + 2; 20 train → 2 full batches of 8


def test_pad_to_and_limit(tmp_path, make_mnist):
    arrays = make_mnist(tmp_path / "fashion_mnist", n_train=30)
    train, test, info = make_loaders(
        "fashion_mnist", batch_size=4, data_dir=tmp_path, pad_to=32, limit_train=9, limit_test=5
    )
    assert train.num_samples == 9 and test.num_samples == 5
    seen = torch.cat([xb for xb, _ in _epoch(test, 0)])
    assert seen.shape == (5, 1, 32, 32)
    zero = -info.mean[0] / info.std[0]
    border = torch.cat([seen[..., :2, :].flatten(), seen[..., -2:, :].flatten()])
    torch.testing.assert_close(border, torch.full_like(border, zero))
    centre = (seen[:, 0, 2:30, 2:30] * info.std[0] + info.mean[0]) * 255
    np.testing.assert_allclose(centre.numpy(), arrays["test_x"][:5], atol=1e-3)
    # limit takes the first samples: with drop_last off every one of them appears once.
    small = TensorLoader(*_data(30), batch_size=4, limit=9, seed=2)
    assert sorted(_labels(_epoch(small, 0))) == list(range(9))


def test_channels_last_and_argument_errors():
    x, y = _data(6)
    xb, _ = next(iter(TensorLoader(x, y, batch_size=6, channels_last=True)))
    assert xb.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=r"augment must be one of \('none', 'crop', 'flip'"):
        TensorLoader(x, y, batch_size=2, augment="mixup")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="drop_last=True leaves no batches"):
        TensorLoader(x, y, batch_size=8, drop_last=True)
    with pytest.raises(ValueError, match="pad_to=4 is smaller"):
        TensorLoader(x, y, batch_size=2, pad_to=4)
    with pytest.raises(ValueError, match="mean needs 1 or 3 values"):
        TensorLoader(x, y, batch_size=2, mean=(0.1, 0.2), std=(1.0, 1.0))
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        TensorLoader(x, y, batch_size=2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="uint8 N×C×H×W"):
        TensorLoader(x.float(), y, batch_size=2)


def test_default_augmentation_per_dataset():
    assert dataset_info("cifar10").default_augment == "cifar"
    assert dataset_info("cifar100").default_augment == "cifar"
    assert dataset_info("svhn").default_augment == "crop"
    for name in ("mnist", "fashion_mnist", "kmnist"):
        assert dataset_info(name).default_augment == "none"


def test_cifar_and_svhn_through_make_loaders(tmp_path, make_cifar10, make_svhn):
    (tmp_path / "cifar10").mkdir()
    make_cifar10(tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    train, test, _ = make_loaders("cifar10", batch_size=4, data_dir=tmp_path, seed=1)
    assert train.augment == "cifar" and train.num_samples == 20 and test.num_samples == 4
    xb, _ = next(iter(train))
    assert xb.shape == (4, 3, 32, 32)
    make_svhn(tmp_path / "train_32x32.mat", n=12)
    make_svhn(tmp_path / "test_32x32.mat", n=5, seed=1)
    train, test, _ = make_loaders("svhn", batch_size=4, data_dir=tmp_path)
    assert train.augment == "crop" and len(train) == 3 and len(test) == 2
    x, y = load_arrays("svhn", "test", tmp_path)
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.uint8 and y.max() <= 9


@pytest.mark.skipif(importlib.util.find_spec("PIL") is None, reason="Pillow not installed")
def test_imagenet_folders_through_make_loaders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("n02", "n01"):
            (tmp_path / "imagenet" / split / cls).mkdir(parents=True)
            for i in range(3):
                arr = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / "imagenet" / split / cls / f"{i}.png")
    train, test, _ = make_loaders("imagenet", batch_size=4, data_dir=tmp_path, num_workers=0)
    assert len(train) == 1 and len(test) == 2  # drop_last for training; 6 = 4 + 2 for eval
    a = _epoch(train, 2)
    assert a[0][0].shape == (4, 3, 224, 224)
    assert _same(a, _epoch(train, 2))
    assert sorted(_labels(_epoch(test, 0))) == [0, 0, 0, 1, 1, 1]


@pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(), reason="no Debian copy")
def test_real_fashion_mnist_loads():
    x, y = load_arrays("fashion_mnist", "test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [1000] * 10
    info = dataset_info("fashion_mnist")
    xf = x.float() / 255  # the catalog statistics describe the training set; test is close
    assert abs(xf.mean().item() - info.mean[0]) < 0.01 and abs(xf.std().item() - info.std[0]) < 0.01
