"""``attnact weights list|fetch|import-open-atac``; cli.py calls :func:`add_weights_subparser`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import cast

__all__ = ["add_weights_subparser", "weights_command"]


def add_weights_subparser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``weights`` with its three actions on the top-level subparsers."""
    p = sub.add_parser("weights", help="trained weights: list, download, import open-atac files")
    actions = p.add_subparsers(dest="weights_action", required=True)
    a = actions.add_parser("list", help="downloadable weights: source, licence, reported accuracy")
    a.set_defaults(func=weights_command)
    a = actions.add_parser("fetch", help="download and verify weights into the cache")
    a.add_argument("name")
    a.add_argument("--cache-dir", help="cache root (default $ATTNACT_WEIGHTS or the user cache)")
    a.add_argument("--base-url", help="download <base-url>/<filename> instead")
    a.add_argument("--force", action="store_true", help="download even if a verified copy exists")
    a.set_defaults(func=weights_command)
    a = actions.add_parser(
        "import-open-atac",
        help="convert an open-atac Gluon .params file to an attnact model file",
        description="Read the authors' MXNet Gluon parameter file (ResNet20V2ATAC or "
        "ResNet50_v1bATAC) without MXNet, infer the network, and save the attnact model "
        "(load it with attnact.weights.load_converted).",
    )
    a.add_argument("file", type=Path)
    a.add_argument("--out", type=Path, required=True, help="where to write the model (.pt)")
    a.set_defaults(func=weights_command)


def weights_command(args: argparse.Namespace) -> int:
    from attnact.weights.pretrained import PRETRAINED, fetch_pretrained

    if args.weights_action == "list":
        for name, entry in sorted(PRETRAINED.items()):
            kw = ", ".join(f"{k}={v!r}" for k, v in entry.kwargs.items())
            print(f"{name}: {entry.model}(act={entry.act!r}, {kw})")
            print(f"  source:   {entry.source}")
            print(f"  licence:  {entry.licence}")
            print(f"  reported: {entry.reported}")
            print(f"  file:     {entry.file.filename} (git blob {entry.file.git_sha1})")
            for note in entry.notes:
                print(f"  note:     {note}")
        return 0
    if args.weights_action == "fetch":
        print(fetch_pretrained(args.name, args.cache_dir, base_url=args.base_url,
                               force=args.force))
        return 0
    from attnact.weights.open_atac import OpenATACArchitecture, load_open_atac
    from attnact.weights.saved import save_converted

    if not args.file.is_file():
        raise ValueError(f"import-open-atac: no such file {args.file}")
    model = load_open_atac(args.file)
    out = save_converted(model, args.out)
    print(cast(OpenATACArchitecture, model.open_atac).describe())  # set by load_open_atac
    print(f"wrote {out}")
    return 0
