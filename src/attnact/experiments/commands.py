"""Command lines that redo a piece of work: ``attnact train`` for one run's configuration, and
``attnact reproduce`` for a :func:`~attnact.experiments.reproduction.reproduce` call.

Reports print them so that a reader can rerun (or resume) exactly what made a table.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from attnact.train.config import PRESETS, RUN_LOCAL_FIELDS, TrainConfig

__all__ = ["reproduce_command", "train_command"]


def _cli_value(value: Any) -> str:
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)  # JSON is YAML: the train CLI parses it back exactly


def train_command(
    config: TrainConfig, out_dir: str | os.PathLike[str], *, nproc: int | None = None
) -> str:
    """An ``attnact train`` command line that trains ``config`` into ``out_dir`` (resumable);
    with ``nproc``, under ``torchrun --nproc-per-node nproc``. The base preset is the one the
    config differs least from."""
    candidates: list[tuple[int, str | None, dict[str, tuple[Any, Any]]]] = []
    for name in [None, *sorted(PRESETS)]:
        base = TrainConfig() if name is None else TrainConfig.preset(name)
        diff = {k: v for k, v in base.diff(config).items() if k not in RUN_LOCAL_FIELDS}
        candidates.append((len(diff), name, diff))
    _, preset, diff = min(candidates, key=lambda c: c[0])
    head = (["torchrun", "--nproc-per-node", str(nproc), "-m", "attnact"] if nproc
            else ["attnact"])
    args = [*head, "train"]
    if preset is not None:
        args += ["--preset", preset]
    args += ["--out", str(out_dir), "--resume"]
    args += [f"{k}={_cli_value(new)}" for k, (_old, new) in diff.items()]
    return " ".join(shlex.quote(a) for a in args)


def reproduce_command(
    name: str,
    preset: str,
    seeds: int,
    workers: int,
    backend: str,
    threads: int | None,
    out: Any,
    runs: Any,
    where: Mapping[str, Sequence[str]] | None,
    report_only: bool,
) -> str:
    """The ``attnact reproduce`` command equivalent to a
    :func:`~attnact.experiments.reproduction.reproduce` call."""
    parts = ["attnact", "reproduce", name, "--preset", preset, "--seeds", str(seeds)]
    if workers != 1:
        parts += ["--workers", str(workers)]
    if backend != "process":
        parts += ["--backend", backend]
    for flag, value in (("--threads", threads), ("--out", out), ("--runs", runs)):
        if value is not None:
            parts += [flag, str(value)]
    for axis, values in (where or {}).items():
        parts += ["--where", f"{axis}={','.join(values)}"]
    if report_only:
        parts.append("--report-only")
    return " ".join(shlex.quote(p) for p in parts)
