"""``attnact compare``: train several activations under identical conditions and report them.

Identical conditions: every activation is trained from the same base configuration, and seed
index k gives every activation the same seed (so the same data order and augmentation, and the
same initialisation of every layer the activation does not own). Runs are interleaved — all
activations for seed 0, then seed 1 — so a seed that fails leaves every activation with the same
seeds. Speed is not read off the runs' wall times (on a shared machine those measure its load):
each model's training step is timed against the baseline's side by side in one process, once per
comparison (``time_ratios.json``).

Each run has its own directory (``runs/<act>/seed<k>``) in a
:class:`~attnact.experiments.store.RunStore` and is trained by
:func:`~attnact.experiments.runners.run_grid` — the store and runner of ``attnact reproduce``:
a finished run (its ``summary.json`` says so) is never re-run, an unfinished one resumes from its
checkpoint, a failing one is reported without stopping the others. The report:
``results.csv`` (one row per run), ``table.md`` and ``table.tex`` (one row per activation: mean ±
std and 95% CI over seeds, the paired difference to the baseline, the time ratio),
``curves.csv`` and ``curves.png`` (test accuracy per epoch). The report reads the finished runs
as the store's :class:`~attnact.experiments.store.RunRecord`, with coordinates ``act`` and
``seed`` (the seed index).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from attnact._checks import check_directory_argument, check_positive_int
from attnact.experiments.keys import DEFAULT_FIT, RunSpec
from attnact.experiments.runners import run_grid
from attnact.experiments.store import RunRecord, RunStore
from attnact.fileio import atomic_write_json, atomic_write_text
from attnact.report.figures import plot_curves
from attnact.report.stats import paired_difference, summarize
from attnact.report.tables import to_csv, to_latex, to_markdown
from attnact.train.build import model_cost, preflight
from attnact.train.config import TrainConfig
from attnact.train.provenance import summary_lines as provenance_lines

__all__ = [
    "DEMO_ACTIVATIONS",
    "CompareReport",
    "compare",
    "load_run",
]

# The embedded demo's activations (issue #3): the baseline, two classic alternatives, a learnable
# slope, and the three attentional units of the two papers.
DEMO_ACTIVATIONS = ("relu", "prelu", "swish", "selu", "arelu", "atac", "se_activation")


@dataclass
class CompareReport:
    """What one :func:`compare` call wrote: the table's rows, the runs it aggregates (their
    coordinates are ``act`` and ``seed``, the seed index) and the report's files."""

    rows: list[dict[str, Any]]  # one per activation
    runs: list[RunRecord]
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)

    def markdown(self) -> str:
        return (self.out_dir / "table.md").read_text()


def load_run(store: RunStore, act: str, seed_index: int) -> RunRecord | None:
    """The run of ``act`` and seed index ``seed_index`` if the store counts it finished."""
    record = store.record(f"{act}/seed{seed_index}", {"act": act, "seed": seed_index})
    if record is None or not record.metrics:
        return None
    return record


def measure_time_ratios(
    config: Any, acts: Sequence[str], baseline: str, *, rounds: int = 15
) -> dict[str, float]:
    """Training-step time of each activation's model relative to the baseline's, measured side
    by side in this process on one batch of the run's size and input shape (see
    :mod:`attnact.perf.steptime`).

    Per-epoch wall times of runs trained minutes apart mostly measure the machine's load at the
    time; an interleaved median does not.
    """
    import torch

    from attnact.perf.steptime import relative_step_times
    from attnact.train.build import build_model, data_shape

    shape = data_shape(config)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(config.batch_size, *shape.input_size, generator=gen)
    y = torch.randint(0, shape.num_classes, (config.batch_size,), generator=gen)
    factories = {act: (lambda a=act: build_model(config, shape, act=a)) for act in acts}
    return relative_step_times(factories, x, y, baseline=baseline, rounds=rounds,
                               warmup=min(3, rounds))


def _cached_time_ratios(
    out: Path, config: Any, acts: Sequence[str], baseline: str,
    measure: Callable[[Any, Sequence[str], str], dict[str, float]],
) -> dict[str, float | str]:
    """Time ratios measured once per comparison and kept in ``time_ratios.json``, so a re-run
    that trains nothing reproduces the same report."""
    path = out / "time_ratios.json"
    key = {"model": config.model, "model_kwargs": config.model_kwargs,
           "batch_size": config.batch_size, "baseline": baseline,
           "dataset": config.dataset, "pad_to": config.pad_to}
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == json.loads(json.dumps(key)) and set(acts) <= set(cached["ratios"]):
            return {a: cached["ratios"][a] for a in acts}
    try:
        ratios = measure(config, acts, baseline)
    except Exception as err:  # the runs are trained: a failed timing must not lose the table
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        return {a: f"not measured ({reason})" for a in acts}
    atomic_write_json(path, {"key": key, "ratios": ratios})
    return dict(ratios)  # typed as the cached form's float | str values


