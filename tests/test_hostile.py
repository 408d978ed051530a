"""Hostile inputs and situations: each gets a clear error or the right answer.

One table: every row builds its inputs, calls the default method, and names
either the exception it must raise (checked for the argument's name) or an
oracle (SciPy, ``gpuconv.reference``) whose answer it must give, NaN and Inf
included.  Every row also checks that its inputs were not modified.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import scipy.signal

import gpuconv
from gpuconv import reference


def _nan_equal_close(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    # float32 results against a float64 oracle: float32's rounding of sums of a few dozen terms.
    rtol = atol = 1e-5 if got.dtype in (np.float32, np.complex64) else 1e-10
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=rtol, atol=atol)


def _sp(fn, *args, **kwargs):
    return getattr(scipy.signal, fn)(*args, **kwargs)


R = np.random.default_rng(20261202)
IMG = R.standard_normal((40, 37))
K3 = R.standard_normal((3, 3))
K15 = R.standard_normal((15, 15))
X4 = R.standard_normal((2, 3, 11, 10))
W4 = R.standard_normal((4, 3, 3, 3))


def _nan_image():
    a = R.standard_normal((200, 190))
    a[50, 60] = np.nan
    a[150, 20] = -np.inf
    return a


def _readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def _fortran(a):
    return np.asfortranarray(a)


class _Subclass(np.ndarray):
    pass


ROWS = [
    # (id, inputs, call(inputs) -> result, oracle(inputs) -> expected | exception, argname)
    ("nan-large-kernel", lambda: (_nan_image(), R.standard_normal((25, 25))),
     lambda a, k: gpuconv.correlate2d(a, k, "same"),
     lambda a, k: _sp("correlate2d", a, k, "same")),
    ("inf-convolve-symm", lambda: (_nan_image(), K15),
     lambda a, k: gpuconv.convolve2d(a, k, "same", "symm"),
     lambda a, k: _sp("convolve2d", a, k, "same", "symm")),
    ("nan-fillvalue", lambda: (np.ones((12, 14)), np.ones((3, 3))),
     lambda a, k: gpuconv.correlate2d(a, k, fillvalue=np.nan),
     lambda a, k: _sp("correlate2d", a, k, fillvalue=np.nan)),
    ("inf-fillvalue-large", lambda: (IMG, K15),
     lambda a, k: gpuconv.convolve2d(a, k, "same", fillvalue=np.inf),
     lambda a, k: _sp("convolve2d", a, k, "same", fillvalue=np.inf)),
    ("nan-kernel", lambda: (IMG, np.array([[1.0, np.nan], [0.0, 2.0]])),
     lambda a, k: gpuconv.correlate2d(a, k),
     lambda a, k: _sp("correlate2d", a, k)),
    ("nan-conv2d-large", lambda: (np.where(R.random((1, 2, 80, 80)) < 0.001, np.nan,
                                           R.standard_normal((1, 2, 80, 80))),
                                  R.standard_normal((3, 2, 21, 21))),
     lambda x, w: gpuconv.conv2d(x, w, padding=10),
     lambda x, w: reference.conv2d(x, w, padding=(10, 10, 10, 10))),
    ("big-endian-f8", lambda: (IMG.astype(">f8"), K3.astype(">f8")),
     lambda a, k: gpuconv.correlate2d(a, k, "same", "wrap"),
     lambda a, k: _sp("correlate2d", a.astype("<f8"), k.astype("<f8"), "same", "wrap")),
    ("big-endian-conv2d", lambda: (X4.astype(">f4"), W4.astype(">f4")),
     lambda x, w: gpuconv.conv2d(x, w, padding=1),
     lambda x, w: reference.conv2d(x.astype("<f8"), w.astype("<f8"), padding=(1, 1, 1, 1))),
    ("read-only", lambda: (_readonly(IMG), _readonly(K3)),
     lambda a, k: gpuconv.convolve2d(a, k, "same"),
     lambda a, k: _sp("convolve2d", a, k, "same")),
    ("read-only-conv2d", lambda: (_readonly(X4), _readonly(W4)),
     lambda x, w: gpuconv.conv2d(x, w, stride=2, padding="same"),
     lambda x, w: gpuconv.conv2d(np.array(x), np.array(w), stride=2, padding="same",
                                 method="direct")),
    ("negative-strides", lambda: (IMG[::-1, ::-2], K3[:, ::-1]),
     lambda a, k: gpuconv.correlate2d(a, k),
     lambda a, k: _sp("correlate2d", np.ascontiguousarray(a), np.ascontiguousarray(k))),
    ("fortran-order", lambda: (_fortran(IMG), _fortran(K15)),
     lambda a, k: gpuconv.convolve2d(a, k, "valid"),
     lambda a, k: _sp("convolve2d", a, k, "valid")),
    ("ndarray-subclass", lambda: (IMG.view(_Subclass), K3),
     lambda a, k: gpuconv.correlate2d(a, k),
     lambda a, k: _sp("correlate2d", np.asarray(a), k)),
    ("masked-array-data-used", lambda: (np.ma.masked_greater(IMG, 1.0), K3),
     lambda a, k: gpuconv.correlate2d(a, k),
     lambda a, k: _sp("correlate2d", np.asarray(a), k)),
    ("nested-lists", lambda: ([[1, 2, 3], [4, 5, 6]], [[1, -1]]),
     lambda a, k: gpuconv.convolve2d(a, k),
     lambda a, k: _sp("convolve2d", a, k).astype(float)),
    ("bool-inputs", lambda: (R.random((9, 8)) > 0.5, np.ones((2, 2), bool)),
     lambda a, k: gpuconv.correlate2d(a, k),
     lambda a, k: _sp("correlate2d", a.astype(float), k.astype(float))),
    ("int8-no-overflow", lambda: (np.full((6, 6), 100, np.int8), np.full((3, 3), 100, np.int8)),
     lambda a, k: gpuconv.correlate2d(a, k, "valid"),
     lambda a, k: np.full((4, 4), 90000.0)),
    ("uint-inputs", lambda: (R.integers(0, 255, (20, 20)).astype(np.uint8),
                             R.integers(0, 9, (5, 5)).astype(np.uint16)),
     lambda a, k: gpuconv.convolve2d(a, k, "same"),
     lambda a, k: _sp("convolve2d", a.astype(float), k.astype(float), "same")),
    ("float16-large-values", lambda: ((R.standard_normal((16, 16)) * 1000).astype(np.float16),
                                      np.ones((5, 5), np.float16)),
     lambda a, k: gpuconv.correlate2d(a, k, "same").astype(np.float64),
     lambda a, k: _sp("correlate2d", a.astype(float), k.astype(float), "same")
     .astype(np.float16).astype(np.float64)),
    ("0d-numpy-fillvalue", lambda: (IMG, K3),
     lambda a, k: gpuconv.correlate2d(a, k, fillvalue=np.float32(2.5)),
     lambda a, k: _sp("correlate2d", a, k, fillvalue=2.5)),
    ("array-fillvalue-1-element", lambda: (IMG, K3),
     lambda a, k: gpuconv.correlate2d(a, k, fillvalue=np.array([2.5])),
     lambda a, k: _sp("correlate2d", a, k, fillvalue=2.5)),
    ("complex-fill-complex-input", lambda: (IMG + 1j * IMG[::-1], K3 - 2j),
     lambda a, k: gpuconv.convolve2d(a, k, fillvalue=1 - 1j),
     lambda a, k: _sp("convolve2d", a, k, fillvalue=1 - 1j)),
    ("kernel-contains-image-valid", lambda: (R.standard_normal((3, 4)),
                                             R.standard_normal((7, 9))),
     lambda a, k: gpuconv.correlate2d(a, k, "valid"),
     lambda a, k: _sp("correlate2d", a, k, "valid")),
    ("1x1-everything", lambda: (np.array([[3.0]]), np.array([[2.0]])),
     lambda a, k: gpuconv.convolve2d(a, k, "same", "symm"),
     lambda a, k: np.array([[6.0]])),
    ("one-row-image", lambda: (R.standard_normal((1, 300)), R.standard_normal((1, 41))),
     lambda a, k: gpuconv.correlate2d(a, k, "same", "wrap"),
     lambda a, k: _sp("correlate2d", a, k, "same", "wrap")),
    ("kernel-wider-than-wrap-period", lambda: (R.standard_normal((3, 4)),
                                               R.standard_normal((9, 11))),
     lambda a, k: gpuconv.correlate2d(a, k, "full", "wrap"),
     lambda a, k: _sp("correlate2d", a, k, "full", "wrap")),
    ("empty-batch", lambda: (np.ones((0, 5, 6)), K3),
     lambda a, k: gpuconv.correlate2d(a, k, "same"),
     lambda a, k: np.ones((0, 5, 6))),
    ("empty-batch-conv2d", lambda: (np.ones((0, 3, 5, 5)), W4),
     lambda x, w: gpuconv.conv2d(x, w, bias=np.ones(4)),
     lambda x, w: np.zeros((0, 4, 3, 3))),
    ("unbatched-conv2d", lambda: (X4[0], W4),
     lambda x, w: gpuconv.conv2d(x, w, padding=1, padding_mode="reflect"),
     lambda x, w: reference.conv2d(x[None], w, padding=(1, 1, 1, 1),
                                   padding_mode="reflect")[0]),
    ("huge-stride-transpose", lambda: (R.standard_normal((1, 1, 2, 2)),
                                       R.standard_normal((1, 1, 3, 3))),
     lambda x, w: gpuconv.conv_transpose2d(x, w, stride=1000)[..., ::999, ::999],
     lambda x, w: reference.conv_transpose2d(x, w, stride=(1000, 1000))[..., ::999, ::999]),
    ("huge-stride-overlap-add", lambda: (R.standard_normal((1, 1, 9, 9)),
                                         R.standard_normal((2, 1, 3, 3))),
     lambda x, w: gpuconv.conv2d(x, w, stride=1024, method="overlap-add"),
     lambda x, w: reference.conv2d(x, w, stride=(1024, 1024))),
    ("padding-wider-than-input", lambda: (R.standard_normal((1, 2, 3, 3)),
                                          R.standard_normal((2, 2, 2, 2))),
     lambda x, w: gpuconv.conv2d(x, w, padding=7),
     lambda x, w: reference.conv2d(x, w, padding=(7, 7, 7, 7))),
    ("dilation-larger-than-input-with-padding", lambda: (R.standard_normal((1, 1, 4, 4)),
                                                         R.standard_normal((1, 1, 2, 2))),
     lambda x, w: gpuconv.conv2d(x, w, dilation=6, padding=3),
     lambda x, w: reference.conv2d(x, w, dilation=(6, 6), padding=(3, 3, 3, 3))),
    ("int-conv-transpose-exact", lambda: (R.integers(-9, 9, (1, 2, 5, 5)),
                                          R.integers(-9, 9, (2, 3, 3, 3))),
     lambda x, w: gpuconv.conv_transpose2d(x, w, stride=2, output_padding=1),
     lambda x, w: reference.conv_transpose2d(x, w, stride=(2, 2), output_padding=(1, 1))),
    ("integer-valued-exact-equality", lambda: (np.arange(1, 31.0).reshape(10, 3),
                                               np.arange(1, 101.0).reshape(10, 10)),
     lambda a, k: gpuconv.convolve2d(a, k, "same", "wrap"),
     lambda a, k: _sp("convolve2d", a, k, "same", "wrap")),
    # -- errors -------------------------------------------------------------------------
    ("huge-padding", lambda: (np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))),
     lambda x, w: gpuconv.conv2d(x, w, padding=20000), MemoryError, "padding"),
    ("huge-output-kernel-view", lambda: (np.ones((2, 2)),
                                         np.broadcast_to(np.ones(1), (200000, 200000))),
     lambda a, k: gpuconv.correlate2d(a, k), MemoryError, "output of shape"),
    ("object-array", lambda: (np.array([[1, "a"]], dtype=object), K3),
     lambda a, k: gpuconv.correlate2d(a, k), TypeError, "in1"),
    ("string-kernel", lambda: (IMG, "kernel"),
     lambda a, k: gpuconv.convolve2d(a, k), TypeError, "in2"),
    ("datetime-input", lambda: (np.zeros((3, 3), "datetime64[s]"), K3),
     lambda a, k: gpuconv.correlate2d(a, k), TypeError, "in1"),
    ("ragged-list", lambda: ([[1.0, 2.0], [3.0]], K3),
     lambda a, k: gpuconv.correlate2d(a, k), TypeError, "in1"),
    ("nan-stride", lambda: (X4, W4),
     lambda x, w: gpuconv.conv2d(x, w, stride=float("nan")), TypeError, "stride"),
    ("numpy-int-stride-ok", lambda: (X4, W4),
     lambda x, w: gpuconv.conv2d(x, w, stride=np.int64(2)),
     lambda x, w: reference.conv2d(x, w, stride=(2, 2))),
    ("bool-groups", lambda: (X4, W4),
     lambda x, w: gpuconv.conv2d(x, w, groups=True), TypeError, "groups"),
    ("complex-fill-real-input", lambda: (IMG, K3),
     lambda a, k: gpuconv.correlate2d(a, k, fillvalue=1j), ValueError, "fillvalue"),
    ("choose-method-groups-zero", lambda: (X4, W4),
     lambda x, w: gpuconv.choose_method("conv2d", x, w, groups=0), ValueError, "groups"),
    ("fft-over-scratch", lambda: (R.standard_normal((300, 300)), K15),
     lambda a, k: _with_scratch(2**16, lambda: gpuconv.correlate2d(a, k, method="fft")),
     MemoryError, "scratch limit"),
]


def _with_scratch(nbytes, fn):
    with gpuconv.scratch_limit(nbytes):
        return fn()


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_hostile(row):
    _, make, call, expect, *argname = row
    inputs = make()
    # Read-only inputs cannot change (and a broadcast view may be too big to copy).
    before = tuple(a if isinstance(a, np.ndarray) and not a.flags.writeable
                   else copy.deepcopy(a) for a in inputs)
    if isinstance(expect, type) and issubclass(expect, BaseException):
        with pytest.raises(expect, match=re.escape(argname[0])):
            call(*inputs)
    else:
        got = call(*inputs)
        want = expect(*inputs)
        if isinstance(got, np.ndarray) and got.dtype.kind == "f" and np.issubdtype(
                np.asarray(want).dtype, np.integer):
            np.testing.assert_array_equal(got, want)
        else:
            _nan_equal_close(got, want)
    for b, a in zip(before, inputs):
        if a is b:
            continue  # read-only
        if isinstance(b, np.ndarray):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        else:
            assert a == b


def test_table_has_at_least_40_rows():
    assert len(ROWS) >= 40
