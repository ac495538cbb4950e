"""MkDocs hook: put the repository's own documents into the site where they live, without
copying them into docs/: ``DESIGN.md``, ``reports/`` (CLAIMS.md, each experiment's tables and
figures) and ``benchmarks/`` (the recorded measurements). Their relative links (CLAIMS.md to
``./atac-ablation/quick/table.md``) then resolve inside the site as they do on disk, and
``mkdocs build --strict`` checks them like any page's.

Loaded by mkdocs.yml (``hooks: [docs/hooks.py]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importable without MkDocs (the tests read repository_documents)
    from mkdocs.structure.files import Files

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
    from mkdocs.structure.files import File

    for rel in repository_documents():
        if files.get_file_from_path(rel) is None:
            files.append(File.generated(config, rel, abs_src_path=str(ROOT / rel)))
    return files


ACTIVATION_TABLE = "<!-- activation-table -->"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """The units page's table of every activation, generated from the registry (the same table
    as the README's, ``attnact list activations --markdown``)."""
    if ACTIVATION_TABLE not in markdown:
        return markdown
    from attnact.units.catalog import activation_table_markdown

    return markdown.replace(ACTIVATION_TABLE, activation_table_markdown())