def compare(
    acts: Sequence[str],
    base_config: Any,
    out_dir: str | Path,
    *,
    seeds: int = 2,
    baseline: str | None = None,
    fit: Callable[[Any], Any] | None = None,
    log: Callable[[str], None] = print,
    workers: int = 1,
    time_ratios: Callable[[Any, Sequence[str], str], dict[str, float]] | None = None,
    time_rounds: int = 15,
) -> CompareReport:
    """Train every activation in ``acts`` for ``seeds`` seeds from ``base_config`` and report.

    Args:
        acts: registered activation names, in the order the table lists them.
        base_config: a ``TrainConfig``; its ``act``, ``seed``, ``out_dir`` and ``resume`` are set
            per run (seed index k trains with ``base_config.seed + k``).
        out_dir: the comparison's directory (runs and report go below it).
        seeds: runs per activation.
        baseline: the activation differences and time ratios refer to; one of ``acts``.
            None: ``"relu"`` if it is among them, else the first.
        fit: the training function (``attnact.train.engine.fit``; injectable for tests).
        workers: runs trained at once; more than 1 trains in spawned worker processes (each
            with ``cores // workers`` threads) and needs ``fit=None``.
        time_ratios: measures each activation's training time relative to the baseline
            (default: side by side in this process, :func:`measure_time_ratios`).
        time_rounds: interleaved timing rounds of the default measurement; 0 measures
            nothing (the column says so).
    """
    check_positive_int("seeds", seeds)
    if not isinstance(base_config, TrainConfig):
        raise ValueError(f"base_config must be a TrainConfig, got {type(base_config).__name__}")
    if isinstance(acts, str):  # "relu,arelu" would compare the letters
        raise ValueError(f"acts must be a list of activation names, got the string {acts!r}")
    check_directory_argument("out_dir", out_dir)
    if isinstance(time_rounds, bool) or not isinstance(time_rounds, int) or time_rounds < 0:
        raise ValueError(f"time_rounds must be an integer >= 0, got {time_rounds!r}")
    if not acts:
        raise ValueError("acts must name at least one activation")
    if len(set(acts)) != len(acts):
        raise ValueError(f"acts contains duplicates: {list(acts)}")
    from attnact.units.registry import activation_spec

    for act in acts:
        activation_spec(act)  # fail before training anything if a name is unknown
    if workers > 1 and fit is not None:
        raise ValueError("workers > 1 trains in other processes: leave fit=None (the engine)")
    out = Path(out_dir)
    if baseline is not None and baseline not in acts:
        raise ValueError(f"baseline {baseline!r} is not one of the activations compared "
                         f"({', '.join(acts)})")
    base = baseline if baseline is not None else ("relu" if "relu" in acts else acts[0])

    # Interleaved: every activation for seed 0, then seed 1 (see the module docstring).
    store = RunStore(out / "runs")
    if fit is None:
        # One batch of the real data through every model that still has runs to train, before
        # the first trains: a model that cannot take the dataset fails now, not hours later.
        todo = [act for act in acts
                if any(not store.is_finished(f"{act}/seed{k}") for k in range(seeds))]
        preflight([replace(base_config, act=act) for act in todo])
    specs = [
        RunSpec(
            key=f"{act}/seed{k}",
            coords={"act": act, "seed": k},
            config=replace(base_config, act=act, seed=base_config.seed + k),
            fit=DEFAULT_FIT if fit is None else fit,
        )
        for k in range(seeds)
        for act in acts
    ]
    sweep = run_grid(specs, store, workers=workers, backend="process" if workers > 1 else "inline",
                     log=log, tag="compare")
    # The store decides what is finished (a run whose checkpoint fails verification is not).
    loaded = {(a, k): load_run(store, a, k) for a in acts for k in range(seeds)}
    missing = [f"{a}/seed{k}" for (a, k), r in loaded.items() if r is None]
    if missing:
        reasons = {o.key: o.error for o in sweep.outcomes if o.error}
        detail = "; ".join(f"{k}: {reasons[k]}" for k in missing if k in reasons)
        raise RuntimeError(
            f"runs did not finish: {', '.join(missing)}" + (f" ({detail})" if detail else "")
        )
    runs = [r for r in loaded.values() if r is not None]
    if time_ratios is not None:
        ratios = _cached_time_ratios(out, base_config, acts, base, time_ratios)
    elif time_rounds == 0:
        ratios = {a: "not measured (time_rounds=0)" for a in acts}
    else:
        def measure(config: Any, names: Sequence[str], ref: str) -> dict[str, float]:
            return measure_time_ratios(config, names, ref, rounds=time_rounds)

        ratios = _cached_time_ratios(out, base_config, acts, base, measure)
    return write_report(runs, acts, base, base_config, out, ratios)


