"""method="fft" and method="overlap-add": every op, mode and boundary against direct oracles,
with the error bound of gpuconv._fft.error_bound."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.signal

import gpuconv
from gpuconv import _fft, reference
from gpuconv.backend import get_backend_object

from conftest import assert_close, check_array, random_array, to_host

FFT_METHODS = ["fft", "overlap-add"]


def _bound_check(actual, expected, x, w, dtype, n_shape, xp=np):
    """|actual - expected| within the documented normwise bound, and the bound is not vacuous.

    ``actual`` must first be an array of ``xp`` of ``dtype`` and ``expected``'s shape."""
    check_array(actual, xp, dtype, np.shape(expected))
    actual = to_host(actual)
    bound = _fft.error_bound(x, w, n_shape, dtype)
    err = float(np.max(np.abs(actual.astype(np.complex128) - expected)))
    assert err <= bound, (err, bound)
    # A bound as large as the output would accept a wrong answer.
    assert bound < 1e-2 * float(np.max(np.abs(expected))), bound


def _generous_n(x_hw, k_hw):
    # The largest transform any path uses for these sizes: full linear size.
    return tuple(a + b for a, b in zip(x_hw, k_hw))


@pytest.mark.parametrize("method", FFT_METHODS)
@pytest.mark.parametrize("op", ["correlate2d", "convolve2d"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
def test_planes_match_scipy(backend, rng, method, op, mode, boundary, dtype):
    x = random_array(rng, (3, 23, 19), dtype)
    w = random_array(rng, (4, 5), dtype)
    fill = 0.75 if boundary == "fill" else 0
    out = getattr(gpuconv, op)(x, w, mode, boundary, fill, method=method)
    ref_fn = getattr(scipy.signal, op)
    wide = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
    expected = np.stack([ref_fn(p.astype(wide), w.astype(wide), mode, boundary, fill) for p in x])
    _bound_check(out, expected, np.abs(x) + fill, w, dtype, _generous_n(x.shape[-2:], w.shape),
                 xp=backend.xp)


@pytest.mark.parametrize("method", FFT_METHODS)
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
def test_kernel_larger_than_plane(backend, rng, method, mode, boundary):
    # wrap folds the kernel onto the plane's torus; valid swaps the inputs as SciPy does.
    x = rng.standard_normal((6, 5))
    w = rng.standard_normal((9, 11))
    out = gpuconv.correlate2d(x, w, mode, boundary, method=method)
    expected = scipy.signal.correlate2d(x, w, mode, boundary)
    assert_close(out, expected, np.float64, xp=backend.xp)


@pytest.mark.parametrize("method", FFT_METHODS)
def test_overlap_add_blocks_and_scratch_chunks(backend, rng, method):
    x = rng.standard_normal((2, 150, 97))
    w = rng.standard_normal((5, 3))
    if method == "overlap-add":
        nh, nw = _fft.oa_block_shape(backend, (150, 97), (5, 3))
        assert nh - 5 + 1 < 150 and nw - 3 + 1 < 97, "several blocks per axis expected"
    expected = np.stack([scipy.signal.convolve2d(p, w, "same") for p in x])
    if method == "overlap-add":
        limit = 64 * 1024  # forces one block row per chunk
    else:
        # Room for one plane's transform, not two: one plane per chunk.
        s = _fft.fft_shape(backend.fft, (150 + 2, 97 + 1), real=True)
        limit = _fft.transform_scratch(s, 1, 1, False) * 8 + 1024
    with gpuconv.scratch_limit(limit):
        out = gpuconv.convolve2d(x, w, "same", method=method)
    _bound_check(out, expected, x, w, np.float64, _generous_n(x.shape[-2:], w.shape),
                 xp=backend.xp)


@pytest.mark.slow_on_standin("4 s of emulated kernels")
def test_fft_over_the_scratch_limit_says_so(backend, rng):
    # A whole-plane transform cannot be split: over the limit, "fft" refuses with a
    # sentence, and "auto" does not pick it.
    x = rng.standard_normal((600, 600))
    w = rng.standard_normal((41, 41))
    with gpuconv.scratch_limit(2**20):
        with pytest.raises(MemoryError, match=r"method='fft'.*scratch limit.*overlap-add"):
            gpuconv.correlate2d(x, w, "same", method="fft")
        choice = gpuconv.choose_method("correlate2d", x, w, mode="same")
        assert choice.method != "fft", choice
        exact = min(choice.costs[m] for m in ("direct", "gemm"))
        if choice.costs["fft"] < exact:  # the model would have liked it: the reason says why not
            assert "fft not considered" in choice.reason, choice
        got = gpuconv.correlate2d(x, w, "same")
    np.testing.assert_allclose(backend.to_numpy(got), scipy.signal.correlate2d(x, w, "same"),
                               atol=1e-9)


@pytest.mark.parametrize("method", FFT_METHODS)
def test_float16_is_computed_in_float32(backend, rng, method):
    x = rng.standard_normal((20, 20)).astype(np.float16)
    w = rng.standard_normal((3, 3)).astype(np.float16)
    out = gpuconv.correlate2d(x, w, "same", method=method)
    expected = scipy.signal.correlate2d(x.astype(np.float64), w.astype(np.float64), "same")
    check_array(out, backend.xp, np.float16, expected.shape)
    # float16 output rounding dominates: half an ulp of float16 at the output's scale.
    np.testing.assert_allclose(to_host(out), expected, atol=2e-3 * np.abs(expected).max(),
                               rtol=1e-3)


@pytest.mark.parametrize("method", FFT_METHODS)
def test_nonfinite_input_warns_and_spreads(backend, method):
    x = np.ones((16, 16))
    x[3, 4] = np.nan
    with pytest.warns(RuntimeWarning, match="non-finite"):
        out = gpuconv.correlate2d(x, np.ones((3, 3)), "same", method=method)
    check_array(out, backend.xp, np.float64, (16, 16))
    assert np.isnan(to_host(out)).sum() > 9  # direct would poison exactly the 3x3 neighbourhood
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpuconv.correlate2d(np.ones((16, 16)), np.ones((3, 3)), method=method)


CONV_CASES = [
    # (N, C, H, W, Cout, kh, kw, stride, padding, dilation, groups, padding_mode)
    (2, 3, 11, 12, 4, 3, 3, 1, 1, 1, 1, "zeros"),
    (1, 4, 13, 10, 6, 3, 4, 2, 1, 1, 2, "zeros"),
    (2, 2, 15, 16, 2, 5, 3, (3, 2), (2, 1), (1, 2), 1, "reflect"),
    (1, 6, 9, 9, 6, 3, 3, 1, "same", 2, 6, "circular"),
    (2, 3, 10, 11, 5, 1, 1, 2, 0, 1, 1, "zeros"),
    (1, 2, 12, 12, 3, 4, 4, 3, 2, 1, 1, "replicate"),
]


@pytest.mark.parametrize("method", FFT_METHODS)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_matches_direct(backend, rng, method, case, dtype):
    N, C, H, W, Cout, kh, kw, s, p, d, g, pm = case
    x = random_array(rng, (N, C, H, W), dtype)
    w = random_array(rng, (Cout, C // g, kh, kw), dtype)
    b = random_array(rng, (Cout,), dtype)
    out = gpuconv.conv2d(x, w, b, s, p, d, g, padding_mode=pm, method=method)
    with gpuconv.set_backend("numpy"):
        expected = gpuconv.conv2d(x.astype(np.float64), w.astype(np.float64),
                                  b.astype(np.float64), s, p, d, g, padding_mode=pm,
                                  method="direct")
    # Per output channel at most C/g planes are contracted; ||x||_2 over all is an upper bound.
    _bound_check(out - backend.xp.asarray(b)[:, None, None], expected - b[:, None, None], x, w,
                 dtype, _generous_n((H + 4, W + 4), (kh * 2, kw * 2)), xp=backend.xp)


@pytest.mark.parametrize("method", FFT_METHODS)
def test_conv2d_complex(rng, method):
    x = rng.standard_normal((2, 4, 10, 9)) + 1j * rng.standard_normal((2, 4, 10, 9))
    w = rng.standard_normal((6, 2, 3, 2)) + 1j * rng.standard_normal((6, 2, 3, 2))
    out = gpuconv.conv2d(x, w, stride=(2, 1), padding=1, groups=2, method=method)
    expected = gpuconv.conv2d(x, w, stride=(2, 1), padding=1, groups=2, method="direct")
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_conv2d_matches_textbook_loops(rng):
    x = rng.standard_normal((3, 10, 9))
    w = rng.standard_normal((2, 3, 3, 2))
    expected = reference.corr2d_multi_in_out(x, w)
    for method in FFT_METHODS:
        np.testing.assert_allclose(gpuconv.conv2d(x, w, method=method), expected, atol=1e-12)


@pytest.mark.parametrize("method", FFT_METHODS)
@pytest.mark.parametrize("stride,padding,output_padding,dilation,groups", [
    (1, 0, 0, 1, 1), (2, 1, 1, 1, 1), ((3, 2), (1, 0), (2, 1), 1, 2), (2, 2, 1, (2, 3), 1),
])
def test_conv_transpose2d_matches_direct(backend, rng, method, stride, padding, output_padding,
                                         dilation, groups):
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((4, 6 // groups, 3, 4))
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding,
                  dilation=dilation, groups=groups)
    out = gpuconv.conv_transpose2d(x, w, method=method, **kwargs)
    with gpuconv.set_backend("numpy"):
        expected = gpuconv.conv_transpose2d(x, w, method="direct", **kwargs)
    assert_close(out, expected, np.float64, xp=backend.xp)


def test_conv_transpose2d_matches_torch(rng):
    torch = pytest.importorskip("torch", reason="torch is an optional oracle, not installed")
    x = rng.standard_normal((1, 4, 6, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    expected = torch.nn.functional.conv_transpose2d(
        torch.tensor(x), torch.tensor(w), stride=2, padding=1, output_padding=1, dilation=2).numpy()
    for method in FFT_METHODS:
        out = gpuconv.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1, dilation=2,
                                       method=method)
        np.testing.assert_allclose(out, expected, atol=1e-11)


def test_transform_sizes_are_fast_and_alias_free():
    fft = get_backend_object("numpy").fft
    n = _fft.fft_shape(fft, (4111, 97), real=True)
    assert n[0] >= 4111 and n[1] >= 97
    assert all(max(p for p in (2, 3, 5, 7, 11) if v % p == 0) <= 11 for v in n)
    backend = get_backend_object("numpy")
    nh, nw = _fft.oa_block_shape(backend, (4096, 4096), (31, 31))
    assert nh >= 2 * 31 - 1 and nh < 4096  # blocks: bounded memory, tails overlap one neighbour


def test_overlap_add_scratch_stays_bounded(rng):
    import tracemalloc

    x = rng.standard_normal((3, 600, 500))
    w = rng.standard_normal((5, 5))
    expected = gpuconv.correlate2d(x, w, "same", method="direct")
    out_bytes = expected.nbytes
    peaks = {}
    for limit in (2**20, 64 * 2**20):
        with gpuconv.scratch_limit(limit):
            gpuconv.correlate2d(x[:1, :64, :64], w, method="overlap-add")  # plans, caches
            tracemalloc.start()
            out = gpuconv.correlate2d(x, w, "same", method="overlap-add")
            peaks[limit] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        np.testing.assert_allclose(out, expected, atol=1e-10)
    # Input extension, block canvas and output are each about the input's size; the rest is
    # scratch, which the small limit bounds (the large one lets all images go at once).
    assert peaks[2**20] < 4 * out_bytes + 4 * 2**20, peaks
    assert peaks[2**20] < peaks[64 * 2**20], peaks


@pytest.mark.parametrize("method", ["fft", "overlap-add"])
def test_padding_wider_than_the_kernel(rng, method):
    # The window then starts before the full correlation: the front door's
    # explicit padding must give the FFT engine zeros to read there.
    x = rng.standard_normal((2, 3, 6, 7))
    w = rng.standard_normal((4, 3, 3, 2))
    got = gpuconv.conv2d(x, w, padding=(4, 5), method=method)
    np.testing.assert_allclose(got, reference.conv2d(x, w, padding=(4, 4, 5, 5)),
                               rtol=1e-12, atol=1e-12)
    xt = rng.standard_normal((2, 4, 5, 5))
    wt = rng.standard_normal((4, 3, 3, 3))
    kwargs = dict(stride=2, padding=3, output_padding=1)
    np.testing.assert_allclose(gpuconv.conv_transpose2d(xt, wt, method=method, **kwargs),
                               gpuconv.conv_transpose2d(xt, wt, method="direct", **kwargs),
                               rtol=1e-12, atol=1e-12)
