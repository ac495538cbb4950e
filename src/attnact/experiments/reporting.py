"""Report building blocks shared by the experiments: per-group statistics over seeds, paired
differences to a baseline, the paper's number beside ours, the report header, and figures of a
metric against a grid axis.

Statistics (:mod:`attnact.report.stats`): mean ± sample standard deviation over seeds, the 95%
Student-t interval of the mean, and the paired difference to the baseline trained with the same
seed indices (same data order and augmentation), with its own interval.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from attnact.experiments.experiment import Experiment, ReportContext
from attnact.experiments.results import Results
from attnact.experiments.store import RunRecord
from attnact.fileio import atomic_write_text
from attnact.report.figures import figure
from attnact.report.stats import (
    NO_SPREAD,
    Summary,
    paired_difference,
    seeds_for_half_width,
    summarize,
    t_quantile,
)
from attnact.report.tables import to_csv, to_latex, to_markdown
from attnact.train.provenance import summary_lines as provenance_lines

__all__ = [
    "DesignTarget",
    "GroupStats",
    "best_key",
    "bold_best",
    "design_target",
    "final_top1",
    "group_stats",
    "header",
    "markdown",
    "plot_series",
    "precision_section",
    "stats_rows",
    "write_tables",
]


def final_top1(record: RunRecord) -> float:
    """Test top-1 (%) after the last epoch: the number the paper's tables report."""
    return record.final_top1


@dataclass(frozen=True)
class GroupStats:
    """One grid point (all coordinates but the seed) summarised over its seeds."""

    coords: dict[str, Any]
    values: dict[Any, float]  # seed index -> metric
    summary: Summary
    diff: Summary | None  # paired difference to the baseline; None for the baseline itself
    paper: float | None  # the paper's number, same unit as values, if it gives one

    def cell(self, digits: int = 2) -> str:
        """``mean ± std`` (just the mean with one seed, ``–`` with none)."""
        return self.summary.format(digits=digits)

    def diff_cell(self, digits: int = 2) -> str:
        if self.diff is None:
            return "baseline"
        if self.diff.n == 0:
            return "–"
        text = f"{self.diff.mean:+.{digits}f}"
        return f"{text} {self.diff.format_ci(digits=digits)}" if self.diff.n >= 2 else text

    # the columns numeric() adds to the coordinates
    STATISTICS: ClassVar[frozenset[str]] = frozenset({
        "n_seeds", "mean", "std", "ci_low", "ci_high", "diff_mean", "diff_ci_low",
        "diff_ci_high", "paper"})

    def numeric(self) -> dict[str, Any]:
        """Plain numbers for CSV (NaN where undefined)."""
        s, d = self.summary, self.diff
        return {
            **self.coords,
            "n_seeds": s.n,
            "mean": _r(s.mean), "std": _r(s.std), "ci_low": _r(s.ci_low), "ci_high": _r(s.ci_high),
            "diff_mean": _r(d.mean) if d else None,
            "diff_ci_low": _r(d.ci_low) if d else None,
            "diff_ci_high": _r(d.ci_high) if d else None,
            "paper": self.paper,
        }


def _r(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 4)


def best_key(stats: Mapping[Any, GroupStats]) -> Any:
    """The key of the group with the highest mean (groups without runs left out), or None."""
    means = {k: st.summary.mean for k, st in stats.items() if st.summary.n}
    return max(means, key=means.__getitem__) if means else None


def bold_best(stats: Mapping[Any, GroupStats]) -> dict[Any, str]:
    """Each group's ``mean ± std`` cell, the best one (:func:`best_key`) in bold."""
    top = best_key(stats)
    return {k: f"**{st.cell()}**" if k == top else st.cell() for k, st in stats.items()}


def group_stats(
    results: Results,
    groups: Sequence[Mapping[str, Any]],
    *,
    baseline: Callable[[Mapping[str, Any]], Mapping[str, Any] | None] = lambda g: None,
    paper: Callable[[Mapping[str, Any]], float | None] = lambda g: None,
    metric: Callable[[RunRecord], float] = final_top1,
) -> list[GroupStats]:
    """Statistics of each group of runs.

    Args:
        groups: coordinates selecting each group's runs (every coordinate but ``seed``).
        baseline: the coordinates of a group's baseline, or None if the group is a baseline
            (its difference column says so).
        paper: the paper's number for a group, or None.
        metric: what is summarised per run (default: final test top-1 in percent).
    """
    out = []
    for group in groups:
        values = results.values(metric, **group)
        summary = summarize(list(values.values()))
        base = baseline(group)
        diff = None
        if base is not None:
            base_values = results.values(metric, **base)
            seeds = sorted(set(values) & set(base_values), key=str)
            diff = paired_difference([values[s] for s in seeds], [base_values[s] for s in seeds])
        out.append(GroupStats(dict(group), values, summary, diff, paper(group)))
    return out


