"""The authors' ResNet50_v1bATAC parameter names and shapes (as MXNet 1.9.1 lists them for the
released run's arguments) map completely onto attnact's resnet50_v1b."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attnact.weights import ArchitectureError, convert_open_atac, infer_architecture

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "resnet50_v1b_atac_params.json")
                     .read_text())


def _params(rows=FIXTURE["parameters"]) -> dict[str, np.ndarray]:
    # Zero-stride views: shapes and dtypes without 112 MB of zeros.
    return {name: np.broadcast_to(np.zeros((), dtype), shape) for name, shape, dtype in rows}


def test_architecture_is_the_released_run():
    arch = infer_architecture(_params())
    assert arch.gluon == "ResNet50_v1bATAC" and arch.model == "resnet50_v1b"
    # train_imagenet.py --r 2 --act-layers 2: ATAC at relu1/relu2 of layer3 and layer4.
    assert arch.kwargs["act_stages"] == 2 and arch.kwargs["r"] == 2
    assert arch.kwargs["num_classes"] == 1000
    assert arch.gluon_sites[0] == "layer3.0.relu1" and arch.gluon_sites[-1] == "layer4.2.relu2"
    assert arch.atac_sites == (True,) * 18


def test_every_parameter_maps_and_counts_agree():
    params = _params()
    model = convert_open_atac(params)  # raises, naming it, on any parameter that does not fit
    trainable = sum(int(np.prod(s)) for n, s, _ in FIXTURE["parameters"]
                    if not n.endswith(("running_mean", "running_var")))
    assert sum(p.numel() for p in model.parameters()) == trainable == 27_934_760
    buffers = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert len(buffers) == len(params)
    # float16 convolution/dense weights, float32 BatchNorm: as cast('float16') stores them.
    dtypes = {d for _, _, d in FIXTURE["parameters"]}
    assert dtypes == {"float16", "float32"}


def test_a_resnet101_stage_is_named():
    rows = [r for r in FIXTURE["parameters"]]
    extra = [[n.replace("layer3.5.", "layer3.6."), s, d] for n, s, d in rows
             if n.startswith("layer3.5.")]
    with pytest.raises(ArchitectureError, match=r"'layer3\.6\.conv1\.weight'.*6 bottlenecks"):
        infer_architecture(_params(rows + extra))


def test_atac_in_an_early_stage_only_is_refused():
    rows = [[n.replace("layer4.", "layer2.") if ".relu" in n and n.startswith("layer4.0") else n,
             s, d] for n, s, d in FIXTURE["parameters"]]
    stray = r"'layer2\.0\.relu1\.module\.0\.weight'.*some sites only"
    with pytest.raises(ArchitectureError, match=stray):
        convert_open_atac(_params(rows))


def test_plain_resnet50_loads_with_relu_everywhere():
    rows = [r for r in FIXTURE["parameters"] if ".relu" not in r[0]]
    model = convert_open_atac(_params(rows))
    assert model.open_atac.kwargs["act_stages"] == 0 and model.open_atac.kwargs["act"] == "relu"
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # torchvision's ResNet-50
