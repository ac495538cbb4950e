"""The roofline's byte counter against hand counts, and the bandwidth measurement's checks."""

from __future__ import annotations

import pytest
import torch

from attnact.perf.roofline import measure_bandwidth, traffic


def test_traffic_counts_reads_and_writes_and_no_views():
    x = torch.randn(32, 32)
    nbytes = x.numel() * 4
    assert traffic(lambda: torch.relu(x))[0] == 2 * nbytes  # read x, write y
    assert traffic(lambda: x + x)[0] == 2 * nbytes  # one input tensor, read once
    assert traffic(lambda: torch.add(x, x.t().contiguous()))[0] == 5 * nbytes  # copy + add
    assert traffic(lambda: x.t().reshape(-1)[:10])[0] == 2 * nbytes  # views free, one copy
    y = torch.zeros(32, 32)
    assert traffic(lambda: y.add_(x))[0] == 3 * nbytes  # read y and x, write y
    # a slice reads only itself
    assert traffic(lambda: x[:16].sum())[0] == 16 * 32 * 4 + 4


def test_traffic_counts_backward_and_names_operators():
    x = torch.randn(8, 16, requires_grad=True)
    total, ops = traffic(lambda: torch.sigmoid(x).sum().backward())
    assert total == sum(ops.values())
    assert "aten.sigmoid_backward" in ops and "aten.sigmoid" in ops
    assert ops["aten.sigmoid"] == 2 * 8 * 16 * 4


def test_fused_kernels_count_as_one_operator():
    from attnact.units.fused import FusedKernel

    def three_passes(t: torch.Tensor) -> torch.Tensor:
        return (t * 2 + 1).relu()

    k = FusedKernel(three_passes)
    x = torch.randn(32, 32)
    total, ops = traffic(lambda: k(x))
    assert ops == {"fused.three_passes": 2 * x.numel() * 4}
    assert total == 2 * x.numel() * 4


def test_measure_bandwidth():
    bw = measure_bandwidth(2**20, repeats=3)
    assert set(bw) == {"copy", "add", "sum", "best"}
    assert bw["best"] == max(bw["copy"], bw["add"], bw["sum"]) > 1e8  # > 0.1 GB/s anywhere
    with pytest.raises(ValueError, match="nbytes"):
        measure_bandwidth(10)
    with pytest.raises(ValueError, match="repeats"):
        measure_bandwidth(2**20, repeats=0)
