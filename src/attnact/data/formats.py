"""Readers for the datasets' own file formats: IDX, CIFAR python pickles, SVHN ``.mat``, folders.

Each reader checks what it reads (magic numbers, shapes, label ranges) and raises a ``ValueError``
that names the file and what is wrong, so a truncated download or a wrong file fails here, at the
boundary, instead of as a shape error deep inside training.

Layouts returned (uint8 images, int64 labels):

- IDX: the array as stored, images ``N×H×W``.
- CIFAR-10/100: ``N×3×32×32`` (the pickles store rows as channel-major 3×32×32 already).
- SVHN: ``N×3×32×32`` (the ``.mat`` stores ``32×32×3×N``).
- image folders: a streaming ``torch.utils.data.Dataset`` decoding one file at a time.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import math
import os
import pickle
import tarfile
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CIFAR10_MEMBERS",
    "CIFAR100_MEMBERS",
    "IMAGE_EXTENSIONS",
    "ImageFolder",
    "random_resized_crop_box",
    "read_cifar",
    "read_idx",
    "read_idx_pair",
    "read_svhn",
]

PathLike = str | os.PathLike[str]

# --------------------------------------------------------------------------------------- IDX

# IDX header: two zero bytes, a type code, the number of dimensions, then one big-endian uint32
# per dimension (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its suffix)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from err
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        # A truncated download ends here: gzip reports a missing end-of-stream marker.
        raise ValueError(f"{path}: corrupt or truncated gzip data ({err})") from err


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a native-endian numpy array of its stored shape.

    Raises:
        ValueError: bad magic, unknown type code, or a payload size that disagrees with the header.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file (magic starts with {data[:2].hex()}, expected 0000)"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        allowed = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02X} (allowed: {allowed})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape} of {dtype.name} ({expected} bytes in all) "
            f"but the file holds {len(data)} bytes"
            + (" - truncated?" if len(data) < expected else "")
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx_pair(images_path: PathLike, labels_path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST-style (images, labels) pair: uint8 ``N×H×W`` images and int64 ``N`` labels."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{images_path}: expected uint8 images N×H×W (IDX type 0x08, 3 dims), "
            f"got {images.dtype} with shape {images.shape}"
        )
    if labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected 1-D labels, got shape {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}"
        )
    return images, labels.astype(np.int64)


# ------------------------------------------------------------------------------------ CIFAR

CIFAR10_MEMBERS = {
    "folder": "cifar-10-batches-py",
    "train": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
    "test": ("test_batch",),
    "meta": "batches.meta",
}
CIFAR100_MEMBERS = {
    "folder": "cifar-100-python",
    "train": ("train",),
    "test": ("test",),
    "meta": "meta",
}

# The pickles are downloaded from the internet and users may point us at any directory, so only
# the globals that a CIFAR batch needs (numpy arrays) may be loaded: a plain pickle.load would run
# whatever code a doctored file names.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 wrap bytes in it
}


class _CifarUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], where: str) -> None:
        # latin1: the official batches are Python 2 pickles; latin1 maps their byte strings 1:1.
        super().__init__(file, encoding="latin1")
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise ValueError(
                f"{self.where}: refusing to unpickle {module}.{name}; a CIFAR batch holds only "
                "numpy arrays, lists and strings"
            )
        with warnings.catch_warnings():  # numpy 2 warns on the numpy.core alias old pickles use
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def _unpickle_batch(file: IO[bytes], where: str) -> dict[str, Any]:
    try:
        obj = _CifarUnpickler(file, where).load()
    except ValueError:
        raise
    except Exception as err:  # pickle raises many types on corrupt input
        raise ValueError(
            f"{where}: not a readable CIFAR pickle ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    # Python 2 pickles give str keys under latin1, Python 3 ones bytes keys: accept both.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_arrays(
    batch: dict[str, Any], where: str, label_key: str
) -> tuple[np.ndarray, np.ndarray]:
    for key in ("data", label_key):
        if key not in batch:
            raise ValueError(
                f"{where}: missing key {key!r} (has {sorted(batch)}); wrong CIFAR variant?"
            )
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{where}: 'data' should be uint8 N×3072, got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{where}: {labels.shape} labels for {data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32), labels


def _open_cifar_members(path: Path, folder: str, names: Sequence[str]) -> list[tuple[str, bytes]]:
    """Bytes of each member ``folder/name``, from the tar.gz or from an extracted directory."""
    out: list[tuple[str, bytes]] = []
    if path.is_dir():
        # Accept the extracted folder itself or a directory that contains it.
        base = path / folder if (path / folder).is_dir() else path
        for name in names:
            f = base / name
            if not f.is_file():
                raise ValueError(f"{base}: missing CIFAR file {name!r}")
            out.append((str(f), f.read_bytes()))
        return out
    try:
        with tarfile.open(path, "r:*") as tar:
            for name in names:
                member = f"{folder}/{name}"
                try:
                    fh = tar.extractfile(member)
                except KeyError:
                    fh = None
                if fh is None:
                    raise ValueError(f"{path}: archive has no member {member!r}")
                out.append((f"{path}:{member}", fh.read()))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise ValueError(f"{path}: corrupt or truncated tar archive ({err})") from err
    return out


def read_cifar(
    path: PathLike,
    split: Literal["train", "test"],
    *,
    variant: Literal["cifar10", "cifar100"] = "cifar10",
    coarse: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR split from the official ``*-python.tar.gz`` or its extracted directory.

    Args:
        path: ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``, the extracted
            ``cifar-10-batches-py`` / ``cifar-100-python`` folder, or a directory containing it.
        split: ``"train"`` (CIFAR-10: data_batch_1..5 concatenated in order) or ``"test"``.
        variant: ``"cifar10"`` or ``"cifar100"``.
        coarse: CIFAR-100 only: the 20 superclass labels instead of the 100 fine labels.

    Returns:
        uint8 images ``N×3×32×32`` and int64 labels ``N``.
    """
    if variant not in ("cifar10", "cifar100"):
        raise ValueError(f"variant must be 'cifar10' or 'cifar100', got {variant!r}")
    members = CIFAR10_MEMBERS if variant == "cifar10" else CIFAR100_MEMBERS
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if coarse and variant != "cifar100":
        raise ValueError("coarse=True needs variant='cifar100' (CIFAR-10 has one label set)")
    label_key = "labels" if variant == "cifar10" else ("coarse_labels" if coarse else "fine_labels")
    num_classes = 10 if variant == "cifar10" else (20 if coarse else 100)
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory")
    images, labels = [], []
    for where, blob in _open_cifar_members(path, str(members["folder"]), members[split]):
        x, y = _cifar_arrays(_unpickle_batch(io.BytesIO(blob), where), where, label_key)
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(
                f"{where}: labels span {y.min()}..{y.max()}, expected 0..{num_classes - 1}"
            )
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


