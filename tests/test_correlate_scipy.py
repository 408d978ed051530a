"""correlate2d / convolve2d against scipy.signal on fresh random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

import gpuconv
from conftest import assert_close, random_array

SHAPES = [
    # (H, W, kh, kw): odd, even, 1xN, Nx1, kernel larger than the image
    (7, 9, 3, 4),
    (5, 5, 2, 2),
    (1, 8, 1, 3),
    (9, 1, 4, 1),
    (3, 4, 5, 6),
    (6, 6, 6, 6),
]


@pytest.mark.parametrize("convolution", [False, True], ids=["correlate", "convolve"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("method", ["direct", "gemm"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_matches_scipy(backend, rng, convolution, mode, boundary, method, dtype):
    ours = gpuconv.convolve2d if convolution else gpuconv.correlate2d
    theirs = scipy.signal.convolve2d if convolution else scipy.signal.correlate2d
    for H, W, kh, kw in SHAPES:
        x = random_array(rng, (H, W), dtype)
        k = random_array(rng, (kh, kw), dtype)
        fill = complex(rng.standard_normal(), 0.5) if np.dtype(dtype).kind == "c" else 0.75
        expected = theirs(x, k, mode, boundary, fillvalue=fill)
        got = ours(backend.xp.asarray(x), backend.xp.asarray(k), mode, boundary, fill,
                   method=method)
        assert_close(got, expected, dtype, xp=backend.xp)
