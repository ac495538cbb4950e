"""Which code, versions and data produced a run: the provenance record of every run.

:func:`collect` is called once per training session (a fresh start or a resume) and the engine
keeps every session's record in the checkpoint and in ``summary.json`` (``provenance``: a list,
oldest first). :func:`describe` makes the one line a report header shows per distinct origin,
and :func:`same_code` says whether two records come from the same code.

The record: attnact's version; the git commit and whether the source tree had uncommitted
changes, when attnact is imported from a git checkout; Python, torch and numpy versions, the
device, the CPU (:func:`cpu_description`: the same code on another CPU rounds differently, so
its runs are not bit-equal) and intra-op thread count; the dataset's content hash
(:func:`attnact.data.dataset_fingerprint`) and a hash of the effective config (the fields that
decide what the run computes, :func:`attnact.train.config.config_identity`).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

import attnact
from attnact.train.config import TrainConfig, config_identity

__all__ = [
    "code_identity",
    "collect",
    "config_hash",
    "cpu_description",
    "current_code",
    "describe",
    "git_state",
    "origins",
    "other_code",
    "same_code",
    "summary_lines",
]

# src/attnact/__init__.py -> the checkout's root, when attnact runs from one (editable install)
_SOURCE_ROOT = Path(attnact.__file__).resolve().parents[2]


def git_state(root: Path = _SOURCE_ROOT) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the checkout attnact is imported from, or None (an installed
    wheel, no git). Dirty means uncommitted changes to the package source or its metadata."""
    if not (root / ".git").exists() or not (root / "src" / "attnact").is_dir():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        # --no-optional-locks: status would otherwise refresh the index under index.lock and
        # could make the user's own git commands fail while a run starts
        status = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(root), "status", "--porcelain", "--",
             "src", "pyproject.toml"],
            check=True, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def config_hash(config: TrainConfig) -> str:
    """``sha256:<hex>`` of the config's identity, canonical JSON (sorted keys).

    The typed procedure settings (``maml``, ``transfer``) enter as the one ``extra`` mapping
    the config had before them (``{}`` for plain training), so every plain run keeps the hash
    earlier versions recorded for it.
    """
    identity = config_identity(config)
    procedure = {name: identity.pop(name) for name in ("maml", "transfer")}
    identity["extra"] = next((v for v in procedure.values() if v is not None), {})
    text = json.dumps(identity, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def collect(
    config: TrainConfig, *, device: str | torch.device = "cpu", hash_data: bool = True
) -> dict[str, Any]:
    """The provenance of a training session of ``config`` on ``device``.

    Args:
        config: the run's config.
        device: where it trains.
        hash_data: hash the copy of ``config.dataset`` the loaders read; False (data that is no
            catalogued copy, e.g. loaders passed in by a test) records ``data_sha256: None``.
    """
    data = _data_fingerprint(config) if hash_data else None
    return {
        "attnact": attnact.__version__,
        "git": git_state(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "device": str(device),
        "cpu": cpu_description(),
        "threads": torch.get_num_threads(),
        "dataset": config.dataset,
        "data_sha256": data,
        "config_sha256": config_hash(config),
    }


def cpu_description() -> str:
    """The CPU as it decides a run's rounding: its model name (``/proc/cpuinfo`` on Linux, else
    the platform's processor string) and the vector instruction set torch dispatches to, e.g.
    ``AMD EPYC, AVX512``. Runs of the same code and seed on CPUs with another set (or another
    BLAS path) differ in the last bits, and training amplifies those differences."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.backends.cpu.get_cpu_capability()}"


def _data_fingerprint(config: TrainConfig) -> str | None:
    from attnact.data import dataset_fingerprint

    try:
        return dataset_fingerprint(config.dataset, config.data_dir)
    except ValueError:  # not a catalogued dataset, or no copy found: nothing to hash
        return None


def code_identity(record: Mapping[str, Any]) -> str:
    """The code a record names, as one string: ``0.1.0@<commit12>[+dirty]`` or ``0.1.0``."""
    git = record.get("git") or {}
    text = str(record.get("attnact", "?"))
    if git.get("commit"):
        text += "@" + str(git["commit"])[:12] + ("+dirty" if git.get("dirty") else "")
    return text


def same_code(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two records come from the same code: commit (when both have one), else version,
    and the same torch. A dirty tree is never the same code as anything (its changes are
    unknown)."""
    ga, gb = a.get("git") or {}, b.get("git") or {}
    if ga.get("dirty") or gb.get("dirty"):
        return False
    if ga.get("commit") and gb.get("commit"):
        same = ga["commit"] == gb["commit"]
    else:
        same = a.get("attnact") == b.get("attnact")
    return same and a.get("torch") == b.get("torch")


def describe(record: Mapping[str, Any]) -> str:
    """One line for a report header: code, torch, device × threads, data hash."""
    data = record.get("data_sha256")
    cpu = f" ({record['cpu']})" if record.get("cpu") else ""  # older records name no CPU
    return (f"attnact {code_identity(record)}, torch {record.get('torch')}, "
            f"{record.get('device')}{cpu} × {record.get('threads')} thread(s), "
            f"{record.get('dataset')} {str(data)[:19] + '…' if data else '(not hashed)'}")


def current_code() -> dict[str, Any]:
    """The code record of this process (what a run started now would record)."""
    return {"attnact": attnact.__version__, "git": git_state(), "torch": str(torch.__version__)}


def origins(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Run keys grouped by where they came from: :func:`describe` of their last session's
    record (every session's, joined by " then ", when a run was resumed by other code);
    runs from before provenance was recorded under ``"no provenance record"``."""
    groups: dict[str, list[str]] = {}
    for key, summary in summaries.items():
        records = summary.get("provenance") or []
        if not records:
            label = "no provenance record (made by attnact before runs recorded one)"
        else:
            labels = []
            for record in records:
                text = describe(record)
                if text not in labels:
                    labels.append(text)
            label = " then ".join(labels)
        groups.setdefault(label, []).append(key)
    return groups


def other_code(summaries: Mapping[str, Mapping[str, Any]],
               now: Mapping[str, Any] | None = None) -> list[str]:
    """Keys of the runs that any session of which was made by other code than ``now`` (default:
    this process's), or that carry no record."""
    now = current_code() if now is None else now
    return [key for key, summary in summaries.items()
            if not summary.get("provenance")
            or not all(same_code(r, now) for r in summary["provenance"])]


def summary_lines(summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown lines for a report header: the origins of its runs, and whether they differ
    from each other and from the code writing the report."""
    now = current_code()
    groups = origins(summaries)
    lines = [f"**Report written by:** attnact {code_identity(now)}, torch {now['torch']}."]
    if len(groups) == 1:
        (label,) = groups
        lines.append(f"**Provenance:** all {len(summaries)} runs: {label}.")
    elif groups:
        lines.append(f"**Provenance: the {len(summaries)} runs come from {len(groups)} "
                     "origins** (they are pooled in one table; see each run's summary.json):")
        lines += [f"- {len(keys)} run(s): {label}" for label, keys in groups.items()]
    others = other_code(summaries, now)
    if others:
        shown = ", ".join(f"`{k}`" for k in others[:8]) + (
            f" and {len(others) - 8} more" if len(others) > 8 else "")
        lines.append(f"**Made by other code than this report's:** {len(others)} run(s) "
                     f"({shown}); `attnact reproduce ... --retrain-other-code` trains them anew.")
    return lines
