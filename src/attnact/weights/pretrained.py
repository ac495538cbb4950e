"""Catalogue of downloadable trained weights, and their verified download and cache.

Files are downloaded with :func:`attnact.data.fetch.download_file` (a temporary file, checked,
then renamed: an interrupted or corrupt transfer never lands under the real name) into
``<cache_dir>/<name>/`` — by default ``$ATTNACT_WEIGHTS``, else ``weights/`` in the user cache
that datasets use (``$XDG_CACHE_HOME/attnact`` or ``~/.cache/attnact``). The authors' files are
known by their git blob id, which the download is checked against.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from torch import nn

from attnact.data.catalog import FileSpec, user_cache_dir
from attnact.data.fetch import check_file, download_file

__all__ = [
    "PRETRAINED",
    "PretrainedWeights",
    "check_request",
    "fetch_pretrained",
    "list_pretrained",
    "load_pretrained",
    "pretrained_info",
    "weights_dir",
]

ENV_WEIGHTS = "ATTNACT_WEIGHTS"
_OPEN_ATAC_COMMIT = "2b5de253a4e9f7b204e4cc6f8f87660b4cb11cd0"  # "Upload params"
_OPEN_ATAC_FILE = "0.2141-imagenet-ResNet50_v1b_ChaATAC-155-best.params"


@dataclass(frozen=True)
class PretrainedWeights:
    """One set of downloadable weights.

    Attributes:
        name: catalogue key (``create_model(..., pretrained=name)``).
        model, act: the registry model and unit they belong to.
        kwargs: the builder arguments they need (checked against the caller's).
        file: the published file (URLs and checksum).
        source: who published them, where.
        licence: what the publisher states about use.
        reported: the publisher's accuracy for them.
    """

    name: str
    model: str
    act: str
    kwargs: Mapping[str, Any]
    file: FileSpec
    source: str
    licence: str
    reported: str
    num_classes: int = 1000
    notes: tuple[str, ...] = field(default=())


PRETRAINED: dict[str, PretrainedWeights] = {
    "open-atac-imagenet": PretrainedWeights(
        name="open-atac-imagenet",
        model="resnet50_v1b",
        act="atac",
        kwargs={"act_stages": 2, "r": 2},
        file=FileSpec(
            filename=_OPEN_ATAC_FILE,
            urls=(
                f"https://raw.githubusercontent.com/YimianDai/open-atac/{_OPEN_ATAC_COMMIT}/"
                f"params/{_OPEN_ATAC_FILE}",
                f"https://github.com/YimianDai/open-atac/raw/{_OPEN_ATAC_COMMIT}/params/"
                f"{_OPEN_ATAC_FILE}",
            ),
            git_sha1="68dc6dabee84f1f42746d06553aba6bfa04615d3",
        ),
        source="Dai et al., 'Attention as Activation' (ICPR 2020): ATAC-ResNet-50-v1b trained on "
        "ImageNet in MXNet Gluon, github.com/YimianDai/open-atac params/ (commit 2b5de25)",
        licence="the repository states no licence: the authors' weights, published for research; "
        "check with them before other use",
        reported="ImageNet val top-1 error 21.41 %, top-5 6.02 % (README, Table IV); the "
        "training log's epoch 155 of 160, this file, reads 0.214103 / 0.060276 and its last "
        "epoch 0.214724 / 0.061038",
        notes=(
            "trained with --dtype float16: convolution and dense weights are float16 in the "
            "file, converted to float32",
            "evaluation preprocessing: shorter side 256, centre crop 224, RGB mean (123.68, "
            "116.779, 103.939), std (58.393, 57.12, 57.375) on 0..255 pixels "
            "(model.preprocessing)",
        ),
    ),
}


def list_pretrained() -> list[str]:
    """Names of the downloadable weights, sorted."""
    return sorted(PRETRAINED)


def pretrained_info(name: str) -> PretrainedWeights:
    """The catalogue entry ``name``.

    Raises:
        ValueError: unknown name (the known ones are listed).

    Examples:
        The authors' ImageNet ATAC-ResNet-50-v1b, known by its git blob id in their repository:

        >>> from attnact.weights import list_pretrained, pretrained_info
        >>> list_pretrained()
        ['open-atac-imagenet']
        >>> entry = pretrained_info("open-atac-imagenet")
        >>> entry.model, entry.act, entry.kwargs
        ('resnet50_v1b', 'atac', {'act_stages': 2, 'r': 2})
        >>> entry.file.git_sha1
        '68dc6dabee84f1f42746d06553aba6bfa04615d3'
    """
    if not isinstance(name, str) or name not in PRETRAINED:
        raise ValueError(
            f"pretrained must be one of {', '.join(map(repr, list_pretrained()))}; got {name!r}"
        )
    return PRETRAINED[name]


def weights_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where downloaded weights live: ``cache_dir``, else ``$ATTNACT_WEIGHTS``, else
    ``<user cache>/weights``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_WEIGHTS)
    return Path(env).expanduser() if env else user_cache_dir() / "weights"


def fetch_pretrained(
    name: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    base_url: str | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """The verified local file of ``name``, downloaded unless a copy that verifies is cached.

    Args:
        name: a name from :func:`list_pretrained`.
        cache_dir: root of the cache (see :func:`weights_dir`); the file goes to
            ``<cache_dir>/<name>/``.
        base_url: download ``<base_url>/<filename>`` instead of the catalogue's URLs.
        force: download even when a cached copy verifies.
        progress: a progress bar and status lines on stderr.
        timeout: seconds a connection may stall.

    Raises:
        ChecksumError: the download's git blob id (or other checksum) differs.
        DownloadError: every URL failed.
    """
    entry = pretrained_info(name)
    dest = weights_dir(cache_dir) / entry.name
    target = dest / entry.file.filename
    if target.exists() and not force:
        check = check_file(target, entry.file)
        if check.status == "ok":
            return target
        if progress:
            print(f"{target}: {check.status} ({check.detail}); downloading again", file=sys.stderr)
    dest.mkdir(parents=True, exist_ok=True)
    urls = [f"{base_url.rstrip('/')}/{entry.file.filename}"] if base_url else entry.file.urls
    return download_file(entry.file, dest, urls, progress=progress, timeout=timeout)


def check_request(entry: PretrainedWeights, model: str, act: Any, num_classes: int | None,
                  kwargs: Mapping[str, Any]) -> None:
    """Refuse a ``create_model`` call whose network differs from the one the weights fit."""
    from attnact.models import model_spec

    if model_spec(model).name != entry.model:
        raise ValueError(f"pretrained={entry.name!r} is for model {entry.model!r}, not {model!r}")
    if act != entry.act:
        raise ValueError(f"pretrained={entry.name!r} needs act={entry.act!r}, got act={act!r}")
    if num_classes not in (None, entry.num_classes):
        raise ValueError(f"pretrained={entry.name!r} has {entry.num_classes} classes, got "
                         f"num_classes={num_classes!r}")
    for key, value in kwargs.items():
        if key not in entry.kwargs or entry.kwargs[key] != value:
            need = ", ".join(f"{k}={v!r}" for k, v in entry.kwargs.items())
            raise ValueError(f"pretrained={entry.name!r} fixes the network ({need}); got "
                             f"{key}={value!r}")


def load_pretrained(
    name: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    base_url: str | None = None,
    progress: bool = True,
) -> nn.Module:
    """Download (or find cached), verify and convert the weights ``name``: the attnact model in
    eval mode, with ``model.preprocessing`` and ``model.pretrained`` (the catalogue entry)."""
    from attnact.weights.open_atac import OpenATACArchitecture, load_open_atac

    entry = pretrained_info(name)
    path = fetch_pretrained(name, cache_dir, base_url=base_url, progress=progress)
    model = load_open_atac(path)
    arch = cast(OpenATACArchitecture, model.open_atac)  # set by load_open_atac
    want = {k: v for k, v in entry.kwargs.items()}
    got = {k: arch.kwargs.get(k) for k in want}
    if arch.model != entry.model or got != want:
        raise ValueError(f"{path} holds {arch.describe()}, not the {entry.model} {want} that "
                         f"pretrained={name!r} describes")
    model.pretrained = entry  # type: ignore[assignment]  # any attribute may be set on a module
    return model
