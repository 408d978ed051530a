"""correlate2d / convolve2d / corr2d against scipy.signal, scipy.ndimage and the
textbook loops, on fresh random inputs.

``test_correlate_scipy.py`` sweeps every mode x boundary in float64/complex128;
this file adds SciPy's boundary aliases, the other dtypes, the valid-mode
swap rule on its own, kernels larger than the image, 1xN/Nx1 shapes, batches,
scipy.ndimage and the reference loops.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuconv
from conftest import assert_close, random_array
from gpuconv import reference

METHODS = ["direct", "gemm"]
DTYPES = [np.float16, np.float32, np.float64, np.complex64, np.complex128]
MODES = ["full", "same", "valid"]
# Every spelling SciPy accepts.
BOUNDARIES = ["fill", "pad", "wrap", "circular", "symm", "symmetric"]


def _pair(convolution):
    if convolution:
        return gpuconv.convolve2d, scipy.signal.convolve2d
    return gpuconv.correlate2d, scipy.signal.correlate2d


def _oracle_inputs(x, k):
    """float16 inputs go to SciPy as float64 (it has no float16 loop); the values are the same."""
    if x.dtype == np.float16:
        return x.astype(np.float64), k.astype(np.float64)
    return x, k


@pytest.mark.parametrize("convolution", [False, True], ids=["correlate", "convolve"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", METHODS)
def test_every_mode_boundary_alias_and_dtype(backend, rng, method, dtype, mode, boundary,
                                            convolution):
    ours, theirs = _pair(convolution)
    kind = np.dtype(dtype).kind
    for (H, W), (kh, kw) in [((6, 7), (3, 2)), ((5, 5), (4, 4)), ((1, 6), (1, 3))]:
        x = random_array(rng, (H, W), dtype)
        k = random_array(rng, (kh, kw), dtype)
        fill = complex(rng.standard_normal(), rng.standard_normal()) if kind == "c" else 1.5
        expected = theirs(*_oracle_inputs(x, k), mode, boundary, fillvalue=fill)
        got = ours(backend.xp.asarray(x), backend.xp.asarray(k), mode, boundary, fill,
                   method=method)
        assert_close(got, expected, dtype, xp=backend.xp)


@pytest.mark.parametrize("convolution", [False, True], ids=["correlate", "convolve"])
@pytest.mark.parametrize("method", METHODS + ["auto"])
@pytest.mark.parametrize("shapes", [
    ((3, 4), (5, 6)),     # kernel larger in both axes: SciPy swaps
    ((4, 4), (4, 4)),     # equal: no swap needed, a single output
    ((2, 7), (2, 9)),     # equal in one axis, larger in the other: swap
    ((1, 1), (3, 2)),
], ids=["larger", "equal", "equal-rows", "scalar-image"])
def test_valid_mode_swap_rule(backend, rng, method, shapes, convolution):
    # SciPy's valid mode swaps the inputs when in2 contains in1; with complex
    # data the conjugation then lands on the other input, which would show.
    ours, theirs = _pair(convolution)
    x = random_array(rng, shapes[0], np.complex128)
    k = random_array(rng, shapes[1], np.complex128)
    expected = theirs(x, k, "valid")
    got = ours(backend.xp.asarray(x), backend.xp.asarray(k), "valid", method=method)
    assert_close(got, expected, np.complex128, xp=backend.xp)


@pytest.mark.parametrize("convolution", [False, True], ids=["correlate", "convolve"])
def test_valid_mode_neither_contains_the_other(backend, rng, convolution):
    ours, theirs = _pair(convolution)
    x = rng.standard_normal((3, 6))
    k = rng.standard_normal((5, 2))
    with pytest.raises(ValueError):
        theirs(x, k, "valid")
    with pytest.raises(ValueError, match=r"mode='valid'.*\(3, 6\).*\(5, 2\)"):
        ours(x, k, "valid")


@pytest.mark.parametrize("convolution", [False, True], ids=["correlate", "convolve"])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("mode", ["full", "same"])
@pytest.mark.parametrize("method", METHODS)
def test_kernel_larger_than_image(backend, rng, method, mode, boundary, convolution):
    # The extension then reaches more than one period (wrap) or reflection (symm).
    ours, theirs = _pair(convolution)
    for (H, W), (kh, kw) in [((2, 3), (7, 8)), ((1, 1), (4, 3)), ((3, 2), (3, 9))]:
        x = rng.standard_normal((H, W))
        k = rng.standard_normal((kh, kw))
        expected = theirs(x, k, mode, boundary, fillvalue=-0.5)
        got = ours(backend.xp.asarray(x), backend.xp.asarray(k), mode, boundary, -0.5,
                   method=method)
        assert_close(got, expected, np.float64, xp=backend.xp)


@pytest.mark.parametrize("convolution", [False, True], ids=["correlate", "convolve"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shapes", [
    ((1, 9), (1, 4)), ((9, 1), (4, 1)), ((1, 9), (3, 1)), ((7, 5), (1, 1)), ((6, 1), (1, 5)),
], ids=["row-row", "col-col", "row-col", "1x1-kernel", "col-row"])
@pytest.mark.parametrize("mode", MODES)
def test_thin_shapes(backend, rng, mode, shapes, method, convolution):
    ours, theirs = _pair(convolution)
    x = rng.standard_normal(shapes[0])
    k = rng.standard_normal(shapes[1])
    try:
        expected = theirs(x, k, mode, "symm")
    except ValueError:
        with pytest.raises(ValueError, match="mode='valid'"):
            ours(x, k, mode, "symm", method=method)
        return
    got = ours(backend.xp.asarray(x), backend.xp.asarray(k), mode, "symm", method=method)
    assert_close(got, expected, np.float64, xp=backend.xp)


@pytest.mark.parametrize("convolution", [False, True], ids=["correlate", "convolve"])
@pytest.mark.parametrize("mode, boundary", [("full", "fill"), ("same", "wrap"),
                                            ("same", "symm"), ("valid", "fill")])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch", [(3,), (2, 3), (1, 1, 2)], ids=str)
def test_batched_equals_loop_of_scipy_calls(backend, rng, batch, method, mode, boundary,
                                            convolution):
    ours, theirs = _pair(convolution)
    x = random_array(rng, batch + (6, 5), np.complex128)
    k = random_array(rng, (3, 2), np.complex128)
    got = ours(backend.xp.asarray(x), backend.xp.asarray(k), mode, boundary, 0.25 - 1j,
               method=method)
    planes = x.reshape(-1, 6, 5)
    expected = np.stack([theirs(p, k, mode, boundary, fillvalue=0.25 - 1j) for p in planes])
    assert_close(got, expected.reshape(batch + expected.shape[1:]), np.complex128,
                 xp=backend.xp)


def test_batched_valid_with_kernel_larger_swaps_every_plane(backend, rng):
    x = random_array(rng, (4, 2, 3), np.complex128)
    k = random_array(rng, (5, 4), np.complex128)
    got = gpuconv.correlate2d(backend.xp.asarray(x), backend.xp.asarray(k), "valid")
    expected = np.stack([scipy.signal.correlate2d(p, k, "valid") for p in x])
    assert_close(got, expected, np.complex128, xp=backend.xp)


def test_empty_batch_gives_empty_result_of_the_right_shape(backend, rng):
    x = backend.xp.zeros((0, 3, 5, 6))
    got = gpuconv.correlate2d(x, backend.xp.ones((2, 3)), "valid")
    assert_close(got, np.empty((0, 3, 4, 4)), np.float64, xp=backend.xp)


@pytest.mark.parametrize("convolution", [False, True], ids=["correlate", "convolve"])
@pytest.mark.parametrize("boundary, ndimage_mode", [("fill", "constant"), ("wrap", "wrap"),
                                                    ("symm", "reflect")])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_mode_matches_ndimage_for_odd_kernels(backend, rng, dtype, method, boundary,
                                                   ndimage_mode, convolution):
    # For odd kernels SciPy's 'same' centre is ndimage's default origin; the
    # boundaries correspond as ndimage 'constant'/'wrap'/'reflect'.
    ours = gpuconv.convolve2d if convolution else gpuconv.correlate2d
    theirs = scipy.ndimage.convolve if convolution else scipy.ndimage.correlate
    for kh, kw in [(3, 3), (5, 1), (1, 7), (3, 5)]:
        x = random_array(rng, (9, 11), dtype)
        k = random_array(rng, (kh, kw), dtype)
        expected = theirs(x.astype(np.float64), k.astype(np.float64), mode=ndimage_mode,
                          cval=2.5)
        got = ours(backend.xp.asarray(x), backend.xp.asarray(k), "same", boundary, 2.5,
                   method=method)
        assert_close(got, expected, dtype, xp=backend.xp)


def test_batched_same_matches_ndimage_on_a_volume(backend, rng):
    # A (1, kh, kw) kernel on a (B, H, W) volume is a per-plane correlation.
    x = rng.standard_normal((4, 10, 8))
    k = rng.standard_normal((5, 3))
    expected = scipy.ndimage.correlate(x, k[None], mode="reflect")
    got = gpuconv.correlate2d(backend.xp.asarray(x), backend.xp.asarray(k), "same", "symm")
    assert_close(got, expected, np.float64, xp=backend.xp)


@pytest.mark.parametrize("method", METHODS + ["auto"])
@pytest.mark.parametrize("shapes", [((6, 8), (1, 2)), ((7, 7), (3, 3)), ((5, 9), (4, 2)),
                                    ((3, 3), (3, 3))])
def test_valid_correlation_matches_textbook_corr2d(backend, rng, shapes, method):
    X = rng.standard_normal(shapes[0])
    K = rng.standard_normal(shapes[1])
    expected = reference.corr2d(X, K)
    got = gpuconv.correlate2d(backend.xp.asarray(X), backend.xp.asarray(K), "valid",
                              method=method)
    assert_close(got, expected, np.float64, xp=backend.xp)
    assert_close(gpuconv.corr2d(backend.xp.asarray(X), backend.xp.asarray(K)), expected,
                 np.float64, xp=backend.xp)


def test_convolution_is_correlation_with_the_flipped_kernel(backend, rng):
    x = random_array(rng, (7, 6), np.complex128)
    k = random_array(rng, (3, 4), np.complex128)
    for mode in ["full", "valid"]:
        conv = gpuconv.convolve2d(x, k, mode)
        # correlate2d conjugates the kernel; undo that to isolate the flip.
        corr = gpuconv.correlate2d(x, np.conj(k[::-1, ::-1]), mode)
        assert_close(conv, corr, np.complex128, xp=backend.xp)


def test_complex_kernel_is_conjugated(backend, rng):
    x = rng.standard_normal((5, 5))
    k = np.array([[1j]])
    assert_close(gpuconv.correlate2d(x, k, "valid"), -1j * x, xp=backend.xp)
    assert_close(gpuconv.convolve2d(x, k, "valid"), 1j * x, xp=backend.xp)


def test_fill_value_is_used_only_outside_the_image(backend, rng):
    x = rng.standard_normal((4, 5))
    k = np.ones((3, 3))
    got = gpuconv.correlate2d(x, k, "full", "fill", 100.0)
    padded = np.pad(x, 2, constant_values=100.0)
    expected = reference.corr2d(padded, k)
    assert_close(got, expected, np.float64, xp=backend.xp)


def test_corr2d_detects_the_chapter_edges(backend):
    X = np.ones((6, 8))
    X[:, 2:6] = 0
    Y = gpuconv.corr2d(backend.xp.asarray(X), backend.xp.asarray(np.array([[1.0, -1.0]])))
    # Exact: every output is a difference of two of the same 0/1 values.
    assert_close(Y, np.tile([0.0, 1, 0, 0, 0, -1, 0], (6, 1)), xp=backend.xp)
    np.testing.assert_array_equal(backend.to_numpy(Y), np.tile([0, 1, 0, 0, 0, -1, 0], (6, 1)))
    # And the transposed image has no vertical edges left.
    Yt = gpuconv.corr2d(X.T, np.array([[1.0, -1.0]]))
    assert_close(Yt, np.zeros((8, 5)), xp=backend.xp)
    np.testing.assert_array_equal(backend.to_numpy(Yt), np.zeros((8, 5)))


def test_corr2d_does_not_swap(backend, rng):
    with pytest.raises(ValueError, match="K"):
        gpuconv.corr2d(rng.standard_normal((3, 3)), rng.standard_normal((4, 4)))


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(H=st.integers(1, 9), W=st.integers(1, 9), kh=st.integers(1, 9), kw=st.integers(1, 9),
       batch=st.sampled_from([(), (2,), (1, 2)]), mode=st.sampled_from(MODES),
       boundary=st.sampled_from(BOUNDARIES), convolution=st.booleans(),
       complex_=st.booleans())
def test_any_shapes_match_scipy(backend, rng, method, H, W, kh, kw, batch, mode, boundary,
                                convolution, complex_):
    ours, theirs = _pair(convolution)
    dtype = np.complex128 if complex_ else np.float64
    x = random_array(rng, batch + (H, W), dtype)
    k = random_array(rng, (kh, kw), dtype)
    fill = (0.5 - 2j) if complex_ else -1.25
    planes = x.reshape(-1, H, W)
    try:
        expected = np.stack([theirs(p, k, mode, boundary, fillvalue=fill) for p in planes])
    except ValueError:
        with pytest.raises(ValueError, match="mode='valid'"):
            ours(x, k, mode, boundary, fill, method=method)
        return
    got = ours(backend.xp.asarray(x), backend.xp.asarray(k), mode, boundary, fill,
               method=method)
    assert_close(got, expected.reshape(batch + expected.shape[1:]), dtype, xp=backend.xp)