def write_report(
    runs: list[RunRecord],
    acts: Sequence[str],
    baseline: str,
    config: Any,
    out: Path,
    time_ratios: Mapping[str, float | str],
) -> CompareReport:
    """Aggregate finished runs into the comparison's tables, CSVs and figure."""
    by_act = {a: sorted((r for r in runs if r.coords["act"] == a), key=lambda r: r.coords["seed"])
              for a in acts}
    base_runs = by_act[baseline]
    rows = []
    for act in acts:
        rs = by_act[act]
        cost = model_cost(config, act=act)
        final = summarize([r.final_top1 for r in rs])
        first = summarize([r.metric("test_top1", "first") for r in rs])
        row: dict[str, Any] = {
            "activation": act,
            "params": cost.params,
            "MACs": (f"{cost.macs / 1e6:.2f}M" if cost.macs is not None
                     else f"not counted ({cost.macs_error})"),
            "top-1 after epoch 1 (%)": first.format(),
            "final top-1 (%)": final.format(),
            "95% CI (%)": final.format_ci(),
        }
        if act != baseline:
            diff = paired_difference([r.final_top1 for r in rs], [r.final_top1 for r in base_runs])
            row[f"vs {baseline} (points)"] = (
                f"{diff.mean:+.2f} {diff.format_ci()}" if diff.n >= 2 else f"{diff.mean:+.2f}"
            )
        else:
            row[f"vs {baseline} (points)"] = "baseline"
        ratio = time_ratios[act]
        row[f"time/epoch vs {baseline}"] = f"{ratio:.2f}x" if isinstance(ratio, float) else ratio
        rows.append(row)

    seeds = max(len(rs) for rs in by_act.values())
    epochs = max(len(r.metrics) for r in runs)
    caption = (
        f"{config.model} on {config.dataset}, {epochs} epochs, {seeds} seeds; "
        f"mean ± std over seeds, 95% Student-t interval, paired difference to {baseline}; "
        "time: median training step measured side by side in one process"
    )
    provenance = "\n".join(provenance_lines(
        {r.key: r.summary for r in runs}))
    files = {
        "table.md": atomic_write_text(
            out / "table.md", f"{caption}\n\n{to_markdown(rows)}\n\n{provenance}\n"
        ),
        "table.tex": atomic_write_text(out / "table.tex", to_latex(rows, caption=caption)),
        "results.csv": atomic_write_text(out / "results.csv", to_csv(_run_rows(runs))),
        "curves.csv": atomic_write_text(out / "curves.csv", to_csv(_curve_rows(runs))),
    }
    files["curves.png"] = plot_curves(
        {a: [r.curve("test_top1") for r in by_act[a]] for a in acts},
        out / "curves.png",
        scale=1.0,
        title=f"{config.model} on {config.dataset}: test top-1 (mean ± std over {seeds} seeds)",
    )
    return CompareReport(rows=rows, runs=runs, out_dir=out, files=files)


def _run_rows(runs: list[RunRecord]) -> list[dict[str, Any]]:
    return [
        {
            "activation": r.coords["act"],
            "seed_index": r.coords["seed"],
            "epochs": len(r.metrics),
            "first_epoch_top1": r.metric("test_top1", "first"),
            "final_top1": r.final_top1,
            "best_top1": r.metric("test_top1", "best"),
            "mean_epoch_time_s": r.mean_epoch_time_s,
            "run_dir": str(r.run_dir),
        }
        for r in runs
    ]


def _curve_rows(runs: list[RunRecord]) -> list[dict[str, Any]]:
    return [
        {"activation": r.coords["act"], "seed_index": r.coords["seed"], "epoch": e + 1,
         "test_top1": acc}
        for r in runs
        for e, acc in enumerate(r.curve("test_top1"))
        if not math.isnan(acc)
    ]

