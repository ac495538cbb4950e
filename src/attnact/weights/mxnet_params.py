"""Read MXNet's NDArray-list files (Gluon ``.params``) in plain NumPy, without MXNet.

``mx.nd.save`` / Gluon ``save_parameters`` write, all little-endian:

    uint64 0x112 (list magic) · uint64 0 (reserved) · uint64 n
    n arrays, each:
        uint32 array magic: 0xF993FAC9 (v2) / 0xF993FACA (v3, NumPy shape semantics)
        int32  storage type (v2 and v3; 0 = dense)
        uint32 ndim · int64 dims[ndim]
        int32  device type · int32 device id          (where the array lived; ignored)
        int32  type flag (0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64,
               7 bool)
        the elements, row-major
    uint64 m (0, or n) · m names, each uint64 length + UTF-8 bytes

Older files carry 0xF993FAC8 (v1: no storage type field) or no array magic at all (the first
uint32 is ndim and the dims are uint32). An array without data is its shape alone: ndim −1 in
v3, ndim 0 otherwise (so only v3 has 0-d arrays). This is the layout of MXNet 1.x's
``NDArray::Save``/``MXNDArraySave``; the tests check the reader against files that MXNet 1.9.1
wrote. Sparse arrays (storage type ≠ 0) never occur in Gluon parameter files and are refused.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LIST_MAGIC", "NotMXNetParamsError", "read_ndarray_list", "read_params"]

LIST_MAGIC = 0x112
_V1, _V2, _V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
_DTYPES: dict[int, np.dtype[Any]] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
    7: np.dtype("?"),
}
# No Gluon parameter file has more arrays or dimensions than this; a larger count means the
# bytes are not such a file, and reading on would allocate garbage-sized arrays.
_MAX_ARRAYS = 1 << 20
_MAX_NDIM = 32


class NotMXNetParamsError(ValueError):
    """The bytes are not an MXNet NDArray-list (Gluon ``.params``) file, or are truncated."""


class _Reader:
    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.pos = 0
        self.source = source

    def fail(self, what: str) -> NotMXNetParamsError:
        return NotMXNetParamsError(
            f"{self.source}: not a readable MXNet NDArray-list (Gluon .params) file: {what} "
            f"(at byte {self.pos} of {len(self.data)})"
        )

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"file ends inside {what}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def _read_array(r: _Reader, index: int) -> np.ndarray:
    where = f"array {index}"
    (magic,) = r.unpack("I", f"{where}'s header")
    if magic in (_V2, _V3):
        (stype,) = r.unpack("i", f"{where}'s storage type")
        if stype != 0:
            raise r.fail(f"{where} has sparse storage type {stype}; only dense arrays are read")
        (ndim,) = r.unpack("i", f"{where}'s shape")
        dim_fmt = "q"
    elif magic == _V1:
        (ndim,) = r.unpack("i", f"{where}'s shape")
        dim_fmt = "q"
    else:  # legacy: no magic, the word just read is ndim, dims are uint32
        ndim, dim_fmt = magic, "I"
    # A "none" array (no data; MXNet writes only its shape) has ndim -1 under NumPy shape
    # semantics (v3) and ndim 0 otherwise; MXNet reads nothing more for it.
    if (magic == _V3 and ndim == -1) or (magic != _V3 and ndim == 0):
        return np.zeros((0,), dtype=np.float32)
    if not 0 <= ndim <= _MAX_NDIM:
        raise r.fail(f"{where} claims {ndim} dimensions")
    shape = r.unpack(dim_fmt * ndim, f"{where}'s shape") if ndim else ()
    if any(d < 0 for d in shape):
        raise r.fail(f"{where} has a negative dimension in shape {shape}")
    r.unpack("ii", f"{where}'s device")
    (flag,) = r.unpack("i", f"{where}'s type flag")
    if flag not in _DTYPES:
        raise r.fail(f"{where} has unknown type flag {flag} (known: {sorted(_DTYPES)})")
    dtype = _DTYPES[flag]
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    raw = r.take(count * dtype.itemsize, f"{where}'s {count} elements")
    # Native-endian copy: torch.from_numpy refuses non-native byte orders.
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(
        shape
    )


def read_ndarray_list(
    data: bytes, *, source: str = "<bytes>"
) -> tuple[list[np.ndarray], list[str]]:
    """Decode an NDArray-list file's bytes into (arrays, names); names is empty for an unnamed
    list (``mx.nd.save`` of a list).

    Raises:
        NotMXNetParamsError: bad magic, impossible counts, an unknown dtype, or truncation.
    """
    r = _Reader(data, source)
    if len(data) < 24:
        raise r.fail(f"only {len(data)} bytes, fewer than the 24-byte header")
    magic, _reserved, n = r.unpack("QQQ", "the header")
    if magic != LIST_MAGIC:
        r.pos = 0
        raise r.fail(f"first 8 bytes are 0x{magic:x}, not the list magic 0x{LIST_MAGIC:x}")
    if n > _MAX_ARRAYS:
        r.pos = 16
        raise r.fail(f"header claims {n} arrays")
    arrays = [_read_array(r, i) for i in range(n)]
    (m,) = r.unpack("Q", "the name count")
    if m not in (0, n):
        raise r.fail(f"{n} arrays but {m} names")
    names = []
    for i in range(m):
        (length,) = r.unpack("Q", f"name {i}'s length")
        try:
            names.append(r.take(length, f"name {i}").decode("utf-8"))
        except UnicodeDecodeError as err:
            raise r.fail(f"name {i} is not UTF-8") from err
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} bytes left over after the last name")
    return arrays, names


def read_params(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The named arrays of a Gluon ``.params`` file (``save_parameters`` / ``mx.nd.save`` of a
    dict), in file order.

    Names keep any ``arg:``/``aux:`` prefix of symbolic checkpoints as written.

    Raises:
        FileNotFoundError: no such file.
        NotMXNetParamsError: not an NDArray-list file, truncated, or its arrays are unnamed.

    Examples:
        A file with one named float32 array of shape (2,), written in the layout of the module
        docstring (list header, one v2 array on the CPU, then its name):

        >>> import pathlib, struct, tempfile
        >>> import numpy as np
        >>> from attnact.weights import read_params
        >>> data = struct.pack("<QQQ", 0x112, 0, 1)
        >>> data += struct.pack("<IiIq", 0xF993FAC9, 0, 1, 2) + struct.pack("<iii", 1, 0, 0)
        >>> data += np.array([1.5, -2.0], "<f4").tobytes()
        >>> data += struct.pack("<QQ", 1, 6) + b"conv.w"
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "one.params"
        >>> _ = path.write_bytes(data)
        >>> read_params(path)
        {'conv.w': array([ 1.5, -2. ], dtype=float32)}
    """
    p = Path(path)
    arrays, names = read_ndarray_list(p.read_bytes(), source=str(p))
    if not names and arrays:
        raise NotMXNetParamsError(
            f"{p}: an NDArray list without names (mx.nd.save of a list), not a parameter file"
        )
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise NotMXNetParamsError(f"{p}: parameter name {dup!r} occurs twice")
    return dict(zip(names, arrays, strict=True))
