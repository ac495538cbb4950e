"""Generated bad-input fuzz test (issue #13): every bad input gets a clear error of ours.

The cases are built from tables: every ``TrainConfig`` field x bad values of the wrong type,
range, non-finite, empty or huge; every command's flags x bad values; unknown names of models,
activations, datasets, presets and experiments; unit and model keyword arguments; the public API
functions with bad arguments.

- A command-line case runs ``attnact.cli.main`` in process and must exit 2 with an
  ``attnact...: error:`` line that names the bad flag, field or value, and no traceback.
- An API case must raise ValueError or TypeError naming the argument, raised by attnact's own
  code (the innermost traceback frame is a file under ``src/attnact``), not by torch or Python.

A value that is accepted fails its case (silent acceptance), so every command here is set up to
stop after at most one training step: tiny data files, ``max_steps_per_epoch=1``, one seed, no
timing rounds; ``reproduce`` must not reach its preflight (patched to fail the case).
"""

from __future__ import annotations

import logging
import math
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import attnact
import attnact.cli

SRC = Path(attnact.__file__).resolve().parent


# ------------------------------------------------------------------------------- the helpers
class WouldTrain(AssertionError):
    """Raised by the patched reproduce preflight: the bad input was accepted."""


def assert_our_error(call: Callable[[], Any], *names: str) -> BaseException:
    """``call()`` raises ValueError/TypeError from a file under src/attnact whose message names
    every string in ``names`` (case-insensitive)."""
    try:
        result = call()
    except (ValueError, TypeError) as err:
        frames = traceback.extract_tb(err.__traceback__)
        innermost = Path(frames[-1].filename).resolve()
        # Python's own check of a signature ("got an unexpected keyword argument 'x'") is
        # raised at the call, before any code runs: a clear error naming the argument too.
        signature = isinstance(err, TypeError) and "unexpected keyword argument" in str(err)
        assert signature or SRC in innermost.parents, (
            f"{type(err).__name__} raised outside attnact, in {innermost}:{frames[-1].lineno}: "
            f"{err}"
        )
        message = str(err).lower()
        for name in names:
            assert name.lower() in message, f"message does not name {name!r}: {err}"
        return err
    except WouldTrain:
        raise
    except Exception as err:
        frames = traceback.extract_tb(err.__traceback__)
        pytest.fail(f"{type(err).__name__} instead of a clear error, from "
                    f"{frames[-1].filename}:{frames[-1].lineno}: {err}")
    pytest.fail(f"accepted silently (returned {type(result).__name__})")


ERROR_LINE = re.compile(r"^attnact[\w .-]*: error: .+", re.MULTILINE)


def assert_cli_error(argv: list[str], capsys: pytest.CaptureFixture[str], *names: str) -> str:
    """``attnact <argv>`` exits 2 with one ``attnact...: error:`` line naming ``names``."""
    try:
        code = attnact.cli.main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    except WouldTrain:
        raise
    except Exception as err:
        frames = traceback.extract_tb(err.__traceback__)
        pytest.fail(f"traceback: {type(err).__name__} from {frames[-1].filename}:"
                    f"{frames[-1].lineno}: {err}")
    err_text = capsys.readouterr().err
    assert "Traceback" not in err_text, err_text
    assert code == 2, f"exit code {code} (want 2); stderr: {err_text!r}"
    lines = ERROR_LINE.findall(err_text)
    assert len(lines) == 1, f"want one 'attnact...: error:' line, stderr: {err_text!r}"
    # the message may go on below its first line (a not-found dataset lists where it looked)
    message = err_text[err_text.index(lines[0]):].lower()
    for name in names:
        assert name.lower() in message, f"error does not name {name!r}: {err_text!r}"
    return lines[0]


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[Any, ...]  # argv (CLI) or (callable-builder,) (API)
    names: tuple[str, ...] = ()
    xfail: str | None = None
    marks: tuple[Any, ...] = field(default=())

    def param(self) -> Any:
        marks = list(self.marks)
        if self.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=self.xfail))
        return pytest.param(self, id=self.id, marks=marks)


# ------------------------------------------------------------------- TrainConfig field tables
NAN, INF = math.nan, math.inf
HUGE = 10**30
WRONG_TYPES: tuple[tuple[str, Any], ...] = (("list", [1]), ("dict", {"a": 1}), ("bool", True))

# field -> bad values (label, value). Labels make the test ids readable.
CONFIG_BAD: dict[str, list[tuple[str, Any]]] = {
    "model": [("empty", ""), ("int", 3), ("null", None), ("list", ["mnist_conv"])],
    "act": [("empty", ""), ("int", 3), ("null", None), ("dict", {"a": 1})],
    "dataset": [("empty", ""), ("int", 3), ("null", None)],
    "act_kwargs": [("str", "alpha"), ("list", [1]), ("int", 3), ("intkey", {1: 2}),
                   ("emptykey", {"": 1})],
    "model_kwargs": [("str", "blocks"), ("list", [1]), ("intkey", {1: 2})],
    "maml": [("str", "x"), ("list", [1]), ("intkey", {1: 2}), ("unknown", {"wayz": 5}),
             ("zero", {"ways": 0}), ("bogus", {"split": "tasks"})],
    "transfer": [("str", "x"), ("list", [1]), ("nosource", {"target": {"dataset": "svhn"}}),
                 ("empty", {"source": {"dataset": ""}, "target": {"dataset": "svhn"}}),
                 ("zero", {"source": {"dataset": "mnist"}, "target": {"dataset": "svhn"},
                           "finetune_epochs": 0})],
    "data_dir": [("int", 3), ("list", ["a"]), ("empty", "")],
    "augment": [("bogus", "bogus"), ("int", 3), ("empty", "")],
    "pad_to": [("zero", 0), ("negative", -4), ("float", 1.5), ("str", "big"), ("bool", True)],
    "limit_train": [("zero", 0), ("negative", -1), ("float", 2.5), ("str", "all")],
    "limit_test": [("zero", 0), ("negative", -1), ("nan", NAN)],
    "num_workers": [("negative", -1), ("float", 0.5), ("str", "many")],
    "epochs": [("zero", 0), ("negative", -3), ("float", 1.5), ("str", "ten"), ("bool", True),
               ("nan", NAN), ("inf", INF), ("list", [1])],
    "batch_size": [("zero", 0), ("negative", -8), ("float", 7.5), ("str", "x"), ("null", None),
                   ("bool", False)],
    "test_batch_size": [("zero", 0), ("negative", -2), ("str", "x")],
    "optimizer": [("bogus", "rmsprop"), ("empty", ""), ("int", 1), ("null", None)],
    "lr": [("nan", NAN), ("inf", INF), ("neginf", -INF), ("negative", -0.1), ("str", "fast"),
           ("bool", True), ("null", None), ("list", [0.1])],
    "momentum": [("one", 1.0), ("negative", -0.1), ("nan", NAN), ("inf", INF), ("str", "x")],
    "weight_decay": [("nan", NAN), ("inf", INF), ("negative", -1e-4), ("str", "x")],
    "no_wd_bn_bias": [("str", "yes"), ("int", 1), ("null", None)],
    "schedule": [("bogus", "linear"), ("empty", ""), ("int", 0)],
    "milestones": [("decreasing", [3, 1]), ("zero", [0]), ("negative", [-1]),
                   ("float", [1.5]), ("str", "x"), ("dict", {"a": 1}), ("nan", [NAN])],
    "gamma": [("zero", 0.0), ("above_one", 1.5), ("nan", NAN), ("inf", INF), ("str", "x")],
    "warmup_epochs": [("negative", -1.0), ("nan", NAN), ("inf", INF), ("str", "x")],
    "label_smoothing": [("one", 1.0), ("negative", -0.1), ("nan", NAN), ("str", "x")],
    "device": [("bogus", "tpu"), ("empty", ""), ("int", 0)],
    "channels_last": [("str", "yes"), ("int", 1)],
    "bf16": [("str", "no"), ("int", 0)],
    "sync_bn": [("str", "on")],
    "seed": [("negative", -1), ("huge", HUGE), ("two32", 2**32), ("float", 0.5), ("str", "x"),
             ("nan", NAN), ("bool", True)],
    "deterministic": [("str", "true"), ("int", 1)],
    "max_steps_per_epoch": [("zero", 0), ("negative", -1), ("float", 0.5)],
    "out_dir": [("empty", ""), ("blank", "  "), ("int", 3), ("list", ["a"])],
    "resume": [("str", "yes"), ("int", 1)],
    "loggers": [("bogus", ["tensorflow"]), ("str", "tensorboard,wand"), ("int", 3),
                ("dict", {"a": 1})],
    "log_every_steps": [("zero", 0), ("negative", -1), ("float", 0.5), ("str", "often")],
    "mlflow_tracking_uri": [("empty", ""), ("int", 3)],
    "progress": [("str", "no"), ("int", 0)],
}

