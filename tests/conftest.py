"""One intra-op thread per test process (the suite runs under `pytest -n 2` on 2 cores), and
AReLU/ELSA kernels eager unless a test turns compilation on.

Their tensors are tiny, so threads buy nothing, and on a shared 2-core machine (or under
``pytest -n 2``) two OpenMP threads per process spin-wait on each other: a batch-2 ResNet-50
forward/backward measured 0.2 s with one thread and 2-3 s with two under load.

The fused kernels compile on first use (about 18 s cold on this machine); the eager path computes
the same values, so tests (and the subprocesses they start) run it, and only tests marked ``slow``
compile (``attnact.set_fused(True)`` inside the test).
"""

import gzip
import io
import os
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

os.environ.setdefault("ATTNACT_NO_COMPILE", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so neither the engine nor a sweep's runner
    handles it, and no failed/interrupted summary is written."""


@pytest.fixture
def kill_before_last_csv(monkeypatch):
    """Make the engine die (raise :class:`Killed`) after its last epoch's checkpoint, before that
    epoch's metrics.csv rewrite. Yields the exception class; the test's ``monkeypatch.undo()``
    lets the next run write normally."""
    import attnact.train.engine as engine

    write_csv = engine._Run._write_metrics_csv

    def killed(self):
        if len(self.history) == self.config.epochs:
            raise Killed
        write_csv(self)

    monkeypatch.setattr(engine._Run, "_write_metrics_csv", killed)
    yield Killed


# ------------------------------------------------- tiny dataset files in the real formats
IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: 0x0000, type code, ndim, big-endian uint32 dims, big-endian data."""
    code = IDX_CODES[array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    return header + big.tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture
def idx() -> SimpleNamespace:
    """IDX writing helpers (tests run in importlib mode and cannot import conftest)."""
    return SimpleNamespace(bytes=idx_bytes, write=write_idx, mnist_files=MNIST_FILES)


MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture
def make_mnist() -> Callable[..., dict[str, np.ndarray]]:
    """Write a tiny MNIST-format dataset (gzipped IDX) into a directory; return its arrays."""

    def make(directory: Path, *, n_train: int = 20, n_test: int = 10, seed: int = 0, gz=True):
        rng = np.random.default_rng(seed)
        arrays = {
            "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
            "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "test_y": rng.integers(0, 10, n_test, dtype=np.uint8),
        }
        directory.mkdir(parents=True, exist_ok=True)
        for stem, key in zip(MNIST_FILES, ("train_x", "train_y", "test_x", "test_y"), strict=True):
            write_idx(directory / (stem + (".gz" if gz else "")), arrays[key], gz=gz)
        return arrays

    return make


def _pickle_member(tar: tarfile.TarFile, name: str, obj: object) -> None:
    blob = pickle.dumps(obj, protocol=2)
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))


@pytest.fixture
def make_cifar10() -> Callable[..., dict[str, np.ndarray]]:
    """Write cifar-10-python.tar.gz with the real member names and keys (4 images per batch)."""

    def make(path: Path, *, per_batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        batches = {}
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batches[name] = {
                b"batch_label": name.encode(),
                b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
                b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                b"filenames": [f"img{i}.png".encode() for i in range(per_batch)],
            }
        with tarfile.open(path, "w:gz") as tar:
            for name, batch in batches.items():
                _pickle_member(tar, f"cifar-10-batches-py/{name}", batch)
            _pickle_member(
                tar,
                "cifar-10-batches-py/batches.meta",
                {b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": per_batch},
            )
        train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
        return {
            "train_x": np.concatenate([b[b"data"] for b in train]).reshape(-1, 3, 32, 32),
            "train_y": np.concatenate([b[b"labels"] for b in train]),
            "test_x": batches["test_batch"][b"data"].reshape(-1, 3, 32, 32),
            "test_y": np.asarray(batches["test_batch"][b"labels"]),
        }

    return make


@pytest.fixture
def make_cifar100() -> Callable[..., dict[str, np.ndarray]]:
    """Write cifar-100-python.tar.gz (members train, test, meta; fine and coarse labels)."""

    def make(path: Path, *, n: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        out: dict[str, np.ndarray] = {}
        with tarfile.open(path, "w:gz") as tar:
            for split in ("train", "test"):
                fine = rng.integers(0, 100, n)
                coarse = rng.integers(0, 20, n)
                data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
                _pickle_member(
                    tar,
                    f"cifar-100-python/{split}",
                    {
                        b"filenames": [b"x.png"] * n,
                        b"batch_label": split.encode(),
                        b"fine_labels": [int(v) for v in fine],
                        b"coarse_labels": [int(v) for v in coarse],
                        b"data": data,
                    },
                )
                out[f"{split}_x"] = data.reshape(-1, 3, 32, 32)
                out[f"{split}_fine"] = fine
                out[f"{split}_coarse"] = coarse
            _pickle_member(
                tar,
                "cifar-100-python/meta",
                {b"fine_label_names": [b"apple"] * 100, b"coarse_label_names": [b"fruit"] * 20},
            )
        return out

    return make


@pytest.fixture
def make_svhn() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """Write an SVHN .mat: X is 32×32×3×N uint8, y is N×1 in 1..10 (10 = digit 0)."""
    import scipy.io

    def make(path: Path, *, n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0, 0] = 10  # make sure the 10 → 0 mapping is exercised
        scipy.io.savemat(path, {"X": x, "y": y})
        return x, y

    return make
