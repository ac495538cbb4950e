"""Every registered model × every dataset format, through the commands a user types.

Tiny files in the real formats (IDX 1×28×28 as MNIST, CIFAR-10 pickles 3×32×32, SVHN ``.mat``
3×32×32, an ImageNet-style image folder 3×224×224) go through ``attnact train``, ``compare``
(one step, tiny batch; the table must be written) and ``info --dataset``. A model that cannot
take a format must say so before anything trains, naming both (MNIST-Conv cannot take 224×224).

Datasets the machine has no copy of are used on purpose (MNIST, not the installed
Fashion-MNIST), so a lookup that missed the tiny files could not silently train on other data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attnact.cli import main
from attnact.models import list_models, model_spec

FORMATS = ("mnist", "cifar10", "svhn", "imagenet")
# One sample as the model sees it, from the files written below.
SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "svhn": (3, 32, 32),
          "imagenet": (3, 224, 224)}
# (model, format) pairs that cannot work, with a word the error must contain.
IMPOSSIBLE = {("mnist_conv", "imagenet"): "224×224"}


@pytest.fixture(autouse=True)
def _no_real_data(tmp_path_factory, monkeypatch):
    """Only the tiny files exist: no user cache, no $ATTNACT_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("ATTNACT_DATA", raising=False)


def _image_folder(root: Path, *, classes: int = 2, per_class: int = 2) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / "imagenet" / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (240, 260, 3), dtype=np.uint8)
                Image.fromarray(arr).save(folder / f"{i}.png")


@pytest.fixture
def datasets(tmp_path, make_mnist, make_cifar10, make_svhn) -> Path:
    """One directory with every format, as <root>/<dataset>/<files>."""
    root = tmp_path / "data"
    make_mnist(root / "mnist", n_train=8, n_test=4)
    (root / "cifar10").mkdir(parents=True)
    make_cifar10(root / "cifar10" / "cifar-10-python.tar.gz", per_batch=2)
    (root / "svhn").mkdir()
    for split in ("train", "test"):
        make_svhn(root / "svhn" / f"{split}_32x32.mat", n=6)
    _image_folder(root)
    return root


def _tiny_args(model: str, fmt: str) -> list[str]:
    """Overrides that make one training step cheap, on any input size."""
    args = ["batch_size=2", "test_batch_size=4", "limit_test=4", "max_steps_per_epoch=1"]
    if model == "resnet_cifar":
        args.append("model_kwargs.blocks=1")  # ResNet-8: the same stages, fewer blocks
    elif "width" in model_spec(model).arguments:
        # The zoo's channel multiplier. Not below 1/4 at 224×224: torch 2.13's CPU backward of
        # a channels-last 1×1 stride-2 convolution with <= 8 input channels at >= 64×64
        # crashes the process (bench runs channels-last; reproduced with a bare nn.Conv2d).
        args.append(f"model_kwargs.width={0.25 if fmt == 'imagenet' else 0.125}")
    return args


# ResNet-50 at 224×224 is the one case that takes most of a minute on 2 cores: a slow test.
SLOW = {("resnet50_v1b", "imagenet")}
CASES = [pytest.param(m, f, id=f"{m}-{f}", marks=[pytest.mark.slow] if (m, f) in SLOW else [])
         for m in list_models() for f in FORMATS]


@pytest.mark.parametrize(("model", "fmt"), CASES)
def test_train_compare_and_info(model, fmt, datasets, tmp_path, capsys):
    common = ["--model", model, "--dataset", fmt, "--data-dir", str(datasets), "--epochs", "1"]
    tiny = _tiny_args(model, fmt)
    if (model, fmt) in IMPOSSIBLE:
        code = main(["train", *common, "--out", str(tmp_path / "run"), "--no-progress", *tiny])
        err = capsys.readouterr().err
        assert code == 2
        assert model in err and fmt in err and IMPOSSIBLE[model, fmt] in err, err
        assert not (tmp_path / "run" / "checkpoint.pt").exists()  # nothing trained
        code = main(["compare", "--acts", "relu,arelu", "--seeds", "1", *common,
                     "--out", str(tmp_path / "cmp"), "--quiet", "--time-rounds", "1", *tiny])
        err = capsys.readouterr().err
        assert code == 2 and model in err and fmt in err, err
        assert not (tmp_path / "cmp" / "runs" / "relu").exists()  # failed before training
        return

    assert main(["train", *common, "--out", str(tmp_path / "run"), "--no-progress", *tiny]) == 0
    assert (tmp_path / "run" / "summary.json").is_file()

    out = tmp_path / "cmp"
    code = main(["compare", "--acts", "relu,arelu", "--seeds", "1", *common, "--out", str(out),
                 "--quiet", "--time-rounds", "1", *tiny])
    printed = capsys.readouterr().out
    assert code == 0, printed
    table = (out / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| relu") or
            line.startswith("| arelu")]
    assert len(rows) == 2, table
    assert "not measured" not in table and "not counted" not in table, table  # every column

    assert main(["info", "--model", model, "--act", "arelu", "--dataset", fmt]) == 0
    report = capsys.readouterr().out
    assert "×".join(map(str, SHAPES[fmt])) in report

    _bench(model, fmt)


def _bench(model: str, fmt: str) -> None:
    """attnact bench's MODEL@DATASET host: the model at the dataset's input, every variant."""
    from dataclasses import replace

    from attnact.perf.bench import VARIANTS, resolve_host, run_bench

    host = resolve_host(f"{model}@{fmt}")
    assert host.input_shape == SHAPES[fmt]
    tiny = dict(a.split("=", 1) for a in _tiny_args(model, fmt) if a.startswith("model_kw"))
    kwargs = {k.split(".", 1)[1]: float(v) if "." in v else int(v) for k, v in tiny.items()}
    host = replace(host, batch=2, model_kwargs={**host.model_kwargs, **kwargs})
    variants = [v for v in VARIANTS if v.label in ("relu", "arelu", "atac")]
    rows = run_bench([host], variants, rounds=1, warmup=0)
    assert [r.variant for r in rows] == ["relu", "arelu", "atac"]
    assert all(r.skipped is None and r.train_vs_relu > 0 and r.saved_bytes > 0 for r in rows)
