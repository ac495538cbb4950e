"""Figures as PNG (matplotlib, headless Agg backend)."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from attnact.fileio import atomic_write_bytes

__all__ = ["figure", "figure_grid", "plot_curves"]


@contextlib.contextmanager
def figure_grid(path: str | os.PathLike[str], **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """Yield ``(fig, axes)`` of ``plt.subplots(**subplots)`` on the headless backend; on normal
    exit write the figure to ``path`` as PNG (atomically), on an exception write nothing. The
    figure is closed either way. :func:`figure` and multi-panel figures both save through here."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on CI machines
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(**subplots)
    try:
        yield fig, axes
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def figure(
    path: str | os.PathLike[str], *, xlabel: str, ylabel: str, title: str = ""
) -> Iterator[Any]:
    """Yield the axes of a new figure; on exit label it, add grid and legend, and write it to
    ``path`` as PNG (atomically). Every single-axes figure of the project goes through here, so
    they share one look and nothing writes half a file."""
    with figure_grid(path, figsize=(7, 4.5), dpi=120) as (fig, ax):
        yield ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # nothing to label before any run finished
            ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()


def plot_curves(
    curves: Mapping[str, Sequence[Sequence[float]]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    xlabel: str = "epoch",
    ylabel: str = "test accuracy (%)",
    scale: float = 100.0,
    x_start: int = 1,
) -> Path:
    """One line per label: the mean over runs, with a band of ± one standard deviation.

    Args:
        curves: label → list of runs, each a sequence of values per epoch. Runs of unequal
            length are cut to the shortest, so a band never mixes different numbers of runs.
        path: where the PNG goes (written atomically).
        scale: multiply values (100 turns accuracies into percentages).
        x_start: the x value of a run's first point (epochs count from 1).
    """
    from matplotlib.ticker import MaxNLocator

    with figure(path, xlabel=xlabel, ylabel=ylabel, title=title) as ax:
        if len(curves) > 10:
            # The default cycle has 10 colours: with more lines two would look the same.
            # tab20 gives 20 distinct ones, and a second line style separates the halves.
            import matplotlib
            from matplotlib.colors import ListedColormap

            tab20 = matplotlib.colormaps["tab20"]
            assert isinstance(tab20, ListedColormap)  # a qualitative map: a list of colours
            colors = cast(Sequence[Any], tab20.colors)  # a list of RGB tuples
            styles = ["-", "--"]
            ax.set_prop_cycle(color=[colors[i % 20] for i in range(len(curves))],
                              linestyle=[styles[(i // 10) % 2] for i in range(len(curves))])
        for label, runs in curves.items():
            runs = [list(r) for r in runs if len(r) > 0]
            if not runs:
                continue
            length = min(len(r) for r in runs)
            values = np.asarray([r[:length] for r in runs], dtype=float) * scale
            x = np.arange(x_start, x_start + length)
            mean = values.mean(axis=0)
            (line,) = ax.plot(x, mean, marker="o" if length < 15 else None, ms=3, label=label)
            if len(runs) > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    return Path(path)
