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
from attnact.report.stats import NO_SPREAD, Summary, paired_difference, summarize
from attnact.report.tables import to_csv, to_latex, to_markdown
from attnact.train.provenance import summary_lines as provenance_lines

__all__ = [
    "GroupStats",
    "best_key",
    "bold_best",
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
) -> dict[str, Path]:
    """``table.md`` (header + markdown sections), ``table.tex`` (one table per entry of
    ``latex``: caption, rows) and ``summary.csv`` (one numeric row per grid point)."""
    md = head.rstrip() + "\n"
    precision = precision_section(summary_rows)
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


def precision_section(summary_rows: Sequence[Mapping[str, Any]]) -> str:
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
    )


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