# The name to find in the message: the field, except where the value is what is wrong
# ("TrainConfig.milestones[0]" names the field too).
def _config_cases() -> list[Case]:
    cases = []
    for name, bad in CONFIG_BAD.items():
        for label, value in bad:
            cases.append(Case(f"TrainConfig.{name}={label}", (name, value), (name,)))
    return cases


CONFIG_CASES = _config_cases()


@pytest.mark.parametrize("case", [c.param() for c in CONFIG_CASES])
def test_train_config_field(case: Case) -> None:
    from attnact.train.config import TrainConfig

    name, value = case.args
    assert_our_error(lambda: TrainConfig(**{name: value}), *case.names)


@pytest.mark.parametrize(
    "case",
    [c.param() for c in CONFIG_CASES
     # via replace() and from_dict(): the same checks on every way in
     if c.args[1] is not None and c.id.endswith(("=nan", "=inf", "=str", "=empty", "=zero"))],
)
def test_train_config_replace_and_from_dict(case: Case) -> None:
    from attnact.train.config import TrainConfig

    name, value = case.args
    assert_our_error(lambda: TrainConfig().replace(**{name: value}), *case.names)
    assert_our_error(lambda: TrainConfig.from_dict({name: value}), *case.names)


CONFIG_MISC: list[Case] = [
    Case("unknown-field", (lambda C: C(lrr=0.1),), ("lrr",)),
    Case("from_dict-unknown-field", (lambda C: C.from_dict({"epoch": 3}),), ("epoch",)),
    Case("preset-unknown", (lambda C: C.preset("atac-cifra"),), ("atac-cifra",)),
    Case("preset-unknown-override", (lambda C: C.preset("demo", batchsize=3),), ("batchsize",)),
    Case("from_dict-bad-preset", (lambda C: C.from_dict({"preset": "bogus"}),), ("bogus",)),
    Case("override-no-equals", (lambda C: C().with_overrides(["epochs"]),), ("epochs",)),
    Case("override-empty-key", (lambda C: C().with_overrides(["=3"]),), ("=3",)),
    Case("override-unknown", (lambda C: C().with_overrides(["epoch=3"]),), ("epoch",)),
    Case("override-dot-on-scalar", (lambda C: C().with_overrides(["lr.x=3"]),), ("lr",)),
    Case("override-bad-yaml", (lambda C: C().with_overrides(["milestones=[1,"]),),
         ("milestones",)),
    Case("override-nan", (lambda C: C().with_overrides(["lr=.nan"]),), ("lr",)),
    Case("nag-zero-momentum", (lambda C: C(optimizer="nag", momentum=0.0),), ("momentum",)),
    Case("step-without-milestones", (lambda C: C(schedule="step"),), ("milestones",)),
    Case("resume-without-out_dir", (lambda C: C(resume=True),), ("resume",)),
    Case("from_yaml-list", (lambda C, tmp: C.from_yaml(_write(tmp / "c.yaml", "- 1\n")),),
         ("mapping",)),
    Case("from_yaml-bad-yaml", (lambda C, tmp: C.from_yaml(_write(tmp / "c.yaml", "a: [1\n")),),
         ("c.yaml",)),
    Case("from_yaml-missing", (lambda C, tmp: C.from_yaml(tmp / "missing.yaml"),),
         ("missing.yaml",)),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", [c.param() for c in CONFIG_MISC])
def test_train_config_misc(case: Case, tmp_path: Path) -> None:
    from attnact.train.config import TrainConfig

    (build,) = case.args
    if build.__code__.co_argcount == 2:
        assert_our_error(lambda: build(TrainConfig, tmp_path), *case.names)
    else:
        assert_our_error(lambda: build(TrainConfig), *case.names)


# ------------------------------------------------------------------------- units (public API)
def _elsa_inplace_module():
    return attnact.ELSA(nn.ReLU(inplace=True))


UNIT_CASES: list[Case] = []
for _label, _kw, _names in [
    ("channels-zero", {"channels": 0}, ("channels",)),
    ("channels-negative", {"channels": -4}, ("channels",)),
    ("channels-float", {"channels": 8.0}, ("channels",)),
    ("channels-bool", {"channels": True}, ("channels",)),
    ("channels-str", {"channels": "8"}, ("channels",)),
    ("r-zero", {"channels": 8, "r": 0}, ("reduction ratio",)),
    ("r-negative", {"channels": 8, "r": -2}, ("reduction ratio",)),
    ("r-nan", {"channels": 8, "r": NAN}, ("reduction ratio",)),
    ("r-inf", {"channels": 8, "r": INF}, ("reduction ratio",)),
    ("r-inf-lazy", {"r": INF}, ("reduction ratio",)),
    ("r-str", {"channels": 8, "r": "2"}, ("reduction ratio",)),
    ("r-bool", {"channels": 8, "r": True}, ("reduction ratio",)),
    ("r-above-channels", {"channels": 4, "r": 8}, ("channels // r",)),
    ("use_relu-str", {"channels": 8, "use_relu": "no"}, ("use_relu",)),
    ("use_global-str", {"channels": 8, "use_global": "no"}, ("use_global",)),
    ("use_relu-none", {"channels": 8, "use_relu": None}, ("use_relu",)),
    ("memory_efficient-str", {"channels": 8, "memory_efficient": "yes"}, ("memory_efficient",)),
    ("implementation-bogus", {"channels": 8, "implementation": "fast"}, ("implementation",)),
    ("reference-memory-efficient", {"channels": 8, "implementation": "reference",
                                    "memory_efficient": True}, ("memory_efficient",)),
    ("channel_dim-2", {"channels": 8, "channel_dim": 2}, ("channel_dim",)),
    ("channel_dim-str", {"channels": 8, "channel_dim": "1"}, ("channel_dim",)),
    ("unknown-kwarg", {"channels": 8, "reduction": 2}, ("reduction",)),
]:
    UNIT_CASES.append(Case(f"ATAC-{_label}", (lambda kw=_kw: attnact.ATAC(**kw),), _names))

for _label, _kw, _names in [
    ("alpha-nan", {"alpha": NAN}, ("alpha",)),
    ("alpha-inf", {"alpha": INF}, ("alpha",)),
    ("alpha-str", {"alpha": "0.9"}, ("alpha",)),
    ("alpha-none", {"alpha": None}, ("alpha",)),
    ("alpha-bool", {"alpha": True}, ("alpha",)),
    ("alpha-list", {"alpha": [0.9]}, ("alpha",)),
    ("beta-nan", {"beta": NAN}, ("beta",)),
    ("beta-neginf", {"beta": -INF}, ("beta",)),
    ("beta-str", {"beta": "2"}, ("beta",)),
    ("beta-tensor2", {"beta": torch.ones(2)}, ("beta",)),
    ("implementation-bogus", {"implementation": "triton"}, ("implementation",)),
    ("inplace-str", {"inplace": "no"}, ("inplace",)),
    ("unknown-kwarg", {"gamma": 1.0}, ("gamma",)),
]:
    UNIT_CASES.append(Case(f"AReLU-{_label}", (lambda kw=_kw: attnact.AReLU(**kw),), _names))

for _label, _build, _names in [
    ("activation-unknown", lambda: attnact.ELSA("relux"), ("relux",)),
    ("activation-empty", lambda: attnact.ELSA(""), ("activation",)),
    ("activation-int", lambda: attnact.ELSA(3), ("activation",)),
    ("activation-none", lambda: attnact.ELSA(None), ("activation",)),
    ("activation-inplace-module", _elsa_inplace_module, ("inplace",)),
    ("module-with-kwargs", lambda: attnact.ELSA(nn.ReLU(), negative_slope=0.1), ("module",)),
    ("alpha-nan", lambda: attnact.ELSA("relu", alpha=NAN), ("alpha",)),
    ("beta-inf", lambda: attnact.ELSA("relu", beta=INF), ("beta",)),
    ("alpha-str", lambda: attnact.ELSA("relu", alpha="x"), ("alpha",)),
    ("unknown-act-kwarg", lambda: attnact.ELSA("leaky_relu", slope=0.1), ("slope",)),
    ("atac-channels-zero", lambda: attnact.ELSA("atac", channels=0), ("channels",)),
    ("atac-bad-r", lambda: attnact.ELSA("atac", channels=8, r=0), ("reduction ratio",)),
    ("implementation-bogus", lambda: attnact.ELSA("relu", implementation="x"),
     ("implementation",)),
    ("inplace-str", lambda: attnact.ELSA("relu", inplace="no"), ("inplace",)),
]:
    UNIT_CASES.append(Case(f"ELSA-{_label}", (_build,), _names))

# create_act_layer: unknown names, and unknown keys / bad values for each unit's kwargs
for _label, _build, _names in [
    ("unknown-name", lambda: attnact.create_act_layer("atacc"), ("atacc",)),
    ("empty-name", lambda: attnact.create_act_layer(""), ("''",)),
    ("int-name", lambda: attnact.create_act_layer(3), ("name_or_class",)),
    ("none-name", lambda: attnact.create_act_layer(None), ("name_or_class",)),
    ("not-a-module-class", lambda: attnact.create_act_layer(int), ("int",)),
    ("factory-returns-non-module", lambda: attnact.create_act_layer(lambda: 3), ("nn.module",)),
    ("channels-zero", lambda: attnact.create_act_layer("atac", channels=0), ("channels",)),
    ("channels-str", lambda: attnact.create_act_layer("xunit", channels="8"), ("channels",)),
    ("channels-float", lambda: attnact.create_act_layer("se_activation", channels=8.5),
     ("channels",)),
    ("atac-unknown-kwarg", lambda: attnact.create_act_layer("atac", 8, ratio=2), ("ratio",)),
    ("arelu-unknown-kwarg", lambda: attnact.create_act_layer("arelu", alfa=0.9), ("alfa",)),
    ("elsa_relu-unknown-kwarg", lambda: attnact.create_act_layer("elsa_relu", alfa=1),
     ("alfa",)),
    ("elsa_swish-alpha-nan", lambda: attnact.create_act_layer("elsa_swish", alpha=NAN),
     ("alpha",)),
    ("pau-unknown-kwarg", lambda: attnact.create_act_layer("pau", degree=3), ("degree",)),
    ("pau-numerator-zero", lambda: attnact.create_act_layer("pau", numerator_degree=0),
     ("numerator_degree",)),
    ("pau-denominator-str", lambda: attnact.create_act_layer("pau", denominator_degree="4"),
     ("denominator_degree",)),
    ("pau-init-bogus", lambda: attnact.create_act_layer("pau", init="tanh"), ("init",)),
    ("xunit-unknown-kwarg", lambda: attnact.create_act_layer("xunit", 8, kernel=9), ("kernel",)),
    ("xunit-even-kernel", lambda: attnact.create_act_layer("xunit", 8, kernel_size=4),
     ("kernel_size",)),
    ("xunit-zero-kernel", lambda: attnact.create_act_layer("xunit", 8, kernel_size=0),
     ("kernel_size",)),
    ("xunit-batch_norm-str", lambda: attnact.create_act_layer("xunit", 8, batch_norm="no"),
     ("batch_norm",)),
    ("xunit-channel_dim", lambda: attnact.create_act_layer("xunit", 8, channel_dim=3),
     ("channel_dim",)),
    ("se-unknown-kwarg", lambda: attnact.create_act_layer("se_activation", 8, use_global=False),
     ("use_global",)),
    ("se-r-zero", lambda: attnact.create_act_layer("se_activation", 8, r=0), ("reduction ratio",)),
    ("leaky_relu-unknown", lambda: attnact.create_act_layer("leaky_relu", slope=0.1),
     ("slope",)),
    ("maxout-pool-zero", lambda: attnact.create_act_layer("maxout", pool_size=0),
     ("pool_size",)),
    ("prelu-params-zero", lambda: attnact.create_act_layer("prelu", num_parameters=0),
     ("num_parameters",)),
    ("slaf-k-zero", lambda: attnact.create_act_layer("slaf", k=0), ("k must",)),
    ("apl-unknown", lambda: attnact.create_act_layer("apl", hinges=0), ("hinges",)),
    ("activation_spec-unknown", lambda: attnact.activation_spec("bogus"), ("bogus",)),
    ("activation_spec-int", lambda: attnact.activation_spec(3), ("name",)),
    ("SEActivation-r-nan", lambda: attnact.SEActivation(8, r=NAN), ("reduction ratio",)),
]:
    UNIT_CASES.append(Case(f"create_act_layer-{_label}", (_build,), _names))


@pytest.mark.parametrize("case", [c.param() for c in UNIT_CASES])
def test_unit_arguments(case: Case) -> None:
    (build,) = case.args
    assert_our_error(build, *case.names)


# ------------------------------------------------------------------- conversion and models
def _small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


CONVERT_CASES: list[Case] = []
for _label, _build, _names in [
    ("model-str", lambda: attnact.convert_activations("net", "arelu"), ("model",)),
    ("model-none", lambda: attnact.convert_activations(None, "arelu"), ("model",)),
    ("to-unknown", lambda: attnact.convert_activations(_small_net(), "arelux"), ("arelux",)),
    ("to-int", lambda: attnact.convert_activations(_small_net(), 3), ("to",)),
    ("fraction-above-one", lambda: attnact.convert_activations(_small_net(), "arelu",
                                                               fraction=1.5), ("fraction",)),
    ("fraction-negative", lambda: attnact.convert_activations(_small_net(), "arelu",
                                                              fraction=-0.1), ("fraction",)),
    ("fraction-nan", lambda: attnact.convert_activations(_small_net(), "arelu", fraction=NAN),
     ("fraction",)),
    ("fraction-str", lambda: attnact.convert_activations(_small_net(), "arelu", fraction="1"),
     ("fraction",)),
    ("order-bogus", lambda: attnact.convert_activations(_small_net(), "arelu", order="random"),
     ("order",)),
    ("example_input-str", lambda: attnact.convert_activations(_small_net(), "atac",
                                                              example_input="x"),
     ("example_input",)),
]:
    CONVERT_CASES.append(Case(f"convert_activations-{_label}", (_build,), _names))

for _label, _build, _names in [
    ("name-unknown", lambda: attnact.create_model("resnet_cifr"), ("resnet_cifr",)),
    ("name-int", lambda: attnact.create_model(3), ("model name",)),
    ("name-empty", lambda: attnact.create_model(""), ("model",)),
    ("act-unknown", lambda: attnact.create_model("mnist_conv", act="bogus"), ("bogus",)),
    ("act-int", lambda: attnact.create_model("mnist_conv", act=3), ("act",)),
    ("num_classes-zero", lambda: attnact.create_model("mnist_conv", num_classes=0),
     ("num_classes",)),
    ("num_classes-negative", lambda: attnact.create_model("mnist_conv", num_classes=-1),
     ("num_classes",)),
    ("num_classes-str", lambda: attnact.create_model("mnist_conv", num_classes="10"),
     ("num_classes",)),
    ("num_classes-float", lambda: attnact.create_model("mnist_conv", num_classes=10.0),
     ("num_classes",)),
    ("input_size-2d", lambda: attnact.create_model("mnist_conv", input_size=(1, 28)),
     ("input_size",)),
    ("input_size-zero", lambda: attnact.create_model("mnist_conv", input_size=(0, 28, 28)),
     ("input_size",)),
    ("input_size-str", lambda: attnact.create_model("mnist_conv", input_size="1,28,28"),
     ("input_size",)),
    ("input_size-int", lambda: attnact.create_model("mnist_conv", input_size=28),
     ("input_size",)),
    ("pretrained-unknown", lambda: attnact.create_model("resnet_cifar", pretrained="bogus"),
     ("bogus",)),
    ("unknown-kwarg", lambda: attnact.create_model("resnet_cifar", block=3), ("block",)),
    ("resnet-blocks-zero", lambda: attnact.create_model("resnet_cifar", blocks=0), ("blocks",)),
    ("resnet-blocks-str", lambda: attnact.create_model("resnet_cifar", blocks="3"),
     ("blocks",)),
    ("resnet-width-zero", lambda: attnact.create_model("resnet_cifar", width=0), ("width",)),
    ("resnet-variant-bogus", lambda: attnact.create_model("resnet_cifar", variant="dense"),
     ("variant",)),
    ("resnet-r-zero", lambda: attnact.create_model("resnet_cifar", act="atac", r=0), ("r must",)),
    ("resnet-act_fraction-high", lambda: attnact.create_model("resnet_cifar", act_fraction=2.0),
     ("act_fraction",)),
    ("resnet-order-bogus", lambda: attnact.create_model("resnet_cifar", order="middle"),
     ("order",)),
    ("resnet-image_size-zero", lambda: attnact.create_model("resnet_cifar", image_size=0),
     ("image_size",)),
    ("resnet-act_kwargs-unknown", lambda: attnact.create_model(
        "resnet_cifar", act="atac", act_kwargs={"ratio": 2}), ("ratio",)),
    ("resnet-act_kwargs-str", lambda: attnact.create_model("resnet_cifar", act_kwargs="x"),
     ("act_kwargs",)),
    ("mnist-in_channels-zero", lambda: attnact.create_model("mnist_conv", in_channels=0),
     ("in_channels",)),
    ("mnist-base_act-unknown", lambda: attnact.create_model("mnist_conv", base_act="relux"),
     ("relux",)),
    ("mnist-act_kwargs-arelu-unknown", lambda: attnact.create_model(
        "mnist_conv", act="arelu", act_kwargs={"alfa": 1}), ("alfa",)),
    ("mnist-act_kwargs-arelu-nan", lambda: attnact.create_model(
        "mnist_conv", act="arelu", act_kwargs={"alpha": NAN}), ("alpha",)),
    ("mnist-act_kwargs-elsa-unknown", lambda: attnact.create_model(
        "mnist_conv", act="elsa_relu", act_kwargs={"gamma": 1}), ("gamma",)),
    ("mnist-act_kwargs-pau-bad", lambda: attnact.create_model(
        "mnist_conv", act="pau", act_kwargs={"numerator_degree": -1}), ("numerator_degree",)),
    ("mnist-act_kwargs-xunit-bad", lambda: attnact.create_model(
        "mnist_conv", act="xunit", act_kwargs={"kernel_size": 2}), ("kernel_size",)),
    ("mnist-act_kwargs-se-unknown", lambda: attnact.create_model(
        "mnist_conv", act="se_activation", act_kwargs={"gamma": 1}), ("gamma",)),
    ("model_spec-unknown", lambda: attnact.model_spec("bogus"), ("bogus",)),
]:
    CONVERT_CASES.append(Case(f"create_model-{_label}", (_build,), _names))


@pytest.mark.parametrize("case", [c.param() for c in CONVERT_CASES])
def test_convert_and_model_arguments(case: Case) -> None:
    (build,) = case.args
    assert_our_error(build, *case.names)


# ------------------------------------------------------- data, fit, compare, reproduce (API)
@pytest.fixture
def mnist_dir(tmp_path: Path, make_mnist) -> Path:
    """A data root with a tiny MNIST (16 training, 8 test images)."""
    make_mnist(tmp_path / "data" / "mnist", n_train=16, n_test=8)
    return tmp_path / "data"


def _loaders(data: Path, **kw: Any) -> Any:
    from attnact.data import make_loaders

    args = {"batch_size": 4, "data_dir": data, **kw}
    name = args.pop("name", "mnist")
    return make_loaders(name, **args)


def _tiny_config(data: Path, tmp: Path, **kw: Any) -> Any:
    from attnact.train.config import TrainConfig

    base = dict(dataset="mnist", data_dir=str(data), batch_size=4, limit_train=8, limit_test=4,
                max_steps_per_epoch=1, epochs=1, progress=False, out_dir=str(tmp / "run"))
    return TrainConfig(**{**base, **kw})


def _fit(config: Any) -> Any:
    from attnact.train.engine import fit

    return fit(config)


def _compare(data: Path, tmp: Path, acts: Any = ("relu",), **kw: Any) -> Any:
    from attnact.experiments.compare import compare

    base = _tiny_config(data, tmp, out_dir=None)
    args = {"seeds": 1, "time_rounds": 0, "log": lambda _m: None, **kw}
    config = args.pop("config", base)
    return compare(list(acts) if isinstance(acts, tuple) else acts, config, tmp / "cmp", **args)


def _reproduce(tmp: Path, experiment: Any = "atac-ablation", **kw: Any) -> Any:
    from attnact.experiments.reproduction import reproduce

    args = {"runs": tmp / "runs", "out": tmp / "report", "verbose": False,
            "log": lambda _m: None, **kw}
    return reproduce(experiment, **args)


DATA_CASES: list[Case] = []
for _label, _kw, _names in [
    ("name-unknown", {"name": "mnst"}, ("mnst",)),
    ("name-int", {"name": 3}, ("3",)),
    ("batch_size-zero", {"batch_size": 0}, ("batch_size",)),
    ("batch_size-negative", {"batch_size": -4}, ("batch_size",)),
    ("batch_size-str", {"batch_size": "4"}, ("batch_size",)),
    ("batch_size-float", {"batch_size": 4.5}, ("batch_size",)),
    ("batch_size-above-train-set", {"batch_size": 64}, ("batch_size",)),
    ("test_batch_size-negative", {"test_batch_size": -1}, ("test_batch_size",)),
    ("augment-bogus", {"augment": "mixup"}, ("augment",)),
    ("pad_to-zero", {"pad_to": 0}, ("pad_to",)),
    ("pad_to-smaller", {"pad_to": 10}, ("pad_to",)),
    ("pad_to-str", {"pad_to": "32"}, ("pad_to",)),
    ("seed-negative", {"seed": -1}, ("seed",)),
    ("seed-str", {"seed": "0"}, ("seed",)),
    ("rank-out-of-range", {"rank": 2, "world_size": 2}, ("rank",)),
    ("rank-negative", {"rank": -1}, ("rank",)),
    ("world_size-zero", {"world_size": 0}, ("world_size",)),
    ("limit_train-zero", {"limit_train": 0}, ("limit",)),
    ("limit_test-negative", {"limit_test": -2}, ("limit",)),
    ("device-bogus", {"device": "gpu0"}, ("device",)),
    ("channels_last-str", {"channels_last": "yes"}, ("channels_last",)),
    ("num_workers-negative", {"num_workers": -1}, ("num_workers",)),
]:
    DATA_CASES.append(Case(f"make_loaders-{_label}", (lambda d, t, kw=_kw: _loaders(d, **kw),),
                           _names))
DATA_CASES += [
    Case("make_loaders-data_dir-missing",
         (lambda d, t: _loaders(t / "nowhere"),), ("nowhere",)),
    Case("make_loaders-data_dir-empty-dir",
         (lambda d, t: _loaders(t),), ("mnist",)),
    Case("make_loaders-data_dir-is-file",
         (lambda d, t: _loaders(_write(t / "f.txt", "x")),), ("f.txt",)),
    Case("make_loaders-truncated-file",
         (lambda d, t: (_truncate(d / "mnist" / "train-images-idx3-ubyte.gz"), _loaders(d)),),
         ("train-images",)),
    Case("fit-config-str", (lambda d, t: _fit("demo"),), ("config",)),
    Case("fit-config-dict", (lambda d, t: _fit({"epochs": 1}),), ("config",)),
    Case("fit-unknown-model", (lambda d, t: _fit(_tiny_config(d, t, model="resnet_cifr")),),
         ("resnet_cifr",)),
    Case("fit-unknown-act", (lambda d, t: _fit(_tiny_config(d, t, act="aerlu")),), ("aerlu",)),
    Case("fit-unknown-dataset", (lambda d, t: _fit(_tiny_config(d, t, dataset="mnsit")),),
         ("mnsit",)),
    Case("fit-act_kwargs-unknown",
         (lambda d, t: _fit(_tiny_config(d, t, act="arelu", act_kwargs={"alfa": 1})),),
         ("alfa",)),
    Case("fit-act_kwargs-nan",
         (lambda d, t: _fit(_tiny_config(d, t, act="arelu", act_kwargs={"beta": NAN})),),
         ("beta",)),
    Case("fit-model_kwargs-unknown",
         (lambda d, t: _fit(_tiny_config(d, t, model_kwargs={"blocks": 3})),), ("blocks",)),
    Case("fit-maml-set",
         (lambda d, t: _fit(_tiny_config(d, t, maml={"ways": 5})),), ("maml",)),
    Case("fit-augment-bogus",
         (lambda d, t: _fit(_tiny_config(d, t, augment="mixup")),), ("augment",)),
    Case("fit-pad_to-smaller",
         (lambda d, t: _fit(_tiny_config(d, t, pad_to=8)),), ("pad_to",)),
    Case("fit-device-cuda-missing",
         (lambda d, t: _fit(_tiny_config(d, t, device="cuda")),), ("cuda",),
         marks=(pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present"),)),
    Case("fit-batch_size-above-train-set",
         (lambda d, t: _fit(_tiny_config(d, t, batch_size=64)),), ("batch_size",)),
    Case("fit-out_dir-is-file",
         (lambda d, t: _fit(_tiny_config(d, t, out_dir=str(_write(t / "f", "x")))),), ("f",)),
    Case("compare-acts-empty", (lambda d, t: _compare(d, t, acts=[]),), ("acts",)),
    Case("compare-acts-unknown", (lambda d, t: _compare(d, t, acts=["relu", "bogus"]),),
         ("bogus",)),
    Case("compare-acts-duplicate", (lambda d, t: _compare(d, t, acts=["relu", "relu"]),),
         ("relu",)),
    Case("compare-acts-str", (lambda d, t: _compare(d, t, acts="relu,arelu"),), ("acts",)),
    Case("compare-seeds-zero", (lambda d, t: _compare(d, t, seeds=0),), ("seeds",)),
    Case("compare-seeds-str", (lambda d, t: _compare(d, t, seeds="2"),), ("seeds",)),
    Case("compare-baseline-unknown", (lambda d, t: _compare(d, t, baseline="bogus"),),
         ("baseline",)),
    Case("compare-time_rounds-negative", (lambda d, t: _compare(d, t, time_rounds=-1),),
         ("time_rounds",)),
    Case("compare-workers-zero", (lambda d, t: _compare(d, t, workers=0),), ("workers",)),
    Case("compare-config-str", (lambda d, t: _compare(d, t, config="demo"),), ("config",)),
    Case("compare-unknown-dataset",
         (lambda d, t: _compare(d, t, config=_tiny_config(d, t, dataset="bogus")),),
         ("bogus",)),
    Case("reproduce-unknown-experiment", (lambda d, t: _reproduce(t, "atac-ablaton"),),
         ("atac-ablaton",)),
    Case("reproduce-experiment-int", (lambda d, t: _reproduce(t, 3),), ("experiment",)),
    Case("reproduce-preset-unknown", (lambda d, t: _reproduce(t, preset="full"),), ("full",)),
    Case("reproduce-seeds-zero", (lambda d, t: _reproduce(t, seeds=0),), ("seeds",)),
    Case("reproduce-seeds-str", (lambda d, t: _reproduce(t, seeds="2"),), ("seeds",)),
    Case("reproduce-workers-zero", (lambda d, t: _reproduce(t, workers=0),), ("workers",)),
    Case("reproduce-backend-bogus", (lambda d, t: _reproduce(t, backend="slurm"),),
         ("backend",)),
    Case("reproduce-threads-zero", (lambda d, t: _reproduce(t, threads=0),), ("threads",)),
    Case("reproduce-where-unknown-axis", (lambda d, t: _reproduce(t, where={"bogus": ["1"]}),),
         ("bogus",)),
    Case("reproduce-where-unknown-value", (lambda d, t: _reproduce(t, where={"b": ["99"]}),),
         ("99",)),
    Case("reproduce-where-str", (lambda d, t: _reproduce(t, where="b=1"),), ("where",)),
    Case("reproduce-retrain-and-report-only",
         (lambda d, t: _reproduce(t, report_only=True, retrain_other_code=True),),
         ("report_only",)),
]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """``reproduce`` reaching its data check (the first step towards training, after every
    argument is checked) means the bad input was accepted."""
    import attnact.experiments.reproduction as reproduction

    def refuse(*_a: Any, **_k: Any) -> None:
        raise WouldTrain("accepted silently: reproduce went on to train")

    monkeypatch.setattr(reproduction, "_check_data", refuse)


@pytest.mark.parametrize("case", [c.param() for c in DATA_CASES])
def test_data_and_training_api(case: Case, mnist_dir: Path, tmp_path: Path,
                               no_training: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # any default output directory lands in tmp_path
    (build,) = case.args
    assert_our_error(lambda: build(mnist_dir, tmp_path), *case.names)


# ----------------------------------------------------------------------------- command line
# Each table row: (id, argv after the command's base argv, names the error line must contain).
# The base argv makes an accepted case cheap: tiny data, one step, one seed, no timing.
def _train_base(data: str, out: str) -> list[str]:
    return ["train", "--dataset", "mnist", "--data-dir", data, "--batch-size", "4",
            "--limit-train", "8", "--limit-test", "4", "--epochs", "1", "--no-progress",
            "--out", out, "max_steps_per_epoch=1"]


def _compare_base(data: str, out: str) -> list[str]:
    return ["compare", "--dataset", "mnist", "--data-dir", data, "--batch-size", "4",
            "--limit-train", "8", "--limit-test", "4", "--epochs", "1", "--acts", "relu",
            "--seeds", "1", "--time-rounds", "0", "--quiet", "--out", out,
            "max_steps_per_epoch=1"]


# flag -> bad values for the config flags train and compare share
CONFIG_FLAG_BAD: dict[str, list[tuple[str, str, str]]] = {
    # flag: [(label, value, name in the message)]
    "--epochs": [("zero", "0", "epochs"), ("str", "ten", "--epochs"), ("float", "1.5", "--epochs"),
                 ("negative", "-1", "epochs")],
    "--lr": [("nan", "nan", "lr"), ("inf", "inf", "lr"), ("str", "fast", "--lr"),
             ("negative", "-0.1", "lr")],
    "--batch-size": [("zero", "0", "batch_size"), ("str", "x", "--batch-size"),
                     ("negative", "-4", "batch_size")],
    "--optimizer": [("bogus", "rmsprop", "optimizer"), ("empty", "", "optimizer")],
    "--seed": [("negative", "-1", "seed"), ("huge", str(HUGE), "seed"), ("str", "x", "--seed")],
    "--device": [("bogus", "tpu", "device")],
    "--limit-train": [("zero", "0", "limit_train"), ("str", "all", "--limit-train")],
    "--limit-test": [("negative", "-5", "limit_test")],
    "--model": [("unknown", "resnet_cifr", "resnet_cifr"), ("empty", "", "model")],
    "--dataset": [("unknown", "mnsit", "mnsit"), ("empty", "", "dataset")],
    "--data-dir": [("missing", "/nonexistent/attnact-data", "/nonexistent/attnact-data")],
    "--preset": [("unknown", "atac-cifra", "--preset")],
    "--config": [("missing", "/nonexistent/c.yaml", "--config")],
}

# key=value overrides (also as --set) for train and compare
OVERRIDE_BAD: list[tuple[str, str, str]] = [
    ("weight_decay-nan", "weight_decay=.nan", "weight_decay"),
    ("weight_decay-inf", "weight_decay=.inf", "weight_decay"),
    ("warmup_epochs-inf", "warmup_epochs=.inf", "warmup_epochs"),
    ("momentum-one", "momentum=1", "momentum"),
    ("gamma-zero", "gamma=0", "gamma"),
    ("label_smoothing-one", "label_smoothing=1", "label_smoothing"),
    ("milestones-decreasing", "milestones=[3,1]", "milestones"),
    ("milestones-bad-yaml", "milestones=[1,", "milestones"),
    ("schedule-bogus", "schedule=linear", "schedule"),
    ("unknown-key", "lrr=0.1", "lrr"),
    ("unknown-dotted-key", "act_kwargs.alpha.x=1", "alpha.x"),
    ("dot-on-scalar", "lr.x=1", "lr"),
    ("empty-key", "=3", "=3"),
    ("act_kwargs-unknown", "act_kwargs.alfa=0.5", "alfa"),
    ("act_kwargs-nan", "act_kwargs.alpha=.nan", "alpha"),
    ("act_kwargs-str", "act_kwargs=alpha", "act_kwargs"),
    ("model_kwargs-unknown", "model_kwargs.blocks=3", "blocks"),
    ("model_kwargs-bad-in_channels", "model_kwargs.in_channels=0", "in_channels"),
    ("augment-bogus", "augment=mixup", "augment"),
    ("pad_to-smaller", "pad_to=8", "pad_to"),
    ("seed-two32", "seed=4294967296", "seed"),
    ("out_dir-empty", "out_dir=''", "TrainConfig.out_dir must"),
    ("bf16-str", "bf16=maybe", "bf16"),
    ("num_workers-negative", "num_workers=-1", "num_workers"),
    ("maml-unknown", "maml.wayz=5", "wayz"),
    ("loggers-unknown", "loggers=tensorboard,tensorflow", "tensorflow"),
    ("data_dir-empty", "data_dir=''", "TrainConfig.data_dir must"),
]

CLI_CASES: list[Case] = []
for _cmd in ("train", "compare"):
    for _flag, _bad in CONFIG_FLAG_BAD.items():
        for _label, _value, _name in _bad:
            CLI_CASES.append(Case(f"{_cmd}{_flag}={_label}", (_cmd, [_flag, _value]), (_name,)))
    for _label, _item, _name in OVERRIDE_BAD:
        CLI_CASES.append(Case(f"{_cmd}-{_label}", (_cmd, [_item]), (_name,)))
        if _cmd == "train":
            CLI_CASES.append(Case(f"{_cmd}--set-{_label}", (_cmd, ["--set", _item]), (_name,)))
CLI_CASES += [
    Case("train-act-unknown", ("train", ["--act", "aerlu"]), ("aerlu",)),
    Case("train-act-empty", ("train", ["--act", ""]), ("TrainConfig.act",)),
    Case("train-stray-positional", ("train", ["epochs"]), ("epochs",)),
    Case("train-unknown-flag", ("train", ["--epocs", "3"]), ("--epocs",)),
    Case("train-out-empty", ("train", ["--out", ""]), ("out_dir",)),
    Case("train-out-is-file", ("train", ["--out", "{file}"]), ("file.txt",)),
    Case("train-out-under-file", ("train", ["--out", "{file}/run"]), ("file.txt",)),
    Case("train-config-bad-yaml", ("train", ["--config", "{bad_yaml}"]), ("--config",)),
    Case("train-config-list", ("train", ["--config", "{list_yaml}"]), ("--config",)),
    Case("train-config-unknown-field", ("train", ["--config", "{unknown_yaml}"]), ("lrr",)),
    Case("train-config-bad-value", ("train", ["--config", "{nan_yaml}"]), ("TrainConfig.lr",)),
    Case("train-config-preset-conflict",
         ("train", ["--preset", "demo", "--config", "{preset_yaml}"]), ("--preset",)),
    Case("train-resume-empty-out", ("train", ["--resume", "--out", ""]), ("out_dir",)),
    Case("compare-acts-unknown", ("compare", ["--acts", "relu,bogus"]), ("bogus",)),
    Case("compare-acts-empty", ("compare", ["--acts", ","]), ("acts",)),
    Case("compare-acts-duplicate", ("compare", ["--acts", "relu,relu"]), ("relu",)),
    Case("compare-seeds-zero", ("compare", ["--seeds", "0"]), ("seeds",)),
    Case("compare-seeds-str", ("compare", ["--seeds", "two"]), ("--seeds",)),
    Case("compare-baseline-unknown", ("compare", ["--baseline", "bogus"]), ("baseline",)),
    Case("compare-baseline-not-compared", ("compare", ["--baseline", "arelu"]), ("baseline",)),
    Case("compare-workers-zero", ("compare", ["--workers", "0"]), ("workers",)),
    Case("compare-workers-str", ("compare", ["--workers", "x"]), ("--workers",)),
    Case("compare-time-rounds-negative", ("compare", ["--time-rounds", "-1"]), ("time_rounds",)),
    Case("compare-out-empty", ("compare", ["--out", ""]), ("--out",)),
    Case("compare-out-is-file", ("compare", ["--out", "{file}"]), ("file.txt",)),
    Case("compare-act-override", ("compare", ["act=arelu"]), ("act=arelu", "--acts")),
    Case("compare-seed-override-huge", ("compare", ["seed=4294967295", "--seeds", "2"]),
         ("seed",)),
    Case("compare-dataset-bogus-before-training", ("compare", ["--dataset", "bogus"]),
         ("bogus",)),
]

# commands without training: (id, argv, names)
OTHER_CLI: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("no-command", [], ("command",)),
    ("unknown-command", ["trian"], ("trian",)),
    ("info-no-model", ["info"], ("--model",)),
    ("info-unknown-model", ["info", "--model", "bogus"], ("bogus",)),
    ("info-unknown-act", ["info", "--model", "mnist_conv", "--act", "bogus"], ("bogus",)),
    ("info-input-size-str", ["info", "--model", "mnist_conv", "--input-size", "a,b,c"],
     ("input_size",)),
    ("info-input-size-2d", ["info", "--model", "mnist_conv", "--input-size", "1,28"],
     ("input_size",)),
    ("info-input-size-zero", ["info", "--model", "mnist_conv", "--input-size", "0,28,28"],
     ("input_size",)),
    ("info-input-size-negative", ["info", "--model", "mnist_conv", "--input-size", "1,-2,28"],
     ("input_size",)),
    ("info-input-size-empty", ["info", "--model", "mnist_conv", "--input-size", ""],
     ("input_size",)),
    ("info-num-classes-zero", ["info", "--model", "mnist_conv", "--num-classes", "0"],
     ("num_classes",)),
    ("info-num-classes-str", ["info", "--model", "mnist_conv", "--num-classes", "ten"],
     ("--num-classes",)),
    ("info-unknown-dataset", ["info", "--model", "mnist_conv", "--dataset", "mnsit"],
     ("mnsit",)),
    ("info-pad-to-without-dataset", ["info", "--model", "mnist_conv", "--pad-to", "32"],
     ("--pad-to",)),
    ("info-pad-to-zero", ["info", "--model", "mnist_conv", "--dataset", "mnist", "--pad-to",
                          "0"], ("pad_to",)),
    ("info-pad-to-smaller", ["info", "--model", "mnist_conv", "--dataset", "mnist",
                             "--pad-to", "8"], ("pad_to",)),
    ("info-input-size-and-dataset", ["info", "--model", "mnist_conv", "--dataset", "mnist",
                                     "--input-size", "1,28,28"], ("--input-size",)),
    ("list-unknown", ["list", "things"], ("things",)),
    ("list-no-what", ["list"], ("what",)),
    ("list-datasets-data-dir-missing", ["list", "datasets", "--data-dir", "/nonexistent/d"],
     ("/nonexistent/d",)),
    ("data-no-action", ["data"], ("data_command",)),
    ("data-unknown-action", ["data", "download"], ("download",)),
    ("data-fetch-unknown", ["data", "fetch", "mnsit"], ("mnsit",)),
    ("data-fetch-no-name", ["data", "fetch"], ("name",)),
    ("data-fetch-timeout-str", ["data", "fetch", "mnist", "--timeout", "soon"], ("--timeout",)),
    ("data-fetch-timeout-zero", ["data", "fetch", "mnist", "--timeout", "0", "--data-dir",
                                 "{tmp}/d", "--mirror", "http://127.0.0.1:9"], ("timeout",)),
    ("data-fetch-timeout-nan", ["data", "fetch", "mnist", "--timeout", "nan", "--data-dir",
                                "{tmp}/d", "--mirror", "http://127.0.0.1:9"], ("timeout",)),
    ("data-fetch-mirror-not-url", ["data", "fetch", "mnist", "--data-dir", "{tmp}/d",
                                   "--mirror", "not a url"], ("mirror",)),
    ("data-verify-unknown", ["data", "verify", "mnsit"], ("mnsit",)),
    ("data-list-data-dir-missing", ["data", "list", "--data-dir", "/nonexistent/d"],
     ("/nonexistent/d",)),
    ("data-verify-data-dir-is-file", ["data", "verify", "mnist", "--data-dir", "{file}"],
     ("file.txt",)),
    ("weights-no-action", ["weights"], ("weights_action",)),
    ("weights-fetch-unknown", ["weights", "fetch", "bogus", "--cache-dir", "{tmp}/w"],
     ("bogus",)),
    ("weights-fetch-no-name", ["weights", "fetch"], ("name",)),
    ("weights-import-missing-file", ["weights", "import-open-atac", "{tmp}/none.params",
                                     "--out", "{tmp}/m.pt"], ("none.params",)),
    ("weights-import-not-params", ["weights", "import-open-atac", "{file}", "--out",
                                   "{tmp}/m.pt"], ("file.txt",)),
    ("weights-import-no-out", ["weights", "import-open-atac", "{file}"], ("--out",)),
    ("reproduce-no-experiment", ["reproduce"], ("experiment",)),
    ("reproduce-unknown-experiment", ["reproduce", "atac-ablaton"], ("atac-ablaton",)),
    ("reproduce-unknown-preset", ["reproduce", "atac-ablation", "--preset", "full",
                                  "--dry-run"], ("full",)),
    ("reproduce-seeds-zero-dry-run", ["reproduce", "atac-ablation", "--seeds", "0",
                                      "--dry-run"], ("seeds",)),
    ("reproduce-seeds-zero", ["reproduce", "atac-ablation", "--seeds", "0"], ("seeds",)),
    ("reproduce-seeds-negative", ["reproduce", "atac-ablation", "--seeds", "-2"], ("seeds",)),
    ("reproduce-seeds-str", ["reproduce", "atac-ablation", "--seeds", "two"], ("--seeds",)),
    ("reproduce-workers-zero", ["reproduce", "atac-ablation", "--workers", "0"], ("workers",)),
    ("reproduce-workers-str", ["reproduce", "atac-ablation", "--workers", "x"], ("--workers",)),
    ("reproduce-threads-zero", ["reproduce", "atac-ablation", "--threads", "0"], ("threads",)),
    ("reproduce-threads-negative", ["reproduce", "atac-ablation", "--threads", "-1"],
     ("threads",)),
    ("reproduce-backend-bogus", ["reproduce", "atac-ablation", "--backend", "slurm"],
     ("--backend",)),
    ("reproduce-where-no-equals", ["reproduce", "atac-ablation", "--where", "b", "--dry-run"],
     ("--where",)),
    ("reproduce-where-empty-values", ["reproduce", "atac-ablation", "--where", "b=",
                                      "--dry-run"], ("--where",)),
    ("reproduce-where-unknown-axis", ["reproduce", "atac-ablation", "--where", "bogus=1",
                                      "--dry-run"], ("bogus",)),
    ("reproduce-where-unknown-value", ["reproduce", "atac-ablation", "--where", "b=99",
                                       "--dry-run"], ("99",)),
    ("reproduce-dry-run-and-report-only", ["reproduce", "atac-ablation", "--dry-run",
                                           "--report-only"], ("--dry-run",)),
    ("reproduce-retrain-and-report-only", ["reproduce", "atac-ablation", "--report-only",
                                           "--retrain-other-code"], ("report_only",)),
    ("reproduce-out-empty", ["reproduce", "atac-ablation", "--out", ""], ("--out",)),
    ("reproduce-runs-empty", ["reproduce", "atac-ablation", "--runs", "", "--dry-run"],
     ("--runs",)),
    ("reproduce-runs-is-file", ["reproduce", "atac-ablation", "--runs", "{file}",
                                "--dry-run"], ("file.txt",)),
    ("bench-rounds-zero", ["bench", "--rounds", "0"], ("--rounds",)),
    ("bench-rounds-str", ["bench", "--rounds", "x"], ("--rounds",)),
    ("bench-warmup-negative", ["bench", "--warmup", "-1"], ("warmup",)),
    ("bench-threads-zero", ["bench", "--threads", "0"], ("--threads",)),
    ("bench-hosts-unknown", ["bench", "--hosts", "bogus"], ("bogus",)),
    ("bench-hosts-empty", ["bench", "--hosts", ","], ("--hosts",)),
    ("bench-hosts-unknown-dataset", ["bench", "--hosts", "mnist_conv@mnsit"], ("mnsit",)),
    ("bench-hosts-unknown-model", ["bench", "--hosts", "resnet_cifr@mnist"], ("resnet_cifr",)),
    ("bench-variants-unknown", ["bench", "--variants", "bogus"], ("--variants",)),
    ("bench-out-empty", ["bench", "--out", ""], ("--out",)),
    ("bench-name-with-slash", ["bench", "--name", "a/b"], ("--name",)),
    ("bench-name-empty", ["bench", "--name", ""], ("--name",)),
    ("bench-out-is-file", ["bench", "--out", "{file}"], ("file.txt",)),
]


@pytest.fixture
def cli_env(tmp_path: Path, make_mnist, monkeypatch: pytest.MonkeyPatch,
            no_training: None) -> dict[str, str]:
    """Paths the CLI cases refer to as {name}; the working directory is tmp_path."""
    make_mnist(tmp_path / "data" / "mnist", n_train=16, n_test=8)
    monkeypatch.chdir(tmp_path)
    files = {
        "file": _write(tmp_path / "file.txt", "not a directory"),
        "bad_yaml": _write(tmp_path / "bad.yaml", "epochs: [1\n"),
        "list_yaml": _write(tmp_path / "list.yaml", "- epochs\n"),
        "unknown_yaml": _write(tmp_path / "unknown.yaml", "lrr: 0.1\n"),
        "nan_yaml": _write(tmp_path / "nan.yaml", "lr: .nan\n"),
        "preset_yaml": _write(tmp_path / "preset.yaml", "preset: atac-cifar\n"),
    }
    env = {k: str(v) for k, v in files.items()}
    env.update(tmp=str(tmp_path), data=str(tmp_path / "data"), out=str(tmp_path / "out"))
    # an accepted case logs through train's handler; one made under an earlier test's capture
    # would write to a closed stream
    log = logging.getLogger("attnact.train")
    handlers = list(log.handlers)
    for h in handlers:
        log.removeHandler(h)
    yield env
    for h in list(log.handlers):
        log.removeHandler(h)
    for h in handlers:
        log.addHandler(h)


def _fill(argv: list[str], env: dict[str, str]) -> list[str]:
    return [a.format(**env) if "{" in a else a for a in argv]


@pytest.mark.parametrize("case", [c.param() for c in CLI_CASES])
def test_cli_training_flags(case: Case, cli_env: dict[str, str],
                            capsys: pytest.CaptureFixture[str]) -> None:
    cmd, extra = case.args
    base = (_train_base if cmd == "train" else _compare_base)(cli_env["data"], cli_env["out"])
    assert_cli_error(base + _fill(extra, cli_env), capsys, *case.names)


BENCH_BASE = ["--quiet", "--warmup", "0", "--rounds", "1", "--out", "{tmp}/bench", "--hosts",
              "unit", "--variants", "arelu"]


@pytest.mark.parametrize(
    "case", [Case(f"cli-{i}", tuple(argv), names).param() for i, argv, names in OTHER_CLI]
)
def test_cli_other_commands(case: Case, cli_env: dict[str, str],
                            capsys: pytest.CaptureFixture[str]) -> None:
    argv = list(case.args)
    if argv[:1] == ["bench"]:  # an accepted case measures as little as possible
        argv = ["bench", *BENCH_BASE, *argv[1:]]
    if argv[:1] == ["reproduce"] and "--runs" not in argv:
        argv += ["--runs", "{tmp}/runs", "--quiet"]
    assert_cli_error(_fill(argv, cli_env), capsys, *case.names)


# ------------------------------------------------------------------------- positive controls
# The bases the cases start from are good input: a case fails because of its one bad value.
def test_control_cli_bases_are_accepted(cli_env: dict[str, str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert attnact.cli.main(_train_base(cli_env["data"], cli_env["out"])) == 0
    assert (Path(cli_env["out"]) / "summary.json").is_file()
    assert attnact.cli.main(_compare_base(cli_env["data"], cli_env["tmp"] + "/cmp")) == 0
    argv = ["reproduce", "atac-ablation", "--dry-run", "--runs", "{tmp}/runs", "--quiet"]
    assert attnact.cli.main(_fill(argv, cli_env)) == 0
    assert attnact.cli.main(["info", "--model", "mnist_conv", "--dataset", "mnist",
                             "--pad-to", "32"]) == 0
    assert attnact.cli.main(["data", "list", "--data-dir", cli_env["data"]]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_control_api_bases_are_accepted(mnist_dir: Path, tmp_path: Path,
                                        no_training: None) -> None:
    train, test, info = _loaders(mnist_dir)
    assert info.name == "mnist" and train.batch_size == 4 and len(test.images) == 8
    assert _fit(_tiny_config(mnist_dir, tmp_path)).summary["status"] == "finished"
    assert _compare(mnist_dir, tmp_path).files
    with pytest.raises(WouldTrain):  # good arguments reach the (patched) data check
        _reproduce(tmp_path)


def test_case_count() -> None:
    """The issue asks for at least 200 distinct bad inputs."""
    tables = {"config": CONFIG_CASES, "config-misc": CONFIG_MISC, "unit": UNIT_CASES,
              "model": CONVERT_CASES, "api": DATA_CASES, "cli": CLI_CASES}
    ids = [f"{t}:{c.id}" for t, cases in tables.items() for c in cases]
    ids += [f"cli:{i}" for i, _, _ in OTHER_CLI]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 200
