"""The dataset catalog: files, official URLs, checksums, normalisation, and where to look locally.

Local discovery order for every dataset (first complete copy wins):

1. the explicit ``data_dir`` argument (``--data-dir`` on the command line),
2. ``$ATTNACT_DATA``,
3. the user cache: ``$XDG_CACHE_HOME/attnact`` or ``~/.cache/attnact`` (where ``fetch`` writes),
4. dataset-specific system locations (Fashion-MNIST: ``/usr/share/datasets/fashion-mnist``, from
   the Debian package ``dataset-fashion-mnist``).

Under each root we look in ``<root>/<name>/`` (then torchvision's folder, e.g.
``<root>/FashionMNIST/raw/``) and in ``<root>/`` itself. A copy is complete for a split when all
of that split's files are in one directory; an extracted form (raw IDX instead of ``.gz``, the
``cifar-10-batches-py`` folder instead of the tarball) counts too.

Checksums: ``md5`` is the value the dataset's authors (and torchvision) publish for the download;
``sha256`` of the same bytes where we could establish it. ``content_sha256`` hashes the
*decompressed* payload of a ``.gz`` file, which survives re-compression: Debian's Fashion-MNIST
files are the upstream deflate streams under a normalised gzip header (no file name, build-time
mtime), so their md5s differ from the published ones while their contents are identical.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attnact.data.formats import read_cifar, read_idx_pair, read_svhn

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "FileSpec",
    "candidate_dirs",
    "dataset_info",
    "default_download_dir",
    "find_split_files",
    "is_available",
    "list_datasets",
    "search_roots",
    "user_cache_dir",
]

ENV_DATA = "ATTNACT_DATA"
ArrayReader = Callable[[Sequence[Path], str], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset as published.

    Attributes:
        filename: name on the server and on disk.
        urls: download URLs, canonical host first, then mirrors (empty: not downloadable).
        md5: published md5 of the download.
        sha256: sha256 of the download, where known.
        content_sha256: sha256 of the decompressed payload (``.gz`` files), where known.
        git_sha1: git blob id (SHA-1 of ``b"blob <size>\\0"`` + content), for files published
            in a git repository whose blob id is all that is known.
        size: bytes of the download, for messages only (never used to reject a file).
        alternatives: extracted forms accepted locally instead of the file (not checksummed).
        is_dir: the "file" is a user-supplied folder (ImageNet).
    """

    filename: str
    urls: tuple[str, ...] = ()
    md5: str | None = None
    sha256: str | None = None
    content_sha256: str | None = None
    git_sha1: str | None = None
    size: int | None = None
    alternatives: tuple[str, ...] = ()
    is_dir: bool = False

    def present_in(self, directory: Path) -> Path | None:
        """The path of this file (or an accepted alternative) in ``directory``, if there."""
        if self.is_dir:
            d = directory / self.filename
            return d if d.is_dir() and any(p.is_dir() for p in d.iterdir()) else None
        f = directory / self.filename
        if f.is_file():
            return f
        for alt in self.alternatives:
            if (directory / alt).exists():
                return directory / alt
        return None


@dataclass(frozen=True)
class DatasetInfo:
    """Everything the library knows about one dataset.

    Attributes:
        name: catalog key (``"fashion_mnist"``).
        description: one line for listings.
        splits: per split, the files it needs (a file may serve several splits).
        num_classes, channels, image_size: the images as stored (``image_size`` = (H, W)).
        mean, std: per-channel statistics of the training images in [0, 1], for normalisation.
        reader: ``reader(paths, split) -> (uint8 N×C×H×W, int64 N)``; None for streamed folders.
        default_augment: what :func:`attnact.data.make_loaders` uses unless told otherwise.
        homepage: where the dataset is described.
        train_split, eval_split: the split names training and evaluation use.
        system_dirs: extra search roots after the user cache (e.g. a distribution package).
        folder_aliases: other sub-folder names under a root (torchvision's layout).
        install_hint: extra ways to obtain the data, shown when it is missing.
    """

    name: str
    description: str
    splits: Mapping[str, tuple[FileSpec, ...]]
    num_classes: int
    channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    reader: ArrayReader | None
    default_augment: str
    homepage: str
    train_split: str = "train"
    eval_split: str = "test"
    system_dirs: tuple[str, ...] = ()
    folder_aliases: tuple[str, ...] = ()
    install_hint: tuple[str, ...] = field(default=())

    @property
    def downloadable(self) -> bool:
        return all(f.urls for f in self.files())

    def files(self, split: str | None = None) -> tuple[FileSpec, ...]:
        """The files of ``split`` (all splits when None), each once, in catalog order."""
        if split is not None:
            return self.splits[self.check_split(split)]
        seen: dict[str, FileSpec] = {}
        for specs in self.splits.values():
            for spec in specs:
                seen.setdefault(spec.filename, spec)
        return tuple(seen.values())

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise ValueError(
                f"dataset {self.name!r} has no split {split!r}; allowed: {', '.join(self.splits)}"
            )
        return split

    @property
    def download_bytes(self) -> int | None:
        sizes = [f.size for f in self.files()]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s)


