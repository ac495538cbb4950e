"""Tables from rows of dicts: markdown (for terminals and READMEs), CSV and LaTeX. Write them
with :mod:`attnact.fileio` so an interrupted report never leaves half a file."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["to_csv", "to_latex", "to_markdown"]

Row = Mapping[str, Any]


def _columns(rows: Sequence[Row], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def to_markdown(
    rows: Sequence[Row], columns: Sequence[str] | None = None, align: str | None = None
) -> str:
    """A GitHub-flavoured markdown table; ``align`` is one character per column (l, r, c)."""
    cols = _columns(rows, columns)
    if align is not None and len(align) != len(cols):
        raise ValueError(f"align needs one of l/r/c per column ({len(cols)}), got {align!r}")
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    rule = [marks[a] for a in align] if align else ["---"] * len(cols)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(rule) + "|"]
    for row in rows:
        cells = [_cell(row.get(c)).replace("|", "\\|") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_csv(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    cols = _columns(rows, columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c) for c in cols})
    return buf.getvalue()


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                  "}": r"\}", "±": r"$\pm$", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(rows: Sequence[Row], columns: Sequence[str] | None = None, caption: str = "") -> str:
    """A ``tabular`` in a ``table`` float (booktabs rules)."""
    cols = _columns(rows, columns)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_latex_escape(caption)}}}")
    lines += [rf"\begin{{tabular}}{{l{'r' * (len(cols) - 1)}}}", r"\toprule"]
    lines.append(" & ".join(_latex_escape(c) for c in cols) + r" \\")
    lines.append(r"\midrule")
    for row in rows:
        lines.append(" & ".join(_latex_escape(_cell(row.get(c))) for c in cols) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
