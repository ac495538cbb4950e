"""Import of the authors' Gluon networks, checked against MXNet 1.9.1's own logits.

Fixtures: tools/make_open_atac_fixtures.py ran the authors' unmodified ``ResNet20V2ATAC`` with
random weights and BatchNorm statistics, saved them with ``save_parameters`` and recorded MXNet's
eval-mode logits on fixed inputs (float32, and float64 with the network cast).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import attnact
from attnact.weights import (
    ArchitectureError,
    NotMXNetParamsError,
    convert_open_atac,
    infer_architecture,
    load_open_atac,
    read_params,
)
from attnact.weights.preprocess import CIFAR_EVAL

FIXTURES = Path(__file__).parent / "fixtures"
CONFIGS = json.loads((FIXTURES / "cifar_configs.json").read_text())
LOGITS = np.load(FIXTURES / "cifar_logits.npz")


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_cifar_import_matches_mxnet_logits(key):
    model = attnact.load_open_atac(FIXTURES / f"cifar_{key}.params")
    assert not model.training
    x = torch.from_numpy(LOGITS[f"{key}_x"])
    with torch.no_grad():
        y32 = model(x).numpy()
        y64 = model.double()(x.double()).numpy()
    np.testing.assert_allclose(y32, LOGITS[f"{key}_logits32"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(y64, LOGITS[f"{key}_logits64"], rtol=0, atol=1e-10)


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_cifar_architecture_follows_the_authors_arguments(key):
    cfg = CONFIGS[key]
    arch = infer_architecture(read_params(FIXTURES / f"cifar_{key}.params"))
    kw = arch.kwargs
    assert arch.gluon == "ResNet20V2ATAC" and arch.model == "resnet_cifar"
    assert kw["blocks"] == cfg["layers"][0] and kw["width"] == cfg["channels"][0]
    assert kw["num_classes"] == cfg["classes"] and kw["r"] == cfg["r"]
    assert kw["act_kwargs"] == {"use_relu": cfg["useReLU"], "use_global": cfg["useGlobal"]}
    # The authors' --act-layers (ResNet20V2ATAC.__init__): with 'bac', stage i (0-based) has
    # ATAC when i + act_layers >= 4 and the final unit when act_layers > 0; with 'pre', stage i
    # when i < act_layers and the final unit when act_layers >= 4.
    k, b = cfg["act_layers"], cfg["layers"][0]
    if cfg["act_order"] == "bac":
        stages, final = [i + k >= 4 for i in range(3)], k > 0
    else:
        stages, final = [i < k for i in range(3)], k >= 4
    want = (*(s for s in stages for _ in range(2 * b)), final)
    assert arch.atac_sites == want
    assert arch.preprocessing == CIFAR_EVAL


def test_imported_model_has_the_attnact_host_parameter_count():
    model = load_open_atac(FIXTURES / "cifar_all.params")
    params = read_params(FIXTURES / "cifar_all.params")
    # Every Gluon parameter except the running statistics and the input BN's fixed gamma/beta
    # is a trainable attnact parameter, and vice versa.
    stats = ("running_mean", "running_var")
    gluon = sum(v.size for k, v in params.items()
                if not k.endswith(stats) and not k.startswith("features.0."))
    assert sum(p.numel() for p in model.parameters()) == gluon
    assert isinstance(model.act, attnact.ATAC)


def test_stage_with_extra_block_names_the_parameter():
    params = dict(read_params(FIXTURES / "cifar_all.params"))
    params["features.3.1.bn1.gamma"] = np.ones(12, np.float32)
    with pytest.raises(ArchitectureError, match=r"'features\.3\.1\.bn1\.gamma'"):
        convert_open_atac(params)


def test_shape_mismatch_names_the_parameter():
    params = dict(read_params(FIXTURES / "cifar_all.params"))
    params["output.weight"] = np.zeros((10, 23), np.float32)
    with pytest.raises(ArchitectureError, match=r"'output\.weight'.*shape \(10, 23\)"):
        convert_open_atac(params)


def test_missing_parameter_is_named():
    params = dict(read_params(FIXTURES / "cifar_all.params"))
    del params["features.5.running_var"]
    with pytest.raises(ArchitectureError, match=r"lacks parameter 'features\.5\.running_var'"):
        convert_open_atac(params)


def test_unknown_network_names_its_first_parameter():
    with pytest.raises(ArchitectureError, match=r"'f32' does not fit"):
        load_open_atac(FIXTURES / "ndarray_dtypes.params")


def test_atac_in_the_middle_is_refused():
    params = dict(read_params(FIXTURES / "cifar_pre1_global.params"))  # stage 1 only
    moved = {k.replace("features.2.0.msAA1", "features.3.0.msAA1"): v for k, v in params.items()}
    # Sites in forward order: 2.0.msAA1 (now plain), 2.0.msAA2, 3.0.msAA1 (moved), ...
    stray = r"'features\.2\.0\.msAA2\.module\.1\.weight'.*neither the first nor the last"
    with pytest.raises(ArchitectureError, match=stray):
        convert_open_atac(moved)


def test_nonzero_input_bn_beta_is_refused():
    params = dict(read_params(FIXTURES / "cifar_all.params"))
    params["features.0.beta"] = np.full(3, 0.5, np.float32)
    with pytest.raises(ArchitectureError, match=r"'features\.0\.beta'"):
        convert_open_atac(params)


def test_not_a_params_file(tmp_path):
    path = tmp_path / "x.params"
    path.write_text("hello, not MXNet")
    with pytest.raises(NotMXNetParamsError):
        load_open_atac(path)
