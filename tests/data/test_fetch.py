"""Downloads against a loopback HTTP server: verified files land, broken transfers leave nothing."""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from attnact.data import (
    DATASETS,
    ChecksumError,
    DownloadError,
    add_data_subparser,
    datasets_rows,
    fetch,
    load_arrays,
    verify,
)

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"


@pytest.fixture
def served_mnist(tmp_path, make_mnist, server, monkeypatch):
    """A tiny MNIST served at <server>/mirror/mnist/<file>, with the catalog's checksums (and
    canonical URLs, at <server>/canonical/<file>) pointing at it."""
    src = tmp_path / "src"
    arrays = make_mnist(src)
    info = DATASETS["mnist"]
    splits = {
        split: tuple(
            dataclasses.replace(
                spec,
                md5=hashlib.md5((src / spec.filename).read_bytes()).hexdigest(),
                sha256=hashlib.sha256((src / spec.filename).read_bytes()).hexdigest(),
                urls=(f"{server.url}/canonical/{spec.filename}",),
            )
            for spec in specs
        )
        for split, specs in info.splits.items()
    }
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(info, splits=splits))
    for f in src.iterdir():
        server.files[f"/mirror/mnist/{f.name}"] = f.read_bytes()
    monkeypatch.setenv("ATTNACT_MIRROR", server.url + "/mirror")
    return arrays, src


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_good_download_lands_verified(tmp_path, served_mnist, server):
    arrays, src = served_mnist
    dest = fetch("mnist", tmp_path / "data", progress=False)
    assert dest == tmp_path / "data" / "mnist"
    assert _leftovers(dest) == sorted(p.name for p in src.iterdir())  # no temp files
    for f in src.iterdir():
        assert (dest / f.name).read_bytes() == f.read_bytes()
    x, y = load_arrays("mnist", "train", tmp_path / "data")
    np.testing.assert_array_equal(x[:, 0].numpy(), arrays["train_x"])
    np.testing.assert_array_equal(y.numpy(), arrays["train_y"])
    assert verify("mnist", tmp_path / "data").complete
    # A second fetch finds verified files and downloads nothing.
    hits = len(server.hits)
    fetch("mnist", tmp_path / "data", progress=False)
    assert len(server.hits) == hits


def test_bad_checksum_raises_and_leaves_nothing(tmp_path, served_mnist, server):
    _, src = served_mnist
    good = (src / TRAIN_IMAGES).read_bytes()
    server.files[f"/mirror/mnist/{TRAIN_IMAGES}"] = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(ChecksumError) as err:
        fetch("mnist", tmp_path, progress=False)
    msg = str(err.value)
    expected = DATASETS["mnist"].files("train")[0].md5
    got = hashlib.md5(server.files[f"/mirror/mnist/{TRAIN_IMAGES}"]).hexdigest()
    assert f"md5 expected {expected}, got {got}" in msg and TRAIN_IMAGES in msg
    assert _leftovers(tmp_path / "mnist") == []  # neither the file nor a temp file


def test_interrupted_transfer_raises_and_leaves_nothing(tmp_path, served_mnist, server):
    server.modes[f"/mirror/mnist/{TRAIN_IMAGES}"] = "truncate"
    with pytest.raises(DownloadError, match="interrupted after") as err:
        fetch("mnist", tmp_path, progress=False)
    assert TRAIN_IMAGES in str(err.value)
    assert _leftovers(tmp_path / "mnist") == []


def test_http_error_is_a_download_error(tmp_path, served_mnist, server):
    del server.files[f"/mirror/mnist/{TRAIN_IMAGES}"]
    with pytest.raises(DownloadError, match="404"):
        fetch("mnist", tmp_path, progress=False)
    assert _leftovers(tmp_path / "mnist") == []


def test_catalog_urls_and_base_url_override(tmp_path, served_mnist, server, monkeypatch):
    _, src = served_mnist
    monkeypatch.delenv("ATTNACT_MIRROR")
    for f in src.iterdir():  # the catalog's own URLs
        server.files[f"/canonical/{f.name}"] = f.read_bytes()
        server.files[f"/flat/{f.name}"] = f.read_bytes()
    fetch("mnist", tmp_path / "a", progress=False)
    assert all(h.startswith("/canonical/") for h in server.hits)
    server.hits.clear()
    fetch("mnist", tmp_path / "b", progress=False, base_url=server.url + "/flat/")
    assert len(server.hits) == 4 and all(h.startswith("/flat/") for h in server.hits)


def test_next_url_is_tried_when_one_fails(tmp_path, served_mnist, server, monkeypatch):
    _, src = served_mnist
    monkeypatch.delenv("ATTNACT_MIRROR")
    info = DATASETS["mnist"]
    splits = {
        split: tuple(
            dataclasses.replace(s, urls=(f"{server.url}/gone/{s.filename}", *s.urls)) for s in specs
        )
        for split, specs in info.splits.items()
    }
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(info, splits=splits))
    for f in src.iterdir():
        server.files[f"/canonical/{f.name}"] = f.read_bytes()
    fetch("mnist", tmp_path, progress=False)
    assert verify("mnist", tmp_path).complete


