"""The NumPy backend's own kernels: block and chunk edges, threads, and the scratch bound.

The front-door suites check semantics on every backend; these tests aim at
the places where the NumPy kernels cut the work into pieces: plane blocks
straddling the block size, thread splits, conv2d chunks of images and of
row bands, the channel-major layout's padded rows and columns.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.signal

import gpuconv
import gpuconv.backends.numpy as npb
from conftest import assert_close, random_array

PLANE_CASES = [
    # (batch, H, W, kh, kw)
    (1, 37, 53, 3, 4),
    (5, 9, 7, 2, 3),
    (3, 1, 40, 1, 5),
    (2, 40, 1, 6, 1),
    (1, 64, 64, 7, 7),
    (4, 17, 33, 5, 1),
]


def _planes_oracle(x, k, mode, boundary, fill):
    return np.stack([scipy.signal.correlate2d(p, k, mode, boundary, fillvalue=fill) for p in x])


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of 64 elements and threads for any size: every edge case of the blocking."""
    monkeypatch.setattr(npb, "_BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(npb, "_THREAD_MIN_MACS", 0)
    monkeypatch.setenv("GPUCONV_NUM_THREADS", "3")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("mode", ["valid", "same", "full"])
def test_planes_direct_blocks_and_threads(tiny_blocks, rng, dtype, mode):
    for B, H, W, kh, kw in PLANE_CASES:
        x = random_array(rng, (B, H, W), dtype)
        k = random_array(rng, (kh, kw), dtype)
        boundary = "symm" if mode != "valid" else "fill"
        got = gpuconv.correlate2d(x, k, mode, boundary, method="direct")
        expected = _planes_oracle(x.astype(np.complex128 if x.dtype.kind == "c" else np.float64),
                                  k, mode, boundary, 0)
        assert_close(got, expected, dtype)


def test_planes_direct_threads_do_not_change_the_result(monkeypatch, rng):
    # Blocks, not threads, fix the order of the sums: the results are bitwise equal.
    monkeypatch.setattr(npb, "_BLOCK_ELEMENTS", 1000)
    monkeypatch.setattr(npb, "_THREAD_MIN_MACS", 0)
    x = rng.standard_normal((3, 70, 90)).astype(np.float32)
    k = rng.standard_normal((5, 4)).astype(np.float32)
    results = []
    for threads in ("1", "2", "5"):
        monkeypatch.setenv("GPUCONV_NUM_THREADS", threads)
        results.append(gpuconv.correlate2d(x, k, "valid", method="direct"))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_planes_direct_default_blocking_large_plane(rng):
    # Larger than one default block (2**18 elements): row blocks and threads for real.
    x = rng.standard_normal((700, 513))
    k = rng.standard_normal((3, 5))
    got = gpuconv.correlate2d(x, k, "valid", method="direct")
    assert_close(got, scipy.signal.correlate2d(x, k, "valid"), np.float64)


def test_num_threads_env(monkeypatch):
    monkeypatch.setenv("GPUCONV_NUM_THREADS", "3")
    assert npb.num_threads() == 3
    monkeypatch.setenv("GPUCONV_NUM_THREADS", "three")
    with pytest.raises(ValueError, match="GPUCONV_NUM_THREADS"):
        npb.num_threads()
    monkeypatch.delenv("GPUCONV_NUM_THREADS")
    assert 1 <= npb.num_threads() <= 8


def _conv_oracle(x, w, stride, padding, dilation, groups):
    """Sum over input channels of SciPy's valid correlations, then subsample.

    SciPy conjugates its kernel and conv2d does not: the kernel goes in conjugated.
    """
    N, C, H, W = x.shape
    Cout, Cg, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    # A dilated kernel is the kernel with zeros between its taps.
    wd = np.zeros((Cout, Cg, dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1), w.dtype)
    wd[:, :, ::dilation[0], ::dilation[1]] = w
    Coutg = Cout // groups
    out = []
    for n in range(N):
        planes = []
        for o in range(Cout):
            g = o // Coutg
            acc = sum(scipy.signal.correlate2d(x[n, g * Cg + c], np.conj(wd[o, c]), "valid")
                      for c in range(Cg))
            planes.append(acc[::stride[0], ::stride[1]])
        out.append(planes)
    return np.array(out)


CONV_CASES = [
    # (N, C, H, W, C_out, (kh, kw), stride, padding, dilation, groups)
    (3, 4, 11, 9, 6, (3, 3), (1, 1), (0, 0), (1, 1), 1),
    (2, 6, 10, 12, 4, (3, 2), (1, 1), (1, 2), (2, 1), 2),
    (2, 3, 13, 12, 5, (3, 3), (2, 3), (1, 0), (1, 2), 1),
    (1, 1, 16, 20, 1, (4, 5), (1, 1), (2, 1), (1, 1), 1),
    (2, 1, 9, 9, 3, (5, 5), (1, 1), (0, 0), (1, 1), 1),
    (4, 6, 5, 7, 6, (1, 1), (1, 1), (0, 0), (1, 1), 3),
    (2, 3, 1, 15, 2, (1, 4), (1, 1), (0, 0), (1, 1), 1),
    (2, 3, 15, 1, 2, (4, 1), (1, 2), (0, 0), (1, 1), 1),
]


@pytest.mark.parametrize("threads", [1, 3], ids=["1-thread", "3-threads"])
@pytest.mark.parametrize("scratch", [2**30, 3000], ids=["whole", "row-bands"])
@pytest.mark.parametrize("method", ["direct", "gemm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
@pytest.mark.parametrize("row_pitched", [True, False], ids=["row-pitched", "plain-columns"])
def test_conv2d_chunks_and_layouts(rng, monkeypatch, method, scratch, dtype, row_pitched,
                                   threads):
    # Force either column layout of the gemm method (both are chosen by size in real use).
    monkeypatch.setattr(npb, "_FLAT_COLUMNS", lambda Wp, Wo: row_pitched)
    # Chunks on several threads however small the call.
    monkeypatch.setenv("GPUCONV_NUM_THREADS", str(threads))
    monkeypatch.setattr(npb, "_CONV_TASK_MIN_MACS", 1)
    for N, C, H, W, Cout, k, stride, padding, dilation, groups in CONV_CASES:
        x = random_array(rng, (N, C, H, W), dtype)
        w = random_array(rng, (Cout, C // groups) + k, dtype)
        with gpuconv.scratch_limit(scratch):
            got = gpuconv.conv2d(x, w, stride=stride, padding=padding, dilation=dilation,
                                 groups=groups, method=method)
        expected = _conv_oracle(x.astype(np.complex128), w.astype(np.complex128), stride,
                                padding, dilation, groups)
        if np.dtype(dtype).kind != "c":
            expected = expected.real
        assert got.flags.c_contiguous
        assert_close(got, expected, dtype, scale=np.sqrt(C * k[0] * k[1]))


@pytest.mark.parametrize("method", ["direct", "gemm"])
def test_conv2d_padding_modes(rng, method):
    x = rng.standard_normal((2, 3, 8, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    modes = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
    for mode, np_mode in modes.items():
        got = gpuconv.conv2d(x, w, padding=2, padding_mode=mode, method=method)
        xp = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), mode=np_mode)
        assert_close(got, _conv_oracle(xp, w, (1, 1), (0, 0), (1, 1), 1), np.float64)


@pytest.mark.parametrize("method", ["direct", "gemm"])
def test_conv_transpose2d_stride1_is_the_adjoint(rng, method):
    """<conv2d(x), y> == <x, conv_transpose2d(y)>, with the forward pass from SciPy."""
    for N, C, H, W, Cout, k, _, padding, dilation, groups in CONV_CASES:
        x = rng.standard_normal((N, C, H, W))
        w = rng.standard_normal((Cout, C // groups) + k)
        forward = _conv_oracle(x, w, (1, 1), padding, dilation, groups)
        y = rng.standard_normal(forward.shape)
        back = gpuconv.conv_transpose2d(y, w, padding=padding, dilation=dilation,
                                        groups=groups, method=method)
        assert back.shape == x.shape
        np.testing.assert_allclose(np.vdot(back, x), np.vdot(y, forward), rtol=1e-10)


def test_conv_transpose2d_stride1_matches_torch(rng):
    torch = pytest.importorskip("torch", reason="torch is not installed: no PyTorch oracle")
    x = rng.standard_normal((2, 6, 7, 9))
    w = rng.standard_normal((6, 2, 3, 4))
    for method in ("direct", "gemm"):
        got = gpuconv.conv_transpose2d(x, w, padding=(1, 2), dilation=(2, 1), groups=3,
                                       output_padding=(1, 0), method=method)
        expected = torch.nn.functional.conv_transpose2d(
            torch.from_numpy(x), torch.from_numpy(w), padding=(1, 2), dilation=(2, 1),
            groups=3, output_padding=(1, 0)).numpy()
        assert_close(got, expected, np.float64)


@pytest.mark.parametrize("method", ["direct", "gemm"])
def test_strided_conv_transpose2d_by_phase_matches_the_scatter(rng, method):
    """Strides below, equal to and beyond the kernel (phases no tap reaches are zeros),
    with padding, output padding and groups, against the textbook scatter."""
    from gpuconv import reference

    cases = [  # (k, stride, padding, output_padding, groups)
        ((3, 3), (2, 2), (1, 1), (1, 1), 1),
        ((2, 3), (3, 2), (0, 1), (2, 0), 2),
        ((1, 2), (5, 4), (0, 1), (4, 3), 1),
        ((3, 1), (7, 9), (2, 0), (0, 8), 2),
        ((4, 4), (4, 4), (3, 0), (0, 0), 1),
    ]
    for k, stride, padding, output_padding, groups in cases:
        x = rng.standard_normal((2, 4, 5, 3))
        w = rng.standard_normal((4, 6 // groups) + k)
        b = rng.standard_normal(6)
        got = gpuconv.conv_transpose2d(x, w, b, stride=stride, padding=padding,
                                       output_padding=output_padding, groups=groups,
                                       method=method)
        expected = reference.conv_transpose2d(x, w, b, stride, padding, output_padding,
                                              groups)
        assert got.shape == expected.shape
        assert_close(got, expected, np.float64)


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return result, peak


def test_planes_gemm_peak_scratch_stays_under_the_limit(rng):
    # A naive im2col of this call is 225 * 498**2 * 4 bytes = 213 MiB.
    x = rng.standard_normal((512, 512), dtype=np.float32)
    k = rng.standard_normal((15, 15), dtype=np.float32)
    limit = 4 * 2**20
    with gpuconv.scratch_limit(limit):
        got, peak = _peak_bytes(lambda: gpuconv.correlate2d(x, k, "valid", method="gemm"))
    assert_close(got, scipy.signal.correlate2d(x.astype(np.float64), k, "valid"), np.float32,
                 scale=15)
    # Besides the bounded chunk: the channel-major copy of the input, the
    # row-pitched product and the output, each about one plane.
    plane = x.nbytes
    assert peak <= limit + 3 * plane + 2**20, peak
    assert peak < 225 * 498**2 * 4 / 10


@pytest.mark.parametrize("threads", ["1", "3"])
def test_conv2d_peak_scratch_stays_under_the_limit(rng, monkeypatch, threads):
    # The chunks in flight on every thread together stay under the limit.
    monkeypatch.setenv("GPUCONV_NUM_THREADS", threads)
    x = rng.standard_normal((4, 16, 64, 64), dtype=np.float32)
    w = rng.standard_normal((8, 16, 7, 7), dtype=np.float32)
    naive = 16 * 49 * 4 * 58 * 58 * 4
    limit = 2**20
    for method in ("gemm", "direct"):
        with gpuconv.scratch_limit(limit):
            got, peak = _peak_bytes(lambda: gpuconv.conv2d(x, w, method=method))
        expected = _conv_oracle(x[:1].astype(np.float64), w.astype(np.float64), (1, 1), (0, 0),
                                (1, 1), 1)
        assert_close(got[:1], expected, np.float32, scale=28)
        # Input copy (channel-major), row-pitched result and output, plus the chunk.
        assert peak <= limit + x.nbytes + 2 * 4 * 8 * 58 * 64 * 4 + 2**20, (method, peak)
        assert peak < naive, (method, peak)


def test_results_never_alias_pooled_scratch(rng):
    """Scratch goes back to a pool for the next call: a returned array must own its
    memory, or the next call would overwrite it (a 1x1 conv2d on one image is the case
    where the accumulator's transpose is already contiguous)."""
    from gpuconv.backends import _scratch

    x = rng.standard_normal((1, 2, 1, 1))
    w = rng.standard_normal((2, 1, 1, 1))
    first = {m: gpuconv.conv2d(x, w, groups=2, method=m) for m in ("direct", "gemm")}
    kept = {m: a.copy() for m, a in first.items()}
    for _ in range(3):  # calls that take the same buffers from the pool and write them
        gpuconv.conv2d(rng.standard_normal((1, 2, 1, 1)), w, groups=2, method="direct")
        gpuconv.conv2d(rng.standard_normal((1, 2, 8, 8)), rng.standard_normal((4, 2, 3, 3)),
                       method="gemm")
    for m in first:
        np.testing.assert_array_equal(first[m], kept[m])
    assert _scratch._free, "the pool keeps buffers between calls"


@pytest.mark.parametrize("threads", ["1", "3"])
@pytest.mark.parametrize("cin,cout,groups", [(8, 8, 1), (2, 12, 1), (6, 6, 3)])
def test_weight_grad_shares_of_the_threads_add_up(monkeypatch, rng, threads, cin, cout,
                                                  groups):
    # The NumPy backend splits the row-pitched weight gradient's reduction over
    # its threads: the shares must sum to the reference correlation whatever the
    # split (the skinny few-channel branch stacks columns per share).
    from gpuconv.nn.functional import conv2d_weight_grad

    monkeypatch.setattr(npb, "_CONV_TASK_MIN_MACS", 1)
    monkeypatch.setenv("GPUCONV_NUM_THREADS", threads)
    x = rng.standard_normal((3, cin, 11, 9))
    w = rng.standard_normal((cout, cin // groups, 3, 2))
    for stride, pads in [((1, 1), (1, 1, 0, 1)), ((2, 1), (0, 0, 0, 0))]:
        y = gpuconv.reference.conv2d(np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:])), w,
                                     stride=stride, groups=groups)
        dy = rng.standard_normal(y.shape)
        got = conv2d_weight_grad(x, dy, (3, 2), stride, pads, (1, 1), groups)
        # d<conv(x, w), dy>/dw, term by term: the correlation of the padded input with dy.
        xp = np.pad(x, ((0, 0), (0, 0), pads[:2], pads[2:]))
        want = np.zeros_like(w)
        Ho, Wo = dy.shape[2:]
        for o in range(cout):
            g = o // (cout // groups)
            for c in range(cin // groups):
                for u in range(3):
                    for v in range(2):
                        patch = xp[:, g * (cin // groups) + c,
                                   u:u + stride[0] * (Ho - 1) + 1:stride[0],
                                   v:v + stride[1] * (Wo - 1) + 1:stride[1]]
                        want[o, c, u, v] = (patch * dy[:, o]).sum()
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32])
def test_direct_with_kernels_larger_than_their_output(rng, dtype):
    """Fewer outputs than taps: the planes loop over outputs, conv2d over windows, and
    conv2d where the outputs are a small part of the padded images; against SciPy and
    the textbook loops."""
    from gpuconv import reference

    for shape, kshape, mode, boundary in [((30, 26), (25, 24), "valid", "fill"),
                                          ((1, 4), (1, 21), "same", "symm"),
                                          ((6, 5), (9, 11), "same", "wrap"),
                                          ((3, 40), (2, 37), "full", "fill")]:
        a, k = random_array(rng, shape, dtype), random_array(rng, kshape, dtype)
        for op in ("correlate2d", "convolve2d"):
            got = getattr(gpuconv, op)(a, k, mode, boundary, method="direct")
            assert_close(got, getattr(scipy.signal, op)(a, k, mode, boundary), dtype)
    # (x shape, w shape, stride, padding, dilation, groups)
    for xs, ws, stride, padding, dilation, groups in [
            ((2, 4, 12, 11), (4, 2, 10, 9), (1, 1), (0, 0), (1, 1), 2),
            ((1, 3, 20, 20), (2, 3, 5, 5), (1, 1), (0, 0), (3, 3), 1),
            ((2, 2, 15, 16), (4, 2, 6, 5), (2, 3), (3, 1), (2, 1), 1)]:
        x, w = random_array(rng, xs, dtype), random_array(rng, ws, dtype)
        got = gpuconv.conv2d(x, w, stride=stride, padding=padding, dilation=dilation,
                             groups=groups, method="direct")
        pads = (padding[0], padding[0], padding[1], padding[1])
        expected = reference.conv2d(x, w, stride=stride, padding=pads, dilation=dilation,
                                    groups=groups)
        assert_close(got, expected, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
def test_planes_direct_over_outputs_is_bit_for_bit_the_tap_loop(rng, dtype):
    # With fewer outputs than taps the planes loop over outputs; their sums must
    # keep the tap loop's order and roundings (a dask chunk may take either path).
    ext = random_array(rng, (3, 14, 17), dtype)
    w = random_array(rng, (9, 11), dtype)
    out_shape = (14 - 9 + 1, 17 - 11 + 1)   # 42 outputs, 99 taps
    got = npb.planes_direct(ext, w, out_shape, threads=2)
    oh, ow = out_shape
    expected = ext[:, :oh, :ow] * w[0, 0]
    for u in range(9):
        for v in range(11):
            if (u, v) != (0, 0):
                expected = expected + ext[:, u:u + oh, v:v + ow] * w[u, v]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("method", ["direct", "gemm"])
def test_conv_transpose2d_with_outputs_many_times_the_input(rng, method):
    """Large dilations or kernels on small inputs scatter the input's windows; against
    the textbook scatter."""
    from gpuconv import reference

    cases = [  # (x shape, w shape, stride, padding, output_padding, dilation, groups)
        ((2, 4, 3, 3), (4, 3, 5, 5), (1, 1), (0, 0), (0, 0), (1, 1), 1),
        ((1, 2, 2, 3), (2, 4, 3, 3), (1, 1), (1, 2), (0, 0), (9, 4), 1),
        ((2, 4, 2, 2), (4, 1, 4, 3), (2, 1), (1, 0), (1, 0), (1, 1), 2),
        ((1, 3, 1, 2), (3, 2, 7, 6), (1, 1), (2, 1), (0, 0), (1, 1), 1),
    ]
    for xs, ws, stride, padding, output_padding, dilation, groups in cases:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        b = rng.standard_normal(ws[1] * groups)
        got = gpuconv.conv_transpose2d(x, w, b, stride=stride, padding=padding,
                                       output_padding=output_padding, groups=groups,
                                       dilation=dilation, method=method)
        expected = reference.conv_transpose2d(x, w, b, stride, padding, output_padding,
                                              groups, dilation)
        assert got.shape == expected.shape
        assert_close(got, expected, np.float64)
