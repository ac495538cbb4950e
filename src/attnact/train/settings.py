"""Typed settings of the procedures beyond plain supervised training, held by a
:class:`~attnact.train.config.TrainConfig` (``maml``, ``transfer``) and stored in its config.yaml.

- :class:`MAMLSettings`: MAML meta-learning (Chen et al., "AReLU", Sec. 4.5, Table 3), read by
  :func:`attnact.meta.maml.fit_maml`.
- :class:`TransferSettings` with two :class:`TransferDomain`: transfer learning (AReLU Sec. 4.4,
  Table 2), read by :func:`attnact.experiments.arelu_transfer.fit_transfer`.

They live here, below the config, because the config names their types; the procedures that
read them sit above it. Configs written before these fields kept the same settings in an untyped
``extra`` mapping: :func:`settings_from_extra` says which of the two such a mapping was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from attnact._checks import (
    check_choice,
    check_int,
    check_known_keys,
    check_positive_int,
    check_positive_number,
)

__all__ = [
    "BATCHING",
    "DOMAIN_STYLES",
    "MAMLSettings",
    "TransferDomain",
    "TransferSettings",
    "settings_from_extra",
]

BATCHING = ("auto", "vmap", "loop")
#: How a transfer domain's images reach the 3×32×32 network (attnact.experiments.arelu_transfer):
#: ``rgb32`` pads and repeats the gray channel, ``svhn`` renders digits in SVHN-like colours.
DOMAIN_STYLES = ("rgb32", "svhn")


@dataclass(frozen=True)
class MAMLSettings:
    """The meta-learning settings :func:`attnact.meta.maml.fit_maml` reads (``TrainConfig.maml``).

    Attributes:
        ways, shots: N-way K-shot tasks (paper: 5-way, 1 and 5 shots).
        queries: query images per class and task. The paper does not say (the authors' script
            uses as many queries as shots and reports the meta-training query accuracy); 15 is
            the usual few-shot protocol (Finn et al. used 15 for miniImageNet) and makes the
            held-out accuracy less noisy.
        tasks_per_step: tasks per meta update (paper: 32).
        inner_steps: SGD steps of adaptation, in meta-training and at test time (paper: 5).
        inner_lr: their learning rate α. The paper gives one learning rate, 0.005; the authors'
            script (densechen/AReLU, meta_mnist.py, run with its defaults) uses it for both the
            inner SGD steps and the outer Adam, so α defaults to 0.005 and the meta learning
            rate is ``TrainConfig.lr``. Larger α is not safe for every unit: with 5 steps,
            Fashion-MNIST 5-way 1-shot and MNIST-Conv, AReLU (whose positive slope 1 + σ(β)
            ≈ 1.88 compounds over the three layers) diverged in meta-training at α = 0.05 and
            0.1 (ReLU trained) and already in the first inner steps at α = 0.2 and 0.4 (Finn et
            al.'s Omniglot value); α = 0.005 and 0.02 trained both.
        iterations: meta updates (paper: 100). ``TrainConfig.epochs`` is not used.
        eval_every: evaluate (and checkpoint) every this many iterations and after the last.
        test_tasks: tasks of each evaluation; the same tasks every time (a generator seeded from
            ``TrainConfig.seed`` alone), so every activation of a seed meets the same tasks.
        split: ``"samples"``: meta-train on tasks from the training split, test on tasks from the
            test split (same classes, images never seen in meta-training); ``"classes"``:
            meta-train on ``train_classes`` of the training split, test on the disjoint
            ``test_classes`` of the test split (default: the first and the second half of the
            classes).
        train_classes, test_classes: restrict the pools to these classes (both modes).
        first_order: first-order MAML (default: second order, as the paper's framework).
        batching: tasks at once with vmap, one by one, or ``"auto"`` (vmap if possible).
    """

    ways: int = 5
    shots: int = 1
    queries: int = 15
    tasks_per_step: int = 32
    inner_steps: int = 5
    inner_lr: float = 0.005
    iterations: int = 100
    eval_every: int = 10
    test_tasks: int = 200
    split: str = "samples"
    train_classes: list[int] | None = None
    test_classes: list[int] | None = None
    first_order: bool = False
    batching: str = "auto"

    def __post_init__(self) -> None:
        for name in ("ways", "shots", "queries", "tasks_per_step", "iterations", "eval_every",
                     "test_tasks"):
            check_positive_int(f"maml.{name}", getattr(self, name))
        check_int("maml.inner_steps", self.inner_steps, 0)
        object.__setattr__(self, "inner_lr", _number("maml.inner_lr", self.inner_lr))
        check_choice("maml.split", self.split, ("samples", "classes"))
        check_choice("maml.batching", self.batching, BATCHING)
        if not isinstance(self.first_order, bool):
            raise ValueError(f"maml.first_order must be true or false, got {self.first_order!r}")
        for name in ("train_classes", "test_classes"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in value
            ):
                raise ValueError(f"maml.{name} must be a list of class indices, got {value!r}")
            object.__setattr__(self, name, [int(c) for c in value])
        if self.split == "classes" and self.train_classes and self.test_classes:
            common = sorted(set(self.train_classes) & set(self.test_classes))
            if common:
                raise ValueError(
                    f"split 'classes' needs disjoint train_classes and test_classes; both hold "
                    f"{common}"
                )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MAMLSettings:
        """Settings from a mapping of field values; unknown keys raise (with a suggestion)."""
        _check_mapping(data, "maml", "a mapping of MAML settings")
        check_known_keys(data, [f.name for f in fields(cls)], what="MAML setting (maml.*)")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TransferDomain:
    """One side of a transfer: a dataset, the style its images are rendered in, and which of
    its images take part (``train_offset`` and ``limit_train``: a slice of the training split;
    ``limit_test``: the first test images)."""

    dataset: str
    style: str = "rgb32"
    train_offset: int = 0
    limit_train: int | None = None
    limit_test: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"a transfer domain's dataset must be a dataset name, got "
                             f"{self.dataset!r}")
        check_choice("transfer domain style", self.style, DOMAIN_STYLES)
        check_int("transfer domain train_offset", self.train_offset, 0)
        for name in ("limit_train", "limit_test"):
            if getattr(self, name) is not None:
                check_positive_int(f"transfer domain {name}", getattr(self, name))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | TransferDomain, side: str) -> TransferDomain:
        if isinstance(data, TransferDomain):
            return data
        _check_mapping(data, f"transfer.{side}", "a mapping (dataset, style ...)")
        if "dataset" not in data:
            raise ValueError(f"transfer.{side} needs 'dataset' and may set style, train_offset, "
                             f"limit_train, limit_test; got {data!r}")
        check_known_keys(data, [f.name for f in fields(cls)], what=f"transfer.{side} key")
        return cls(**dict(data))


@dataclass(frozen=True)
class TransferSettings:
    """The phases :func:`attnact.experiments.arelu_transfer.fit_transfer` runs
    (``TrainConfig.transfer``): pretrain on ``source`` for ``pretrain_epochs`` at
    ``pretrain_lr``, then fine-tune on ``target`` (and train from scratch there) for
    ``finetune_epochs`` with the config's own recipe."""

    source: TransferDomain
    target: TransferDomain
    pretrain_epochs: int = 20
    pretrain_lr: float = 0.01
    finetune_epochs: int = 20

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", TransferDomain.from_dict(self.source, "source"))
        object.__setattr__(self, "target", TransferDomain.from_dict(self.target, "target"))
        check_positive_int("transfer.pretrain_epochs", self.pretrain_epochs)
        check_positive_int("transfer.finetune_epochs", self.finetune_epochs)
        object.__setattr__(self, "pretrain_lr", _number("transfer.pretrain_lr", self.pretrain_lr))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransferSettings:
        """Settings from a mapping (domains as mappings); unknown or missing keys raise."""
        _check_mapping(data, "transfer", "a mapping of transfer settings")
        check_known_keys(data, [f.name for f in fields(cls)], what="transfer setting")
        missing = [k for k in ("source", "target") if k not in data]
        if missing:
            raise ValueError(f"transfer needs source and target domains (missing "
                             f"{', '.join(missing)}); it may set pretrain_epochs, pretrain_lr, "
                             f"finetune_epochs")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(name: str, value: Any) -> float:
    """A positive number; a numeric string too (YAML 1.1 reads ``1e-3`` as a string, as
    :class:`~attnact.train.config.TrainConfig` knows for its own numbers)."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # not a number: the check below says so
            value = float(value)
    return check_positive_number(name, value)


def _check_mapping(data: Any, name: str, expected: str) -> None:
    if not isinstance(data, Mapping) or not all(isinstance(k, str) and k for k in data):
        raise ValueError(f"{name}: expected {expected} with non-empty string keys, got "
                         f"{data!r}")


# keys only a transfer's extra had (a MAML extra holds MAMLSettings fields)
_TRANSFER_KEYS = frozenset(f.name for f in fields(TransferSettings))


def settings_from_extra(
    extra: Mapping[str, Any],
) -> tuple[str, MAMLSettings | TransferSettings] | None:
    """An old config's ``extra`` as ``("maml", MAMLSettings)`` or ``("transfer",
    TransferSettings)``, or None when it is empty (a plain training run).

    ``extra`` held either a transfer's phases (``source``, ``target`` …) or MAML's settings
    (its fields, possibly only some of them: the rest took their defaults, as they do here).
    """
    if not isinstance(extra, Mapping):
        raise ValueError(f"extra: expected a mapping, got {extra!r}")
    if not extra:
        return None
    if set(extra) & {"source", "target"}:
        return "transfer", TransferSettings.from_dict(extra)
    if set(extra) & (_TRANSFER_KEYS - {"source", "target"}) and not set(extra) & {
            f.name for f in fields(MAMLSettings)}:
        return "transfer", TransferSettings.from_dict(extra)  # raises: no source/target
    return "maml", MAMLSettings.from_dict(extra)
