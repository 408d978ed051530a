"""The im2col/col2im kernels and the CuPy backend's ``gemm`` path, run in the emulator.

Kernel level: every launch uses the product's geometry
(``gpuconv.kernels.im2col_launch``/``col2im_launch``) on guarded buffers;
``im2col`` must equal, bit for bit, columns gathered from a ``numpy.pad``-ed
input, and ``col2im`` a scatter-add onto a canvas (float64 oracle), leaving the
rows outside its band untouched.  Geometries are drawn at random: every
padding mode and boundary rule, stride, dilation, kernels larger than the
input, bands of rows.

Backend level: ``gpuconv.conv2d``/``conv_transpose2d``/``correlate2d`` with
``method='gemm'`` and the weight gradient on the emulated CuPy backend, against
the NumPy backend and ``gpuconv.reference``, with the scratch bound shrunk so
that whole-image chunks and row bands (stride > 1 included) are both used,
and a planted band bug that these comparisons must catch.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import gpuconv
from conftest import RTOL, assert_close, random_array
from gpuconv import kernels as K
from gpuconv import reference
from gpuconv import backend as registry
from gpuconv.nn.functional import conv2d_weight_grad

kernel_emulator = pytest.importorskip("kernel_emulator")
if kernel_emulator.compiler() is None:
    kernel_emulator.skip_or_fail("no host C++ compiler (g++ or $CXX) to build the kernel emulator")

DTYPES = [np.float16, np.float32, np.float64, np.complex64, np.complex128]
GUARD = 64
SENTINEL = 1234.0
NUMPY_PAD = {"zeros": "constant", "fill": "constant", "reflect": "reflect",
             "replicate": "edge", "circular": "wrap", "wrap": "wrap", "symm": "symmetric"}
EMULATED = "cupy-emulated-gemm"  # its own name: the registry keeps instances by name


@pytest.fixture(scope="module")
def col_emu():
    return kernel_emulator.Emulator("im2col.cu")


def guarded(values, fill):
    buf = np.full(values.size + 2 * GUARD, fill, dtype=values.dtype)
    view = buf[GUARD:GUARD + values.size].reshape(values.shape)
    view[...] = values
    return buf, view


def fill_for(dtype):
    return 0.5 - 0.25j if np.dtype(dtype).kind == "c" else 0.5


# -- im2col -------------------------------------------------------------------

def im2col_oracle(x, kernel_hw, stride, origin, dilation, rows, out_w, mode, fill, layout):
    """Columns gathered from the input padded by numpy.pad (independent of the kernel)."""
    n, C, H, W = x.shape
    (kh, kw), (sh, sw), (top, left), (dh, dw), (r0, r1) = (kernel_hw, stride, origin,
                                                           dilation, rows)
    I = (np.arange(r0, r1)[:, None] * sh - top + np.arange(kh)[None, :] * dh)  # (rows, kh)
    J = (np.arange(out_w)[:, None] * sw - left + np.arange(kw)[None, :] * dw)  # (Wo, kw)
    before = (max(0, -I.min()), max(0, -J.min()))
    after = (max(0, I.max() - (H - 1)), max(0, J.max() - (W - 1)))
    widths = ((0, 0), (0, 0), (before[0], after[0]), (before[1], after[1]))
    kwargs = {"constant_values": fill} if NUMPY_PAD[mode] == "constant" else {}
    xp = np.pad(x, widths, mode=NUMPY_PAD[mode], **kwargs)
    g = xp[:, :, (I + before[0])[:, :, None, None], (J + before[1])[None, None, :, :]]
    g = g.transpose(0, 1, 3, 5, 2, 4)  # (n, C, kh, kw, rows, Wo)
    P = (r1 - r0) * out_w
    if layout == "image-major":
        return g.reshape(n, C * kh * kw, P)
    return g.reshape(n, C * kh * kw, P).transpose(1, 0, 2).copy()


def random_im2col_case(rng):
    mode = str(rng.choice(list(NUMPY_PAD)))
    n, C = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    H, W = int(rng.integers(1, 10)), int(rng.integers(1, 10))
    kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    dilation = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    # Padding up to twice the input: the extension is read several periods away.
    top, bottom = int(rng.integers(0, 2 * H + 1)), int(rng.integers(0, 2 * H + 1))
    left, right = int(rng.integers(0, 2 * W + 1)), int(rng.integers(0, 2 * W + 1))
    Ho = (H + top + bottom - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + left + right - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if Ho < 1 or Wo < 1:
        return None
    r0 = int(rng.integers(0, Ho))
    r1 = int(rng.integers(r0 + 1, Ho + 1))
    return (n, C, H, W), (kh, kw), stride, (top, left), dilation, (r0, r1), Wo, mode


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["image-major", "tap-major"])
def test_im2col_random_geometries(col_emu, rng, dtype, layout):
    done = 0
    while done < 12:
        case = random_im2col_case(rng)
        if case is None:
            continue
        x_shape, khw, stride, origin, dilation, rows, Wo, mode = case
        fill = fill_for(dtype) if mode == "fill" else 0
        x = random_array(rng, x_shape, dtype)
        launch = K.im2col_launch(x_shape, khw, stride, origin, dilation, rows, Wo, mode, fill,
                                 layout)
        want = im2col_oracle(x, khw, stride, origin, dilation, rows, Wo, mode, fill, layout)
        _, xg = guarded(x, np.nan)
        obuf, og = guarded(np.full(want.shape, np.nan, dtype), SENTINEL)
        col_emu.launch("im2col", dtype, launch, xg, og)
        assert np.all(obuf[:GUARD] == SENTINEL) and np.all(obuf[-GUARD:] == SENTINEL), \
            f"im2col wrote outside its columns: {case}"
        np.testing.assert_array_equal(og, want, err_msg=str(case))
        done += 1


def test_im2col_grid_stride_loops(col_emu, rng):
    # Channels and images beyond gridDim.y/z are loops in the kernel.
    x = random_array(rng, (5, 7, 6, 6), np.float32)
    launch = K.im2col_launch(x.shape, (3, 3), (1, 1), (1, 1), (1, 1), (0, 6), 6, "reflect",
                             grid_limits=(2**31 - 1, 2, 3))
    assert launch.grid[1:] == (2, 3)
    out = np.full((5, 7 * 9, 36), np.nan, np.float32)
    col_emu.launch("im2col", np.float32, launch, x, out)
    want = im2col_oracle(x, (3, 3), (1, 1), (1, 1), (1, 1), (0, 6), 6, "reflect", 0,
                         "image-major")
    np.testing.assert_array_equal(out, want)


# -- col2im -------------------------------------------------------------------

def col2im_oracle(cols, before, bias, in_w, kernel_hw, stride, padding, dilation, out_hw,
                  out_rows, in_rows, accumulate):
    n, Cout = cols.shape[:2]
    (kh, kw), (sh, sw), (pt, pl), (dh, dw), (Ho, Wo) = (kernel_hw, stride, padding,
                                                        dilation, out_hw)
    i0, i1 = in_rows
    o0, o1 = out_rows
    cols = cols.astype(np.complex128 if cols.dtype.kind == "c" else np.float64)
    full_h = max((i1 - 1) * sh + dh * (kh - 1) + 1, pt + Ho)
    full_w = max((in_w - 1) * sw + dw * (kw - 1) + 1, pl + Wo)
    canvas = np.zeros((n, Cout, full_h, full_w), cols.dtype)
    rows = np.arange(i0, i1)[:, None] * sh
    colsw = np.arange(in_w)[None, :] * sw
    for u in range(kh):
        for v in range(kw):
            canvas[:, :, u * dh + rows, v * dw + colsw] += cols[:, :, u, v]
    got = canvas[:, :, pt:pt + Ho, pl:pl + Wo]
    want = before.astype(cols.dtype)
    if accumulate:
        start = want
    elif bias is not None:
        start = np.broadcast_to(bias.astype(cols.dtype)[None, :, None, None], want.shape)
    else:
        start = np.zeros_like(want)
    want[:, :, o0:o1] = start[:, :, o0:o1] + got[:, :, o0:o1]
    return want


@pytest.mark.parametrize("dtype", DTYPES)
def test_col2im_random_geometries(col_emu, rng, dtype):
    for _ in range(12):
        n, Cout = int(rng.integers(1, 3)), int(rng.integers(1, 4))
        H, W = int(rng.integers(1, 7)), int(rng.integers(1, 7))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        dh, dw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        pt, pl = int(rng.integers(0, dh * (kh - 1) + 1)), int(rng.integers(0, dw * (kw - 1) + 1))
        oph, opw = int(rng.integers(0, max(sh, dh))), int(rng.integers(0, max(sw, dw)))
        Ho = (H - 1) * sh - 2 * pt + dh * (kh - 1) + oph + 1
        Wo = (W - 1) * sw - 2 * pl + dw * (kw - 1) + opw + 1
        if Ho < 1 or Wo < 1:
            continue
        i0 = int(rng.integers(0, H))
        i1 = int(rng.integers(i0 + 1, H + 1))
        o0 = int(rng.integers(0, Ho))
        o1 = int(rng.integers(o0 + 1, Ho + 1))
        accumulate = bool(rng.integers(0, 2))
        cols = random_array(rng, (n, Cout, kh, kw, i1 - i0, W), dtype)
        bias = random_array(rng, (Cout,), dtype) if rng.integers(0, 2) else None
        before = random_array(rng, (n, Cout, Ho, Wo), dtype)
        geometry = dict(in_w=W, kernel_hw=(kh, kw), stride=(sh, sw), padding=(pt, pl),
                        dilation=(dh, dw), out_hw=(Ho, Wo), out_rows=(o0, o1),
                        in_rows=(i0, i1), accumulate=accumulate)
        launch = K.col2im_launch(n, Cout, **geometry)
        obuf, og = guarded(before, SENTINEL)
        _, cg = guarded(cols, np.nan)
        bg = None if bias is None else guarded(bias, np.nan)[1]
        col_emu.launch("col2im", dtype, launch, cg, bg, og)
        assert np.all(obuf[:GUARD] == SENTINEL) and np.all(obuf[-GUARD:] == SENTINEL)
        outside = np.ones(Ho, bool)
        outside[o0:o1] = False
        np.testing.assert_array_equal(og[:, :, outside], before[:, :, outside],
                                      err_msg="col2im wrote outside its band of rows")
        want = col2im_oracle(cols, before, bias, **geometry)
        assert_close(og, want, dtype, scale=2.0)


# -- the CuPy backend's gemm path ----------------------------------------------

@pytest.fixture(scope="module")
def emulated_backend():
    return kernel_emulator.emulated_cupy_backend()


@pytest.fixture
def emulated(emulated_backend, monkeypatch):
    monkeypatch.setitem(registry._factories, EMULATED, lambda: emulated_backend)
    with gpuconv.set_backend(EMULATED):
        yield emulated_backend


def launches(backend, kernel=None) -> int:
    return sum(k.launches for key, k in backend.emulated_kernels.items()
               if kernel is None or key[1] == kernel)


def on_numpy(fn, *args, **kwargs):
    with gpuconv.set_backend("numpy"):
        return fn(*args, **kwargs)


def random_conv_case(rng, mode):
    """(x shape, w shape, stride, padding (h, w), dilation, groups) valid for ``mode``."""
    while True:
        G = int(rng.integers(1, 3))
        C, Cout = G * int(rng.integers(1, 3)), G * int(rng.integers(1, 3))
        N, H, W = int(rng.integers(1, 4)), int(rng.integers(3, 11)), int(rng.integers(3, 11))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 3)))
        dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        limit = {"reflect": (H - 1, W - 1), "circular": (H, W)}.get(mode, (3, 3))
        ph, pw = int(rng.integers(0, limit[0] + 1)), int(rng.integers(0, limit[1] + 1))
        if (H + 2 * ph - dilation[0] * (kh - 1) - 1 >= 0
                and W + 2 * pw - dilation[1] * (kw - 1) - 1 >= 0):
            return (N, C, H, W), (Cout, C // G, kh, kw), stride, (ph, pw), dilation, G


def conv_tolerance(dtype):
    return np.float64 if np.dtype(dtype).kind in "biu" else dtype


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_conv2d_random_geometries_in_chunks(emulated, rng, padding_mode, dtype):
    # A scratch bound of a few hundred bytes forces row bands of one image;
    # a few KiB whole-image chunks; the default one chunk.
    for scratch in (300, 6000, None):
        for _ in range(3):
            xs, ws, stride, padding, dilation, G = random_conv_case(rng, padding_mode)
            x, w = random_array(rng, xs, dtype), random_array(rng, ws, dtype)
            b = random_array(rng, (ws[0],), dtype)
            kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=G,
                          padding_mode=padding_mode)
            limit = contextlib.nullcontext() if scratch is None else gpuconv.scratch_limit(scratch)
            before = launches(emulated, "im2col")
            with limit:
                got = gpuconv.conv2d(x, w, b, method="gemm", **kwargs)
            ran = launches(emulated, "im2col") - before
            want = on_numpy(gpuconv.conv2d, x, w, b, method="direct", **kwargs)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert_close(got, want, conv_tolerance(dtype))
            plain = ws[2:] == (1, 1) and stride == (1, 1) and padding == (0, 0)
            if scratch is not None and not plain:
                # Chunks hold at most the bound (or one output row, if that is more).
                per_row = xs[1] * ws[2] * ws[3] * got.shape[3] * got.itemsize
                total = xs[0] * got.shape[2] * per_row
                assert ran >= -(-total // max(scratch, per_row))


def test_gemm_conv2d_row_bands_with_stride_match_the_reference(emulated, rng):
    x = random_array(rng, (2, 3, 17, 13), np.float64)
    w = random_array(rng, (4, 3, 3, 2), np.float64)
    b = random_array(rng, (4,), np.float64)
    for stride, dilation in [((2, 1), (1, 1)), ((3, 2), (2, 1)), ((2, 2), (1, 3))]:
        before = launches(emulated, "im2col")
        with gpuconv.scratch_limit(3 * 3 * 2 * 8 * 8 * 2):  # about two output rows
            got = gpuconv.conv2d(x, w, b, stride=stride, padding=(2, 1), dilation=dilation,
                                 padding_mode="reflect", method="gemm")
        assert launches(emulated, "im2col") - before > 2 * 2, "expected several row bands"
        want = reference.conv2d(x, w, b, stride, (2, 2, 1, 1), dilation, 1, "reflect")
        assert_close(got, want, np.float64)


def test_planted_band_bug_is_caught(emulated, rng):
    """The comparisons above see a bug that only shows in the second and later row
    bands with stride > 1 (the band start not scaled by the stride)."""
    x = random_array(rng, (1, 2, 15, 9), np.float32)
    w = random_array(rng, (3, 2, 3, 3), np.float32)
    emulated.kernel_variants = {"im2col.cu": ("GPUCONV_PLANT_BAND_BUG",)}
    try:
        with gpuconv.scratch_limit(2 * 9 * 4 * 4 * 3):
            banded = gpuconv.conv2d(x, w, stride=2, padding=1, method="gemm")
        whole = gpuconv.conv2d(x, w, stride=2, padding=1, method="gemm")
        unstrided = None
        with gpuconv.scratch_limit(2 * 9 * 4 * 9 * 3):
            unstrided = gpuconv.conv2d(x, w, padding=1, method="gemm")
    finally:
        emulated.kernel_variants = {}
    want = on_numpy(gpuconv.conv2d, x, w, stride=2, padding=1)
    assert_close(whole, want, np.float32)  # one band: the bug cannot show
    assert_close(unstrided, on_numpy(gpuconv.conv2d, x, w, padding=1), np.float32)
    with pytest.raises(AssertionError):
        assert_close(banded, want, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_conv_transpose2d_in_chunks(emulated, rng, dtype):
    cases = [((2, 4, 5, 6), (4, 3, 3, 3), (2, 2), (1, 1), (1, 1), 1, (1, 1)),
             ((1, 6, 7, 4), (6, 2, 2, 3), (1, 3), (1, 0), (0, 2), 3, (2, 1)),
             ((3, 2, 4, 5), (2, 3, 3, 1), (3, 1), (2, 0), (2, 0), 2, (1, 1)),
             ((2, 3, 3, 3), (3, 5, 1, 1), (1, 1), (0, 0), (0, 0), 1, (1, 1))]
    for scratch in (200, 3000, None):
        for xs, ws, stride, padding, output_padding, G, dilation in cases:
            x, w = random_array(rng, xs, dtype), random_array(rng, ws, dtype)
            b = random_array(rng, (ws[1] * G,), dtype)
            kwargs = dict(stride=stride, padding=padding, output_padding=output_padding,
                          groups=G, dilation=dilation)
            limit = contextlib.nullcontext() if scratch is None else gpuconv.scratch_limit(scratch)
            before = launches(emulated, "col2im")
            with limit:
                got = gpuconv.conv_transpose2d(x, w, b, method="gemm", **kwargs)
            assert launches(emulated, "col2im") > before
            want = on_numpy(gpuconv.conv_transpose2d, x, w, b, method="direct", **kwargs)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert_close(got, want, dtype, scale=2.0)


def test_conv_transpose2d_gemm_adds_the_bias_in_the_gather(emulated_backend, rng):
    # Called at the backend level with a bias: the col2im pass adds it (no
    # separate pass), and without one it writes zeros where no input lands.
    x = random_array(rng, (2, 4, 3, 3), np.float64)
    w = random_array(rng, (4, 2, 1, 1), np.float64)
    b = random_array(rng, (2,), np.float64)
    args = ((3, 3), (0, 0), (1, 1), 1, (8, 8), "gemm", 1 << 20)
    with_bias = emulated_backend.conv_transpose2d(x, w, *args, bias=b)
    plain = emulated_backend.conv_transpose2d(x, w, *args)
    # Stride 3 with a 1x1 kernel reaches every third pixel; the rest is bias.
    assert np.all(plain[:, :, 1::3] == 0) and np.all(plain[:, :, :, 2::3] == 0)
    # One contribution per pixel: bias + c is exactly c + bias.
    np.testing.assert_array_equal(with_bias, plain + b[None, :, None, None])


@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_correlate2d_runs_im2col(emulated, rng, boundary, dtype):
    x = random_array(rng, (3, 13, 11), dtype)
    for kshape in [(3, 4), (7, 2), (15, 12)]:
        k = random_array(rng, kshape, dtype)
        for mode in ("full", "same", "valid"):
            if mode == "valid" and not (x.shape[1] >= kshape[0] and x.shape[2] >= kshape[1]):
                continue
            before = launches(emulated, "im2col")
            with gpuconv.scratch_limit(20000):
                got = gpuconv.correlate2d(x, k, mode=mode, boundary=boundary, fillvalue=2,
                                          method="gemm")
            assert launches(emulated, "im2col") > before
            want = on_numpy(gpuconv.correlate2d, x, k, mode=mode, boundary=boundary,
                            fillvalue=2, method="direct")
            assert got.dtype == want.dtype and got.shape == want.shape
            assert_close(got, want, dtype)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_grad_from_columns(emulated, rng, padding_mode, dtype):
    for scratch in (400, None):
        for _ in range(3):
            xs, ws, stride, (ph, pw), dilation, G = random_conv_case(rng, padding_mode)
            pads = (ph, ph, pw, pw)
            x = random_array(rng, xs, dtype)
            y = on_numpy(gpuconv.conv2d, x, random_array(rng, ws, dtype), stride=stride,
                         padding=(ph, pw), dilation=dilation, groups=G,
                         padding_mode=padding_mode)
            dy = random_array(rng, y.shape, dtype)
            args = (ws[2:], stride, pads, dilation, G, padding_mode)
            limit = contextlib.nullcontext() if scratch is None else gpuconv.scratch_limit(scratch)
            before = launches(emulated, "im2col")
            with limit:
                got = conv2d_weight_grad(x, dy, *args)
            assert launches(emulated, "im2col") > before, "the columns path did not run"
            wide = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
            want = on_numpy(conv2d_weight_grad, x.astype(wide), dy.astype(wide), *args,
                            method="direct")
            assert got.dtype == np.dtype(dtype) and got.shape == ws
            # A sum over N*Ho*Wo products per weight: scale the float16 tolerance.
            assert_close(got, want, dtype, scale=4.0 if dtype == np.float16 else 1.0)


def test_weight_grad_other_methods_are_the_swapped_conv2d(emulated, rng):
    x = random_array(rng, (2, 3, 9, 8), np.float32)
    dy = random_array(rng, (2, 4, 7, 6), np.float32)
    before = launches(emulated, "im2col")
    got = conv2d_weight_grad(x, dy, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, method="direct")
    assert launches(emulated, "im2col") == before
    want = on_numpy(conv2d_weight_grad, x, dy, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    assert_close(got, want, np.float32)


# -- host-side hygiene ---------------------------------------------------------

class _RecordingDevice:
    """A device context that records which device is current."""

    current = 0

    def __init__(self, device_id):
        self.id = device_id

    def __enter__(self):
        self.saved, _RecordingDevice.current = _RecordingDevice.current, self.id
        return self

    def __exit__(self, *exc):
        _RecordingDevice.current = self.saved
        return False


def test_work_runs_on_the_inputs_device(emulated_backend, rng, monkeypatch):
    """An array on device 1 is computed on device 1 (allocations, launches and
    products), not on whichever device is current."""
    seen = []
    backend = emulated_backend
    xp = backend.xp

    class Recording:
        def __getattr__(self, name):
            attr = getattr(xp, name)
            if name in ("empty", "matmul", "ascontiguousarray"):
                def recorded(*args, **kwargs):
                    seen.append((name, _RecordingDevice.current))
                    return attr(*args, **kwargs)
                return recorded
            return attr

    get_function = backend._get_function

    def recording_get_function(*args):
        fn = get_function(*args)

        def launch(*a):
            seen.append(("launch", _RecordingDevice.current))
            return fn(*a)
        return launch

    gemm = backend._gemm_strided

    def recording_gemm(*args):
        seen.append(("gemm", _RecordingDevice.current))
        return gemm(*args)

    monkeypatch.setattr(backend, "xp", Recording())
    monkeypatch.setattr(backend, "_get_function", recording_get_function)
    monkeypatch.setattr(backend, "_gemm_strided", recording_gemm)
    monkeypatch.setattr(backend, "_device_of", lambda x: _RecordingDevice(1))
    x = random_array(rng, (2, 3, 8, 8), np.float32)
    w = random_array(rng, (4, 3, 3, 3), np.float32)
    backend.conv2d(x, w, (1, 1), (1, 1, 1, 1), (1, 1), 1, "zeros", "gemm", 1 << 20)
    backend.conv_transpose2d(x, w.transpose(1, 0, 2, 3).copy(), (2, 2), (1, 1), (1, 1), 1,
                             (15, 15), "gemm", 1 << 20)
    backend.correlate_planes(x[0], w[0, 0], (8, 8), (1, 1), "symm", 0, "direct", 1 << 20)
    backend.conv2d_weight_grad(x, random_array(rng, (2, 4, 8, 8), np.float32), (3, 3), (1, 1),
                               (1, 1, 1, 1), (1, 1), 1, "zeros", "auto", 1 << 20)
    assert {name for name, _ in seen} >= {"empty", "matmul", "launch", "gemm"}
    assert all(device == 1 for _, device in seen), seen


def test_one_gemm_per_chunk_and_group_or_image(emulated, rng):
    """The weights are shared by a chunk's images through a zero batch stride: one
    GEMM per chunk (per group when there are fewer groups than images), never a
    broadcast product."""
    for (N, C, Cout, G), calls in [((6, 4, 6, 1), 1), ((6, 4, 6, 2), 2), ((2, 6, 6, 3), 2)]:
        x = random_array(rng, (N, C, 9, 9), np.float32)
        w = random_array(rng, (Cout, C // G, 3, 3), np.float32)
        before = type(emulated).gemm_calls
        got = gpuconv.conv2d(x, w, padding=1, groups=G, method="gemm")
        assert type(emulated).gemm_calls - before == calls
        assert_close(got, on_numpy(gpuconv.conv2d, x, w, padding=1, groups=G), np.float32)


def test_launch_arguments_are_converted_once_per_geometry():
    args = ((2, 64, 56, 56), (3, 3), (1, 1), (1, 1), (1, 1), (0, 56), 56, "zeros")
    first = K.im2col_launch(*args)
    assert K.im2col_launch(*args) is first  # cached geometry
    assert first.scalars is first.scalars  # converted once
    kinds = [type(s) for s in first.scalars]
    assert kinds == [np.int32] * 16 + [np.float64] * 2 + [np.int64] * 2
    assert [s.item() for s in first.scalars] == [int(a) if not isinstance(a, float) else a
                                                  for a in first.args]


def test_column_plans_respect_the_scratch_bound():
    for shape, k, stride, out_hw, scratch in [((7, 5, 30, 20), (3, 3), (1, 1), (28, 18), 10**5),
                                              ((3, 8, 40, 40), (5, 5), (2, 2), (18, 18), 10**4),
                                              ((2, 4, 9, 9), (3, 3), (1, 1), (7, 7), 1)]:
        plan = K.im2col_plan(shape, k, stride, (0, 0), (1, 1), out_hw, "zeros", 4, scratch)
        covered = np.zeros((shape[0], out_hw[0]), int)
        for c in plan.chunks:
            covered[c.n0:c.n1, c.r0:c.r1] += 1
        assert np.all(covered == 1), "every image row exactly once"
        per_row = shape[1] * k[0] * k[1] * out_hw[1] * 4
        assert plan.cols_elements * 4 <= max(scratch, per_row)
        tplan = K.col2im_plan(shape, 6, k, stride, (1, 1), (1, 1), (60, 60), 4, scratch)
        seen = np.zeros((shape[0], shape[2]), int)
        for c in tplan.chunks:
            seen[c.n0:c.n1, c.r0:c.r1] += 1
            first = c.r0 == 0
            assert all(launch.args[-1] == int(not first) for launch in c.launches)
        assert np.all(seen == 1)


def test_rtol_table_covers_every_kernel_dtype():
    assert set(K.TYPENAMES) <= set(RTOL)


# -- the cuBLAS call, against cuBLAS's documented column-major semantics ----------

class _DeviceArray:
    """A NumPy buffer posing as a CuPy array: ``.data.ptr`` and ``.dtype``."""

    def __init__(self, host):
        self.host, self.dtype = host, host.dtype
        self.data = type("ptr", (), {"ptr": host.ctypes.data})()


def _fake_cublas(buffers, calls):
    """cuBLAS's gemmStridedBatchedEx as documented (column-major, leading
    dimensions, batch strides in elements, alpha/beta read from host pointers),
    on NumPy buffers found by address."""
    import ctypes
    from types import SimpleNamespace

    from numpy.lib.stride_tricks import as_strided

    types = {"e": 2, "f": 0, "d": 1, "F": 4, "D": 5}   # cudaDataType values
    # cuBLAS 11's cublasComputeType_t: CUBLAS_COMPUTE_32F and CUBLAS_COMPUTE_64F (a data
    # type in this argument is the pre-11 API, refused by cuBLAS 11 and later).
    compute = {"e": 68, "f": 68, "F": 68, "d": 70, "D": 70}

    def column_major(ptr, rows, cols, ld, stride, batch):
        for buf in buffers:
            base = buf.ctypes.data
            if base <= ptr < base + buf.nbytes:
                it = buf.itemsize
                off = (ptr - base) // it
                last = off + (batch - 1) * stride + (cols - 1) * ld + rows - 1
                assert ld >= rows and last < buf.size, "operand outside its buffer"
                return as_strided(buf.reshape(-1)[off:], (batch, rows, cols),
                                  (stride * it, it, ld * it))
        raise AssertionError(f"pointer {ptr:#x} is in no buffer")

    def scalar(ptr, dtype):
        raw = ctypes.string_at(ptr, np.dtype(dtype).itemsize)
        return np.frombuffer(raw, dtype)[0]

    def gemm(handle, transa, transb, m, n, k, alpha, A, Atype, lda, sA, B, Btype, ldb, sB,
             beta, C, Ctype, ldc, sC, batch, compute_type, algo):
        assert (transa, transb, handle) == (0, 0, "handle") and Atype == Btype == Ctype
        char = {v: c for c, v in types.items()}[Ctype]
        coef = np.float32 if char == "e" else np.dtype(char)
        assert compute_type == compute[char], (char, compute_type)
        a = column_major(A, m, k, lda, sA, batch)
        b = column_major(B, k, n, ldb, sB, batch)
        c = column_major(C, m, n, ldc, sC, batch)
        assert scalar(beta, coef) == 0  # C is not read
        c[...] = scalar(alpha, coef) * np.matmul(a.astype(coef), b.astype(coef))
        calls.append(batch)

    return lambda cupy_module: SimpleNamespace(
        gemmStridedBatchedEx=gemm, get_handle=lambda: "handle", types=types, compute=compute,
        GEMM_DEFAULT=-1)


def _block(buf, off, rows, cols, ld):
    return buf.reshape(-1)[off + np.arange(rows)[:, None] * ld + np.arange(cols)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_strided_makes_the_documented_cublas_call(rng, monkeypatch, dtype):
    """The row-major products the backend asks for, through a stand-in that follows
    cuBLAS's column-major contract: operand order, leading dimensions, offsets,
    a zero batch stride for shared weights, types."""
    from gpuconv.backends import cupy as cupy_backend

    calls = []
    buffers = []
    monkeypatch.setattr(cupy_backend, "_cublas", _fake_cublas(buffers, calls))
    backend = cupy_backend.CupyBackend(np)
    G, M, K, N, images = 3, 4, 5, 7, 2
    w = random_array(rng, (G, M, K), dtype)
    b = random_array(rng, (images, G, K, N + 3), dtype)     # row stride N + 3
    c = np.full((images, G, M, N + 2), np.nan, dtype)      # row stride N + 2
    buffers += [w, b, c]
    for G_used, imgs in [(G, images), (2, images), (1, images), (G, 1)]:
        c[...] = np.nan
        backend._weights_times_images(
            _DeviceArray(w), _DeviceArray(b), 1, G * K * (N + 3), N + 3, _DeviceArray(c), 2,
            G * M * (N + 2), N + 2, imgs, G_used, M, N, K)
        for i in range(imgs):
            for g in range(G_used):
                bm = _block(b, 1 + i * G * K * (N + 3) + g * K * (N + 3), K, N, N + 3)
                got = _block(c, 2 + i * G * M * (N + 2) + g * M * (N + 2), M, N, N + 2)
                assert_close(got, w[g].astype(np.complex128) @ bm.astype(np.complex128), dtype)
        untouched = np.ones(c.size, bool)
        for i in range(imgs):
            for g in range(G_used):
                off = 2 + i * G * M * (N + 2) + g * M * (N + 2)
                untouched[off + np.arange(M)[:, None] * (N + 2) + np.arange(N)] = False
        assert np.isnan(c.reshape(-1)[untouched]).all(), "wrote outside the output blocks"
    # Per group (weights shared, stride 0) when groups <= images, else per image.
    assert calls == [G] * images + [images] * 2 + [images] + [G]


def test_block_constant_matches_the_source():
    assert f"#define GC_COL_THREADS {K.COL_THREADS}\n" in K.source("im2col.cu")


# -- with a GPU ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def cupy_device():
    from conftest import backend_skip_reason

    reason = backend_skip_reason("cupy")
    if reason:
        pytest.skip(reason)
    import cupy

    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.complex64])
def test_gpu_gemm_in_row_bands_and_weight_grad(cupy_device, rng, dtype):
    cp = cupy_device
    x = random_array(rng, (3, 4, 23, 17), dtype)
    w = random_array(rng, (6, 2, 3, 3), dtype)
    b = random_array(rng, (6,), dtype)
    kwargs = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2,
                  padding_mode="reflect")
    with gpuconv.scratch_limit(4 * 9 * 17 * 16):  # a few rows per band
        got = gpuconv.conv2d(cp.asarray(x), cp.asarray(w), cp.asarray(b), method="gemm",
                             **kwargs)
    assert_close(got.get(), on_numpy(gpuconv.conv2d, x, w, b, **kwargs), dtype)
    dy = random_array(rng, got.shape, dtype)
    args = ((3, 3), (2, 1), (1, 1, 2, 2), (1, 2), 2, "reflect")
    dw = conv2d_weight_grad(cp.asarray(x), cp.asarray(dy), *args)
    wide = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
    want = on_numpy(conv2d_weight_grad, x.astype(wide), dy.astype(wide), *args, method="direct")
    assert_close(dw.get(), want, dtype, scale=4.0 if dtype == np.float16 else 1.0)
    xt = random_array(rng, (2, 6, 7, 5), dtype)
    with gpuconv.scratch_limit(6 * 9 * 5 * 16):
        got = gpuconv.conv_transpose2d(cp.asarray(xt), cp.asarray(w), cp.asarray(b[:4]),
                                       stride=2, padding=1, groups=2, method="gemm")
    want = on_numpy(gpuconv.conv_transpose2d, xt, w, b[:4], stride=2, padding=1, groups=2)
    assert_close(got.get(), want, dtype, scale=2.0)


@pytest.mark.gpu
def test_gpu_arrays_on_another_device_compute_there(cupy_device, rng):
    cp = cupy_device
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two CUDA devices")
    x = random_array(rng, (2, 3, 12, 12), np.float32)
    w = random_array(rng, (4, 3, 3, 3), np.float32)
    with cp.cuda.Device(1):
        xd, wd = cp.asarray(x), cp.asarray(w)
    with cp.cuda.Device(0):
        for method in ("direct", "gemm"):
            got = gpuconv.conv2d(xd, wd, padding=1, method=method)
            assert got.device.id == 1
            assert_close(got.get(), on_numpy(gpuconv.conv2d, x, w, padding=1), np.float32)
