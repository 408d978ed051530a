"""output_shape (the chapter's size formula), and the textbook loops in
gpuconv.reference checked against simple independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpuconv
from conftest import check_array, to_host
from gpuconv import reference


@pytest.mark.parametrize("args, kwargs, expected", [
    # The chapter: (nh - kh + 1) x (nw - kw + 1).
    (((6, 8), (1, 2)), {}, (6, 7)),
    (((3, 3), (2, 2)), {}, (2, 2)),
    # Padding ph on each side: nh - kh + 2 ph + 1.
    ((8, 3), {"padding": 1}, (8, 8)),
    (((8, 8), (5, 3)), {"padding": (2, 1)}, (8, 8)),
    # Stride: floor((nh - kh + 2 ph + sh) / sh).
    ((8, 3), {"padding": 1, "stride": 2}, (4, 4)),
    (((8, 8), (3, 5)), {"padding": (0, 1), "stride": (3, 4)}, (2, 2)),
    ((224, 7), {"stride": 2, "padding": 3}, (112, 112)),
    # Dilation: the kernel spans d (k - 1) + 1.
    ((10, 3), {"dilation": 2}, (6, 6)),
    (((10, 9), (3, 3)), {"dilation": (2, 4)}, (6, 1)),
    # Rules.
    ((7, 3), {"padding": "valid"}, (5, 5)),
    ((7, 3), {"padding": "same"}, (7, 7)),
    ((7, 4), {"padding": "same", "dilation": 3}, (7, 7)),
    ((7, 3), {"padding": "same", "stride": 2}, (4, 4)),
    (((9, 10), (2, 5)), {"padding": "same", "stride": (4, 3)}, (3, 4)),
])
def test_output_shape_table(args, kwargs, expected):
    assert gpuconv.output_shape(*args, **kwargs) == expected


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 7), s=st.integers(1, 4), p=st.integers(0, 4),
       d=st.integers(1, 3))
def test_output_shape_agrees_with_conv2d(n, k, s, p, d):
    fits = n + 2 * p >= d * (k - 1) + 1
    if not fits:
        with pytest.raises(ValueError, match="kernel_size"):
            gpuconv.output_shape(n, k, stride=s, padding=p, dilation=d)
        return
    expected = ((n + 2 * p - d * (k - 1) - 1) // s + 1,) * 2
    assert gpuconv.output_shape(n, k, stride=s, padding=p, dilation=d) == expected
    same = gpuconv.output_shape(n, k, stride=s, padding="same", dilation=d)
    assert same == (math.ceil(n / s),) * 2
    x = np.zeros((1, 1, n, n))
    w = np.zeros((1, 1, k, k))
    assert gpuconv.conv2d(x, w, stride=s, padding=p, dilation=d).shape[2:] == expected
    assert gpuconv.conv2d(x, w, stride=s, padding="same", dilation=d).shape[2:] == same


def test_output_shape_accepts_numpy_integers():
    assert gpuconv.output_shape(np.int64(6), (np.int32(3), 2)) == (4, 5)


# -- the textbook loops ---------------------------------------------------------

def test_reference_corr2d_against_sliding_windows(rng):
    X = rng.standard_normal((7, 9))
    K = rng.standard_normal((3, 4))
    windows = np.lib.stride_tricks.sliding_window_view(X, K.shape)
    np.testing.assert_allclose(reference.corr2d(X, K), np.einsum("ijuv,uv->ij", windows, K),
                               rtol=1e-12)


def test_reference_corr2d_chapter_example():
    X = np.arange(9.0).reshape(3, 3)
    K = np.array([[0.0, 1.0], [2.0, 3.0]])
    # 0*0 + 1*1 + 3*2 + 4*3 = 19, written out by hand.
    expected = np.array([[0 * 0 + 1 * 1 + 3 * 2 + 4 * 3, 1 * 0 + 2 * 1 + 4 * 2 + 5 * 3],
                         [3 * 0 + 4 * 1 + 6 * 2 + 7 * 3, 4 * 0 + 5 * 1 + 7 * 2 + 8 * 3]])
    np.testing.assert_array_equal(reference.corr2d(X, K), expected)


def test_reference_multi_in_and_multi_out(rng):
    X = rng.standard_normal((3, 6, 5))
    K = rng.standard_normal((4, 3, 2, 2))
    windows = np.lib.stride_tricks.sliding_window_view(X, (2, 2), axis=(1, 2))
    expected = np.einsum("cijuv,ocuv->oij", windows, K)
    np.testing.assert_allclose(reference.corr2d_multi_in(X, K[0]), expected[0], rtol=1e-12)
    np.testing.assert_allclose(reference.corr2d_multi_in_out(X, K), expected, rtol=1e-12)


def test_reference_one_by_one_is_a_matrix_product(rng):
    X = rng.standard_normal((3, 4, 5))
    K = rng.standard_normal((2, 3, 1, 1))
    Y = reference.corr2d_multi_in_out_1x1(X, K)
    for i in range(4):
        for j in range(5):
            np.testing.assert_allclose(Y[:, i, j], K[:, :, 0, 0] @ X[:, i, j], rtol=1e-12)
    np.testing.assert_allclose(Y, reference.corr2d_multi_in_out(X, K), rtol=1e-12)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_reference_pool2d(rng, mode):
    X = rng.standard_normal((6, 7))
    windows = np.lib.stride_tricks.sliding_window_view(X, (2, 3))
    expected = windows.max(axis=(2, 3)) if mode == "max" else windows.mean(axis=(2, 3))
    np.testing.assert_allclose(reference.pool2d(X, (2, 3), mode), expected, rtol=1e-12)


def test_reference_pool2d_rejects_unknown_mode():
    with pytest.raises(ValueError, match=r"mode must be 'max' or 'avg'; got 'min'"):
        reference.pool2d(np.ones((3, 3)), (2, 2), "min")


def test_reference_conv2d_against_padded_windows(rng):
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6)
    got = reference.conv2d(x, w, b, stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2),
                           groups=2, padding_mode="replicate")
    xp = np.pad(x, ((0, 0), (0, 0), (1, 0), (2, 1)), mode="edge")
    # Dilation (1, 2) takes columns 0, 2 of each 3-wide window.
    windows = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))[..., ::2]
    windows = windows[:, :, ::2, :]
    groups = [np.einsum("ncijuv,ocuv->noij", windows[:, 2 * g:2 * g + 2], w[3 * g:3 * g + 3])
              for g in range(2)]
    expected = np.concatenate(groups, axis=1) + b[None, :, None, None]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_corr2d_is_reference_corr2d(backend, rng):
    X = rng.standard_normal((9, 8))
    K = rng.standard_normal((4, 3))
    got = gpuconv.corr2d(backend.xp.asarray(X), backend.xp.asarray(K))
    check_array(got, backend.xp, np.float64, (6, 6))
    np.testing.assert_allclose(to_host(got), reference.corr2d(X, K), rtol=1e-12, atol=1e-12)
