"""The top-level command line, and one real end-to-end comparison on the real Fashion-MNIST
(CI installs the Debian package dataset-fashion-mnist so that it runs there)."""

import csv
import json

import pytest

from attnact.cli import main
from attnact.data import is_available


def test_list_activations(capsys):
    assert main(["list", "activations"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[0] == "apl"  # sorted
    assert any(line.startswith("atac ") and " 4288 params" in line for line in out.splitlines())


def test_list_models_and_datasets(capsys):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "resnet_cifar" in out and "resnet50_v1b" in out and "mnist_conv" in out
    assert main(["list", "datasets"]) == 0
    out = capsys.readouterr().out
    assert "fashion_mnist" in out and "cifar100" in out


def test_info_mnist_conv(capsys):
    assert main(["info", "--model", "mnist_conv", "--act", "relu"]) == 0
    out = capsys.readouterr().out
    assert "12,930" in out  # AReLU paper Sec. 4.1 network with ReLU


def test_bad_input_is_a_message_not_a_traceback(capsys, tmp_path):
    assert main(["compare", "--acts", "relu,relux", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown activation 'relux'" in err


@pytest.mark.skipif(not is_available("fashion_mnist"), reason="Fashion-MNIST not installed")
def test_compare_end_to_end_on_real_fashion_mnist(tmp_path, capsys):
    """Two activations, one epoch on 4096 real images (32 steps): both must learn."""
    out = tmp_path / "cmp"
    argv = ["compare", "--acts", "relu,arelu", "--seeds", "1", "--epochs", "1",
            "--limit-train", "4096", "--out", str(out), "--quiet", "limit_test=2000"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| relu |" in printed and "| arelu |" in printed
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["activation"] for r in rows} == {"relu", "arelu"}
    assert all(float(r["final_top1"]) > 30.0 for r in rows), rows  # 3x chance after 32 steps
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "runs" / "arelu" / "seed0" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["params"] == 12936
    # re-running the same command trains nothing and gives the same table
    table = (out / "table.md").read_text()
    assert main(argv) == 0
    assert "finished earlier, kept" in capsys.readouterr().out
    assert (out / "table.md").read_text() == table
