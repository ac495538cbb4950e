"""The AReLU paper's CIFAR-100 experiments (Chen et al., "AReLU", Sec. 4.3): accuracy over
epochs for five mainstream architectures × six activations (Fig. 4), and Grad-CAM of the
first-layer features of ResNet-18 trained with ReLU and with AReLU (Fig. 5).

Architectures (:mod:`attnact.models.cifar_zoo`): the issue names ResNet-18 and SE-ResNet-18;
the other three are chosen here to span the usual CIFAR families — VGG-16 (with BatchNorm, a
plain deep stack), MobileNetV2 (depthwise, inverted residuals) and ShuffleNetV2 (channel split
and shuffle). Activations: ReLU, LReLU, PReLU, SELU, PAU and AReLU (the paper's Fig. 4 set).

Presets:

* ``paper``: CIFAR-100 (the user's download), full-width networks, SGD lr 0.1, batch 64,
  weight decay 5e-4, momentum 0.9 (Pereyra et al., 2017, as the paper says); constant lr for
  100 epochs (the paper gives neither schedule nor length), standard crop + flip, 2 seeds.
* ``quick``: the embedded Fashion-MNIST zero-padded to 32×32 (one input channel, 10 classes),
  networks at 1/8 width (ResNet-18: 176k parameters, 8.7 MMACs per image), the first 3000
  training and 1000 test images, 3 epochs (47 steps each), the paper's optimiser settings, 2
  seeds: 60 runs, each small enough for one thread (MobileNetV2 with PAU is the slowest).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, cast

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
from attnact.report.figures import plot_curves
from attnact.train.config import TrainConfig

__all__ = ["ACTIVATIONS", "ARCHITECTURES", "QUICK_RECIPE", "cifar_config", "cifar_spec"]

ARCHITECTURES: dict[str, str] = {
    "resnet18": "ResNet-18",
    "se_resnet18": "SE-ResNet-18",
    "vgg16": "VGG-16 (BN)",
    "mobilenet_v2": "MobileNetV2",
    "shufflenet_v2": "ShuffleNetV2",
}
ACTIVATIONS = ("relu", "leaky_relu", "prelu", "selu", "pau", "arelu")
QUICK_WIDTH = 0.125

#: The ``quick`` preset's recipe: the paper's optimiser on a CPU-sized slice of Fashion-MNIST.
QUICK_RECIPE: dict[str, Any] = dict(
    dataset="fashion_mnist",
    pad_to=32,
    limit_train=3000,
    limit_test=1000,
    epochs=3,
    test_batch_size=500,
)


def cifar_config(preset: str, arch: str, act: str, seed: int) -> TrainConfig:
    """One run of Fig. 4: the ``arelu-cifar100`` recipe (paper) or :data:`QUICK_RECIPE`."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r} (allowed: {', '.join(ARCHITECTURES)})")
    model_kwargs: dict[str, Any] = {}
    if preset == "paper":
        config = TrainConfig.preset("arelu-cifar100")
    elif preset == "quick":
        config = TrainConfig.preset("arelu-cifar100", **QUICK_RECIPE)
        model_kwargs["width"] = QUICK_WIDTH
    else:
        raise ValueError(f"preset must be 'paper' or 'quick', got {preset!r}")
    return config.replace(model=arch, act=act, model_kwargs=model_kwargs, seed=seed)


def cifar_spec(preset: str, arch: str, act: str, seed: int) -> RunSpec:
    """The run ``<dataset>-<arch>[-w<width>]-<act>-seed<seed>`` (Fig. 4 and Fig. 5 share it)."""
    config = cifar_config(preset, arch, act, seed)
    width = config.model_kwargs.get("width")
    parts = [config.dataset, arch] + ([f"w{width:g}"] if width else []) + [act, f"seed{seed}"]
    return RunSpec(key=run_key(*parts),
                   coords={"dataset": config.dataset, "arch": arch, "act": act, "seed": seed},
                   config=config)


