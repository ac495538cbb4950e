"""Fixtures for the data layer: tiny files in the real formats, a clean search path, a server."""

from __future__ import annotations

import gzip
import http.server
import io
import pickle
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


@pytest.fixture(autouse=True)
def clean_search_path(tmp_path_factory, monkeypatch) -> Path:
    """No test sees the real cache, $ATTNACT_DATA or a mirror; the cache is an empty temp dir."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("ATTNACT_DATA", raising=False)
    monkeypatch.delenv("ATTNACT_MIRROR", raising=False)
    return cache / "attnact"


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


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes]
    modes: dict[str, str]
    hits: list[str]

    def do_GET(self) -> None:  # the name http.server dispatches to
        self.hits.append(self.path)
        body = self.files.get(self.path)
        mode = self.modes.get(self.path, "ok")
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if mode == "truncate":
            # Announce the full length, send half, hang up: an interrupted transfer.
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class LoopbackServer:
    """An HTTP server on 127.0.0.1 serving ``files`` (URL path → bytes)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}
        self.hits: list[str] = []
        handler = type(
            "Handler", (_Handler,), {"files": self.files, "modes": self.modes, "hits": self.hits}
        )
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    try:
        yield srv
    finally:
        srv.close()