class DatasetNotFoundError(ValueError):
    """A dataset (or one split of it) is not in any of the places searched."""


# ------------------------------------------------------------------------------- readers


def _read_idx_split(paths: Sequence[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx_pair(paths[0], paths[1])
    return images[:, None], labels  # N×H×W → N×1×H×W


def _read_cifar10(paths: Sequence[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    return read_cifar(paths[0], split, variant="cifar10")  # type: ignore[arg-type]


def _read_cifar100(paths: Sequence[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    return read_cifar(paths[0], split, variant="cifar100")  # type: ignore[arg-type]


def _read_svhn(paths: Sequence[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    return read_svhn(paths[0])


# ------------------------------------------------------------------------------- entries

_MNIST_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    # The upstream repository holds the same files (same md5/sha256).
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
_KMNIST_URLS = ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",)
_IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_files(
    bases: tuple[str, ...],
    md5: tuple[str, str, str, str],
    sha256: tuple[str, ...] | None = None,
    content_sha256: tuple[str, ...] | None = None,
    sizes: tuple[int, ...] | None = None,
) -> dict[str, tuple[FileSpec, ...]]:
    specs = [
        FileSpec(
            filename=f"{stem}.gz",
            urls=tuple(base + f"{stem}.gz" for base in bases),
            md5=md5[i],
            sha256=sha256[i] if sha256 else None,
            content_sha256=content_sha256[i] if content_sha256 else None,
            size=sizes[i] if sizes else None,
            alternatives=(stem,),  # gunzipped copies (torchvision keeps both)
        )
        for i, stem in enumerate(_IDX_NAMES)
    ]
    return {"train": (specs[0], specs[1]), "test": (specs[2], specs[3])}


_IMAGENET_LAYOUT = (
    "ImageNet is not downloadable here (its licence requires registration at "
    "https://image-net.org). Lay out your copy as",
    "  <root>/imagenet/train/<wnid>/*.JPEG   and   <root>/imagenet/val/<wnid>/*.JPEG",
    "(the validation images sorted into one folder per class, like train/), then pass "
    "--data-dir <root> or set ATTNACT_DATA=<root>.",
)

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="mnist",
            description="MNIST handwritten digits, 28×28 grey, 60k train / 10k test, 10 classes",
            splits=_idx_files(
                _MNIST_URLS,
                (
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
                sizes=(9912422, 28881, 1648877, 4542),
            ),
            num_classes=10,
            channels=1,
            image_size=(28, 28),
            mean=(0.1307,),
            std=(0.3081,),
            reader=_read_idx_split,
            default_augment="none",
            homepage="http://yann.lecun.com/exdb/mnist/",
            folder_aliases=("MNIST/raw",),
        ),
        DatasetInfo(
            name="fashion_mnist",
            description=(
                "Fashion-MNIST (Zalando) clothing, 28×28 grey, 60k train / 10k test, 10 classes"
            ),
            splits=_idx_files(
                _FASHION_URLS,
                (
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
                sha256=(
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                ),
                # Computed from the Debian package's files; equal to upstream's payload.
                content_sha256=(
                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                ),
                sizes=(26421880, 29515, 4422102, 5148),
            ),
            num_classes=10,
            channels=1,
            image_size=(28, 28),
            mean=(0.2860,),  # measured on the 60k training images
            std=(0.3530,),
            reader=_read_idx_split,
            default_augment="none",
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            system_dirs=("/usr/share/datasets/fashion-mnist",),
            folder_aliases=("FashionMNIST/raw",),
            install_hint=("sudo apt-get install dataset-fashion-mnist   (Debian/Ubuntu)",),
        ),
        DatasetInfo(
            name="kmnist",
            description="Kuzushiji-MNIST cursive Japanese, 28×28 grey, 60k / 10k, 10 classes",
            splits=_idx_files(
                _KMNIST_URLS,
                (
                    "bdb82020997e1d708af4cf47b453dcf7",
                    "e144d726b3acfaa3e44228e80efcd344",
                    "5c965bf0a639b31b8f53240b1b52f4d7",
                    "7320c461ea6c1c855c0b718fb2a4b134",
                ),
            ),
            num_classes=10,
            channels=1,
            image_size=(28, 28),
            mean=(0.1918,),
            std=(0.3483,),
            reader=_read_idx_split,
            default_augment="none",
            homepage="https://github.com/rois-codh/kmnist",
            folder_aliases=("KMNIST/raw",),
        ),
        DatasetInfo(
            name="cifar10",
            description="CIFAR-10 tiny colour images, 32×32 RGB, 50k train / 10k test, 10 classes",
            splits=dict.fromkeys(
                ("train", "test"),
                (
                    FileSpec(
                        "cifar-10-python.tar.gz",
                        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                        md5="c58f30108f718f92721af3b95e74349a",
                        size=170498071,
                        alternatives=("cifar-10-batches-py",),
                    ),
                ),
            ),
            num_classes=10,
            channels=3,
            image_size=(32, 32),
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            reader=_read_cifar10,
            default_augment="cifar",
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        ),
        DatasetInfo(
            name="cifar100",
            description=(
                "CIFAR-100 tiny colour images, 32×32 RGB, 50k / 10k, 100 classes (fine labels)"
            ),
            splits=dict.fromkeys(
                ("train", "test"),
                (
                    FileSpec(
                        "cifar-100-python.tar.gz",
                        urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                        md5="eb9058c3a382ffc7106e4002c42a8d85",
                        size=169001437,
                        alternatives=("cifar-100-python",),
                    ),
                ),
            ),
            num_classes=100,
            channels=3,
            image_size=(32, 32),
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
            reader=_read_cifar100,
            default_augment="cifar",
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        ),
        DatasetInfo(
            name="svhn",
            description="SVHN house-number digits, 32×32 RGB, 73k train / 26k test, 10 classes",
            splits={
                "train": (
                    FileSpec(
                        "train_32x32.mat",
                        urls=("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",),
                        md5="e26dedcc434d2e4c54c9b2d4a06d8373",
                        size=182040794,
                    ),
                ),
                "test": (
                    FileSpec(
                        "test_32x32.mat",
                        urls=("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
                        md5="eb5a983be6a315427106f1b164d9cef3",
                        size=64275384,
                    ),
                ),
            },
            num_classes=10,
            channels=3,
            image_size=(32, 32),
            mean=(0.4377, 0.4438, 0.4728),
            std=(0.1980, 0.2010, 0.1970),
            reader=_read_svhn,
            # Random crops, but no flips: a mirrored digit is not a digit (and 2/5 swap roles).
            default_augment="crop",
            homepage="http://ufldl.stanford.edu/housenumbers/",
        ),
        DatasetInfo(
            name="imagenet",
            description=(
                "ImageNet-1k (ILSVRC-2012), user-supplied image folders, 1000 classes, 224×224"
            ),
            splits={
                "train": (FileSpec("train", is_dir=True),),
                "val": (FileSpec("val", is_dir=True),),
            },
            num_classes=1000,
            channels=3,
            image_size=(224, 224),
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            reader=None,
            default_augment="imagenet",
            homepage="https://image-net.org/",
            eval_split="val",
            install_hint=_IMAGENET_LAYOUT,
        ),
    )
}


def list_datasets() -> list[str]:
    """Names of the catalogued datasets, sorted.

    Examples:
        >>> from attnact.data import list_datasets
        >>> list_datasets()
        ['cifar10', 'cifar100', 'fashion_mnist', 'imagenet', 'kmnist', 'mnist', 'svhn']
    """
    return sorted(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """The catalog entry for ``name`` (``-`` and ``_`` are interchangeable, case ignored)."""
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        close = difflib.get_close_matches(key, DATASETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(list_datasets())}.{hint}")
    return DATASETS[key]


# ---------------------------------------------------------------------------- discovery


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/attnact``, or ``~/.cache/attnact``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "attnact"


def search_roots(
    name: str, data_dir: str | os.PathLike[str] | None = None
) -> list[tuple[Path, str]]:
    """The roots searched for ``name``, in order, each with where it came from.

    An explicit ``data_dir`` is the only root: a copy that is missing or incomplete there is
    an error, never a silent fall-back to another copy (whose test split could then be paired
    with the user's training split)."""
    info = dataset_info(name)
    if data_dir is not None:
        return [(Path(data_dir).expanduser(), "data_dir argument")]
    roots: list[tuple[Path, str]] = []
    env = os.environ.get(ENV_DATA)
    if env:
        roots.append((Path(env).expanduser(), f"${ENV_DATA}"))
    roots.append((user_cache_dir(), "user cache"))
    roots.extend((Path(d), "system location") for d in info.system_dirs)
    return roots


def candidate_dirs(
    name: str, data_dir: str | os.PathLike[str] | None = None
) -> list[tuple[Path, str]]:
    """Every directory that may hold ``name``'s files, in search order, without repeats."""
    info = dataset_info(name)
    out: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for root, why in search_roots(name, data_dir):
        for sub in (info.name, *info.folder_aliases, ""):
            d = root / sub if sub else root
            if d not in seen:
                seen.add(d)
                out.append((d, why))
    return out


def default_download_dir(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where ``fetch`` writes: ``<data_dir>/<name>``, else ``$ATTNACT_DATA/<name>``, else the
    user cache's ``<name>``."""
    info = dataset_info(name)
    if data_dir is not None:
        return Path(data_dir).expanduser() / info.name
    env = os.environ.get(ENV_DATA)
    return (Path(env).expanduser() if env else user_cache_dir()) / info.name


def _not_found_message(
    info: DatasetInfo,
    split: str | None,
    places: list[tuple[Path, str]],
    partial: list[str],
    data_dir: str | os.PathLike[str] | None,
) -> str:
    wanted = info.files(split)
    names = ", ".join(
        f.filename
        + (f" (or {' / '.join(f.alternatives)})" if f.alternatives else "")
        + ("/" if f.is_dir else "")
        for f in wanted
    )
    what = f"dataset {info.name!r}" + (f" (split {split!r})" if split else "")
    lines = [f"{what} not found: looked for {names} in"]
    lines += [f"  {d}    [{why}]" for d, why in places]
    lines += partial
    if info.downloadable:
        lines.append(
            f"Fetch it with:  attnact data fetch {info.name}   "
            f"(into {default_download_dir(info.name, data_dir)}; --data-dir DIR to choose)"
        )
    lines += [f"or:  {hint}" if info.downloadable else hint for hint in info.install_hint]
    lines.append(f"A copy elsewhere: pass --data-dir DIR (data_dir=...) or set {ENV_DATA}=DIR.")
    return "\n".join(lines)


def find_split_files(
    name: str, split: str, data_dir: str | os.PathLike[str] | None = None
) -> tuple[Path, ...]:
    """Paths of ``split``'s files from the first directory holding all of them.

    Raises:
        DatasetNotFoundError: no searched directory holds the whole split; the message lists
            every place searched and how to get the data.
    """
    info = dataset_info(name)
    specs = info.files(split)
    places = candidate_dirs(name, data_dir)
    partial: list[str] = []
    for d, _ in places:
        found = [spec.present_in(d) for spec in specs]
        if all(p is not None for p in found):
            return tuple(p for p in found if p is not None)
        have = [spec.filename for spec, p in zip(specs, found, strict=True) if p is not None]
        if have:
            missing = [s.filename for s, p in zip(specs, found, strict=True) if p is None]
            partial.append(f"  (incomplete copy in {d}: has {have}, missing {missing})")
    raise DatasetNotFoundError(_not_found_message(info, split, places, partial, data_dir))


def is_available(name: str, data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether every split of ``name`` is found locally."""
    info = dataset_info(name)
    try:
        for split in info.splits:
            find_split_files(name, split, data_dir)
    except DatasetNotFoundError:
        return False
    return True