class AReLUCifar100(Experiment):
    """Fig. 4: test accuracy over epochs of five architectures with ReLU, LReLU, PReLU, SELU,
    PAU and AReLU. The paper's claims: learnable activations converge faster; AReLU converges
    fastest for all five networks; PAU is sometimes faster early but overfits later."""

    name = "arelu-cifar100"
    title = "Fig. 4: five CIFAR architectures × ReLU, LReLU, PReLU, SELU, PAU, AReLU"
    source = "Chen et al., \"AReLU\" (2020), Sec. 4.3, Fig. 4"
    default_seeds: ClassVar[Mapping[str, int]] = {"paper": 2, "quick": 2}

    def grid(self, preset: str, seeds: int) -> list[RunSpec]:
        self.check_preset(preset)
        return [cifar_spec(preset, arch, act, seed) for seed in range(seeds)
                for arch in ARCHITECTURES for act in ACTIVATIONS]

    def settings(self, preset: str) -> str:
        c = cifar_config(preset, "resnet18", "relu", 0)
        data = ("CIFAR-100" if preset == "paper" else
                "Fashion-MNIST zero-padded to 32×32 (CIFAR-100 is not on this machine)")
        limits = (f", the first {c.limit_train} training and {c.limit_test} test images"
                  if c.limit_train else "")
        width = (f" at width × {QUICK_WIDTH:g}" if preset == "quick" else "")
        return (f"{', '.join(ARCHITECTURES.values())}{width} on {data}{limits}; {c.epochs} "
                f"epochs, SGD lr {c.lr:g} (momentum {c.momentum:g}), batch {c.batch_size}, "
                f"weight decay {c.weight_decay:g}, constant lr. Activations: "
                f"{', '.join(label(a) for a in ACTIVATIONS)}.")

    def report(self, results: Results, out: Path, context: ReportContext) -> dict[str, Path]:
        dataset = results.specs[0].coords["dataset"]
        archs = [a for a in ARCHITECTURES if any(s.coords["arch"] == a for s in results.specs)]
        acts = [a for a in ACTIVATIONS if any(s.coords["act"] == a for s in results.specs)]
        groups = [{"dataset": dataset, "arch": arch, "act": act} for arch in archs for act in acts]

        def baseline(g: Mapping[str, Any]) -> dict[str, Any] | None:
            return None if g["act"] == "relu" else {**g, "act": "relu"}

        first = {(s.coords["arch"], s.coords["act"]): s for s in group_stats(
            results, groups, baseline=baseline, metric=lambda r: r.metric("test_top1", "first"))}
        final = {(s.coords["arch"], s.coords["act"]): s for s in group_stats(
            results, groups, baseline=baseline)}
        best = {(s.coords["arch"], s.coords["act"]): s for s in group_stats(
            results, groups, baseline=baseline, metric=lambda r: r.metric("test_top1", "best"))}
        sections = []
        latex = []
        summary: list[dict[str, Any]] = []
        for title, stats in (("after the first epoch", first), ("after the last epoch", final),
                             ("best epoch", best)):
            rows = []
            for arch in archs:
                cells = bold_best({act: stats[(arch, act)] for act in acts})
                rows.append({"architecture": ARCHITECTURES[arch],
                             **{label(act): cells[act] for act in acts}})
            sections.append((f"Test top-1 (%) {title}", markdown(
                rows, "Mean ± std over seeds; bold = best activation of the architecture.")))
            latex.append((f"{self.source}: test top-1 (%) {title}", rows))
            summary += [{**s.numeric(), "at": title} for s in stats.values()]
        diff_rows = [{"architecture": ARCHITECTURES[arch],
                      **{f"{label(act)} − ReLU": final[(arch, act)].diff_cell()
                         for act in acts if act != "relu"}} for arch in archs]
        sections.append(("Paired difference to ReLU after the last epoch (points) [95% CI]",
                         markdown(diff_rows)))
        sections.append(("Overfitting: best epoch minus last epoch (points)",
                         markdown(self._overfit_rows(results, archs, acts),
                                  "The paper: PAU converges fast early on some networks but "
                                  "overfits later, AReLU does not.")))
        files: dict[str, Path] = {}
        for arch in archs:
            curves = {label(act): [[r["test_top1"] for r in rec.metrics]
                                   for rec in results.select(arch=arch, act=act)]
                      for act in acts}
            path = out / f"curves_{arch}.png"
            files[path.name] = plot_curves(curves, path, scale=1.0,
                                           title=f"{self.name}: {ARCHITECTURES[arch]}")
        files.update(write_tables(out, head=header(self, context, results), sections=sections,
                                  latex=latex, summary_rows=summary))
        return files

    @staticmethod
    def _overfit_rows(
        results: Results, archs: list[str], acts: list[str]
    ) -> list[dict[str, Any]]:
        rows = []
        for arch in archs:
            row: dict[str, Any] = {"architecture": ARCHITECTURES[arch]}
            for act in acts:
                gaps = [r.metric("test_top1", "best") - r.final_top1
                        for r in results.select(arch=arch, act=act)]
                row[label(act)] = f"{sum(gaps) / len(gaps):.2f}" if gaps else "–"
            rows.append(row)
        return rows


