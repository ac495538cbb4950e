"""A table of every registered activation: formula, parameter count, source (README, ``attnact
list``). Parameter counts are measured on a freshly built unit, never typed in by hand."""

from __future__ import annotations

from dataclasses import dataclass

from attnact.units.registry import activation_spec, create_act_layer, list_activations

__all__ = ["REFERENCE_CHANNELS", "ActivationRow", "activation_rows", "activation_table_markdown"]

REFERENCE_CHANNELS = 64  # channel count at which channel-dependent units are counted


@dataclass(frozen=True)
class ActivationRow:
    name: str
    formula: str
    params: int
    per_channel: bool  # the count depends on the channel count (given at REFERENCE_CHANNELS)
    learnable: bool
    source: str
    changes_channels: bool


def _count(name: str, channels: int) -> int:
    return sum(p.numel() for p in create_act_layer(name, channels=channels).parameters())


def activation_rows(*, include_elsa: bool = False) -> list[ActivationRow]:
    """One row per registered activation (ELSA variants only if asked: they are base + 2)."""
    rows = []
    for name in list_activations(include_elsa=include_elsa):
        spec = activation_spec(name)
        n = _count(name, REFERENCE_CHANNELS)
        rows.append(
            ActivationRow(
                name=name,
                formula=spec.formula,
                params=n,
                per_channel=n != _count(name, REFERENCE_CHANNELS // 2),
                learnable=spec.learnable,
                source=spec.source,
                changes_channels=spec.changes_channels,
            )
        )
    return rows


def activation_table_markdown() -> str:
    """Markdown table of every base activation (ELSA variants summarised in one line)."""
    lines = [
        f"| name | formula | parameters per unit (C = {REFERENCE_CHANNELS} where it depends "
        "on C) | source |",
        "|---|---|---|---|",
    ]
    for row in activation_rows():
        params = f"{row.params}" + (" (depends on C)" if row.per_channel else "")
        note = " Output has C/k channels." if row.changes_channels else ""
        formula = row.formula.replace("|", "\\|")
        lines.append(f"| `{row.name}` | `{formula}`{note} | {params} | {row.source} |")
    lines.append(
        "| `elsa_<name>` | `<name>(x) + (C(a) x if x < 0 else sigmoid(b) x)` | "
        "base + 2 | Chen et al., arXiv 2020 (AReLU, Sec. 4.6) |"
    )
    return "\n".join(lines)


START_MARK, END_MARK = "<!-- activation-table:start -->", "<!-- activation-table:end -->"


def replace_table(text: str, table: str) -> str:
    """``text`` with the part between the activation-table markers replaced by ``table``."""
    head, sep, rest = text.partition(START_MARK)
    _, sep2, tail = rest.partition(END_MARK)
    if not sep or not sep2:
        raise ValueError(f"the markers {START_MARK} and {END_MARK} are missing")
    return f"{head}{START_MARK}\n{table}\n{END_MARK}{tail}"


if __name__ == "__main__":  # `make readme`: refresh the README's activation table
    import sys
    from pathlib import Path

    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(replace_table(path.read_text(), activation_table_markdown()))
