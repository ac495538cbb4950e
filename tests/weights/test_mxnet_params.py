"""The NDArray-list reader against files MXNet 1.9.1 wrote (tools/make_open_atac_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attnact.weights.mxnet_params import NotMXNetParamsError, read_ndarray_list, read_params

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("stem", ["ndarray_dtypes", "ndarray_np_shape"])
def test_arrays_read_as_mxnet_reads_them(stem):
    got = read_params(FIXTURES / f"{stem}.params")
    want = np.load(FIXTURES / f"{stem}.npz")  # MXNet's own reading of the same file
    assert set(got) == set(want.files)
    for name in want.files:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_np_shape_file_has_the_v3_magic_and_0d_arrays():
    data = (FIXTURES / "ndarray_np_shape.params").read_bytes()
    assert data[24:28] == (0xF993FACA).to_bytes(4, "little")
    got = read_params(FIXTURES / "ndarray_np_shape.params")
    assert got["scalar"].shape == () and got["empty"].shape == (2, 0)


def test_gluon_file_names_shapes_and_mixed_dtypes():
    params = read_params(FIXTURES / "cifar_last2_fp16.params")
    # save_parameters names by structure; cast('float16') keeps BatchNorm in float32.
    assert next(iter(params)) == "features.0.gamma"
    assert params["features.1.weight"].dtype == np.float16
    assert params["features.1.weight"].shape == (6, 3, 3, 3)
    assert params["features.2.0.bn1.running_var"].dtype == np.float32
    assert params["output.bias"].shape == (7,)


def test_unnamed_list_is_not_a_parameter_file(tmp_path):
    data = (FIXTURES / "ndarray_dtypes.params").read_bytes()
    arrays, names = read_ndarray_list(data)
    assert len(arrays) == len(names) == 8
    # Same arrays, name count 0: what mx.nd.save of a list writes.
    cut = data[: _names_offset(data)] + (0).to_bytes(8, "little")
    path = tmp_path / "list.params"
    path.write_bytes(cut)
    with pytest.raises(NotMXNetParamsError, match="without names"):
        read_params(path)


def _names_offset(data: bytes) -> int:
    """Byte offset of the name count (after the last array), found by reading the arrays."""
    from attnact.weights import mxnet_params as mp

    r = mp._Reader(data, "x")
    r.unpack("QQQ", "header")
    for i in range(8):
        mp._read_array(r, i)
    return r.pos


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: b"PK\x03\x04" + d[4:], "not the list magic"),
        (lambda d: d[:10], "fewer than the 24-byte header"),
        (lambda d: d[: len(d) // 2], "file ends inside"),
        (lambda d: d + b"\0", "left over"),
        (lambda d: d[:16] + (1 << 40).to_bytes(8, "little") + d[24:], "claims"),
    ],
)
def test_not_a_params_file_is_a_clear_error(tmp_path, mangle, message):
    path = tmp_path / "bad.params"
    path.write_bytes(mangle((FIXTURES / "ndarray_dtypes.params").read_bytes()))
    with pytest.raises(NotMXNetParamsError, match=message) as info:
        read_params(path)
    assert str(path) in str(info.value)


def test_torch_checkpoint_is_refused(tmp_path):
    import torch

    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(NotMXNetParamsError, match="not a readable MXNet"):
        read_params(path)
