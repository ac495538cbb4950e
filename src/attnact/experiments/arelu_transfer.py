"""The AReLU paper's transfer-learning experiment (Chen et al., "AReLU", Sec. 4.4, Table 2):
pretrain MNIST-Conv on a source dataset, fine-tune it on a target with a tiny learning rate.

Table 2's rows, all tested on the target:

* no pretraining — trained on the target only, with the fine-tuning recipe (SGD lr 1e-5; the
  paper does not say which recipe; "it is hard to obtain a good accuracy ... some activation
  functions even failed in learning" fits this reading);
* no fine-tuning — pretrained on the source (SGD lr 0.01, 20 epochs in the paper), tested on
  the target as is;
* pretraining + fine-tuning for 5, 10 and 20 epochs (SGD lr 1e-5). The learning rate is
  constant, so one fine-tuning run of 20 epochs read after epochs 5, 10 and 20 is the same as
  three runs of 5, 10 and 20 epochs.

Inputs: the network takes 3×32×32 (SVHN's format). Source images that are 1×28×28 (MNIST) are
zero-padded to 32×32 and repeated over three channels (one common way of adapting MNIST to SVHN;
the paper defers to Shin et al., 2017); 3×32×32 images pass unchanged. Each domain is
normalised with its own per-channel training mean and std.

Presets:

* ``paper``: MNIST → SVHN (both the user's download), pretraining 20 epochs, fine-tuning 20.
* ``quick``: data on this machine only. Source: Fashion-MNIST training images 0-5999; target:
  Fashion-MNIST images re-rendered in an SVHN-like style (:func:`render_svhn_style`: random
  foreground and background colours per image, Gaussian noise, 32×32 RGB) — training images
  30000-33999 (disjoint from the source's) and the first 2000 test images. Pretraining 5
  epochs, fine-tuning and from-scratch 20 epochs each, batch 64, 2 seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from attnact.experiments.arelu_mnist import label
from attnact.experiments.experiment import Experiment, ReportContext
from attnact.experiments.keys import RunSpec, run_key
from attnact.experiments.registry import register_experiment
from attnact.experiments.reporting import (
    bold_best,
    group_stats,
    header,
    markdown,
    write_tables,
)
from attnact.experiments.results import Results
from attnact.experiments.store import RunRecord
from attnact.fileio import atomic_write_json
from attnact.report.figures import plot_curves
from attnact.train.config import TrainConfig
from attnact.train.rundir import RunDirectory
from attnact.train.settings import DOMAIN_STYLES, TransferDomain, TransferSettings

__all__ = [
    "ACTIVATIONS",
    "FINETUNE_CHECKPOINTS",
    "Domain",
    "fit_transfer",
    "render_svhn_style",
    "to_rgb32",
]

#: Table 2 compares AReLU with "several competitive alternatives", non-learnable and learnable.
ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu", "gelu", "prelu", "pau", "arelu")
FINETUNE_CHECKPOINTS = (5, 10, 20)
SIZE = 32


def to_rgb32(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×C×H×W → N×3×32×32: zero-pad to 32×32 (centred), repeat one channel to three."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 N×C×H×W images, got {images.dtype} "
                         f"{tuple(images.shape)}")
    n, c, h, w = images.shape
    if c not in (1, 3) or h > SIZE or w > SIZE:
        raise ValueError(f"to_rgb32 takes 1 or 3 channels of at most {SIZE}×{SIZE}, got "
                         f"{c}×{h}×{w}")
    top, left = (SIZE - h) // 2, (SIZE - w) // 2
    out = torch.zeros(n, c, SIZE, SIZE, dtype=torch.uint8)
    out[:, :, top:top + h, left:left + w] = images
    return out.expand(n, 3, SIZE, SIZE).contiguous() if c == 1 else out


def render_svhn_style(images: torch.Tensor, seed: int = 0, noise: float = 16.0) -> torch.Tensor:
    """Gray uint8 N×1×H×W images re-rendered as SVHN-like N×3×32×32: per image a random
    background and foreground colour (at least 96 apart in mean intensity, either may be the
    lighter), the gray level blending the two, plus Gaussian pixel noise of std ``noise``.
    Deterministic in ``seed``."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"render_svhn_style takes gray N×1×H×W images, got "
                         f"{tuple(images.shape)}")
    gray = to_rgb32(images)[:, :1].float() / 255  # N×1×32×32 in [0, 1]
    g = torch.Generator().manual_seed(seed)
    n = len(images)
    background = torch.rand(n, 3, generator=g) * 255
    foreground = torch.rand(n, 3, generator=g) * 255
    # Enforce contrast: where the two are close, move the foreground towards white (dark
    # background) or black (light background) until their means are >= 96 apart.
    bg_mean = background.mean(1)
    low = (foreground.mean(1) - bg_mean).abs() < 96
    extreme = torch.where(bg_mean > 127.5, 0.0, 255.0)
    least = 96 / (extreme - bg_mean).abs()  # <= 0.753: the mean is >= 127.5 from the extreme
    t = least + (1 - least) * torch.rand(n, generator=g)
    moved = background + t[:, None] * (extreme[:, None] - background)
    foreground = torch.where(low[:, None], moved, foreground)
    out = background[:, :, None, None] + (foreground - background)[:, :, None, None] * gray
    out = out + noise * torch.randn(out.shape, generator=g)
    return out.round().clamp(0, 255).to(torch.uint8)


