"""attnact bench: the saved-bytes counter against hand counts, the bench rows (ReLU = 1, the
AReLU Function saving what ReLU saves), skipped variants, the files and the CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from attnact.cli import main
from attnact.perf import bench
from attnact.perf.bench import Host, Variant, run_bench, saved_bytes, write_bench


def test_saved_bytes_counts_each_storage_once_and_leaves_out_parameters():
    x = torch.randn(4, 8, requires_grad=True)
    # ReLU saves its output: 32 floats.
    assert saved_bytes(lambda: torch.relu(x)) == 4 * 8 * 4
    # x * x saves x twice, one storage: counted once.
    assert saved_bytes(lambda: x * x) == 4 * 8 * 4
    lin = nn.Linear(8, 3)
    # Linear saves its input and its weight; the weight is a parameter, left out.
    assert saved_bytes(lambda: lin(x), exclude=lin.parameters()) == 4 * 8 * 4
    assert saved_bytes(lambda: lin(x)) == 4 * 8 * 4 + 3 * 8 * 4
    with torch.no_grad():
        assert saved_bytes(lambda: torch.relu(x)) == 0


@pytest.fixture
def tiny_hosts(monkeypatch):
    monkeypatch.setitem(bench.HOSTS, "tiny_unit", Host("tiny_unit", None, (4, 6, 6), 3))
    monkeypatch.setitem(bench.HOSTS, "tiny_mnist", Host("tiny_mnist", "mnist_conv",
                                                        (1, 28, 28), 2, channels_last=False))


def test_run_bench_rows(tiny_hosts):
    variants = (Variant("relu", "relu"),
                Variant("arelu", "arelu", {"implementation": "function"},
                        reference="arelu (reference)"),
                Variant("arelu (reference)", "arelu", {"implementation": "reference"}),
                Variant("bogus", "relu", {"no_such_option": 1}),
                Variant("arelu (eager kernels)", "arelu", reference="arelu (reference)",
                        compiled_kernels=False))
    rows = run_bench(("tiny_unit", "tiny_mnist"), variants, rounds=1, warmup=0,
                     bandwidth={"dram": 1e10})
    by = {(r.host, r.variant): r for r in rows}
    assert len(rows) == 10
    assert by[("tiny_unit", "arelu (eager kernels)")].saved_bytes == (
        by[("tiny_unit", "arelu")].saved_bytes)
    for host in ("tiny_unit", "tiny_mnist"):
        relu, arelu = by[(host, "relu")], by[(host, "arelu (reference)")]
        # a ratio is the variant's figure over ReLU's (saved bytes are deterministic counts)
        assert arelu.saved_vs_relu == pytest.approx(arelu.saved_bytes / relu.saved_bytes)
        assert arelu.train_vs_relu > 0 and arelu.infer_vs_relu > 0
        assert by[(host, "arelu")].train_vs_reference is not None
        assert by[(host, "arelu (reference)")].train_vs_reference is None
        assert "no_such_option" in by[(host, "bogus")].skipped
    # The AReLU Function saves one tensor the size of its input, as ReLU does (issue #6).
    assert by[("tiny_unit", "arelu")].saved_bytes == by[("tiny_unit", "relu")].saved_bytes
    assert by[("tiny_unit", "arelu (reference)")].saved_vs_relu > 1.0
    with pytest.raises(ValueError, match="unknown bench host"):
        run_bench(("nope",), variants)
    with pytest.raises(ValueError, match="must include 'relu'"):
        run_bench(("tiny_unit",), variants[1:])


def test_write_bench_and_cli(tiny_hosts, tmp_path, capsys):
    rows = run_bench(("tiny_unit",), (Variant("relu", "relu"), Variant("tanh", "tanh")),
                     rounds=1, warmup=0, bandwidth={"dram": 1e10})
    files = write_bench(rows, tmp_path, name="t", command="attnact bench test", rounds=1)
    data = json.loads(files["json"].read_text())
    assert data["meta"]["command"] == "attnact bench test"
    # the code that made the figures, as git sees this checkout (the figures are evidence)
    import subprocess

    import attnact
    head = subprocess.run(["git", "-C", str(Path(attnact.__file__).parent), "rev-parse", "HEAD"],
                          capture_output=True, text=True)
    if head.returncode == 0:
        assert data["meta"]["code"]["git"]["commit"] == head.stdout.strip()
        made_by = f"attnact {attnact.__version__}@{head.stdout.strip()[:12]}"
        assert made_by in files["md"].read_text()
    assert data["meta"]["code"]["attnact"] == attnact.__version__
    assert [r["variant"] for r in data["results"]] == ["relu", "tanh"]
    assert "| tiny_unit | tanh |" in files["md"].read_text()
    assert main(["bench", "--hosts", "tiny_unit", "--variants", "arelu", "--rounds", "1",
                 "--warmup", "0", "--out", str(tmp_path), "--name", "cli", "--quiet",
                 "--no-compiled-models", "--default-malloc"]) == 0
    out = capsys.readouterr().out
    assert "| tiny_unit | relu |" in out and "| tiny_unit | arelu |" in out
    assert (tmp_path / "cli.json").is_file()
    meta = json.loads((tmp_path / "cli.json").read_text())["meta"]
    assert meta["bandwidth_bytes_per_s"]["dram"] > 0 and len(meta["load_average"]) == 2
    assert meta["allocator"] == "C library defaults"  # --default-malloc: the test process kept
    assert "Allocator: C library defaults." in out
    assert "compiled model" not in out
    assert main(["bench", "--hosts", "nope"]) == 2
    assert "unknown bench host 'nope'" in capsys.readouterr().err
    assert main(["bench", "--variants", "xyz", "--hosts", "tiny_unit"]) == 2
    assert "none known" in capsys.readouterr().err


def test_any_model_at_any_dataset_size_is_a_bench_host(tmp_path, capsys):
    from attnact.cli import main
    from attnact.perf.bench import resolve_host

    host = resolve_host("resnet18@fashion_mnist")
    assert (host.model, host.input_shape, host.num_classes) == ("resnet18", (1, 28, 28), 10)
    assert host.model_kwargs == {"in_channels": 1}
    assert resolve_host("resnet_cifar@cifar100").model_kwargs == {
        "in_channels": 3, "image_size": 32}
    with pytest.raises(ValueError, match=r"unknown bench host 'resnet18'.*MODEL@DATASET"):
        resolve_host("resnet18")
    with pytest.raises(ValueError, match="unknown dataset 'bogus'"):
        resolve_host("resnet18@bogus")
    code = main(["bench", "--hosts", "mnist_conv@svhn", "--variants", "arelu", "--rounds", "1",
                 "--warmup", "0", "--out", str(tmp_path), "--name", "b", "--quiet"])
    assert code == 0
    assert "mnist_conv@svhn" in (tmp_path / "b.md").read_text()


def test_roofline_columns(tiny_hosts):
    """Bytes moved are counted for eager rows (ReLU's step moves at least its input twice);
    the floor is 1 for ReLU and above 1 for a unit that moves more."""
    variants = (Variant("relu", "relu"), Variant("tanh", "tanh"),
                Variant("atac (reference)", "atac", {"implementation": "reference"}))
    rows = {r.variant: r for r in run_bench(("tiny_unit",), variants, rounds=1, warmup=0,
                                            bandwidth={"dram": 1e10})}
    x_bytes = 3 * 4 * 6 * 6 * 4
    assert rows["relu"].bytes_moved >= 2 * x_bytes
    assert rows["relu"].floor_vs_relu == 1.0
    assert rows["atac (reference)"].bytes_moved > rows["relu"].bytes_moved
    assert rows["atac (reference)"].floor_vs_relu > 1.0
    assert rows["relu"].bandwidth_fraction > 0
    with pytest.raises(ValueError, match="baselines"):
        run_bench(("tiny_unit",), (Variant("relu", "relu"),
                                   Variant("t", "tanh", baseline="nope")), rounds=1)


@pytest.mark.slow
def test_compiled_model_rows(tiny_hosts):
    """A compiled-model row is a ratio to the compiled ReLU network, without bytes moved."""
    variants = (Variant("relu", "relu"),
                Variant("relu (compiled model)", "relu", compile_model=True,
                        baseline="relu (compiled model)"),
                Variant("tanh (compiled model)", "tanh", compile_model=True,
                        baseline="relu (compiled model)"))
    rows = {r.variant: r for r in run_bench(("tiny_unit",), variants, rounds=1, warmup=0,
                                            bandwidth={"dram": 1e10})}
    assert rows["relu (compiled model)"].train_vs_relu == 1.0
    assert rows["tanh (compiled model)"].bytes_moved is None
    assert rows["tanh (compiled model)"].train_vs_relu > 0