# ------------------------------------------------------------------------------------- SVHN


def read_svhn(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN cropped-digits file (``train_32x32.mat`` / ``test_32x32.mat``).

    The file stores ``X`` as ``32×32×3×N`` and ``y`` as ``N×1`` in 1..10, where 10 is the digit 0;
    we return uint8 ``N×3×32×32`` images and int64 labels in 0..9 (10 mapped to 0).
    """
    import scipy.io  # the experiments extra; imported here because it is slow to load

    path = Path(path)
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5) files
        raise ValueError(f"{path}: MATLAB v7.3 file; SVHN's are v5 ({err})") from err
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a readable MATLAB file ({err})") from err
    for key in ("X", "y"):
        if key not in mat:
            raise ValueError(f"{path}: no variable {key!r} (SVHN files hold 'X' and 'y')")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3:
        raise ValueError(f"{path}: 'X' should be H×W×3×N, got shape {x.shape}")
    if x.dtype != np.uint8:
        raise ValueError(f"{path}: 'X' should be uint8, got {x.dtype}")
    if len(y) != x.shape[3]:
        raise ValueError(f"{path}: {len(y)} labels for {x.shape[3]} images")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise ValueError(f"{path}: labels span {y.min()}..{y.max()}, expected 1..10")
    y[y == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


# ---------------------------------------------------------------------------- image folders

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _require_pil() -> Any:
    if importlib.util.find_spec("PIL") is None:
        raise ImportError(
            "reading image folders needs Pillow, which is not installed: pip install pillow"
        )
    from PIL import Image

    return Image


def _resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of a float ``C×H×W`` tensor (PIL-like quality)."""
    if tuple(img.shape[-2:]) == size:
        return img
    return F.interpolate(
        img[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )[0]


def random_resized_crop_box(
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an Inception-style random crop: area fraction in ``scale``, aspect
    ratio log-uniform in ``ratio``; after 10 misses, the central crop clamped to ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class ImageFolder(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """ImageNet-style folder ``root/<class>/<image>``, decoded one file at a time with Pillow.

    Class indices follow the sorted folder names. ``transform="train"`` applies a random resized
    crop to ``image_size`` and a horizontal flip with probability 1/2; ``"eval"`` resizes the
    shorter side to ``resize`` and takes the central ``image_size`` crop; ``None`` returns the
    decoded image unchanged. Items are float32 ``3×H×W`` in [0, 1], normalised with
    ``mean``/``std`` when given, and an int label.

    Randomness comes from ``generator`` in :meth:`load` (the torch global RNG in ``__getitem__``),
    so a sampler that hands out per-sample seeds gets reproducible augmentation.
    """

    def __init__(
        self,
        root: PathLike,
        *,
        transform: Literal["train", "eval"] | None = "eval",
        image_size: int = 224,
        resize: int = 256,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        if transform not in ("train", "eval", None):
            raise ValueError(f"transform must be 'train', 'eval' or None, got {transform!r}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        _require_pil()  # fail here, not in a worker process
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: not a directory (expected root/<class>/<image>)")
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        if not self.classes:
            raise ValueError(f"{self.root}: no class subfolders (expected root/<class>/<image>)")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        exts = tuple(e.lower() for e in extensions)
        self.samples: list[tuple[Path, int]] = [
            (f, i)
            for i, c in enumerate(self.classes)
            for f in sorted((self.root / c).rglob("*"))
            if f.suffix.lower() in exts and f.is_file()
        ]
        if not self.samples:
            raise ValueError(
                f"{self.root}: no images with extensions {', '.join(exts)} in {len(self.classes)} "
                "class folders"
            )
        self.targets = [y for _, y in self.samples]
        self.transform = transform
        self.image_size = (image_size, image_size)
        self.resize = resize
        self._norm: tuple[torch.Tensor, torch.Tensor] | None = None
        if mean is not None and std is not None:
            self._norm = (
                torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1),
                torch.tensor(std, dtype=torch.float32).view(-1, 1, 1),
            )

    def __len__(self) -> int:
        return len(self.samples)

    def decode(self, index: int) -> torch.Tensor:
        """The image at ``index`` as a uint8 ``3×H×W`` tensor (RGB)."""
        from PIL import Image  # not kept on self: a module cannot be pickled to workers

        path, _ = self.samples[index]
        try:
            with Image.open(path) as img:
                arr = np.array(img.convert("RGB"))  # a writable copy, as torch wants
        except OSError as err:
            raise ValueError(f"{path}: cannot decode image ({err})") from err
        return torch.from_numpy(arr).permute(2, 0, 1)

    def load(
        self, index: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, int]:
        """Decode, transform and normalise one sample, drawing randomness from ``generator``."""
        img = self.decode(index)
        _, h, w = img.shape
        if self.transform == "train":
            top, left, ch, cw = random_resized_crop_box(h, w, generator=generator)
            # Crop in uint8 first so only the kept pixels are converted and resampled.
            out = _resize(img[:, top : top + ch, left : left + cw].float(), self.image_size)
            if bool(torch.rand(1, generator=generator) < 0.5):
                out = out.flip(-1)
        elif self.transform == "eval":
            short = min(h, w)
            size = (round(h * self.resize / short), round(w * self.resize / short))
            out = _resize(img.float(), size)
            th, tw = self.image_size
            top, left = (size[0] - th) // 2, (size[1] - tw) // 2
            if top < 0 or left < 0:
                raise ValueError(f"resize={self.resize} is smaller than image_size={th}")
            out = out[:, top : top + th, left : left + tw]
        else:
            out = img.float()
        out = out.div_(255.0).clamp_(0.0, 1.0)  # antialiasing can overshoot [0, 255] slightly
        if self._norm is not None:
            out = (out - self._norm[0]) / self._norm[1]
        return out.contiguous(), self.samples[index][1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.load(index)