class Domain:
    """One side of the transfer: a dataset's images in the network's 3×32×32 format.

    ``spec`` (a side of ``TrainConfig.transfer``, or its mapping): ``dataset``, ``style``
    (``"rgb32"``: pad and repeat; ``"svhn"``: :func:`render_svhn_style`),
    ``train_offset``/``limit_train`` (a slice of the training split), ``limit_test``.
    """

    STYLES = DOMAIN_STYLES

    def __init__(
        self, spec: TransferDomain | Mapping[str, Any], data_dir: str | None = None
    ) -> None:
        from attnact.data import load_arrays

        spec = TransferDomain.from_dict(spec, "domain")
        style = spec.style
        self.name = f"{spec.dataset}" + ("" if style == "rgb32" else f" ({style} style)")
        x_train, y_train = load_arrays(spec.dataset, "train", data_dir)
        x_test, y_test = load_arrays(spec.dataset, "test", data_dir)
        start = spec.train_offset
        stop = start + spec.limit_train if spec.limit_train else None
        x_train, y_train = x_train[start:stop], y_train[start:stop]
        if spec.limit_test:
            x_test, y_test = x_test[: spec.limit_test], y_test[: spec.limit_test]
        if len(x_train) == 0:
            raise ValueError(f"transfer domain {self.name}: no training images at offset "
                             f"{start}")
        if style == "svhn":
            # Different seeds for the two splits: no test image shares a training colouring.
            x_train, x_test = render_svhn_style(x_train, 1), render_svhn_style(x_test, 2)
        else:
            x_train, x_test = to_rgb32(x_train), to_rgb32(x_test)
        self.train, self.test = (x_train, y_train), (x_test, y_test)
        pixels = x_train.float().div_(255).transpose(0, 1).reshape(3, -1)
        self.mean = tuple(pixels.mean(1).tolist())
        self.std = tuple(pixels.std(1).clamp_min(1e-3).tolist())
        self.num_classes = int(max(y_train.max(), y_test.max())) + 1

    def loaders(self, batch_size: int, seed: int) -> tuple[Any, Any]:
        from attnact.data import TensorLoader

        norm: dict[str, Any] = {"mean": self.mean, "std": self.std, "seed": seed}
        return (
            TensorLoader(*self.train, batch_size=batch_size, shuffle=True, drop_last=True,
                         **norm),
            TensorLoader(*self.test, batch_size=1000, shuffle=False, drop_remainder=False,
                         **norm),
        )


def _model(config: TrainConfig, num_classes: int) -> torch.nn.Module:
    from attnact.train.build import DataShape, build_model

    torch.manual_seed(config.seed)  # the initial weights depend on the seed only
    # Both domains reach the network as 3×SIZE×SIZE (to_rgb32), whatever the source dataset.
    return build_model(config, DataShape(config.dataset, (3, SIZE, SIZE), num_classes))


