"""Datasets: file formats, a catalog with checksums and local discovery, downloads, loaders.

Quick use::

    from attnact.data import make_loaders
    train, test, info = make_loaders("fashion_mnist", batch_size=128, pad_to=32)
    for epoch in range(epochs):
        train.set_epoch(epoch)
        for images, labels in train: ...
"""

from attnact.data.catalog import (
    DATASETS,
    DatasetInfo,
    DatasetNotFoundError,
    FileSpec,
    candidate_dirs,
    dataset_info,
    default_download_dir,
    find_split_files,
    is_available,
    list_datasets,
    search_roots,
    user_cache_dir,
)
from attnact.data.commands import DatasetRow, add_data_subparser, data_command, datasets_rows
from attnact.data.fetch import (
    ChecksumError,
    DownloadError,
    FileCheck,
    VerifyReport,
    check_file,
    fetch,
    verify,
)
from attnact.data.fingerprint import dataset_fingerprint
from attnact.data.formats import ImageFolder, read_cifar, read_idx, read_idx_pair, read_svhn
from attnact.data.loader import FolderLoader, TensorLoader, load_arrays, make_loaders

__all__ = [
    "DATASETS",
    "ChecksumError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetRow",
    "DownloadError",
    "FileCheck",
    "FileSpec",
    "FolderLoader",
    "ImageFolder",
    "TensorLoader",
    "VerifyReport",
    "add_data_subparser",
    "candidate_dirs",
    "check_file",
    "data_command",
    "dataset_fingerprint",
    "dataset_info",
    "datasets_rows",
    "default_download_dir",
    "fetch",
    "find_split_files",
    "is_available",
    "list_datasets",
    "load_arrays",
    "make_loaders",
    "read_cifar",
    "read_idx",
    "read_idx_pair",
    "read_svhn",
    "search_roots",
    "user_cache_dir",
    "verify",
]
