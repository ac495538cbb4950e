"""Command-line pieces for ``attnact data list|fetch|verify`` and ``attnact list datasets``.

``cli.py`` owns the parser; it calls :func:`add_data_subparser` and :func:`datasets_rows`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from attnact.data.catalog import (
    DatasetNotFoundError,
    dataset_info,
    find_split_files,
    list_datasets,
)
from attnact.data.fetch import ChecksumError, DownloadError, fetch, verify

__all__ = ["DatasetRow", "add_data_subparser", "check_data_dir", "data_command", "datasets_rows"]


@dataclass(frozen=True)
class DatasetRow:
    """One line of ``attnact list datasets``."""

    name: str
    description: str
    found: bool
    location: Path | None


def _location(name: str, data_dir: str | os.PathLike[str] | None) -> Path | None:
    """Directory of the local copy when every split is found, else None."""
    info = dataset_info(name)
    where = None
    try:
        for split in info.splits:
            paths = find_split_files(name, split, data_dir)
            where = where or paths[0].parent
    except DatasetNotFoundError:
        return None
    return where


def datasets_rows(data_dir: str | os.PathLike[str] | None = None) -> list[DatasetRow]:
    """Every catalogued dataset with its description and whether it is found locally."""
    rows = []
    for name in list_datasets():
        loc = _location(name, data_dir)
        rows.append(DatasetRow(name, dataset_info(name).description, loc is not None, loc))
    return rows


def check_data_dir(data_dir: str | None, *, may_be_new: bool = False) -> None:
    """``--data-dir`` names a directory: it exists (``list``, ``verify``: a typo must not read as
    "no dataset found"), or for ``fetch`` may be made. ``ValueError`` otherwise."""
    if data_dir is None:
        return
    if not data_dir.strip():
        raise ValueError("--data-dir must name a directory (got an empty string)")
    path = Path(data_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--data-dir {path} is a file, not a directory")
    if not may_be_new and not path.is_dir():
        raise ValueError(f"--data-dir {path}: no such directory")


def _check_fetch_arguments(args: argparse.Namespace) -> None:
    import math
    from urllib.parse import urlparse

    check_data_dir(args.data_dir, may_be_new=True)
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.mirror is not None and urlparse(args.mirror).scheme not in ("http", "https", "file"):
        raise ValueError(f"--mirror must be an http://, https:// or file:// URL, got "
                         f"{args.mirror!r}")


def _cmd_list(args: argparse.Namespace) -> int:
    check_data_dir(args.data_dir)
    for row in datasets_rows(args.data_dir):
        if row.location:
            where = str(row.location)
        elif dataset_info(row.name).downloadable:
            where = f"not found (attnact data fetch {row.name})"
        else:
            where = f"not found (user-supplied: <root>/{row.name}/{{train,val}}/<class>/*)"
        print(f"{row.name:<14} {row.description}\n{'':<14} {where}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    _check_fetch_arguments(args)
    status = 0
    for name in args.names:
        try:
            dest = fetch(
                name,
                args.data_dir,
                force=args.force,
                progress=not args.quiet,
                base_url=args.mirror,
                timeout=args.timeout,
            )
        except (ChecksumError, DownloadError, ValueError) as err:
            print(f"attnact data fetch {name}: {err}", file=sys.stderr)
            status = 1
            continue
        print(f"{dataset_info(name).name}: {dest}")
    return status


def _cmd_verify(args: argparse.Namespace) -> int:
    check_data_dir(args.data_dir)
    for name in args.names:  # a misspelt name is bad input (exit 2), not a failed check
        dataset_info(name)
    names = args.names or [r.name for r in datasets_rows(args.data_dir) if r.found]
    if not names:
        print("no dataset found locally; see `attnact data list`", file=sys.stderr)
        return 1
    status = 0
    for name in names:
        try:
            report = verify(name, args.data_dir)
        except ValueError as err:
            print(err, file=sys.stderr)
            return 1
        print(report)
        status |= 0 if report.complete else 1
    return status


def data_command(args: argparse.Namespace) -> int:
    """Run ``attnact data <list|fetch|verify>``; returns the exit code."""
    handlers = {"list": _cmd_list, "fetch": _cmd_fetch, "verify": _cmd_verify}
    return handlers[args.data_command](args)


def add_data_subparser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``data list|fetch|verify`` to ``subparsers``; each sets ``func=data_command``."""
    p_data = subparsers.add_parser(
        "data",
        help="list, download and verify datasets",
        description="Datasets: where they are found, downloading with checksums, verifying.",
    )
    sub = p_data.add_subparsers(dest="data_command", required=True)
    data_dir_help = (
        "root to search first (and to download into, as DATA_DIR/<name>); default: "
        "$ATTNACT_DATA, then ~/.cache/attnact"
    )

    p_list = sub.add_parser("list", help="datasets and where they are found")
    p_fetch = sub.add_parser("fetch", help="download datasets and verify their checksums")
    p_verify = sub.add_parser("verify", help="check the checksums of local copies")
    for p in (p_list, p_fetch, p_verify):
        p.add_argument("--data-dir", default=None, help=data_dir_help)
        p.set_defaults(func=data_command)

    p_fetch.add_argument("names", nargs="+", metavar="NAME", choices=list_datasets())
    p_fetch.add_argument("--force", action="store_true", help="download even if a good copy exists")
    p_fetch.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    p_fetch.add_argument(
        "--mirror", default=None, metavar="URL", help="download MIRROR/<filename> instead"
    )
    p_fetch.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    p_verify.add_argument(
        "names", nargs="*", metavar="NAME", help="datasets to verify (default: every one found)"
    )
    return p_data
