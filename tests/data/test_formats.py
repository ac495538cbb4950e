"""Readers of the real file formats return exactly what was written and reject broken files."""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from attnact.data.formats import ImageFolder, read_cifar, read_idx, read_idx_pair, read_svhn

HAS_PIL = importlib.util.find_spec("PIL") is not None

# ------------------------------------------------------------------------------------ IDX


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_images_and_labels_round_trip(tmp_path, gz, idx):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 20, dtype=np.uint8)
    ip = idx.write(tmp_path / "images", images, gz=gz)
    lp = idx.write(tmp_path / "labels", labels, gz=gz)
    got = read_idx(ip)
    assert got.dtype == np.uint8 and got.shape == (20, 28, 28)
    np.testing.assert_array_equal(got, images)
    x, y = read_idx_pair(ip, lp)
    np.testing.assert_array_equal(x, images)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)


def test_idx_header_is_big_endian_and_other_dtypes_are_native(tmp_path, idx):
    ints = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    floats = np.linspace(-1, 1, 5, dtype=np.float32)
    raw = idx.bytes(ints)
    assert raw[:4] == b"\x00\x00\x0c\x02" and raw[4:12] == b"\x00\x00\x00\x03\x00\x00\x00\x04"
    got = read_idx(idx.write(tmp_path / "i", ints, gz=False))
    np.testing.assert_array_equal(got, ints)
    assert got.dtype.isnative
    np.testing.assert_array_equal(read_idx(idx.write(tmp_path / "f", floats, gz=True)), floats)


def test_idx_gzip_is_detected_by_content_not_suffix(tmp_path, idx):
    images = np.zeros((2, 3, 3), np.uint8)
    path = tmp_path / "no-suffix"
    path.write_bytes(gzip.compress(idx.bytes(images)))
    np.testing.assert_array_equal(read_idx(path), images)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"\x01" + b[1:], "not an IDX file"),
        (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX type code 0x07"),
        (lambda b: b[:-5], "truncated?"),
        (lambda b: b + b"\x00", "holds"),
        (lambda b: b[:6], "truncated IDX header"),
    ],
    ids=["magic", "type", "short", "long", "header"],
)
def test_idx_rejects_broken_files_naming_the_file(tmp_path, mutate, message, idx):
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(mutate(idx.bytes(np.zeros((4, 5, 5), np.uint8))))
    with pytest.raises(ValueError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_idx_truncated_gzip_is_a_value_error(tmp_path, idx):
    blob = gzip.compress(idx.bytes(np.arange(200, dtype=np.uint8).reshape(2, 10, 10)))
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) - 10])
    with pytest.raises(ValueError, match="corrupt or truncated gzip") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_idx_pair_checks_counts_and_rank(tmp_path, idx):
    ip = idx.write(tmp_path / "i", np.zeros((3, 2, 2), np.uint8), gz=False)
    lp = idx.write(tmp_path / "l", np.zeros(4, np.uint8), gz=False)
    with pytest.raises(ValueError, match="4 labels for 3 images"):
        read_idx_pair(ip, lp)
    with pytest.raises(ValueError, match="expected uint8 images N×H×W"):
        read_idx_pair(lp, lp)


def test_mnist_fixture_uses_real_file_names(tmp_path, make_mnist, idx):
    arrays = make_mnist(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f + ".gz" for f in idx.mnist_files)
    x, y = read_idx_pair(
        tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz"
    )
    np.testing.assert_array_equal(x, arrays["test_x"])
    np.testing.assert_array_equal(y, arrays["test_y"])


# ---------------------------------------------------------------------------------- CIFAR


def test_cifar10_from_tarball(tmp_path, make_cifar10):
    path = tmp_path / "cifar-10-python.tar.gz"
    ref = make_cifar10(path)
    with tarfile.open(path) as tar:
        assert "cifar-10-batches-py/data_batch_5" in tar.getnames()
    x, y = read_cifar(path, "train")
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, ref["train_x"])
    np.testing.assert_array_equal(y, ref["train_y"])
    x, y = read_cifar(path, "test")
    np.testing.assert_array_equal(x, ref["test_x"])
    np.testing.assert_array_equal(y, ref["test_y"])


def test_cifar10_from_extracted_directory(tmp_path, make_cifar10):
    path = tmp_path / "cifar-10-python.tar.gz"
    ref = make_cifar10(path)
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "out", filter="data")
    for where in (tmp_path / "out", tmp_path / "out" / "cifar-10-batches-py"):
        x, y = read_cifar(where, "train")
        np.testing.assert_array_equal(x, ref["train_x"])
        np.testing.assert_array_equal(y, ref["train_y"])


def test_cifar100_fine_by_default_coarse_on_request(tmp_path, make_cifar100):
    path = tmp_path / "cifar-100-python.tar.gz"
    ref = make_cifar100(path)
    for split in ("train", "test"):
        x, y = read_cifar(path, split, variant="cifar100")
        np.testing.assert_array_equal(x, ref[f"{split}_x"])
        np.testing.assert_array_equal(y, ref[f"{split}_fine"])
        _, yc = read_cifar(path, split, variant="cifar100", coarse=True)
        np.testing.assert_array_equal(yc, ref[f"{split}_coarse"])


