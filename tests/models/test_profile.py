"""Parameter/MAC counting and the `attnact info` report."""

import pytest
import torch
from torch import nn

from attnact import ATAC
from attnact.models import (
    count_macs,
    count_parameters,
    info_report,
    mnist_conv,
    profile_table_markdown,
    resnet_cifar,
)


def _tiny():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        ATAC(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def test_count_parameters():
    m = _tiny()
    conv, atac, lin = 3 * 8 * 9 + 8, 2 * 8 * 4 + 2 * 4 + 2 * 8, 8 * 4 + 4
    assert count_parameters(m) == conv + atac + lin
    m[0].weight.requires_grad_(False)
    assert count_parameters(m, trainable_only=True) == conv + atac + lin - 3 * 8 * 9


def test_count_macs_by_hand_and_per_layer():
    m = _tiny()
    conv = 10 * 10 * 8 * 27  # output positions × C_out × (C_in·k²)
    atac = 10 * 10 * (8 * 4 + 4 * 8)  # two point-wise convolutions
    lin = 8 * 4
    assert count_macs(m, (3, 10, 10)) == conv + atac + lin
    total, rows = count_macs(m, (3, 10, 10), per_layer=True)
    assert total == conv + atac + lin
    assert [(r.path, r.type, r.macs) for r in rows] == [
        ("0", "Conv2d", conv), ("1", "ATAC", atac), ("2", "AdaptiveAvgPool2d", 0),
        ("3", "Flatten", 0), ("4", "Linear", lin),
    ]  # ATAC is one row, not its inner convolutions
    assert sum(r.params for r in rows) == count_parameters(m)


def test_count_macs_leaves_the_model_alone_and_cpu_agrees():
    m = _tiny().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    meta = count_macs(m, (3, 10, 10))
    cpu = count_macs(m, (3, 10, 10), device="cpu")
    assert meta == cpu
    assert m.training and next(m.parameters()).device.type == "cpu"
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN running stats untouched


def test_per_layer_rows_add_up_on_a_host():
    model = resnet_cifar(blocks=1, act="atac", variant="se")
    total, rows = count_macs(model, (3, 32, 32), per_layer=True)
    assert sum(r.macs for r in rows) == total
    assert sum(r.params for r in rows) == count_parameters(model)
    assert sum(r.type == "ATAC" for r in rows) == 7
    assert sum(r.type == "SqueezeExcite" for r in rows) == 3


def test_bad_input_size():
    with pytest.raises(ValueError, match="input_size"):
        count_macs(_tiny(), (3, 0, 10))
    with pytest.raises(ValueError, match="input_size"):
        count_macs(_tiny(), ())


def test_table_markdown():
    _, rows = count_macs(mnist_conv(), (1, 28, 28), per_layer=True)
    table = profile_table_markdown(rows)
    lines = table.splitlines()
    assert lines[0] == "| module | type | params | MACs | % MACs |"
    assert "| `block1.conv` | Conv2d | 260 | 144,000 | 29.2 |" in lines
    assert lines[-1] == "| **total** | | **12,930** | **493,200** | 100.0 |"
    assert "MaxPool2d" not in profile_table_markdown(rows, skip_empty=True)


def test_info_report():
    text = info_report("mnist_conv", "atac")
    assert text.startswith("# mnist_conv, act='atac'")
    assert "- input: 1×28×28" in text
    relu = count_parameters(mnist_conv())
    atac = count_parameters(mnist_conv(act="atac"))
    assert f"- parameters: {atac:,}" in text
    assert f"versus act='relu': {atac - relu:+,} parameters" in text
    assert "- activation sites: 3 (atac × 3)" in text
    assert "| **total** |" in text
    svhn = info_report("mnist_conv", "relu", input_size="3,32,32", num_classes=5)
    assert "- input: 3×32×32" in svhn and "versus" not in svhn
    assert "| `fc` | Linear | 205 |" in svhn
    cifar = info_report("resnet_cifar", "relu", (3, 32, 32), blocks=1, variant="ge")
    assert "GatherExcite" in cifar
    with pytest.raises(ValueError, match="unknown model"):
        info_report("resnet_nonexistent", "relu")
    with pytest.raises(ValueError, match="C,H,W"):
        info_report("mnist_conv", "relu", input_size="28x")