def fit_transfer(config: TrainConfig) -> dict[str, Any]:
    """Run Table 2's phases for one activation and seed (run-store fit function).

    ``config`` is the fine-tuning recipe (optimizer, lr, batch, seed, model, act); its
    ``transfer`` (:class:`~attnact.train.settings.TransferSettings`) holds the ``source`` and
    ``target`` domains, ``pretrain_epochs``, ``pretrain_lr`` and ``finetune_epochs``. Each
    phase is an engine run in a sub-directory (``pretrain/``, ``finetune/``, ``scratch/``), so
    an interrupted run resumes phase by phase; ``summary.json`` (with a ``transfer`` entry: one
    accuracy per Table 2 row) and the fine-tuning run's ``metrics.csv`` are written last.
    """
    from attnact.train.engine import METRIC_COLUMNS, evaluate, fit

    settings = config.transfer
    if settings is None:
        raise ValueError("fit_transfer: TrainConfig.transfer must give the source and target "
                         "domains (TransferSettings, or a mapping with source, target and "
                         "optionally pretrain_epochs, pretrain_lr, finetune_epochs)")
    out = Path(config.out_dir) if config.out_dir is not None else None
    source = Domain(settings.source, config.data_dir)
    target = Domain(settings.target, config.data_dir)
    if source.num_classes != target.num_classes:
        raise ValueError(f"source {source.name} has {source.num_classes} classes, target "
                         f"{target.name} {target.num_classes}: the classifier is shared")
    finetune_epochs = settings.finetune_epochs
    base = config.replace(transfer=None, resume=True)

    def phase(name: str, model: torch.nn.Module, domain: Domain, **changes: Any) -> Any:
        run = base.replace(out_dir=str(out / name) if out else None, **changes)
        return fit(run, model=model, loaders=domain.loaders(run.batch_size, run.seed))

    pre = phase("pretrain", _model(config, source.num_classes), source,
                epochs=settings.pretrain_epochs, lr=settings.pretrain_lr)
    _, target_test = target.loaders(config.batch_size, config.seed)
    no_finetune = evaluate(pre.model, target_test)["top1"]
    tuned_model = _model(config, source.num_classes)
    tuned_model.load_state_dict(pre.model.state_dict())
    tuned = phase("finetune", tuned_model, target, epochs=finetune_epochs)
    scratch = phase("scratch", _model(config, target.num_classes), target,
                    epochs=finetune_epochs)
    rows = {"no_pretrain": scratch.final["test_top1"], "no_finetune": no_finetune}
    for e in sorted({*FINETUNE_CHECKPOINTS, finetune_epochs}):
        if e <= len(tuned.history):
            rows[f"finetune_{e}"] = tuned.history[e - 1]["test_top1"]
    summary = {
        **tuned.summary,
        "status": "finished",
        "wall_time_s": pre.wall_time_s + tuned.wall_time_s + scratch.wall_time_s,
        "transfer": rows,
        "source": source.name,
        "target": target.name,
        "pretrain_final": pre.final,
        "config": config.to_dict(),
    }
    summary.pop("checkpoint_sha256", None)  # the phases keep their checkpoints, not this one
    if out is not None:
        files = RunDirectory(out)
        summary["metrics_sha256"] = files.write_metrics(tuned.history, METRIC_COLUMNS)
        files.write_summary(summary)
    return summary


# ---------------------------------------------------------------------------- the experiment
def _describe(domain: TransferDomain) -> str:
    text = f"{domain.dataset} in {domain.style} style"
    if domain.limit_train:
        start = domain.train_offset
        text += f" (training images {start}-{start + domain.limit_train - 1}"
        text += f", first {domain.limit_test} test images)" if domain.limit_test else ")"
    return text


ROWS = (("no_pretrain", "no pretraining"), ("no_finetune", "no fine-tuning"),
        *((f"finetune_{e}", f"pretrain + fine-tune {e} epochs") for e in FINETUNE_CHECKPOINTS))


