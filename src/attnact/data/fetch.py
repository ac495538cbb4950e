"""Download datasets with checksums, and verify local copies.

A download goes to a hidden temporary file in the destination directory, is checked against the
catalog's checksums, and only then ``os.replace``d onto its real name. ``os.replace`` is atomic
within one filesystem, so an interrupted or corrupt transfer never sits under a name a reader
would pick up; the temporary file is deleted on any failure (including Ctrl-C).

Where downloads come from: the catalog's URLs (canonical host first, then mirrors), or
``base_url=`` / ``--mirror`` (``<base_url>/<filename>`` for that one dataset), or
``$ATTNACT_MIRROR`` (``<mirror>/<name>/<filename>``, a mirror of every dataset laid out like
the cache).

Under torchrun, fetch on one rank (or before launching): concurrent fetches of one file are safe
(each writes its own temporary file and the last replace wins) but wasteful.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from attnact.data.catalog import (
    DatasetInfo,
    DatasetNotFoundError,
    FileSpec,
    candidate_dirs,
    dataset_info,
    default_download_dir,
    find_split_files,
)

__all__ = [
    "ChecksumError",
    "DownloadError",
    "FileCheck",
    "VerifyReport",
    "check_file",
    "download_file",
    "fetch",
    "git_blob_sha1",
    "verify",
]

ENV_MIRROR = "ATTNACT_MIRROR"
_CHUNK = 1 << 20
_STALE_SECONDS = 24 * 3600  # temp files older than this are leftovers of killed processes


class ChecksumError(ValueError):
    """Downloaded bytes do not match the published checksum."""


class DownloadError(OSError):
    """A transfer failed (network error, HTTP error, or fewer bytes than announced)."""


Status = Literal["ok", "ok_content", "mismatch", "missing", "unverified"]


@dataclass(frozen=True)
class FileCheck:
    """The verdict on one catalogued file.

    ``status``: ``ok`` (the published checksum matches), ``ok_content`` (a ``.gz`` whose
    decompressed payload matches though its bytes differ, e.g. Debian's re-headered files),
    ``mismatch``, ``missing``, or ``unverified`` (an extracted copy or a folder: no checksum
    applies).
    """

    filename: str
    path: Path | None
    status: Status
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "ok_content", "unverified")


@dataclass
class VerifyReport:
    """Per-file results of :func:`verify`."""

    name: str
    checks: list[FileCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No file is corrupt (missing files do not count; see :attr:`complete`)."""
        return not any(c.status == "mismatch" for c in self.checks)

    @property
    def complete(self) -> bool:
        """Every file is present and passes."""
        return all(c.ok for c in self.checks)

    def __str__(self) -> str:
        lines = [f"{self.name}:"]
        for c in self.checks:
            where = f"  {c.path}" if c.path else ""
            detail = f"  ({c.detail})" if c.detail else ""
            lines.append(f"  {c.status:<10} {c.filename}{where}{detail}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------- hashing


def _hash_file(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """Git's blob id of a file: SHA-1 of ``b"blob <size>\\0"`` followed by the content."""
    sha = hashlib.sha1(usedforsecurity=False)
    sha.update(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _gzip_content_sha256(path: Path) -> str | None:
    """sha256 of a gzip file's decompressed payload; None if it is not (valid) gzip."""
    sha = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                sha.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return sha.hexdigest()


def _compare(spec: FileSpec, md5: str, sha256: str, git_sha1: str | None = None) -> str | None:
    """None when every checksum the catalog has matches, else what differs."""
    wrong = []
    if spec.md5 and md5 != spec.md5:
        wrong.append(f"md5 expected {spec.md5}, got {md5}")
    if spec.sha256 and sha256 != spec.sha256:
        wrong.append(f"sha256 expected {spec.sha256}, got {sha256}")
    if spec.git_sha1 and git_sha1 != spec.git_sha1:
        wrong.append(f"git blob id expected {spec.git_sha1}, got {git_sha1}")
    return "; ".join(wrong) or None


def _has_checksum(spec: FileSpec) -> bool:
    return bool(spec.md5 or spec.sha256 or spec.git_sha1)


def check_file(path: Path | None, spec: FileSpec) -> FileCheck:
    """Check one local file against its catalog entry."""
    if path is None or not path.exists():
        return FileCheck(spec.filename, None, "missing")
    if spec.is_dir:
        classes = [d for d in path.iterdir() if d.is_dir()]
        return FileCheck(
            spec.filename, path, "unverified", f"user-supplied folder, {len(classes)} classes"
        )
    if path.name != spec.filename:
        return FileCheck(
            spec.filename, path, "unverified", "extracted copy; checksums cover the download"
        )
    if not _has_checksum(spec):
        return FileCheck(spec.filename, path, "unverified", "no published checksum")
    md5, sha256 = _hash_file(path)
    wrong = _compare(spec, md5, sha256, git_blob_sha1(path) if spec.git_sha1 else None)
    if wrong is None:
        kind = "sha256" if spec.sha256 else "md5" if spec.md5 else "git blob id"
        return FileCheck(spec.filename, path, "ok", kind)
    if spec.content_sha256 and _gzip_content_sha256(path) == spec.content_sha256:
        return FileCheck(
            spec.filename,
            path,
            "ok_content",
            "gzip wrapper differs from the published download, decompressed payload matches",
        )
    return FileCheck(spec.filename, path, "mismatch", wrong)


def verify(name: str, data_dir: str | os.PathLike[str] | None = None) -> VerifyReport:
    """Checksum every file of ``name`` that discovery finds (the copy the loader would use)."""
    info = dataset_info(name)
    report = VerifyReport(info.name)
    done: set[str] = set()
    for split, specs in info.splits.items():
        try:
            paths: tuple[Path | None, ...] = find_split_files(info.name, split, data_dir)
        except DatasetNotFoundError:
            # Incomplete split: still check whichever of its files exist somewhere.
            paths = tuple(_first_present(info, spec, data_dir) for spec in specs)
        for spec, path in zip(specs, paths, strict=True):
            if spec.filename not in done:
                done.add(spec.filename)
                report.checks.append(check_file(path, spec))
    return report


def _first_present(
    info: DatasetInfo, spec: FileSpec, data_dir: str | os.PathLike[str] | None
) -> Path | None:
    for d, _ in candidate_dirs(info.name, data_dir):
        p = spec.present_in(d)
        if p is not None:
            return p
    return None


# ------------------------------------------------------------------------------ download


def _urls_for(info: DatasetInfo, spec: FileSpec, base_url: str | None) -> list[str]:
    if base_url:
        return [f"{base_url.rstrip('/')}/{spec.filename}"]
    mirror = os.environ.get(ENV_MIRROR)
    if mirror:
        return [f"{mirror.rstrip('/')}/{info.name}/{spec.filename}"]
    return list(spec.urls)


def _clean_stale_temps(dest: Path, filename: str) -> None:
    # Only old ones: a fresh one may belong to a concurrent fetch (another rank, another shell).
    now = time.time()
    for p in dest.glob(f".{filename}.*.part"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > _STALE_SECONDS:
                p.unlink()


def _fsync_dir(path: Path) -> None:
    # Make the rename itself durable; not possible on every platform, hence best effort.
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Bar(Protocol):
    def update(self, n: int) -> object: ...


def _progress_bar(
    total: int | None, desc: str, enabled: bool
) -> contextlib.AbstractContextManager[_Bar]:  # a tqdm bar or a stub
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(
                total=total,
                desc=desc,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                leave=False,
            )
        except ImportError:  # tqdm is in the experiments extra; a core install gets no bar
            pass
    return _NoBar()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _download(url: str, spec: FileSpec, dest: Path, *, progress: bool, timeout: float) -> Path:
    """Download ``url`` into ``dest/spec.filename`` via a verified temporary file."""
    target = dest / spec.filename
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=dest)
    part = Path(tmp_name)
    tmp: Path | None = part  # None once moved into place: nothing to clean up
    try:
        md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        got = 0
        with os.fdopen(fd, "wb") as out:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "attnact"})
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    with _progress_bar(total, spec.filename, progress) as bar:
                        while chunk := resp.read(_CHUNK):
                            out.write(chunk)
                            md5.update(chunk)
                            sha.update(chunk)
                            got += len(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                if isinstance(err, urllib.error.HTTPError):
                    reason: object = f"HTTP {err.code} {err.reason}"
                else:
                    reason = getattr(err, "reason", None) or err
                raise DownloadError(f"{url}: download failed ({reason})") from err
            if total is not None and got != total:
                raise DownloadError(f"{url}: transfer interrupted after {got} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        # The blob id hashes the size first, so it is computed once the size is known.
        blob = git_blob_sha1(part) if spec.git_sha1 else None
        wrong = _compare(spec, md5.hexdigest(), sha.hexdigest(), blob)
        # The rule check_file (and so `data verify`) applies: a re-compressed .gz (Debian's
        # Fashion-MNIST) whose decompressed payload is the published one is the same data.
        if wrong is not None and not (
            spec.content_sha256 and _gzip_content_sha256(part) == spec.content_sha256
        ):
            raise ChecksumError(f"{spec.filename} from {url}: checksum mismatch: {wrong}")
        if not _has_checksum(spec):
            raise ChecksumError(f"{spec.filename}: the catalog has no checksum to verify it by")
        os.replace(part, target)
        tmp = None
        _fsync_dir(dest)
        return target
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _say(enabled: bool) -> Callable[[str], None]:
    return (lambda msg: print(msg, file=sys.stderr)) if enabled else (lambda msg: None)


def fetch(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    base_url: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``name`` into ``<data_dir or $ATTNACT_DATA or the user cache>/<name>``.

    Files already in the destination that pass their checksum are kept (unless ``force``);
    failing ones are downloaded again. Without ``data_dir`` and ``force``, a complete, verified
    copy found anywhere on the search path (e.g. the Debian Fashion-MNIST) is used as it is.

    Args:
        name: catalog name.
        data_dir: root to download into (the files go to ``<data_dir>/<name>/``).
        force: download even when a good copy exists.
        progress: a progress bar and status lines on stderr.
        base_url: fetch ``<base_url>/<filename>`` instead of the catalog's URLs.
        timeout: seconds a connection may stall.

    Returns:
        The directory holding the dataset's files.

    Raises:
        ChecksumError: a download's checksum differs (expected and got are in the message).
        DownloadError: every URL of a file failed.
        ValueError: the dataset cannot be downloaded (ImageNet).
    """
    info = dataset_info(name)
    say = _say(progress)
    if not info.downloadable:
        raise ValueError(f"{info.name} cannot be downloaded.\n" + "\n".join(info.install_hint))
    if data_dir is None and not force:
        existing = _verified_copy(info)
        if existing is not None:
            say(f"{info.name}: verified copy already at {existing} (--force downloads anew)")
            return existing
    dest = default_download_dir(info.name, data_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for spec in info.files():
        target = dest / spec.filename
        _clean_stale_temps(dest, spec.filename)
        if target.exists() and not force:
            check = check_file(target, spec)
            if check.status in ("ok", "ok_content"):
                say(f"{spec.filename}: present, {check.status}")
                continue
            say(f"{spec.filename}: present but {check.status} ({check.detail}); downloading")
        download_file(
            spec, dest, _urls_for(info, spec, base_url), progress=progress, timeout=timeout
        )
    return dest


def download_file(
    spec: FileSpec,
    dest: Path,
    urls: Sequence[str],
    *,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``spec`` into ``dest/spec.filename`` from the first of ``urls`` that works,
    verified against the spec's checksums; nothing lands under the name unless it verifies.

    Raises:
        ChecksumError: a download's checksum differs (expected and got are in the message).
        DownloadError: every URL failed.
    """
    say = _say(progress)
    errors: list[Exception] = []
    for url in urls:
        try:
            target = _download(url, spec, dest, progress=progress, timeout=timeout)
            say(f"{spec.filename}: downloaded from {url}, checksum ok")
            return target
        except (DownloadError, ChecksumError) as err:
            errors.append(err)
            if len(urls) > 1:
                say(f"{spec.filename}: {err}; trying the next URL")
    if not errors:
        raise DownloadError(f"{spec.filename}: no URL to download it from")
    if len(errors) == 1:
        raise errors[0]
    msg = f"{spec.filename}: all {len(urls)} URLs failed:\n" + "\n".join(f"  {e}" for e in errors)
    raise type(errors[-1])(msg)


def _verified_copy(info: DatasetInfo) -> Path | None:
    """The directory of a complete local copy whose files all verify, if there is one."""
    dirs: set[Path] = set()
    for split, specs in info.splits.items():
        try:
            paths = find_split_files(info.name, split)
        except DatasetNotFoundError:
            return None
        for spec, path in zip(specs, paths, strict=True):
            if check_file(path, spec).status not in ("ok", "ok_content"):
                return None
            dirs.add(path.parent)
    return dirs.pop() if len(dirs) == 1 else None
