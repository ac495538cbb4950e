"""The catalog's entries, local discovery order, the not-found message, the real Fashion-MNIST."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
from pathlib import Path

import pytest

from attnact.data import (
    DATASETS,
    DatasetNotFoundError,
    dataset_info,
    find_split_files,
    is_available,
    list_datasets,
    verify,
)
from attnact.data.catalog import candidate_dirs, default_download_dir

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
HAS_DEBIAN = (DEBIAN / "train-images-idx3-ubyte.gz").is_file()
EXPECTED = {"mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100", "svhn", "imagenet"}
HOSTS = {
    "mnist": ("ossci-datasets.s3.amazonaws.com/mnist/", "yann.lecun.com/exdb/mnist/"),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "kmnist": ("codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    "cifar10": ("www.cs.toronto.edu/~kriz/",),
    "cifar100": ("www.cs.toronto.edu/~kriz/",),
    "svhn": ("ufldl.stanford.edu/housenumbers/",),
}


def test_catalog_has_the_datasets_with_consistent_fields():
    assert set(list_datasets()) == EXPECTED
    for name, info in DATASETS.items():
        assert info.name == name and info.description and "\n" not in info.description
        assert len(info.mean) == len(info.std) == info.channels
        assert all(0 < m < 1 for m in info.mean) and all(0 < s < 1 for s in info.std)
        assert info.train_split in info.splits and info.eval_split in info.splits
        for spec in info.files():
            for digest, length in ((spec.md5, 32), (spec.sha256, 64), (spec.content_sha256, 64)):
                assert digest is None or re.fullmatch(f"[0-9a-f]{{{length}}}", digest)
        if name == "imagenet":
            assert not info.downloadable and info.reader is None
            continue
        assert info.downloadable and info.reader is not None
        for spec in info.files():
            assert spec.md5, spec
            assert spec.urls[0].split("://")[1].startswith(HOSTS[name][0])
            assert all(u.endswith("/" + spec.filename) for u in spec.urls)
            for host in HOSTS[name]:
                assert any(host in u for u in spec.urls)


def test_published_checksums_are_the_ones_in_the_catalog():
    md5 = {s.filename: s.md5 for s in dataset_info("fashion_mnist").files()}
    assert md5["train-images-idx3-ubyte.gz"] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert md5["t10k-labels-idx1-ubyte.gz"] == "bb300cfdad3c16e7a12a480ee83cd310"
    assert dataset_info("cifar10").files()[0].md5 == "c58f30108f718f92721af3b95e74349a"
    assert dataset_info("cifar100").files()[0].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    svhn = dataset_info("svhn")
    assert svhn.files("train")[0].md5 == "e26dedcc434d2e4c54c9b2d4a06d8373"
    assert svhn.files("test")[0].md5 == "eb5a983be6a315427106f1b164d9cef3"
    assert svhn.default_augment == "crop"  # no flips for digits


def test_unknown_name_lists_allowed_and_suggests():
    with pytest.raises(ValueError, match="allowed: cifar10, cifar100") as err:
        dataset_info("fashion-mnst")
    assert "Did you mean 'fashion_mnist'" in str(err.value)
    assert dataset_info("Fashion-MNIST").name == "fashion_mnist"
    with pytest.raises(ValueError, match="no split 'val'; allowed: train, test"):
        find_split_files("mnist", "val")


def test_discovery_order_data_dir_then_env_then_cache(
    tmp_path, make_mnist, monkeypatch, clean_search_path
):
    explicit, env, cache = tmp_path / "explicit", tmp_path / "env", clean_search_path
    for root in (explicit, env, cache):
        make_mnist(root / "mnist")
    monkeypatch.setenv("ATTNACT_DATA", str(env))
    first = find_split_files("mnist", "train", explicit)[0]
    assert first == explicit / "mnist" / "train-images-idx3-ubyte.gz"
    assert find_split_files("mnist", "train")[0].parent == env / "mnist"
    monkeypatch.delenv("ATTNACT_DATA")
    assert find_split_files("mnist", "train")[0].parent == cache / "mnist"
    dirs = [d for d, _ in candidate_dirs("mnist", explicit)]
    # an explicit data_dir is the only place searched: no fall-back to another copy
    assert dirs == [explicit / "mnist", explicit / "MNIST" / "raw", explicit]
    assert [d for d, _ in candidate_dirs("mnist")][-1] == cache
    for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (explicit / "mnist" / name).unlink()
    monkeypatch.setenv("ATTNACT_DATA", str(env))  # a complete copy elsewhere is not used
    with pytest.raises(DatasetNotFoundError, match="incomplete copy in"):
        find_split_files("mnist", "train", explicit)
    with pytest.raises(DatasetNotFoundError, match="incomplete copy in"):
        find_split_files("mnist", "test", explicit)
    with pytest.raises(DatasetNotFoundError, match="not found"):
        find_split_files("mnist", "train", tmp_path / "does-not-exist")


def test_files_directly_under_the_root_and_extracted_forms(tmp_path, make_mnist):
    make_mnist(tmp_path, gz=False)  # <root>/<file>, gunzipped
    paths = find_split_files("mnist", "test", tmp_path)
    assert paths == (tmp_path / "t10k-images-idx3-ubyte", tmp_path / "t10k-labels-idx1-ubyte")
    make_mnist(tmp_path / "FashionMNIST" / "raw")  # torchvision's layout
    found = find_split_files("fashion_mnist", "train", tmp_path)[0]
    assert found.parent == tmp_path / "FashionMNIST" / "raw"


def test_a_split_comes_from_one_directory(tmp_path, make_mnist):
    make_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    assert find_split_files("mnist", "test", tmp_path)[0].parent == tmp_path / "mnist"
    with pytest.raises(DatasetNotFoundError, match="incomplete copy in") as err:
        find_split_files("mnist", "train", tmp_path)
    assert "missing ['train-labels-idx1-ubyte.gz']" in str(err.value)
    assert not is_available("mnist", tmp_path)


def test_not_found_message_lists_places_and_fetch_command(tmp_path, monkeypatch, clean_search_path):
    monkeypatch.setenv("ATTNACT_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as err:
        find_split_files("cifar10", "train", tmp_path / "mine")
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    for place in (tmp_path / "mine" / "cifar10", tmp_path / "mine"):
        assert f"  {place}    [" in msg
    assert str(tmp_path / "env") not in msg  # an explicit data_dir is the only place searched
    with pytest.raises(DatasetNotFoundError) as err:
        find_split_files("cifar10", "train")
    for place in (tmp_path / "env" / "cifar10", tmp_path / "env", clean_search_path / "cifar10",
                  clean_search_path):
        assert f"  {place}    [" in str(err.value)
    assert "cifar-10-python.tar.gz (or cifar-10-batches-py)" in msg
    assert "attnact data fetch cifar10" in msg
    assert str(default_download_dir("cifar10", tmp_path / "mine")) in msg


def test_fashion_mnist_message_mentions_debian_and_imagenet_its_layout(tmp_path, monkeypatch):
    info = DATASETS["fashion_mnist"]
    monkeypatch.setitem(
        DATASETS, "fashion_mnist", dataclasses.replace(info, system_dirs=(str(tmp_path / "deb"),))
    )
    with pytest.raises(DatasetNotFoundError) as err:
        find_split_files("fashion_mnist", "train")
    msg = str(err.value)
    assert "attnact data fetch fashion_mnist" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert f"{tmp_path / 'deb'}    [system location]" in msg
    with pytest.raises(DatasetNotFoundError) as err:
        find_split_files("imagenet", "val", tmp_path)
    msg = str(err.value)
    assert "<root>/imagenet/train/<wnid>/*.JPEG" in msg and "attnact data fetch" not in msg


def test_imagenet_folders_are_found(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split / "n01440764").mkdir(parents=True)
    assert find_split_files("imagenet", "val", tmp_path) == (tmp_path / "imagenet" / "val",)
    report = verify("imagenet", tmp_path)
    assert report.complete and {c.status for c in report.checks} == {"unverified"}


# ---------------------------------------------------------------------- real Fashion-MNIST


@pytest.mark.skipif(not HAS_DEBIAN, reason="dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_is_found_and_verifies():
    paths = find_split_files("fashion_mnist", "train")
    assert paths == (DEBIAN / "train-images-idx3-ubyte.gz", DEBIAN / "train-labels-idx1-ubyte.gz")
    report = verify("fashion_mnist")
    assert report.ok and report.complete, str(report)
    # Debian re-headers the gzip files, so only the payload hash can match.
    assert {c.status for c in report.checks} <= {"ok", "ok_content"}


@pytest.mark.skipif(not HAS_DEBIAN, reason="dataset-fashion-mnist not installed")
def test_debian_files_are_the_published_downloads_under_a_new_gzip_header():
    """Restoring upstream's gzip header (file name + the 2017 mtime) reproduces the published
    md5 and sha256 byte for byte: Debian's copies differ from the downloads only there."""
    mtimes = {"train": 1504176606, "t10k": 1504176627}  # 2017-08-31 10:50 UTC
    for spec in dataset_info("fashion_mnist").files():
        data = (DEBIAN / spec.filename).read_bytes()
        assert data[3] == 0  # FLG: Debian dropped the FNAME field
        stem = spec.filename.removesuffix(".gz")
        mtime = mtimes[stem.split("-")[0]]
        upstream = (
            b"\x1f\x8b\x08\x08" + struct.pack("<I", mtime) + data[8:10] + stem.encode() + b"\0"
        ) + data[10:]
        assert hashlib.md5(upstream).hexdigest() == spec.md5
        assert hashlib.sha256(upstream).hexdigest() == spec.sha256
        assert len(upstream) == spec.size