class AReLUTransfer(Experiment):
    """Table 2: does AReLU fine-tune better with a small learning rate? MNIST-Conv with
    :data:`ACTIVATIONS`, pretrained on the source and tested on the target without
    pretraining, without fine-tuning, and after 5, 10 and 20 epochs of fine-tuning."""

    name = "arelu-transfer"
    title = "Table 2: pretrain on MNIST(-like), fine-tune on SVHN(-like) with lr 1e-5"
    source = "Chen et al., \"AReLU\" (2020), Sec. 4.4, Table 2"
    default_seeds: ClassVar[Mapping[str, int]] = {"paper": 3, "quick": 2}
    activations: ClassVar[tuple[str, ...]] = ACTIVATIONS

    @staticmethod
    def transfer(preset: str) -> TransferSettings:
        """The preset's domains and phases."""
        if preset == "paper":
            return TransferSettings(source=TransferDomain("mnist"), target=TransferDomain("svhn"),
                                    pretrain_epochs=20, pretrain_lr=0.01, finetune_epochs=20)
        return TransferSettings(
            source=TransferDomain("fashion_mnist", limit_train=6000, limit_test=2000),
            target=TransferDomain("fashion_mnist", style="svhn", train_offset=30000,
                                  limit_train=4000, limit_test=2000),
            pretrain_epochs=5, pretrain_lr=0.01, finetune_epochs=20)

    def spec(self, preset: str, act: str, seed: int) -> RunSpec:
        transfer = self.transfer(preset)
        config = TrainConfig(
            model="mnist_conv", act=act, dataset=transfer.target.dataset, optimizer="sgd",
            lr=1e-5, momentum=0.9, batch_size=128 if preset == "paper" else 64,
            epochs=transfer.finetune_epochs, seed=seed, transfer=transfer,
        )
        tag = "mnist2svhn" if preset == "paper" else "fmnist2svhnstyle"
        return RunSpec(key=run_key(tag, "mnistconv", act, f"seed{seed}"),
                       coords={"transfer": tag, "act": act, "seed": seed}, config=config,
                       fit="attnact.experiments.arelu_transfer:fit_transfer")

    def grid(self, preset: str, seeds: int) -> list[RunSpec]:
        self.check_preset(preset)
        return [self.spec(preset, act, seed) for seed in range(seeds)
                for act in self.activations]

    def required_datasets(self, specs: Sequence[RunSpec]) -> list[str]:
        return sorted({getattr(s.config.transfer, side).dataset for s in specs
                       if s.config.transfer is not None for side in ("source", "target")})

    def settings(self, preset: str) -> str:
        transfer = self.transfer(preset)
        config = self.spec(preset, "relu", 0).config
        return (
            f"MNIST-Conv (3 input channels, 32×32). Source: {_describe(transfer.source)}, "
            f"pretrained {transfer.pretrain_epochs} epochs with SGD lr "
            f"{transfer.pretrain_lr:g}; target: {_describe(transfer.target)}. Fine-tuning and "
            f"training from scratch: {transfer.finetune_epochs} epochs, SGD lr 1e-5 (momentum "
            f"0.9), batch {config.batch_size}, constant. Activations: "
            f"{', '.join(label(a) for a in self.activations)}."
        )

    def report(self, results: Results, out: Path, context: ReportContext) -> dict[str, Path]:
        acts = [a for a in self.activations if any(s.coords["act"] == a for s in results.specs)]
        tag = results.specs[0].coords["transfer"]
        rows, summary = [], []
        stats_by: dict[tuple[str, str], Any] = {}
        for key, name in ROWS:
            def metric(record: RunRecord, key: str = key) -> float:
                return float(record.summary["transfer"][key])

            stats = group_stats(results, [{"transfer": tag, "act": a} for a in acts],
                                metric=metric,
                                baseline=lambda g: None if g["act"] == "relu" else {
                                    **g, "act": "relu"})
            cells = bold_best({st.coords["act"]: st for st in stats})
            rows.append({"setting": name, **{label(a): cell for a, cell in cells.items()}})
            for st in stats:
                stats_by[(key, st.coords["act"])] = st
                summary.append({**st.numeric(), "setting": name})
        note = ("Cells: test top-1 (%) on the target, mean ± std over seeds; bold = best "
                "activation of the row.")
        diff_rows = []
        for key, name in ROWS:
            arelu = stats_by.get((key, "arelu"))
            if arelu is not None:
                diff_rows.append({"setting": name, "AReLU − ReLU (points) [95% CI]":
                                  arelu.diff_cell()})
        files = {}
        curves = {label(a): [[r["test_top1"] for r in rec.metrics]
                             for rec in results.select(act=a)] for a in acts}
        path = out / "finetune_curves.png"
        files[path.name] = plot_curves(curves, path, scale=1.0,
                                       title=f"{self.name}: target accuracy while fine-tuning")
        sections = [("Table 2", markdown(rows, note)),
                    ("AReLU against ReLU, paired over seeds", markdown(diff_rows))]
        files.update(write_tables(out, head=header(self, context, results), sections=sections,
                                  latex=[(f"{self.source}: target test top-1 (%)", rows)],
                                  summary_rows=summary))
        files["transfer.json"] = atomic_write_json(
            out / "transfer.json",
            {k: r.summary.get("transfer") for k, r in results.records.items()})
        return files


register_experiment(AReLUTransfer())
