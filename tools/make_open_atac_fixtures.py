"""Regenerate tests/weights/fixtures/ with real MXNet and the authors' unmodified model code.

Runs in a side virtual environment that has MXNet (never an attnact dependency)::

    python3 -m venv /work/mxnet-venv
    /work/mxnet-venv/bin/pip install 'numpy<1.24' mxnet==1.9.1
    git clone https://github.com/YimianDai/open-atac /tmp/open-atac   # or any copy of model/
    /work/mxnet-venv/bin/python tools/make_open_atac_fixtures.py --open-atac /tmp/open-atac

``--open-atac`` is a directory holding the authors' ``model/`` package (activation.py,
classification.py); it is imported as it is, nothing of it is copied here.

What it writes (``--out``, default tests/weights/fixtures/):

* ``cifar_<key>.params``: ``ResNet20V2ATAC`` networks (small widths, to keep the files small)
  with random weights and random BatchNorm running statistics, written by ``save_parameters``;
  one of them cast to float16 first, as the authors' ImageNet run did (``--dtype float16``:
  convolution and dense weights float16, BatchNorm float32).
* ``cifar_logits.npz``: per network, the fixed inputs and MXNet's eval-mode logits, in float32
  and (the same parameters, the network cast to float64) in float64.
* ``cifar_configs.json``: the constructor arguments of each network.
* ``ndarray_dtypes.params`` / ``.npz``: ``mx.nd.save`` of one array per dtype, and the arrays
  as MXNet reads them back; ``ndarray_np_shape.*`` the same under NumPy shape semantics.
* ``resnet50_v1b_atac_params.json``: every parameter name, shape and dtype of the authors'
  ``ResNet50_v1bATAC`` as trained (``act_layers=2``, ``r=2``, ``last_gamma``, float16).

``--resnet50 DIR`` instead writes a full ``ResNet50_v1bATAC`` with random weights (a float16
file, as trained; BatchNorm statistics set from a batch, see ``_calibrate``) and MXNet's float32
and float64 logits on fixed inputs into DIR, for the slow test (tests/weights/test_mxnet_slow.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mxnet as mx
import numpy as np

CIFAR_CONFIGS = {
    # all stages ATAC (the authors' default act_layers=4), r = 2
    "all": dict(layers=[1, 1, 1], channels=[6, 6, 12, 24], classes=10, act_type="ChaATAC",
                r=2, useReLU=True, useGlobal=False, act_layers=4, act_order="bac",
                dtype="float32"),
    # ATAC in the last stage and the final unit only (act_layers=2, 'bac'), r = 4, 2 blocks,
    # saved after cast('float16')
    "last2_fp16": dict(layers=[2, 2, 2], channels=[6, 6, 12, 24], classes=7,
                       act_type="ChaATAC", r=4, useReLU=True, useGlobal=False, act_layers=2,
                       act_order="bac", dtype="float16"),
    # ATAC in stage 1 only ('pre' order, act_layers=1), global context, no inner ReLU
    "pre1_global": dict(layers=[1, 1, 1], channels=[6, 6, 12, 24], classes=5,
                        act_type="ChaATAC", r=2, useReLU=False, useGlobal=True, act_layers=1,
                        act_order="pre", dtype="float32"),
}
N_INPUTS = 3


def _import_authors(root: Path):
    if not (root / "model" / "classification.py").is_file():
        sys.exit(f"{root} has no model/classification.py (the open-atac repository)")
    sys.path.insert(0, str(root))
    import model  # the authors' package

    return model


def _randomise(net, rng: np.random.Generator, *, keep_input_bn_beta: bool) -> None:
    """Random weights, and BatchNorm statistics far from (0, 1) so that eval mode matters."""
    params = net._collect_params_with_prefix()  # structural names, as save_parameters writes
    for name, p in params.items():
        shape = p.shape
        if name.endswith("running_var"):
            v = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("running_mean"):
            v = rng.normal(0.0, 0.3, shape)
        elif name.endswith("gamma"):
            v = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("beta"):
            v = rng.normal(0.0, 0.2, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            v = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        p.set_data(mx.nd.array(v.astype(np.float32)))
    if keep_input_bn_beta:
        # The input BatchNorm(scale=False, center=False) has beta fixed at 0 (grad_req null);
        # its gamma is ignored by MXNet (fix_gamma), so it stays random to show that.
        params["features.0.beta"].set_data(mx.nd.zeros(params["features.0.beta"].shape))


def _calibrate(net, x: np.ndarray) -> None:
    """Set every BatchNorm's running statistics to its batch statistics on ``x`` (one
    training-mode pass with momentum 0), as training leaves them: with random statistics the
    activations of a 50-layer ATAC network grow so large that ATAC's product x·L(x) amplifies
    float32 rounding from block to block and no two implementations agree in float32
    (benchmarks/open-atac-import.md)."""
    bns = [b for b in _blocks(net) if type(b).__name__ == "BatchNorm"]
    for b in bns:
        b._kwargs["momentum"] = 0.0
    with mx.autograd.record(train_mode=True):
        y = net(mx.nd.array(x))
    y.backward()  # MXNet updates the running statistics in the backward pass
    mx.nd.waitall()
    for b in bns:
        b._kwargs["momentum"] = 0.9


def _blocks(block):
    yield block
    for child in block._children.values():
        yield from _blocks(child)


def _round_to_fp16(net) -> None:
    """Round every parameter that cast('float16') would store as float16, so that the float32
    logits belong to exactly the values in the float16 file."""
    for name, p in net._collect_params_with_prefix().items():
        if not name.endswith(("gamma", "beta", "running_mean", "running_var")):
            p.set_data(mx.nd.array(p.data().asnumpy().astype(np.float16).astype(np.float32)))


def _save(net, path: Path, dtype: str) -> None:
    if dtype == "float16":
        net.cast("float16")
        net.save_parameters(str(path))
        net.cast("float32")
    else:
        net.save_parameters(str(path))


def _logits(net, x: np.ndarray, dtype: str) -> np.ndarray:
    net.cast(dtype)
    out = net(mx.nd.array(x, dtype=dtype)).asnumpy()
    net.cast("float32")
    return out


def make_cifar(model, out: Path, rng: np.random.Generator) -> None:
    logits: dict[str, np.ndarray] = {}
    configs = {}
    for key, cfg in CIFAR_CONFIGS.items():
        kw = {k: v for k, v in cfg.items() if k != "dtype"}
        net = model.ResNet20V2ATAC(
            skernel=3, dilation=1, replace_act="relu", asBackbone=False, **kw
        )
        net.initialize(mx.init.MSRAPrelu())
        x = rng.normal(0.0, 1.0, (N_INPUTS, 3, 16, 16)).astype(np.float32)
        net(mx.nd.array(x))  # completes the deferred shapes
        _randomise(net, rng, keep_input_bn_beta=True)
        if cfg["dtype"] == "float16":
            _round_to_fp16(net)
        # The saved file is the reference: reload it so that the logits are the file's.
        _save(net, out / f"cifar_{key}.params", cfg["dtype"])
        net.load_parameters(str(out / f"cifar_{key}.params"), cast_dtype=True)
        with mx.autograd.predict_mode():
            logits[f"{key}_x"] = x
            logits[f"{key}_logits32"] = _logits(net, x, "float32")
            logits[f"{key}_logits64"] = _logits(net, x.astype(np.float64), "float64")
        configs[key] = cfg
    np.savez_compressed(out / "cifar_logits.npz", **logits)
    (out / "cifar_configs.json").write_text(json.dumps(configs, indent=1) + "\n")


def make_dtypes(out: Path, rng: np.random.Generator) -> None:
    arrays = {
        "f32": rng.normal(size=(2, 3)).astype(np.float32),
        "f64": rng.normal(size=(3,)).astype(np.float64),
        "f16": rng.normal(size=(2, 2, 2)).astype(np.float16),
        "u8": rng.integers(0, 256, (5,)).astype(np.uint8),
        "i32": rng.integers(-1000, 1000, (2, 2)).astype(np.int32),
        "i8": rng.integers(-128, 128, (4,)).astype(np.int8),
        "i64": rng.integers(-(2**40), 2**40, (3,)).astype(np.int64),
        "conv": rng.normal(size=(4, 2, 3, 3)).astype(np.float32),
    }
    mx.nd.save(str(out / "ndarray_dtypes.params"),
               {k: mx.nd.array(v, dtype=v.dtype) for k, v in arrays.items()})
    back = mx.nd.load(str(out / "ndarray_dtypes.params"))
    np.savez(out / "ndarray_dtypes.npz", **{k: v.asnumpy() for k, v in back.items()})
    # NumPy shape semantics (mx.npx.set_np) write the v3 array magic, and allow 0-d and
    # zero-size arrays.
    with mx.util.np_shape(True):
        v3 = {"m": mx.nd.array(arrays["f32"]), "scalar": mx.nd.array(np.float32(2.5)).reshape(()),
              "empty": mx.nd.zeros((2, 0))}
        mx.nd.save(str(out / "ndarray_np_shape.params"), v3)
        back = mx.nd.load(str(out / "ndarray_np_shape.params"))
        np.savez(out / "ndarray_np_shape.npz", **{k: v.asnumpy() for k, v in back.items()})


def _resnet50(model):
    # As trained: train_imagenet.py with the log's arguments (act_layers=2, r=2, last_gamma).
    return model.ResNet50_v1bATAC(act_type="ChaATAC", r=2, act_layers=2, layers=[3, 4, 6, 3],
                                  classes=1000, last_gamma=True)


def make_resnet50_names(model, out: Path) -> None:
    net = _resnet50(model)
    net.initialize(mx.init.MSRAPrelu())
    net(mx.nd.zeros((1, 3, 224, 224)))
    net.cast("float16")  # the run's --dtype float16; BatchNorm stays float32
    path = out / "_resnet50_tmp.params"
    net.save_parameters(str(path))
    loaded = mx.nd.load(str(path))
    path.unlink()
    rows = [[k, list(v.shape), np.dtype(v.dtype).name] for k, v in loaded.items()]
    (out / "resnet50_v1b_atac_params.json").write_text(
        json.dumps({"mxnet": mx.__version__, "model": "ResNet50_v1bATAC(act_type='ChaATAC', "
                    "r=2, act_layers=2, layers=[3, 4, 6, 3], classes=1000, last_gamma=True), "
                    "cast('float16')", "parameters": rows}, indent=0) + "\n")


def make_resnet50_full(model, out: Path, rng: np.random.Generator) -> None:
    net = _resnet50(model)
    net.initialize(mx.init.MSRAPrelu())
    x = rng.normal(0.0, 1.0, (2, 3, 224, 224)).astype(np.float32)
    net(mx.nd.array(x))
    _randomise(net, rng, keep_input_bn_beta=False)
    _round_to_fp16(net)
    _calibrate(net, rng.normal(0.0, 1.0, (4, 3, 224, 224)).astype(np.float32))
    _save(net, out / "resnet50_v1b_atac.params", "float16")
    net.load_parameters(str(out / "resnet50_v1b_atac.params"), cast_dtype=True)
    with mx.autograd.predict_mode():
        np.savez(out / "resnet50_v1b_atac_logits.npz", x=x, logits32=_logits(net, x, "float32"),
                 logits64=_logits(net, x.astype(np.float64), "float64"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--open-atac", required=True, type=Path, help="directory with model/")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1]
                    / "tests" / "weights" / "fixtures")
    ap.add_argument("--resnet50", type=Path, default=None,
                    help="write a full random ResNet50_v1bATAC and its logits here instead")
    ap.add_argument("--seed", type=int, default=15)
    args = ap.parse_args()
    model = _import_authors(args.open_atac.resolve())
    rng = np.random.default_rng(args.seed)
    mx.random.seed(args.seed)
    if args.resnet50 is not None:
        args.resnet50.mkdir(parents=True, exist_ok=True)
        make_resnet50_full(model, args.resnet50, rng)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    make_cifar(model, args.out, rng)
    make_dtypes(args.out, rng)
    make_resnet50_names(model, args.out)


if __name__ == "__main__":
    main()