def test_corrupt_local_file_is_replaced_and_verify_reports_it(tmp_path, served_mnist):
    dest = fetch("mnist", tmp_path, progress=False)
    (dest / TRAIN_IMAGES).write_bytes(b"garbage")
    (dest / "t10k-labels-idx1-ubyte.gz").unlink()
    report = verify("mnist", tmp_path)
    status = {c.filename: c.status for c in report.checks}
    assert status[TRAIN_IMAGES] == "mismatch" and not report.ok
    assert status["t10k-labels-idx1-ubyte.gz"] == "missing" and not report.complete
    assert "md5 expected" in str(report)
    fetch("mnist", tmp_path, progress=False)
    assert verify("mnist", tmp_path).complete


def test_imagenet_cannot_be_fetched(tmp_path):
    with pytest.raises(ValueError, match="cannot be downloaded") as err:
        fetch("imagenet", tmp_path, progress=False)
    assert "<root>/imagenet/train/<wnid>" in str(err.value)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="attnact")
    add_data_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_fetch_verify_list(tmp_path, served_mnist, server, capsys):
    d = str(tmp_path)
    assert _cli(["data", "fetch", "mnist", "--data-dir", d, "--quiet"]) == 0
    assert _cli(["data", "verify", "mnist", "--data-dir", d]) == 0
    assert "ok" in capsys.readouterr().out
    assert _cli(["data", "list", "--data-dir", d]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "mnist") in out and "attnact data fetch cifar10" in out
    rows = {r.name: r for r in datasets_rows(d)}
    assert rows["mnist"].found and rows["mnist"].location == tmp_path / "mnist"
    assert not rows["cifar10"].found and rows["cifar10"].description
    (tmp_path / "mnist" / TRAIN_IMAGES).write_bytes(b"x")
    assert _cli(["data", "verify", "mnist", "--data-dir", d]) == 1
    server.files.clear()
    assert _cli(["data", "fetch", "mnist", "--data-dir", d, "--quiet"]) == 1
    assert "404" in capsys.readouterr().err
    assert _cli(["data", "fetch", "imagenet", "--data-dir", d, "--quiet"]) == 1


def _with_content_sha256(monkeypatch, name: str, filename: str, payload: bytes) -> None:
    info = DATASETS[name]
    splits = {
        split: tuple(
            dataclasses.replace(spec, content_sha256=hashlib.sha256(payload).hexdigest())
            if spec.filename == filename else spec
            for spec in specs
        )
        for split, specs in info.splits.items()
    }
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(info, splits=splits))


def test_a_recompressed_gz_with_the_published_payload_downloads_as_verify_accepts_it(
    tmp_path, served_mnist, server, monkeypatch
):
    """What Debian did to Fashion-MNIST (issue #16): other gzip bytes, the same payload. Download
    and ``verify`` apply one rule: the payload's checksum decides."""
    _, src = served_mnist
    payload = gzip.decompress((src / TRAIN_IMAGES).read_bytes())
    _with_content_sha256(monkeypatch, "mnist", TRAIN_IMAGES, payload)
    recompressed = gzip.compress(payload, compresslevel=1, mtime=1)
    assert recompressed != (src / TRAIN_IMAGES).read_bytes()
    server.files[f"/mirror/mnist/{TRAIN_IMAGES}"] = recompressed
    dest = fetch("mnist", tmp_path / "data", progress=False)
    assert (dest / TRAIN_IMAGES).read_bytes() == recompressed
    statuses = {c.filename: c.status for c in verify("mnist", tmp_path / "data").checks}
    assert statuses[TRAIN_IMAGES] == "ok_content"
    # another payload in a gzip is still refused, and nothing lands
    other = bytearray(payload)
    other[-1] ^= 1
    server.files[f"/mirror/mnist/{TRAIN_IMAGES}"] = gzip.compress(bytes(other), mtime=1)
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        fetch("mnist", tmp_path / "other", progress=False)
    assert TRAIN_IMAGES not in _leftovers(tmp_path / "other" / "mnist")


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (DEBIAN_FASHION / TRAIN_IMAGES).is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fetch_mirror_accepts_the_debian_fashion_mnist_files(tmp_path, server, capsys):
    """The real files of Debian's package, served as a --mirror, with the real catalog."""
    for f in DEBIAN_FASHION.iterdir():
        server.files[f"/deb/{f.name}"] = f.read_bytes()
    d = str(tmp_path)
    argv = ["data", "fetch", "fashion_mnist", "--data-dir", d, "--mirror", server.url + "/deb",
            "--quiet"]
    assert _cli(argv) == 0, capsys.readouterr().err
    assert _cli(["data", "verify", "fashion_mnist", "--data-dir", d]) == 0
    assert "ok_content" in capsys.readouterr().out
