"""The AReLU paper's meta-learning experiment (Chen et al., "AReLU", Sec. 4.5, Table 3): MAML
(Finn et al., 2017) with MNIST-Conv and different activations, 5-way 1-shot and 5-way 5-shot.

The paper: "fast adaption steps 5 ... 32 tasks for each step ... 100 iterations with a learning
rate of 0.005"; it reports "the final test accuracy". Here the accuracy is measured on held-out
test tasks only — query images from the test split, never seen in meta-training — adapted with
the same 5 steps, averaged over test tasks that are the same for every activation
(:func:`attnact.meta.maml.fit_maml`; second-order MAML on ``torch.func``).

Presets: ``paper`` on MNIST (the user's download), 19 activations of Table 1, 3 seeds;
``quick`` on the embedded Fashion-MNIST, :data:`QUICK_ACTIVATIONS`, 2 seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from attnact.experiments.arelu_mnist import ACTIVATIONS, label
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
from attnact.report.figures import plot_curves
from attnact.train.config import TrainConfig
from attnact.train.settings import MAMLSettings

__all__ = ["META", "QUICK_ACTIVATIONS", "QUICK_META", "SHOTS", "meta_spec"]

SHOTS = (1, 5)
QUICK_ACTIVATIONS = ("relu", "leaky_relu", "selu", "prelu", "pau", "arelu")
#: MAML as the paper gives it (5-way, 32 tasks per step, 5 adaptation steps, 100 iterations,
#: learning rate 0.005 for the inner steps and the outer Adam); queries per class and the test
#: tasks are choices made here (see attnact.meta.maml.MAMLSettings).
META: dict[str, Any] = dict(ways=5, tasks_per_step=32, inner_steps=5, inner_lr=0.005,
                            iterations=100, eval_every=20, queries=15, test_tasks=200,
                            split="samples")
#: The quick preset keeps the paper's MAML and measures on fewer query images and test tasks:
#: 5-shot with 15 queries costs 1.7x the time of 10 (about 2 and 1.2 minutes per run here).
QUICK_META: dict[str, Any] = {**META, "queries": 10, "test_tasks": 100}


def meta_spec(preset: str, act: str, shots: int, seed: int) -> RunSpec:
    """The run ``<dataset>-maml-5way<k>shot-<act>-seed<seed>``."""
    dataset = "mnist" if preset == "paper" else "fashion_mnist"
    meta = META if preset == "paper" else QUICK_META
    config = TrainConfig(model="mnist_conv", act=act, dataset=dataset, optimizer="adam",
                         lr=0.005, epochs=1, seed=seed,
                         maml=MAMLSettings(**{**meta, "shots": shots}))
    return RunSpec(
        key=run_key(dataset, "maml", f"{META['ways']}way{shots}shot", act, f"seed{seed}"),
        coords={"dataset": dataset, "shots": shots, "act": act, "seed": seed},
        config=config, fit="attnact.meta.maml:fit_maml",
    )


class AReLUMeta(Experiment):
    """Table 3: 5-way 1-shot and 5-shot accuracy of MAML on held-out test tasks, per
    activation. The paper's claims: AReLU has a clear advantage; PAU does poorly here
    (overfitting), although it does well elsewhere."""

    name = "arelu-meta"
    title = "Table 3: MAML (5-way 1-/5-shot) with MNIST-Conv, held-out test tasks"
    source = "Chen et al., \"AReLU\" (2020), Sec. 4.5, Table 3"
    default_seeds: ClassVar[Mapping[str, int]] = {"paper": 3, "quick": 2}

    @staticmethod
    def activations(preset: str) -> tuple[str, ...]:
        return ACTIVATIONS if preset == "paper" else QUICK_ACTIVATIONS

    def grid(self, preset: str, seeds: int) -> list[RunSpec]:
        self.check_preset(preset)
        return [meta_spec(preset, act, shots, seed) for seed in range(seeds)
                for shots in SHOTS for act in self.activations(preset)]

    def settings(self, preset: str) -> str:
        data = "MNIST" if preset == "paper" else "Fashion-MNIST (MNIST is not on this machine)"
        meta = META if preset == "paper" else QUICK_META
        return (
            f"MNIST-Conv on {data}; second-order MAML on torch.func: {meta['ways']}-way "
            f"1-shot and 5-shot, {meta['tasks_per_step']} tasks per meta-step, "
            f"{meta['inner_steps']} adaptation steps of SGD lr {meta['inner_lr']:g}, "
            f"{meta['iterations']} iterations of Adam lr 0.005 (the paper's settings); "
            f"{meta['queries']} query images per class. Meta-training tasks come from the "
            f"training split; the {meta['test_tasks']} test tasks (the same for every "
            f"activation) from the test split, evaluated every {meta['eval_every']} "
            f"iterations. Activations: {', '.join(label(a) for a in self.activations(preset))}."
        )

    def report(self, results: Results, out: Path, context: ReportContext) -> dict[str, Path]:
        dataset = results.specs[0].coords["dataset"]
        acts = [a for a in self.activations(context.preset)
                if any(s.coords["act"] == a for s in results.specs)]
        shots = sorted({s.coords["shots"] for s in results.specs})
        groups = [{"dataset": dataset, "shots": k, "act": a} for a in acts for k in shots]
        def baseline(g: Mapping[str, Any]) -> dict[str, Any] | None:
            return None if g["act"] == "relu" else {**g, "act": "relu"}

        stats = {(s.coords["act"], s.coords["shots"]): s
                 for s in group_stats(results, groups, baseline=baseline)}
        best_stats = {(s.coords["act"], s.coords["shots"]): s for s in group_stats(
            results, groups, baseline=baseline, metric=lambda r: r.metric("test_top1", "best"))}
        final_cells = {k: bold_best({a: stats[(a, k)] for a in acts}) for k in shots}
        best_cells = {k: bold_best({a: best_stats[(a, k)] for a in acts}) for k in shots}
        rows, diffs = [], []
        for a in acts:
            row: dict[str, Any] = {"activation": label(a)}
            diff: dict[str, Any] = {"activation": label(a)}
            for k in shots:
                row[f"5-way {k}-shot, final (%)"] = final_cells[k][a]
                row[f"5-way {k}-shot, best evaluation (%)"] = best_cells[k][a]
                diff[f"{k}-shot final: Δ vs ReLU [95% CI]"] = stats[(a, k)].diff_cell()
            rows.append(row)
            diffs.append(diff)
        note = ("Cells: mean query accuracy over the held-out test tasks after adaptation, "
                "mean ± std over seeds, after the last meta-iteration (final) and at the best "
                "of the evaluations during meta-training (best: an optimistic number, as the "
                "authors' script reports; final is the honest one); bold = best activation.")
        files: dict[str, Path] = {}
        for k in shots:
            curves = {label(a): [[r["test_top1"] for r in rec.metrics]
                                 for rec in results.select(act=a, shots=k)] for a in acts}
            path = out / f"meta_curves_{k}shot.png"
            every = META["eval_every"]
            files[path.name] = plot_curves(
                curves, path, scale=1.0, xlabel=f"evaluation (every {every} iterations)",
                title=f"{self.name}: 5-way {k}-shot test-task accuracy during meta-training")
        sections = [("Table 3", markdown(rows, note)),
                    ("Paired difference to ReLU (points)", markdown(diffs))]
        files.update(write_tables(
            out, head=header(self, context, results), sections=sections,
            latex=[(f"{self.source}: held-out test-task accuracy (%)", rows)],
            summary_rows=[*({**s.numeric(), "at": "final"} for s in stats.values()),
                          *({**s.numeric(), "at": "best"} for s in best_stats.values())]))
        return files



register_experiment(AReLUMeta())
