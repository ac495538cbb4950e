"""MkDocs hook: put the repository's own documents into the site where they live, without
copying them into docs/: ``DESIGN.md``, ``reports/`` (CLAIMS.md, each experiment's tables and
figures) and ``benchmarks/`` (the recorded measurements). Their relative links (CLAIMS.md to
``./atac-ablation/quick/table.md``) then resolve inside the site as they do on disk, and
``mkdocs build --strict`` checks them like any page's.

Loaded by mkdocs.yml (``hooks: [docs/hooks.py]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
# (file or directory below the repository root, suffixes taken from a directory)
INCLUDED = (
    ("DESIGN.md", ()),
    ("reports", (".md", ".png")),
    ("benchmarks", (".md",)),
)


def repository_documents(root: Path = ROOT) -> list[str]:
    """The repository paths (relative, ``/``-separated) the site includes, sorted."""
    found = []
    for name, suffixes in INCLUDED:
        path = root / name
        if path.is_file():
            found.append(name)
        elif path.is_dir():
            found += [p.relative_to(root).as_posix() for p in path.rglob("*")
                      if p.is_file() and p.suffix in suffixes]
    return sorted(found)


def on_files(files: Files, config: Any) -> Files:
    for rel in repository_documents():
        if files.get_file_from_path(rel) is None:
            files.append(File.generated(config, rel, abs_src_path=str(ROOT / rel)))
    return files
