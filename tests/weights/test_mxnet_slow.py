"""The full ResNet50_v1bATAC against real MXNet (slow; needs MXNet and the authors' code).

Set ``ATTNACT_MXNET_PYTHON`` to a Python that imports mxnet (e.g. /work/mxnet-venv/bin/python,
see tools/make_open_atac_fixtures.py) and ``ATTNACT_OPEN_ATAC`` to a copy of the authors'
repository (its model/ directory). The test runs the fixture tool there to build the authors'
network with random weights, saves it as the released run did (float16 file) and records MXNet's
logits; attnact must import the file and reproduce them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attnact.weights import load_open_atac

TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_open_atac_fixtures.py"


def _mxnet_setup() -> tuple[str, str]:
    python, code = os.environ.get("ATTNACT_MXNET_PYTHON"), os.environ.get("ATTNACT_OPEN_ATAC")
    if not python or not code:
        pytest.skip("set ATTNACT_MXNET_PYTHON (a Python with mxnet) and ATTNACT_OPEN_ATAC (the "
                    "authors' repository) to compare with MXNet")
    probe = subprocess.run([python, "-c", "import mxnet"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{python} cannot import mxnet")
    return python, code


@pytest.mark.slow
def test_resnet50_v1b_atac_matches_mxnet(tmp_path):
    python, code = _mxnet_setup()
    subprocess.run([python, str(TOOL), "--open-atac", code, "--resnet50", str(tmp_path)],
                   check=True, stdout=sys.stderr)
    model = load_open_atac(tmp_path / "resnet50_v1b_atac.params")
    assert model.open_atac.kwargs["act_stages"] == 2
    ref = np.load(tmp_path / "resnet50_v1b_atac_logits.npz")
    x = torch.from_numpy(ref["x"])
    with torch.no_grad():
        y32 = model(x).numpy()
        y64 = model.double()(x.double()).numpy()
    # float64 on both sides: the same function. float32: 53 layers of rounding on each side,
    # as far apart as MXNet's own float32 and float64 logits (benchmarks/open-atac-import.md).
    np.testing.assert_allclose(y64, ref["logits64"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(y32, ref["logits32"], rtol=0, atol=2e-4)
    assert (y32.argmax(1) == ref["logits32"].argmax(1)).all()
