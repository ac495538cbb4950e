"""Pretrained weights: catalogue, git-blob-verified download over loopback, create_model, CLI."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import attnact
from attnact.cli import main
from attnact.data.fetch import ChecksumError, DownloadError, git_blob_sha1
from attnact.weights import pretrained as pt
from attnact.weights.preprocess import IMAGENET_EVAL
from attnact.weights.saved import load_converted

FIXTURES = Path(__file__).parent / "fixtures"
CIFAR = FIXTURES / "cifar_all.params"
LOGITS = np.load(FIXTURES / "cifar_logits.npz")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_blob_sha1_is_gits(tmp_path):
    for data in (b"", b"hello", CIFAR.read_bytes()):
        f = tmp_path / "f"
        f.write_bytes(data)
        want = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True,
                              check=True).stdout.strip()
        assert git_blob_sha1(f) == want


def test_catalogue_entry_is_the_authors_file():
    entry = pt.pretrained_info("open-atac-imagenet")
    assert entry.file.git_sha1 == "68dc6dabee84f1f42746d06553aba6bfa04615d3"
    assert entry.file.filename == "0.2141-imagenet-ResNet50_v1b_ChaATAC-155-best.params"
    assert all("YimianDai/open-atac" in u and u.endswith(entry.file.filename)
               for u in entry.file.urls)
    assert (entry.model, entry.act, dict(entry.kwargs)) == ("resnet50_v1b", "atac",
                                                           {"act_stages": 2, "r": 2})
    assert "21.41" in entry.reported and "licence" in entry.licence
    assert pt.list_pretrained() == ["open-atac-imagenet"]


@pytest.fixture
def served_cifar(http_files, monkeypatch):
    """A catalogue entry for the CIFAR fixture, served over loopback, checked by its blob id."""
    spec = dataclasses.replace(
        pt.PRETRAINED["open-atac-imagenet"].file,
        filename=CIFAR.name,
        urls=(f"{http_files.url}/params/{CIFAR.name}",),
        git_sha1=git_blob_sha1(CIFAR),
    )
    entry = dataclasses.replace(
        pt.PRETRAINED["open-atac-imagenet"], name="test-cifar", model="resnet_cifar",
        kwargs={"blocks": 1, "width": 6}, num_classes=10, file=spec,
    )
    monkeypatch.setitem(pt.PRETRAINED, "test-cifar", entry)
    http_files.files[f"/params/{CIFAR.name}"] = CIFAR.read_bytes()
    return http_files


def test_create_model_pretrained_downloads_verifies_caches(served_cifar, tmp_path):
    model = attnact.create_model("resnet_cifar", act="atac", pretrained="test-cifar", blocks=1)
    assert not model.training and model.pretrained.name == "test-cifar"
    with torch.no_grad():
        y = model(torch.from_numpy(LOGITS["all_x"])).numpy()
    np.testing.assert_allclose(y, LOGITS["all_logits32"], rtol=0, atol=1e-5)
    cached = pt.weights_dir() / "test-cifar" / CIFAR.name
    assert cached.read_bytes() == CIFAR.read_bytes()
    assert sorted(p.name for p in cached.parent.iterdir()) == [CIFAR.name]
    hits = len(served_cifar.hits)
    attnact.create_model("resnet_cifar", act="atac", pretrained="test-cifar")
    assert len(served_cifar.hits) == hits  # the verified cached copy is used


def test_bad_blob_id_is_refused_and_nothing_cached(served_cifar):
    data = bytearray(CIFAR.read_bytes())
    data[-1] ^= 1
    served_cifar.files[f"/params/{CIFAR.name}"] = bytes(data)
    with pytest.raises(ChecksumError, match="git blob id expected"):
        pt.fetch_pretrained("test-cifar", progress=False)
    d = pt.weights_dir() / "test-cifar"
    assert not d.exists() or list(d.iterdir()) == []


def test_partial_file_is_never_cached(served_cifar):
    served_cifar.truncate.add(f"/params/{CIFAR.name}")
    with pytest.raises(DownloadError, match="interrupted"):
        pt.fetch_pretrained("test-cifar", progress=False)
    d = pt.weights_dir() / "test-cifar"
    assert not d.exists() or list(d.iterdir()) == []


def test_corrupt_cached_copy_is_downloaded_again(served_cifar):
    target = pt.weights_dir() / "test-cifar" / CIFAR.name
    target.parent.mkdir(parents=True)
    target.write_bytes(b"garbage")
    assert pt.fetch_pretrained("test-cifar", progress=False) == target
    assert target.read_bytes() == CIFAR.read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"act": "relu"}, "needs act='atac'"),
        ({"act": "atac", "num_classes": 10}, "1000 classes"),
        ({"act": "atac", "act_stages": 4}, "fixes the network"),
    ],
)
def test_pretrained_request_for_another_network_is_refused_before_download(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attnact.create_model("resnet50_v1b", pretrained="open-atac-imagenet", **kwargs)
    with pytest.raises(ValueError, match="pretrained must be one of 'open-atac-imagenet'"):
        attnact.create_model("resnet50_v1b", act="atac", pretrained="imagenet")
    with pytest.raises(ValueError, match="for model 'resnet50_v1b'"):
        attnact.create_model("resnet_cifar", act="atac", pretrained="open-atac-imagenet")


def test_cli_list_fetch_and_import(served_cifar, tmp_path, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "open-atac-imagenet" in out and "68dc6dabee84f1f42746d06553aba6bfa04615d3" in out
    assert main(["weights", "fetch", "test-cifar", "--cache-dir", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "test-cifar" / CIFAR.name).is_file()
    assert main(["weights", "import-open-atac", str(CIFAR), "--out", str(tmp_path / "m.pt")]) == 0
    model = load_converted(tmp_path / "m.pt")
    with torch.no_grad():
        y = model(torch.from_numpy(LOGITS["all_x"])).numpy()
    np.testing.assert_allclose(y, LOGITS["all_logits32"], rtol=0, atol=1e-5)
    assert model.preprocessing.mean[0] == pytest.approx(0.4914 * 255)
    bad = tmp_path / "bad.params"
    bad.write_bytes(b"\0" * 40)
    assert main(["weights", "import-open-atac", str(bad), "--out", str(tmp_path / "x.pt")]) == 2
    assert "not the list magic" in capsys.readouterr().err


def test_imagenet_preprocessing_matches_the_authors_recipe():
    # 300×400 image: shorter side → 256 (other side 341, truncated), centre crop 224.
    img = torch.full((3, 300, 400), 128, dtype=torch.uint8)
    img[0] = 200
    x = IMAGENET_EVAL(img)
    assert x.shape == (1, 3, 224, 224)
    want = [(200 - 123.68) / 58.393, (128 - 116.779) / 57.12, (128 - 103.939) / 57.375]
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor(want), rtol=0, atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        IMAGENET_EVAL(img.float())
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        IMAGENET_EVAL(img[:1])


def test_imagenet_resize_and_crop_geometry():
    # A horizontal ramp (value = column) through OpenCV's bilinear map, which samples source
    # column (j + 0.5) · 250/320 − 0.5 for output column j: 200×250 → 256×320 (shorter side
    # 256, the other 256·250/200 truncated), then the crop starts at column (320 − 224) // 2.
    ramp = torch.arange(250).to(torch.uint8).expand(3, 200, 250).contiguous()
    x = IMAGENET_EVAL(ramp)[0, 0]  # channel R: (v − 123.68) / 58.393
    values = x[100] * 58.393 + 123.68
    j = torch.arange(48, 48 + 224, dtype=torch.float64)
    want = ((j + 0.5) * 250 / 320 - 0.5).clamp(0, 249)
    # 8-bit rounding: within 0.5; a crop one column off would be 0.78 away.
    torch.testing.assert_close(values.double(), want, rtol=0, atol=0.5 + 1e-3)


def test_real_entry_checks_the_authors_blob_id(http_files):
    # Any other bytes under the authors' file name are refused by the published blob id.
    name = pt.PRETRAINED["open-atac-imagenet"].file.filename
    http_files.files[f"/w/{name}"] = CIFAR.read_bytes()
    with pytest.raises(ChecksumError, match="expected 68dc6dabee84f1f42746d06553aba6bfa04615d3"):
        pt.fetch_pretrained("open-atac-imagenet", base_url=f"{http_files.url}/w", progress=False)
    assert http_files.hits == [f"/w/{name}"]


def test_file_of_another_network_under_an_entry_is_refused(served_cifar, monkeypatch):
    entry = dataclasses.replace(pt.PRETRAINED["test-cifar"], kwargs={"blocks": 3})
    monkeypatch.setitem(pt.PRETRAINED, "test-cifar", entry)
    with pytest.raises(ValueError, match="not the resnet_cifar"):
        pt.load_pretrained("test-cifar", progress=False)