# ---------------------------------------------------------------------------- Fig. 5
class GradCAMExperiment(Experiment):
    """Fig. 5: Grad-CAM (captum) of the first-layer features (``model.stem``: conv, BN, act)
    of ResNet-18 trained with ReLU and with AReLU, on test images, as an image grid. The runs
    are ``arelu-cifar100``'s ResNet-18 ReLU and AReLU runs (shared keys: trained once)."""

    name = "gradcam"
    title = "Fig. 5: Grad-CAM of ResNet-18's first-layer features, ReLU vs AReLU"
    source = "Chen et al., \"AReLU\" (2020), Sec. 4.3, Fig. 5"
    default_seeds: ClassVar[Mapping[str, int]] = {"paper": 1, "quick": 1}
    acts = ("relu", "arelu")
    images_per_figure = 10

    def grid(self, preset: str, seeds: int) -> list[RunSpec]:
        self.check_preset(preset)
        return [cifar_spec(preset, "resnet18", act, seed) for seed in range(seeds)
                for act in self.acts]

    def settings(self, preset: str) -> str:
        return (f"The ResNet-18 runs of `arelu-cifar100` ({preset} preset): "
                f"{AReLUCifar100().settings(preset)} Grad-CAM of `model.stem`'s output for the "
                f"true class of the first test image of each class, upsampled to the input.")

    def report(self, results: Results, out: Path, context: ReportContext) -> dict[str, Path]:
        from attnact.data import make_loaders
        from attnact.report.gradcam import gradcam, gradcam_grid

        files: dict[str, Path] = {}
        rows = []
        seeds = sorted({s.coords["seed"] for s in results.specs})
        for seed in seeds:
            records = {act: results.select(act=act, seed=seed) for act in self.acts}
            if not all(records.values()):
                continue
            config = records[self.acts[0]][0].summary["config"]
            _, test, info = make_loaders(config["dataset"], batch_size=500,
                                         data_dir=config.get("data_dir"),
                                         pad_to=config.get("pad_to"),
                                         limit_test=config.get("limit_test"))
            images, labels = _one_per_class(test, self.images_per_figure)
            maps = {}
            for act in self.acts:
                record = records[act][0]
                model = _load_model(record, info)
                stem = cast(torch.nn.Module, model.stem)  # every zoo host has a stem
                heat = maps[label(act)] = gradcam(model, stem, images, labels)
                with torch.no_grad():
                    hits = int((model(images).argmax(1) == labels).sum())
                rows.append({"seed": seed, "activation": label(act),
                             "test top-1 (%)": f"{record.final_top1:.2f}",
                             "shown images classified right": f"{hits}/{len(labels)}",
                             "mean heat": f"{heat.mean().item():.3f}",
                             "share of heat > 0.5": f"{(heat > 0.5).float().mean().item():.3f}"})
            path = out / f"gradcam_seed{seed}.png"
            files[path.name] = gradcam_grid(
                maps, images, path, labels=labels, class_names=_class_names(config["dataset"]),
                mean=info.mean, std=info.std,
                title=f"Grad-CAM of ResNet-18's first layer (seed {seed}): true class")
        sections = [("Models and heat maps", markdown(rows, (
            "Fig. 5 is qualitative: the paper says AReLU's first-layer maps activate regions "
            "that are semantically more meaningful for the target class. Read the figure; the "
            "columns above only summarise how concentrated the maps are.")))]
        files.update(write_tables(out, head=header(self, context, results), sections=sections,
                                  latex=[], summary_rows=rows))
        return files


def _one_per_class(loader: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test image of each of the first ``n`` classes (in class order)."""
    picked: dict[int, torch.Tensor] = {}
    for x, y in loader:
        for image, target in zip(x, y.tolist(), strict=True):
            if target < n and target not in picked:
                picked[target] = image
        if len(picked) == n:
            break
    classes = sorted(picked)
    return torch.stack([picked[c] for c in classes]), torch.tensor(classes)


def _load_model(record: RunRecord, info: Any) -> torch.nn.Module:
    from attnact.train.build import build_model, data_shape
    from attnact.train.rundir import RunDirectory

    config = TrainConfig.from_dict(record.summary["config"])
    model = build_model(config, data_shape(config, info))
    model.load_state_dict(RunDirectory(record.run_dir).load_checkpoint()["model"])
    return model.eval()


def _class_names(dataset: str) -> list[str] | None:
    if dataset == "fashion_mnist":
        return ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                "Bag", "Boot"]
    return None


register_experiment(AReLUCifar100())
register_experiment(GradCAMExperiment())