def test_cifar_errors_name_the_problem(tmp_path, make_cifar10):
    path = tmp_path / "cifar-10-python.tar.gz"
    make_cifar10(path)
    with pytest.raises(ValueError, match="no member 'cifar-100-python/train'"):
        read_cifar(path, "train", variant="cifar100")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        read_cifar(path, "val")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="coarse=True needs variant='cifar100'"):
        read_cifar(path, "train", coarse=True)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="corrupt or truncated tar") as err:
        read_cifar(cut, "train")
    assert str(cut) in str(err.value)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_pickles_cannot_run_code(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        blob = pickle.dumps({b"data": _Evil(), b"labels": []})
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(ValueError, match="refusing to unpickle"):
        read_cifar(path, "test")


# ----------------------------------------------------------------------------------- SVHN


def test_svhn_mat_layout_and_label_10_is_digit_0(tmp_path, make_svhn):
    path = tmp_path / "train_32x32.mat"
    x, y = make_svhn(path)
    images, labels = read_svhn(path)
    assert images.shape == (12, 3, 32, 32) and images.dtype == np.uint8
    for i in (0, 5, 11):  # X[:, :, :, i] is image i, H×W×C
        np.testing.assert_array_equal(images[i], x[:, :, :, i].transpose(2, 0, 1))
    expected = y[:, 0].astype(np.int64)
    expected[expected == 10] = 0
    np.testing.assert_array_equal(labels, expected)
    assert labels[0] == 0 and labels.min() >= 0 and labels.max() <= 9


def test_svhn_rejects_wrong_layout(tmp_path):
    import scipy.io

    path = tmp_path / "test_32x32.mat"
    scipy.io.savemat(path, {"X": np.zeros((4, 32, 32, 3), np.uint8), "y": np.ones((4, 1))})
    with pytest.raises(ValueError, match="'X' should be H×W×3×N") as err:
        read_svhn(path)
    assert str(path) in str(err.value)
    scipy.io.savemat(path, {"images": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="no variable 'X'"):
        read_svhn(path)


# -------------------------------------------------------------------------- image folders


def _write_folder(root, sizes=((40, 30), (30, 40), (25, 25))):
    from PIL import Image

    rng = np.random.default_rng(0)
    written = {}
    for cls in ("zebra", "ant", "moth"):  # not in sorted order on purpose
        (root / cls).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            path = root / cls / f"{i}.png"  # PNG: lossless, so decoding is exact
            Image.fromarray(arr).save(path)
            written[path] = arr
    (root / "ant" / "notes.txt").write_text("not an image")
    return written


@pytest.mark.skipif(not HAS_PIL, reason="Pillow not installed")
def test_image_folder_classes_decoding_and_eval_transform(tmp_path):
    written = _write_folder(tmp_path)
    ds = ImageFolder(tmp_path, transform=None)
    assert ds.classes == ["ant", "moth", "zebra"] and len(ds) == 9
    for i, (path, label) in enumerate(ds.samples):
        assert ds.classes[label] == path.parent.name
        np.testing.assert_array_equal(ds.decode(i).permute(1, 2, 0).numpy(), written[path])
    # Eval: shorter side → resize, then the central crop. With resize = the image's shorter side
    # no resampling happens, so the result is exactly the central crop.
    ev = ImageFolder(tmp_path, transform="eval", image_size=20, resize=25)
    x, label = ev[2]  # ant/2.png is 25×25
    arr = written[ev.samples[2][0]]
    assert x.shape == (3, 20, 20) and x.dtype == torch.float32 and label == 0
    ref = torch.from_numpy(arr[2:22, 2:22]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(x, ref)
    x, _ = ev[0]  # 40×30 → 33×25 → 20×20
    assert x.shape == (3, 20, 20) and x.min() >= 0 and x.max() <= 1


@pytest.mark.skipif(not HAS_PIL, reason="Pillow not installed")
def test_image_folder_train_transform_is_seeded_and_normalised(tmp_path):
    _write_folder(tmp_path)
    ds = ImageFolder(tmp_path, transform="train", image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    a, _ = ds.load(4, generator=torch.Generator().manual_seed(3))
    b, _ = ds.load(4, generator=torch.Generator().manual_seed(3))
    c, _ = ds.load(4, generator=torch.Generator().manual_seed(4))
    assert a.shape == (3, 16, 16)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= (0 - 0.5) / 0.25 and a.max() <= (1 - 0.5) / 0.25


def test_image_folder_without_pillow_says_how_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "PIL" else real(name, *a)
    )
    with pytest.raises(ImportError, match="pip install pillow"):
        ImageFolder(tmp_path)


@pytest.mark.skipif(not HAS_PIL, reason="Pillow not installed")
def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="no class subfolders"):
        ImageFolder(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="transform must be"):
        ImageFolder(tmp_path, transform="test")  # type: ignore[arg-type]
