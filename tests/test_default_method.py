"""The default ``method="auto"`` never changes the answer.

Random calls of every op on the default method against independent oracles
(SciPy, the textbook loops of ``gpuconv.reference``), with NaN, Inf, integer
and exact-zero inputs; the precision policy's rules one by one; and the
bounds on time and memory that a default call must respect.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import scipy.signal

import gpuconv
from gpuconv import _choose, _fft, reference
from gpuconv.backend import get_backend_object

EPS = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53,
       np.dtype(np.complex64): 2.0**-24, np.dtype(np.complex128): 2.0**-53}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(tmp_path / "cache"))
    _choose.clear_measured()
    yield
    _choose.clear_measured()


def _same_nonfinite(got, want):
    got, want = np.asarray(got), np.asarray(want)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg="finite pattern")
    if got.dtype.kind == "c":
        # Which part of a complex product of infinities is NaN and which Inf depends on
        # the multiplication formula (BLAS's and SciPy's loops differ): only where the
        # non-finite outputs are is promised.
        return
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN pattern")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg="+Inf pattern")
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg="-Inf pattern")


def _random_planes_case(rng):
    large = rng.random() < 0.25
    H, W = (rng.integers(80, 200, 2) if large else rng.integers(1, 30, 2))
    kh, kw = (rng.integers(15, 32, 2) if large else rng.integers(1, 9, 2))
    dtype = rng.choice([np.float64, np.float32, np.complex128, np.int64])
    shape = (int(rng.integers(1, 3)), int(H), int(W)) if rng.random() < 0.3 else (int(H), int(W))
    x = rng.standard_normal(shape) * 3
    k = rng.standard_normal((int(kh), int(kw)))
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
        k = k + 1j * rng.standard_normal(k.shape)
    if np.dtype(dtype).kind == "i":
        x, k = np.round(x * 10), np.round(k * 10)
    x, k = x.astype(dtype), k.astype(dtype)
    if dtype != np.int64 and rng.random() < 0.4:
        flat = x.reshape(-1)
        for _ in range(int(rng.integers(1, 3))):
            flat[rng.integers(flat.size)] = rng.choice([np.nan, np.inf, -np.inf])
    mode = str(rng.choice(["full", "same", "valid"]))
    if mode == "valid" and (kh > H or kw > W) and not (kh >= H and kw >= W):
        mode = "same"
    boundary = str(rng.choice(["fill", "wrap", "symm"]))
    fillvalue = 0
    if boundary == "fill" and rng.random() < 0.3:
        fillvalue = float(rng.choice([1.5, np.nan, np.inf, -2.0]))
    return x, k, mode, boundary, fillvalue


@pytest.mark.parametrize("op", ["correlate2d", "convolve2d"])
def test_default_planes_match_scipy(rng, op):
    """SciPy's answer, NaN and Inf where SciPy puts them, within the chosen method's bound."""
    fn, oracle = getattr(gpuconv, op), getattr(scipy.signal, op)
    chosen = set()
    for _ in range(50):
        x, k, mode, boundary, fillvalue = _random_planes_case(rng)
        got = fn(x, k, mode, boundary, fillvalue)
        planes = x.reshape((-1,) + x.shape[-2:])
        want = np.stack([oracle(p.astype(np.result_type(p, k, np.float64)), k, mode, boundary,
                                fillvalue) for p in planes]).reshape(got.shape)
        _same_nonfinite(got, want)
        method = gpuconv.choose_method(op, x, k, mode=mode, boundary=boundary,
                                       fillvalue=fillvalue).method
        chosen.add(method)
        finite = np.isfinite(want)
        if x.dtype.kind == "i":
            np.testing.assert_array_equal(got, want)  # exact integer sums
            continue
        eps = EPS[np.result_type(x, k)]
        absval = np.stack([oracle(np.abs(np.nan_to_num(p, posinf=0, neginf=0)), np.abs(k), mode,
                                  boundary, abs(np.nan_to_num(fillvalue, posinf=0)))
                           for p in planes]).reshape(got.shape)
        if method in _choose.EXACT_METHODS:
            # Both sides are sums of the same K products: gamma_K * sum |x w| each.
            tol = 2 * 1.01 * k.size * eps * absval
        else:
            s = _fft.fft_shape(get_backend_object("numpy").fft,
                               tuple(np.add(x.shape[-2:], k.shape)), real=x.dtype.kind != "c")
            tol = _fft.error_bound(np.nan_to_num(x), k, s, x.dtype) + k.size * eps * absval
        err = np.abs(got[finite] - want[finite])
        assert np.all(err <= tol[finite] + 1e-300), (method, float(np.max(err - tol[finite])))
    assert {"direct"} <= chosen, chosen  # the table covered more than one kind of call


def test_nan_stays_where_scipy_puts_it_with_large_kernels(rng):
    # A large kernel on a large image: auto would use an FFT if the input were finite.
    x = rng.standard_normal((300, 300))
    k = rng.standard_normal((31, 31))
    assert gpuconv.choose_method("correlate2d", x, k, mode="same").method in _choose.FFT_METHODS
    x[123, 45] = np.nan
    x[7, 290] = np.inf
    got = gpuconv.correlate2d(x, k, "same")
    want = scipy.signal.correlate2d(x, k, "same")
    _same_nonfinite(got, want)
    assert np.isnan(got).sum() == np.isnan(want).sum() < got.size // 10
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-10, atol=1e-10)
    choice = gpuconv.choose_method("correlate2d", x, k, mode="same")
    assert choice.method in _choose.EXACT_METHODS and "NaN or Inf" in choice.reason


@pytest.mark.parametrize("fillvalue", [np.nan, np.inf, -np.inf])
def test_nonfinite_fillvalue_keeps_scipys_pattern(rng, fillvalue):
    x = rng.standard_normal((200, 190))
    k = rng.standard_normal((25, 25))
    got = gpuconv.convolve2d(x, k, "same", "fill", fillvalue)
    want = scipy.signal.convolve2d(x, k, "same", "fill", fillvalue)
    _same_nonfinite(got, want)
    assert np.isfinite(got).any()  # the interior, away from the fill, stays finite
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-9, atol=1e-9)


def test_explicit_fft_keeps_its_behaviour_with_a_warning(rng):
    x = rng.standard_normal((40, 40))
    x[3, 3] = np.nan
    with pytest.warns(RuntimeWarning, match="non-finite"):
        y = gpuconv.correlate2d(x, np.ones((5, 5)), method="fft")
    assert np.isnan(y).all()


def test_exact_zeros_stay_zero_onnx_conv_transpose(rng):
    # ONNX's ConvTranspose node test: 1x1x3x3 input, 1x2x3x3 weight, float32.
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    w = np.ones((1, 2, 3, 3), dtype=np.float32)
    got = gpuconv.conv_transpose2d(x, w)
    np.testing.assert_array_equal(got, reference.conv_transpose2d(x, w).astype(np.float32))
    # Outputs whose products are all zero are exactly zero, whatever the size.
    x = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    x[:, :, 20:44, 20:44] = 0
    w = rng.standard_normal((3, 4, 5, 5)).astype(np.float32)
    y = gpuconv.conv_transpose2d(x, w)
    assert np.all(y[:, :, 24:44, 24:44] == 0)
    y = gpuconv.conv2d(x, w.transpose(1, 0, 2, 3))
    assert np.all(y[:, :, 20:40, 20:40] == 0)


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_integer_inputs_are_exact_through_the_front_doors(rng, op):
    """Shapes where floats would go to an FFT: integers must not (exact sums)."""
    fn = getattr(gpuconv, op)
    x = rng.integers(-50, 50, (1, 1, 300, 300))
    w = rng.integers(-50, 50, (1, 1, 41, 41))
    assert gpuconv.choose_method(op, x * 1.0, w * 1.0).method in _choose.FFT_METHODS
    got = fn(x, w)
    assert got.dtype == np.float64
    exact = fn(x * 1.0, w * 1.0, method="direct")  # integer-valued: summed exactly
    np.testing.assert_array_equal(got, exact)
    assert np.array_equal(got, np.round(got))


def test_measure_never_times_an_fft_for_integer_inputs(rng, monkeypatch):
    backend = get_backend_object("numpy")
    seen = []
    original = type(backend).correlate_planes

    def spy(self, *args):
        seen.append(args[6])
        return original(self, *args)
    monkeypatch.setattr(type(backend), "correlate_planes", spy)
    x = rng.integers(-9, 9, (200, 200))
    k = rng.integers(-9, 9, (21, 21))
    choice = gpuconv.choose_method("correlate2d", x, k, measure=True)
    assert seen and not set(seen) & set(_choose.FFT_METHODS), seen
    assert choice.method in _choose.EXACT_METHODS and set(choice.measured) <= {"direct", "gemm"}


def test_a_measured_fft_choice_still_falls_back_for_nonfinite_inputs(rng):
    x = rng.standard_normal((256, 256))
    k = rng.standard_normal((31, 31))
    gpuconv.choose_method("correlate2d", x, k)  # model decision memoised
    key = next(iter(_choose._MODELLED))[:-2]
    _choose.remember_measured(key, _choose.MethodChoice("fft", "planted"))
    assert gpuconv.choose_method("correlate2d", x, k).method == "fft"
    x[0, 0] = np.nan
    assert gpuconv.choose_method("correlate2d", x, k).method in _choose.EXACT_METHODS
    _same_nonfinite(gpuconv.correlate2d(x, k), scipy.signal.correlate2d(x, k))


def test_fft_must_clear_the_margin(monkeypatch):
    # A cost model where the FFT is estimated 1.5x faster: not enough.
    costs = {"direct": 3.0, "gemm": 4.0, "fft": 2.0, "overlap-add": 2.5}
    choice = _choose._pick(costs, "test", exact=False)
    assert choice.method == "direct" and "margin" in choice.reason
    costs["fft"] = 1.4
    assert _choose._pick(costs, "test", exact=False).method == "fft"
    assert _choose._pick(costs, "test", exact=True).method == "direct"


# -- choose_method validates like the op it describes ----------------------------------
X4 = np.ones((2, 4, 6, 6))
W4 = np.ones((8, 4, 3, 3))


@pytest.mark.parametrize("op, args, kwargs", [
    ("conv2d", (X4, W4), dict(groups=0)),
    ("conv2d", (X4, W4), dict(groups=3)),
    ("conv2d", (X4, W4), dict(stride=0)),
    ("conv2d", (X4, W4), dict(padding="full")),
    ("conv2d", (X4, W4), dict(padding=7, padding_mode="circular")),
    ("conv2d", (X4, np.ones((8, 4, 9, 9))), {}),
    ("conv_transpose2d", (np.ones((2, 8, 4, 4)), W4), dict(output_padding=2, stride=2)),
    ("conv_transpose2d", (np.ones((2, 8, 4, 4)), W4), dict(groups=0)),
    ("correlate2d", (np.ones((3, 6)), np.ones((5, 2))), dict(mode="valid")),
    ("correlate2d", (np.ones(5), np.ones((2, 2))), {}),
    ("convolve2d", (np.ones((5, 5)), np.ones((2, 2))), dict(boundary="reflect")),
    ("convolve2d", (np.ones((5, 5)), np.ones((2, 2))), dict(fillvalue="x")),
    ("correlate2d", (np.ones((5, 5)).astype(object), np.ones((2, 2))), {}),
])
def test_choose_method_refuses_what_the_op_refuses(op, args, kwargs):
    with pytest.raises((ValueError, TypeError)) as op_error:
        getattr(gpuconv, op)(*args, **kwargs)
    with pytest.raises(op_error.type) as choice_error:
        gpuconv.choose_method(op, *args, **kwargs)
    assert str(choice_error.value) == str(op_error.value)


def test_choose_method_validates_its_own_arguments():
    with pytest.raises(ValueError, match="op must be one of"):
        gpuconv.choose_method("fftconvolve", np.ones((3, 3)), np.ones((2, 2)))
    with pytest.raises(TypeError, match="measure must be a bool"):
        gpuconv.choose_method("correlate2d", np.ones((3, 3)), np.ones((2, 2)), measure="yes")


# -- time and memory ------------------------------------------------------------------
def _peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_huge_padding_is_refused_before_allocating():
    x = np.ones((1, 1, 4, 4))
    w = np.ones((1, 1, 3, 3))
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match=r"\(1, 1, 40002, 40002\).*padded to "
                                              r"\(40004, 40004\).*GiB.*reduce padding"):
            gpuconv.conv2d(x, w, padding=20000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak  # refused before anything big was allocated


def test_huge_dilation_transpose_is_cheap_and_right(rng):
    # 10x10 inputs whose 3x3 taps land 3000 pixels apart: 36M outputs, 900 products.
    x = rng.standard_normal((1, 1, 10, 10))
    w = rng.standard_normal((1, 1, 3, 3))
    for method in ("auto", "direct", "gemm"):
        start = time.perf_counter()
        y = gpuconv.conv_transpose2d(x, w, dilation=3000, method=method)
        elapsed = time.perf_counter() - start
        assert y.shape == (1, 1, 6010, 6010)
        # Each tap's copy of the input lands in its own block; nothing else is set.
        for u in range(3):
            for v in range(3):
                block = y[0, 0, u * 3000:u * 3000 + 10, v * 3000:v * 3000 + 10]
                np.testing.assert_allclose(block, x[0, 0] * w[0, 0, u, v], rtol=1e-12,
                                           err_msg=method)
        assert np.count_nonzero(y) == 900, method
        # Milliseconds: the bound only catches a correlation over the whole
        # output (9 s), it is not a speed claim.
        assert elapsed < 3.0, (method, elapsed)


def test_huge_strided_transpose_is_cheap_and_right(rng):
    x = rng.standard_normal((1, 1, 2, 2))
    w = rng.standard_normal((1, 1, 3, 3))
    start = time.perf_counter()
    y, peak = _peak(lambda: gpuconv.conv_transpose2d(x, w, stride=4096))
    elapsed = time.perf_counter() - start
    assert y.shape == (1, 1, 4099, 4099)
    # A few ms: at most kh*kw sub-problems, not one per phase of the stride (16.7M
    # phases took 30 s); the bound only catches that, not a speed claim.
    assert elapsed < 3.0, elapsed
    # The output itself, plus little: no transform of a 4099² canvas per phase.
    assert peak < 2.5 * y.nbytes, peak / y.nbytes
    expected = np.zeros_like(y)
    for i in range(2):
        for j in range(2):
            expected[0, 0, i * 4096:i * 4096 + 3, j * 4096:j * 4096 + 3] += x[0, 0, i, j] * w[0, 0]
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-15)
    for method in ("fft", "overlap-add"):  # asked for by name, also cheap
        y2, peak = _peak(lambda: gpuconv.conv_transpose2d(x, w, stride=4096, method=method))
        np.testing.assert_allclose(y2, expected, atol=1e-12)
        assert peak < 2.5 * y.nbytes, (method, peak / y.nbytes)


@pytest.mark.parametrize("method", ["auto", "direct", "gemm", "fft", "overlap-add"])
def test_huge_stride_reads_only_what_windows_read(rng, method):
    x = rng.standard_normal((2, 3, 9, 9))
    w = rng.standard_normal((4, 3, 3, 2))
    y, peak = _peak(lambda: gpuconv.conv2d(x, w, stride=1024, dilation=(2, 1), method=method))
    np.testing.assert_allclose(y, reference.conv2d(x, w, stride=(1024, 1024), dilation=(2, 1)),
                               atol=1e-12)
    assert peak < 2**20, peak
    xt = rng.standard_normal((1, 3, 3, 2))
    y = gpuconv.conv_transpose2d(xt, w.transpose(1, 0, 2, 3), stride=(7, 5), padding=1,
                                 output_padding=(2, 1), dilation=(2, 1), method=method)
    want = reference.conv_transpose2d(xt, w.transpose(1, 0, 2, 3), stride=(7, 5), padding=(1, 1),
                                      output_padding=(2, 1), dilation=(2, 1))
    np.testing.assert_allclose(y, want, atol=1e-12)


def test_correlate_output_too_large_is_refused():
    kernel = np.broadcast_to(np.ones(1), (200000, 200000))  # a view: no memory
    with pytest.raises(MemoryError, match=r"output of shape \(200001, 200001\)"):
        gpuconv.correlate2d(np.ones((2, 2)), kernel)


def test_memory_check_counts_what_the_backend_says_is_free(monkeypatch):
    backend = get_backend_object("numpy")
    image = np.broadcast_to(np.float32(1), (3000, 3000))  # a view: the output is what costs
    monkeypatch.setattr(type(backend), "available_memory", lambda self: 50 * 2**20)
    with pytest.raises(MemoryError, match=r"\(3002, 3002\).*50.0 MiB available"):
        gpuconv.correlate2d(image, np.ones((3, 3), np.float32))
    monkeypatch.setattr(type(backend), "available_memory", lambda self: None)  # can't tell
    assert gpuconv.correlate2d(image, np.ones((3, 3), np.float32)).shape == (3002, 3002)
    # Small calls are not checked at all: no machine lacks the memory, and asking costs.
    asked = []
    monkeypatch.setattr(type(backend), "available_memory", lambda self: asked.append(1) or 0)
    assert gpuconv.correlate2d(np.ones((50, 50)), np.ones((3, 3))).shape == (52, 52)
    assert not asked


# -- inputs -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [">f8", ">f4", ">c16", ">i4", "<f8"])
def test_any_byte_order(rng, dtype):
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    native = x.astype(x.dtype.newbyteorder("=")), w.astype(w.dtype.newbyteorder("="))
    before = x.copy()
    got = gpuconv.conv2d(x, w, padding=1)
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, gpuconv.conv2d(*native, padding=1))
    np.testing.assert_array_equal(x, before)
    p = gpuconv.correlate2d(x[0, 0], w[0, 0], "same")
    np.testing.assert_array_equal(p, gpuconv.correlate2d(native[0][0, 0], native[1][0, 0], "same"))
    t = gpuconv.conv_transpose2d(x[:, :3], w[:3], stride=2)
    np.testing.assert_array_equal(t, gpuconv.conv_transpose2d(native[0][:, :3], native[1][:3],
                                                              stride=2))


def test_generic_im2col_chunks_rows_with_a_stride(rng):
    """The generic gemm (what the CuPy backend runs) cut into row bands, with stride 2."""
    from gpuconv.backends import ArrayBackend

    class Generic(ArrayBackend):
        name = "generic-numpy-for-tests"
        xp = np

    gpuconv.register_backend(Generic.name, Generic, replace=True)
    x = rng.standard_normal((2, 3, 23, 19))
    w = rng.standard_normal((4, 3, 3, 5))
    want = reference.conv2d(x, w, stride=(2, 3), padding=(1, 1, 2, 2))
    row = 3 * 3 * 5 * 8 * x.itemsize  # one output row of columns
    with gpuconv.set_backend(Generic.name), gpuconv.scratch_limit(2 * row):
        got = gpuconv.conv2d(x, w, stride=(2, 3), padding=(1, 2), method="gemm")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# -- dask: auto decided once -----------------------------------------------------------
def test_dask_auto_is_decided_once_for_every_chunk(rng, monkeypatch):
    da = pytest.importorskip("dask.array")
    backend = get_backend_object("numpy")
    seen = []
    original = type(backend).correlate_planes

    def spy(self, *args):
        seen.append(args[6])
        return original(self, *args)
    monkeypatch.setattr(type(backend), "correlate_planes", spy)
    x = rng.standard_normal((700, 650))
    k = rng.standard_normal((25, 25))
    expected = scipy.signal.correlate2d(x, k, "same")
    for chunks in ((300, 300), (250, 170), (700, 100)):
        seen.clear()
        got = gpuconv.correlate2d(da.from_array(x, chunks=chunks), k, "same").compute(
            scheduler="sync")
        assert len(seen) > 1 and len(set(seen)) == 1, (chunks, seen)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    # A chunk holding a NaN falls back to the exact method, as in memory.
    x[10, 10] = np.nan
    got = gpuconv.correlate2d(da.from_array(x, chunks=(300, 300)), k, "same").compute(
        scheduler="sync")
    _same_nonfinite(got, scipy.signal.correlate2d(x, k, "same"))
