"""A dataset copy's content hash, for the provenance of every run (which data produced it).

Files are hashed by content (SHA-256 over every split's files, in the catalog's order), so two
copies of the same data agree wherever they live and an edited or swapped file shows. Image
folders (ImageNet: over a million files) are hashed by their listing (relative paths and sizes),
which a changed, added or removed image still changes. Results are cached per process by path,
size and modification time: a copy is read once however many runs use it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from attnact.data.catalog import dataset_info, find_split_files

__all__ = ["dataset_fingerprint"]

_CACHE: dict[tuple[object, ...], str] = {}


def dataset_fingerprint(name: str, data_dir: str | os.PathLike[str] | None = None) -> str:
    """``sha256:<hex>`` of the copy of ``name`` that training would read (every split).

    Raises:
        DatasetNotFoundError: a split is not found (the same search as the loaders).
    """
    info = dataset_info(name)
    paths = [p for split in info.splits for p in find_split_files(info.name, split, data_dir)]
    seen: list[Path] = []
    for p in paths:  # a file may serve several splits (CIFAR's one archive)
        if p not in seen:
            seen.append(p)
    digest = hashlib.sha256(info.name.encode())
    for path in seen:
        digest.update(b"\0" + path.name.encode() + b"\0" + _path_digest(path).encode())
    return f"sha256:{digest.hexdigest()}"


def _path_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, path.is_dir())
    if key not in _CACHE:
        _CACHE[key] = _listing_digest(path) if path.is_dir() else _file_digest(path)
    return _CACHE[key]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _listing_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            digest.update(f"{rel}\0{full.stat().st_size}\n".encode())
    return digest.hexdigest()
