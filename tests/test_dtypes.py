"""Dtype rules and memory layouts: what each input dtype computes in and returns,
and that strided, reversed and Fortran-ordered inputs give the same numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.signal

import gpuconv
from conftest import assert_close, random_array, to_host
from gpuconv import reference

METHODS = ["direct", "gemm"]
FLOATS = [np.float16, np.float32, np.float64, np.complex64, np.complex128]
PROMOTED = [np.bool_, np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64]


@pytest.mark.parametrize("method", METHODS)
def test_float16_accumulates_in_float32(backend, method):
    # 4096 products of 1: a float16 accumulator sticks at 2048 (its spacing
    # there is 2), a float32 one reaches 4096, which float16 represents exactly.
    ones = backend.xp.ones((64, 64), dtype=np.float16)
    got = gpuconv.correlate2d(ones, ones, "valid", method=method)
    assert got.dtype == np.float16
    assert float(backend.to_numpy(got)[0, 0]) == 4096.0
    x = backend.xp.ones((1, 64, 8, 8), dtype=np.float16)
    y = gpuconv.conv2d(x, x, method=method)
    assert y.dtype == np.float16
    assert float(backend.to_numpy(y)[0, 0, 0, 0]) == 4096.0


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("method", METHODS)
def test_floating_dtypes_are_kept(backend, rng, dtype, method):
    x = random_array(rng, (2, 6, 7), dtype)
    k = random_array(rng, (3, 3), dtype)
    got = gpuconv.convolve2d(backend.xp.asarray(x), backend.xp.asarray(k), "same", "wrap",
                             method=method)
    assert got.dtype == np.dtype(dtype)
    wide = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
    expected = np.stack([scipy.signal.convolve2d(p.astype(wide), k.astype(wide), "same", "wrap")
                         for p in x])
    assert_close(got, expected, dtype, xp=backend.xp)


@pytest.mark.parametrize("dtype", PROMOTED)
@pytest.mark.parametrize("method", METHODS)
def test_integer_and_bool_inputs_promote_to_float64(backend, rng, dtype, method):
    x = random_array(rng, (5, 6), dtype)
    k = random_array(rng, (2, 3), dtype)
    got = gpuconv.correlate2d(backend.xp.asarray(x), backend.xp.asarray(k), method=method)
    assert got.dtype == np.float64
    expected = scipy.signal.correlate2d(x.astype(np.float64), k.astype(np.float64))
    assert_close(got, expected, np.float64, xp=backend.xp)
    y = gpuconv.conv2d(backend.xp.asarray(x[None, None]), backend.xp.asarray(k[None, None]),
                       method=method)
    assert y.dtype == np.float64
    assert_close(y[0, 0], reference.corr2d(x.astype(float), k), np.float64, xp=backend.xp)


def test_integer_inputs_do_not_overflow_where_scipy_does(backend):
    # scipy#8757: SciPy keeps uint8 and wraps around; 4 * 200 * 200 = 160000.
    x = np.full((4, 4), 200, dtype=np.uint8)
    k = np.full((2, 2), 200, dtype=np.uint8)
    theirs = scipy.signal.correlate2d(x, k, "valid")
    assert theirs.dtype == np.uint8 and theirs[0, 0] != 160000
    ours = gpuconv.correlate2d(x, k, "valid")
    assert_close(ours, np.full((3, 3), 160000.0), xp=backend.xp)
    np.testing.assert_array_equal(to_host(ours), np.full((3, 3), 160000.0))
    big = np.full((3, 3), 2**62, dtype=np.int64)
    ours = gpuconv.convolve2d(big, np.ones((2, 2), dtype=np.int64), "valid")
    assert_close(ours, np.full((2, 2), 4.0 * 2**62), xp=backend.xp)
    np.testing.assert_array_equal(to_host(ours), np.full((2, 2), 4.0 * 2**62))


@pytest.mark.parametrize("a, b, expected", [
    (np.float32, np.float64, np.float64),
    (np.float16, np.float32, np.float32),
    (np.float32, np.complex64, np.complex64),
    (np.float64, np.complex64, np.complex128),
    (np.float16, np.complex64, np.complex64),
    (np.complex64, np.complex128, np.complex128),
    # Integers and bools count as float64 before promotion.
    (np.int8, np.float32, np.float64),
    (np.bool_, np.float16, np.float64),
    (np.int32, np.complex64, np.complex128),
])
def test_mixed_dtypes_follow_numpy_promotion(backend, rng, a, b, expected):
    x = random_array(rng, (5, 5), a)
    k = random_array(rng, (2, 2), b)
    for args in [(x, k), (random_array(rng, (5, 5), b), random_array(rng, (2, 2), a))]:
        got = gpuconv.correlate2d(backend.xp.asarray(args[0]), backend.xp.asarray(args[1]))
        assert got.dtype == np.dtype(expected)
    wide = np.complex128 if np.dtype(expected).kind == "c" else np.float64
    got = gpuconv.correlate2d(backend.xp.asarray(x), backend.xp.asarray(k))
    assert_close(got, scipy.signal.correlate2d(x.astype(wide), k.astype(wide)), expected,
                 xp=backend.xp)
    w = random_array(rng, (3, 1, 2, 2), b)
    bias = random_array(rng, (3,), b)
    y = gpuconv.conv2d(backend.xp.asarray(x[None, None]), backend.xp.asarray(w),
                       backend.xp.asarray(bias))
    assert y.dtype == np.dtype(expected)


def test_bias_dtype_takes_part_in_promotion(backend, rng):
    x = random_array(rng, (1, 2, 5, 5), np.float32)
    w = random_array(rng, (3, 2, 2, 2), np.float32)
    assert gpuconv.conv2d(x, w, np.zeros(3, np.float64)).dtype == np.float64
    assert gpuconv.conv2d(x, w, np.zeros(3, np.complex64)).dtype == np.complex64
    assert gpuconv.conv_transpose2d(x[:, :2], w[:2], np.zeros(2, np.float64)).dtype == np.float64


def test_python_lists_and_scalars_are_float64(backend):
    got = gpuconv.correlate2d([[1, 2], [3, 4]], [[1, 1]], "valid")
    assert_close(got, np.array([[3.0], [7.0]]), xp=backend.xp)
    np.testing.assert_array_equal(to_host(got), [[3.0], [7.0]])


@pytest.mark.parametrize("bad", [
    np.array([[1.0, 2.0]], dtype=object),
    np.array([["a", "b"]]),
    np.array([[b"a", b"b"]]),
    np.array([["2020-01-01", "2020-01-02"]], dtype="datetime64[D]"),
    np.array([[1, 2]], dtype="timedelta64[s]"),
    np.zeros((1, 2), dtype=[("a", float)]),
], ids=["object", "str", "bytes", "datetime64", "timedelta64", "structured"])
def test_non_numeric_dtypes_are_type_errors(backend, bad):
    pattern = f"has dtype {re.escape(str(np.dtype(bad.dtype)))}.*allowed: float16, float32"
    with pytest.raises(TypeError, match=r"in1 " + pattern):
        gpuconv.correlate2d(bad, np.ones((1, 1)))
    with pytest.raises(TypeError, match=r"in2 " + pattern):
        gpuconv.convolve2d(np.ones((3, 3)), bad)
    with pytest.raises(TypeError, match=r"input " + pattern):
        gpuconv.conv2d(bad[None, None], np.ones((1, 1, 1, 1)))
    with pytest.raises(TypeError, match=r"weight " + pattern):
        gpuconv.conv_transpose2d(np.ones((1, 1, 2, 2)), bad[None, None])
    with pytest.raises(TypeError, match=r"bias " + pattern):
        gpuconv.conv2d(np.ones((1, 1, 2, 2)), np.ones((2, 1, 1, 1)), bad[0])


def _layouts(x):
    return {
        "reversed-strided": x[::-1, ::-2],
        "fortran": np.asfortranarray(x),
        "transposed": x.T,
        "strided-offset": x[1::2, 2::3],
        "broadcast": np.broadcast_to(x[:1], x.shape),
    }


@pytest.mark.parametrize("layout", ["reversed-strided", "fortran", "transposed",
                                    "strided-offset", "broadcast"])
@pytest.mark.parametrize("method", METHODS)
def test_non_contiguous_inputs(backend, rng, method, layout):
    x = _layouts(rng.standard_normal((12, 14)))[layout]
    k = _layouts(rng.standard_normal((4, 6)))[layout]
    for mode, boundary in [("full", "fill"), ("same", "symm"), ("same", "wrap"),
                           ("valid", "fill")]:
        expected = scipy.signal.correlate2d(np.ascontiguousarray(x), np.ascontiguousarray(k),
                                            mode, boundary)
        got = gpuconv.correlate2d(x, k, mode, boundary, method=method)
        assert_close(got, expected, np.float64, xp=backend.xp)


@pytest.mark.parametrize("method", METHODS)
def test_non_contiguous_conv2d_inputs(backend, rng, method):
    x = rng.standard_normal((4, 6, 9, 10))
    w = rng.standard_normal((3, 6, 3, 2))
    b = rng.standard_normal(6)
    cases = [
        (x[::-1, :, ::-1, ::2], w[:, ::-1]),
        (np.asfortranarray(x), np.asfortranarray(w)),
        (x.transpose(0, 1, 3, 2), w.transpose(0, 1, 3, 2)),
        (x[:, ::2], w[:, ::2]),
    ]
    for xv, wv in cases:
        xc, wc = np.ascontiguousarray(xv), np.ascontiguousarray(wv)
        got = gpuconv.conv2d(xv, wv, b[::-2], padding=1, method=method)
        expected = reference.conv2d(xc, wc, b[::-2].copy(), padding=(1, 1, 1, 1))
        assert_close(got, expected, np.float64, xp=backend.xp)
        y = rng.standard_normal((xv.shape[0], wv.shape[0]) + got.shape[2:])[..., ::-1]
        got_t = gpuconv.conv_transpose2d(y, wv, padding=1, method=method)
        expected_t = gpuconv.conv_transpose2d(np.ascontiguousarray(y), wc, padding=1,
                                              method=method)
        assert_close(got_t, expected_t, np.float64, xp=backend.xp)


def test_inputs_are_not_modified(backend, rng):
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    copies = [a.copy() for a in (x, w, b)]
    gpuconv.conv2d(x, w, b, padding=1, padding_mode="reflect")
    gpuconv.conv_transpose2d(x[:, :3], w[:3], stride=2)
    gpuconv.correlate2d(x, w[0, 0], "same", "symm")
    gpuconv.convolve2d(x, w[0, 0])
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


def _op_calls(method):
    """Every op with options that make each method extend, pad, flip, stride or scatter."""
    return {
        "correlate2d-same-symm": lambda a: gpuconv.correlate2d(a["x"], a["k"], "same", "symm",
                                                               method=method),
        "correlate2d-full-fill": lambda a: gpuconv.correlate2d(a["x"], a["k"], "full", "fill",
                                                               0.5, method=method),
        "convolve2d-full-wrap": lambda a: gpuconv.convolve2d(a["x"], a["k"], "full", "wrap",
                                                             method=method),
        "convolve2d-valid": lambda a: gpuconv.convolve2d(a["x"], a["k"], "valid",
                                                         method=method),
        "conv2d-reflect": lambda a: gpuconv.conv2d(a["x"], a["w"], a["b"], stride=(2, 1),
                                                   padding=1, padding_mode="reflect",
                                                   method=method),
        "conv2d-groups": lambda a: gpuconv.conv2d(a["x6"], a["wg"], None, padding=(1, 0),
                                                  groups=3, method=method),
        "conv_transpose2d": lambda a: gpuconv.conv_transpose2d(a["x"], a["wt"], a["b"][:2],
                                                               stride=2, padding=1,
                                                               output_padding=1,
                                                               method=method),
    }


def _op_inputs(rng, dtype):
    return {"x": random_array(rng, (2, 3, 9, 8), dtype),
            "x6": random_array(rng, (1, 6, 7, 7), dtype),
            "k": random_array(rng, (3, 4), dtype),
            "w": random_array(rng, (4, 3, 3, 2), dtype),
            "wg": random_array(rng, (6, 2, 2, 3), dtype),
            "wt": random_array(rng, (3, 2, 3, 3), dtype),
            "b": random_array(rng, (4,), dtype)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
@pytest.mark.parametrize("method", ["direct", "gemm", "fft", "overlap-add", "auto"])
def test_read_only_inputs_work_and_are_never_modified(backend, rng, method, dtype):
    # Memory-mapped files, broadcasts and arrays other libraries lend out are
    # read-only: every op and method must read them without writing.
    inputs = _op_inputs(rng, dtype)
    originals = {name: a.copy() for name, a in inputs.items()}
    for name, call in _op_calls(method).items():
        read_only = {}
        for key, a in inputs.items():
            read_only[key] = a.copy()
            read_only[key].flags.writeable = False
        got = call(read_only)
        want = call({key: a.copy() for key, a in inputs.items()})
        assert_close(got, want, dtype, xp=backend.xp)
        for key, a in read_only.items():
            np.testing.assert_array_equal(a, originals[key], err_msg=f"{name} changed {key}")
        # Writable inputs (and, on a device backend, the device copies) stay unchanged too.
        device = {key: backend.asarray(a.copy()) for key, a in inputs.items()}
        call(device)
        for key, a in device.items():
            np.testing.assert_array_equal(to_host(a), originals[key],
                                          err_msg=f"{name} changed {key}")