def stats_rows(
    stats: Sequence[GroupStats],
    label: Callable[[GroupStats], Mapping[str, Any]],
    *,
    metric_name: str = "top-1 (%)",
    baseline_name: str = "baseline",
    paper_name: str | None = "paper (%)",
    extra: Callable[[GroupStats], Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Display rows: label columns, n, mean ± std, 95% CI, Δ vs baseline [CI], paper, extras."""
    rows = []
    for st in stats:
        row: dict[str, Any] = dict(label(st))
        row["seeds"] = st.summary.n
        row[metric_name] = st.cell()
        row["95% CI"] = st.summary.format_ci()
        row[f"Δ vs {baseline_name} (points) [95% CI]"] = st.diff_cell()
        if paper_name is not None:
            row[paper_name] = "–" if st.paper is None else f"{st.paper:.1f}"
        if extra is not None:
            row.update(extra(st))
        rows.append(row)
    return rows


def write_tables(
    out: Path,
    *,
    head: str,
    sections: Sequence[tuple[str, str]],
    latex: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
    summary_rows: Sequence[Mapping[str, Any]],
    design: DesignTarget | None = None,
    precision_rows: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """``table.md`` (header + markdown sections), ``table.tex`` (one table per entry of
    ``latex``: caption, rows) and ``summary.csv`` (one numeric row per grid point).

    The precision section reads the paired differences of ``precision_rows`` (default: the
    summary rows; a report whose tables show one measurement twice passes it once) and, with a
    ``design`` target, says which of them meet it."""
    md = head.rstrip() + "\n"
    rows = summary_rows if precision_rows is None else precision_rows
    precision = precision_section(rows, design)
    if precision:
        sections = [*sections, ("Precision of the paired differences", precision)]
    for title, body in sections:
        md += f"\n## {title}\n\n{body.rstrip()}\n"
    tex = "\n".join(to_latex(rows, caption=caption) for caption, rows in latex if rows)
    return {
        "table.md": atomic_write_text(out / "table.md", md),
        "table.tex": atomic_write_text(out / "table.tex", tex or "% no finished runs yet\n"),
        "summary.csv": atomic_write_text(out / "summary.csv", to_csv(list(summary_rows))),
    }


@dataclass(frozen=True)
class DesignTarget:
    """A preset's precision target (:attr:`Experiment.precision_targets`) and what a run costs,
    to price meeting the target where it is missed."""

    half_width: float  # points
    run_seconds: Callable[[Mapping[str, Any]], float]  # summary row -> seconds per run there


def design_target(exp: Experiment, context: ReportContext, results: Results) -> DesignTarget | None:
    """The report's :class:`DesignTarget` (run cost: the mean wall time of the finished runs at
    the row's grid point), or None when its preset has no precision target."""
    target = exp.precision_targets.get(context.preset)
    if target is None:
        return None
    axes = {k for spec in results.specs for k in spec.coords} - {"seed"}

    def run_seconds(row: Mapping[str, Any]) -> float:
        times = [r.wall_time_s for r in results.select(**{k: v for k, v in row.items()
                                                           if k in axes})]
        return math.fsum(times) / len(times) if times else math.nan

    return DesignTarget(target, run_seconds)


def precision_section(
    summary_rows: Sequence[Mapping[str, Any]], design: DesignTarget | None = None
) -> str:
    """What the design can resolve: the half-widths of the paired differences' 95% intervals
    (``diff_ci_low``/``diff_ci_high`` of :meth:`GroupStats.numeric` rows with two or more seeds).
    The half-width is the smallest effect the design detects: a true Δ much smaller than it is
    not told apart from zero. '' when the report has no paired differences."""
    widths, flat = [], 0
    for row in summary_rows:
        lo, hi, n = row.get("diff_ci_low"), row.get("diff_ci_high"), row.get("n_seeds")
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and (n or 0) >= 2:
            if hi - lo > 2 * NO_SPREAD:
                widths.append(((hi - lo) / 2, row))
            else:  # every seed the same Δ: a zero-width interval, not a precision
                flat += 1
    if not widths:
        return ""
    widths.sort(key=lambda w: w[0])
    half = [w for w, _ in widths]
    seeds = sorted({int(r["n_seeds"]) for _, r in widths})
    span = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"

    def where(row: Mapping[str, Any]) -> str:  # the grid point: the row without its statistics
        return ", ".join(f"{k} {v}" for k, v in row.items()
                         if k not in GroupStats.STATISTICS and v is not None)

    return (
        f"{len(half)} paired difference(s) with {span} seeds: 95% CI half-width "
        f"median ±{float(np.median(half)):.2f} points, narrowest ±{half[0]:.2f} "
        f"({where(widths[0][1])}), widest ±{half[-1]:.2f} ({where(widths[-1][1])}). The "
        f"half-width is the smallest difference this design detects: a true Δ much smaller than "
        f"it cannot be told apart from zero here, and a Δ whose interval excludes zero is a "
        f"difference at the 95% level (not corrected for the number of comparisons)."
        + (f" Left out: {flat} difference(s) that are the same on every seed (no spread, so "
           f"their zero-width interval measures nothing)." if flat else "")
        + "\n"
        + (_against_target(widths, design) if design is not None else "")
    )


def _against_target(
    widths: Sequence[tuple[float, Mapping[str, Any]]], design: DesignTarget
) -> str:
    """Which paired differences meet the design's half-width and, for the others, the seeds
    their measured spread says they need (:func:`seeds_for_half_width`) and what those cost."""
    target = design.half_width
    missed = []
    for half, row in widths:
        if half > target + 1e-9:
            n = int(row["n_seeds"])
            # the spread the interval was made from: half = t · sd / √n, inverted
            std = half * math.sqrt(n) / t_quantile(0.95, n - 1)
            missed.append((seeds_for_half_width(std, target), n, std, half, row))
    text = (f"\n**Against the design target ±{target:g}:** {len(widths) - len(missed)} of "
            f"{len(widths)} paired differences are within it.")
    if not missed:
        return text + "\n"
    missed.sort(key=lambda m: m[0])
    more = sum(need - n for need, n, *_ in missed)
    hours = math.fsum((need - n) * design.run_seconds(row) for need, n, *_, row in missed) / 3600
    low, high = min(m[2] for m in missed), max(m[2] for m in missed)
    spread = f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}–{high:.2f}"
    others = "The other one has" if len(missed) == 1 else f"The other {len(missed)} have"
    text += (
        f" {others} a per-seed spread (sd of the paired Δ) of {spread} points; by that "
        f"spread, n = min{{n : t₀.₉₇₅(n−1) · sd / √n ≤ {target:g}}} seeds each would meet it "
        f"(median {int(np.median([m[0] for m in missed]))}, at most {missed[-1][0]}). That is at "
        f"least {more} more runs (the compared unit's alone; more where the baseline needs "
        f"seeds too), about {hours:.1f} core-hours at the wall time its runs took at each grid "
        f"point.\n\n"
    )
    # the grid point's coordinates, less those every listed row shares (said once above)
    coords = [{k: v for k, v in row.items() if k not in GroupStats.STATISTICS and v is not None}
              for *_, row in missed]
    varying = [k for k in coords[0] if len({str(c.get(k)) for c in coords}) > 1] or list(coords[0])
    rows = [{**{k: c.get(k, "–") for k in varying}, "seeds": n, "sd of Δ": f"{std:.2f}",
             "half-width": f"±{half:.2f}", f"seeds for ±{target:g}": need}
            for c, (need, n, std, half, _) in zip(coords, missed, strict=True)]
    return text + to_markdown(rows) + "\n"


def markdown(rows: Sequence[Mapping[str, Any]], note: str = "") -> str:
    """A markdown table (or a line saying there is nothing yet) with an optional note below."""
    body = to_markdown(rows) if rows else "_no finished runs yet_"
    return f"{body}\n\n{note}\n" if note else body + "\n"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def header(exp: Experiment, context: ReportContext, results: Results) -> str:
    """The report's opening: what, from where, which preset and recipe, the command that made
    it, how long it took, what is missing, and how to read the statistics."""
    import torch

    specs, missing = results.specs, results.missing
    finished = len(specs) - len(missing)
    lines = [
        f"# `{exp.name}` ({context.preset} preset): {exp.title}",
        "",
        f"Reproduces {exp.source}.",
        "",
        f"**Preset `{context.preset}`.** {exp.settings(context.preset)}",
        "",
        f"**Command:** `{context.command}`",
        "",
    ]
    target = exp.precision_targets.get(context.preset)
    if target is not None:
        lines += [f"**Design target:** paired differences with 95% intervals within ±{target:g} "
                  f"points (the achieved widths: *Precision of the paired differences*, below).",
                  ""]
    if context.where:
        sel = "; ".join(f"{k} in {{{', '.join(v)}}}" for k, v in context.where.items())
        lines += [f"**Selection:** only runs with {sel}.", ""]
    wall = sum(float(s.get("elapsed_s") or 0) for s in context.sweeps)
    compute = math.fsum(r.wall_time_s for r in results.records.values())
    last = context.sweeps[-1] if context.sweeps else {}
    time_line = (
        f"**Time:** {_minutes(wall)} wall time over {len(context.sweeps)} invocation(s) of this "
        f"experiment; the {finished} finished runs took {_minutes(compute)} of training in "
        f"total (sum of run wall times, including runs shared with other experiments)."
    )
    if last:
        time_line += (
            f" Last invocation: {last.get('workers')} worker(s) × {last.get('threads') or '?'} "
            f"thread(s) on {last.get('cores')} core(s), {last.get('started')}."
        )
    lines += [
        time_line,
        f"Machine: {platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}.",
        "",
        *provenance_lines({k: r.summary for k, r in results.records.items()}),
        "",
        f"**Runs:** {finished} of {len(specs)} finished; seeds per grid point: {context.seeds} "
        f"(seed index k trains with seed k, so runs with the same index share data order and "
        f"are compared pairwise). Every run is one row of `results.csv`.",
    ]
    topup = exp.topup_points(context.preset, specs)
    if topup:
        points = "; ".join(f"{where}: {n}" for where, n in topup)
        lines.append(
            f"**Precision top-up:** {len(topup)} grid point(s) have more seeds than the "
            f"{context.seeds} of the others (the experiment's `topups`, sized from the spread "
            f"its first seeds measured): {points}. A paired difference uses the seed indices "
            f"both of its units have.")
    if missing:
        shown = ", ".join(f"`{s.key}` ({results.store.status(s.key)})" for s in missing[:12])
        more = f" and {len(missing) - 12} more" if len(missing) > 12 else ""
        lines.append(f"Not finished, left out of the statistics: {shown}{more}.")
    lines += [
        "",
        "**Statistics:** mean ± sample standard deviation over seeds; 95% CI = Student-t "
        "interval of the mean (t₀.₉₇₅ is 12.7 with 2 seeds and 4.3 with 3, so few seeds give "
        "wide intervals — that is the honest spread, not a bug); Δ = paired difference to the "
        "baseline over the shared seed indices, with its 95% CI. Accuracies are test top-1 in "
        "percent after the last epoch.",
        "",
    ]
    return "\n".join(lines)


def plot_series(
    series: Mapping[str, Sequence[tuple[float, Sequence[float]]]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "test top-1 (%)",
    reference: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    reference_label: str = "paper",
    xticks: Sequence[float] | None = None,
    hline: float | None = None,
) -> Path:
    """A metric against a grid axis: per label, the mean over seeds at each x with error bars
    of one standard deviation (and the seeds as faint dots); ``reference`` points (the paper's)
    as hollow markers on dashed lines in the same colour."""
    with figure(path, xlabel=xlabel, ylabel=ylabel, title=title) as ax:
        for label, points in series.items():
            pts = [(x, [v for v in vs if not math.isnan(v)]) for x, vs in points]
            pts = [(x, vs) for x, vs in pts if vs]
            if not pts:
                continue
            xs = np.array([x for x, _ in pts], dtype=float)
            means = np.array([np.mean(vs) for _, vs in pts])
            stds = np.array([np.std(vs, ddof=1) if len(vs) > 1 else 0.0 for _, vs in pts])
            line = ax.errorbar(xs, means, yerr=stds, marker="o", ms=4, capsize=3, label=label)
            color = line[0].get_color()
            for x, vs in pts:
                ax.plot([x] * len(vs), vs, ".", color=color, alpha=0.35, ms=4)
            if reference and reference.get(label):
                rx, ry = zip(*reference[label], strict=True)
                ax.plot(rx, ry, "--", marker="o", mfc="none", color=color, alpha=0.7, ms=5)
        if reference and any(reference.values()):
            ax.plot([], [], "--", marker="o", mfc="none", color="gray", label=reference_label)
        if hline is not None:
            ax.axhline(hline, color="gray", lw=0.8)
        if xticks is not None:
            ax.set_xticks(list(xticks))
    return Path(path)
