"""The NumPy backend: the embedded default, on the CPU.

Direct correlation of planes is a cache-blocked shift-and-add run on a small
thread pool (NumPy's ufuncs release the GIL).  ``conv2d`` is an implicit GEMM
over row-pitched images: with stride 1, every kernel tap's operand is one
contiguous run per channel, so ``"gemm"`` builds its bounded column buffer
with long memcpys and ``"direct"`` hands BLAS strided views with no copy.
The thread pool, and how it keeps BLAS's threads out of its way, is
:mod:`gpuconv.backends._threads`.
``"winograd"`` runs its chunks on that pool too.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .._dispatch import array_library
from . import ArrayBackend, _generic, _scratch
from ._threads import num_threads, run_tasks, single_threaded_blas

__all__ = ["NumpyBackend", "num_threads", "planes_direct", "conv2d_gemm", "conv2d_direct"]

def _quiet(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` without NumPy's floating-point warnings.

    NaN and Inf in the data are results, not errors: they propagate as in
    SciPy, which does not warn either.  (NumPy's error state is per thread, so
    pool tasks need it too.)
    """
    @functools.wraps(fn)
    def quiet(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    return quiet


def available_ram() -> int | None:
    """RAM that can be allocated without swapping: Linux's MemAvailable, else all of it."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


# -- single-channel planes: cache-blocked shift-and-add ----------------------------------
# A block's output, one temporary and the input rows it reads should stay in
# the core's cache between the kernel taps: about 1 MiB of float32 each.
# Measured on a 2-core EPYC (512 KiB L2, large L3): 2**18 elements beat
# 2**15 (L2-sized: the per-ufunc overhead of 2*kh*kw calls per block then
# dominates) and 2**20.
_BLOCK_ELEMENTS = 2**18
# Below this many multiply-adds a call is over before threads could help.
_THREAD_MIN_MACS = 2**22
# conv2d's threads are gpuconv's, not BLAS's: its chunks (one matrix product
# each, with single-threaded BLAS) are shared out over the pool.  BLAS's own
# threads spin for about 0.1 s of CPU after every call they serve (measured
# with OpenBLAS 0.3.31: 0.1 s of CPU time during a 0.3 s sleep after one
# 400x400 matmul), taking a core from whatever runs next (gpuconv's pool,
# torch's OpenMP threads, other processes), and on a busy machine a call
# split in fixed shares waits for a descheduled worker: with BLAS's threads,
# (32,64,28,28)->64 3x3 float32 took 371 ms in 4 MiB chunks and 42 ms in
# 64 MiB on the shared 2-core machine.  gpuconv's idle threads sleep, and a
# thread the scheduler puts aside just takes fewer chunks.
# Largest chunk of the conv2d kernels when the scratch bound allows more.
_GEMM_CHUNK_BYTES = 2**26
_DIRECT_CHUNK_BYTES = 2**26
# A conv2d call gets one thread per this many multiply-adds (up to num_threads()):
# a thread costs tens of microseconds to hand work to.
_CONV_TASK_MIN_MACS = 2**22
# OpenBLAS runs a product of at most this many multiply-adds (m*n*k) on one
# thread anyway (interface/gemm.c: SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD):
# a call this small skips limiting BLAS, which costs a few microseconds.
_BLAS_SERIAL_MACS = 2**18
_AS_IS = contextlib.nullcontext()
# With few output channels per group the product is memory-bound (a GEMV
# for one channel): columns must still be in cache when BLAS reads them.
# On one thread, 1024² 7x7 took 6.6 ms in 4 MiB chunks and 20 ms in 64 MiB.
_GEMV_CHUNK_BYTES = 2**22


# Working-set target of a Winograd chunk (its transform buffers): products and
# transforms of a chunk that fits the L2/L3 caches run at cache speed.
_WINOGRAD_CHUNK_BYTES = 2**23


def _FLAT_COLUMNS(Wp: int, Wo: int) -> bool:
    # Row-pitched columns copy long runs but also compute the Wp - Wo surplus
    # columns; worth it unless the surplus is a large share of short rows.
    return Wp <= 1.1 * Wo or Wo >= 64


def planes_direct(ext: np.ndarray, w: np.ndarray, out_shape: tuple[int, int],
                  threads: int) -> np.ndarray:
    """out[b, i, j] = sum_{u,v} ext[b, i + u, j + v] * w[u, v], blocked and threaded.

    ``ext`` (B, oh + kh - 1, ow + kw - 1) is the boundary-extended input.  The
    output is cut into blocks of whole planes (small planes) or of rows of
    one plane; each block accumulates its kh*kw shifted, scaled input
    windows while it is hot in the cache.
    """
    B = ext.shape[0]
    oh, ow = out_shape
    kh, kw = w.shape
    out = np.empty((B, oh, ow), dtype=ext.dtype)
    if oh * ow < kh * kw:
        # Fewer outputs than taps (a kernel nearly as large as the input): one step
        # per output, its window times the kernel, summed in tap order by
        # add.accumulate (sequential, as the tap loop below adds), so the result
        # is bit for bit the tap loop's whatever the plane size (a dask chunk
        # may take either path): oh*ow steps instead of kh*kw (a 390² kernel on
        # a 400² plane, 'valid': 1.1 s of per-tap calls -> 40 ms).
        K = kh * kw
        wflat = w.reshape(K)
        step = max(1, _BLOCK_ELEMENTS * 16 // K)
        for b0 in range(0, B, step):
            b1 = min(B, b0 + step)
            prod = np.empty((b1 - b0, K), dtype=ext.dtype)
            for i in range(oh):
                for j in range(ow):
                    np.multiply(ext[b0:b1, i:i + kh, j:j + kw].reshape(b1 - b0, K), wflat,
                                out=prod)
                    np.add.accumulate(prod, axis=1, out=prod)
                    out[b0:b1, i, j] = prod[:, -1]
        return out
    taps = [(u, v, w[u, v]) for u in range(kh) for v in range(kw)]
    plane = oh * ow
    if plane >= _BLOCK_ELEMENTS:
        rows = max(1, _BLOCK_ELEMENTS // ow)
        blocks = [(b, b + 1, r, min(oh, r + rows)) for b in range(B) for r in range(0, oh, rows)]
    else:
        planes = max(1, _BLOCK_ELEMENTS // plane)
        blocks = [(b, min(B, b + planes), 0, oh) for b in range(0, B, planes)]
    if B * plane * kh * kw < _THREAD_MIN_MACS:
        threads = 1
    elif len(blocks) < threads:
        # Split rows further so that every thread has work.
        per = -(-oh // threads)
        blocks = [(b, b + 1, r, min(oh, r + per)) for b in range(B) for r in range(0, oh, per)]

    def run(block: tuple[int, int, int, int]) -> None:
        b0, b1, r0, r1 = block
        o = out[b0:b1, r0:r1]
        tmp = np.empty_like(o)
        u, v, c = taps[0]
        np.multiply(ext[b0:b1, r0 + u:r1 + u, v:v + ow], c, out=o)
        for u, v, c in taps[1:]:
            np.multiply(ext[b0:b1, r0 + u:r1 + u, v:v + ow], c, out=tmp)
            np.add(o, tmp, out=o)

    run_tasks(run, blocks, threads)
    return out


# -- conv2d: implicit GEMM over channel-major, row-pitched images ----------------------
def _channel_major(xpad: np.ndarray, groups: int, tail: int) -> np.ndarray:
    """(G, C/G, N*Hp*Wp + tail): every channel's images end to end, then ``tail`` zeros.

    In this layout output pixel (n, i, j) of kernel tap (u, v) reads flat
    position n*Hp*Wp + i*Wp + j + (u*dh*Wp + v*dw), so a tap's operand over a
    run of pixels is one contiguous run per channel; positions with j >= Wo
    (or i >= Ho) are computed and thrown away.
    """
    N, C, Hp, Wp = xpad.shape
    M = N * Hp * Wp
    # Scratch: the caller gives it back to the pool when done with it.
    buf = _scratch.take(C * (M + tail), xpad.dtype).reshape(C, M + tail)
    buf[:, :M].reshape(C, N, Hp, Wp)[...] = xpad.transpose(1, 0, 2, 3)
    buf[:, M:] = 0
    return buf.reshape(groups, C // groups, M + tail)


def _taps_view(xcm: np.ndarray, kh: int, kw: int, dilation: tuple[int, int], Wp: int,
               start: int, runs: int, run_stride: int, length: int) -> np.ndarray:
    """View (G, kh, kw, Cg, runs, length) of the taps' operands, ``runs`` runs of ``length``."""
    G, Cg, _ = xcm.shape
    sG, sC, it = xcm.strides
    return as_strided(xcm[:, :, start:], shape=(G, kh, kw, Cg, runs, length),
                      strides=(sG, dilation[0] * Wp * it, dilation[1] * it, sC,
                               run_stride * it, it),
                      writeable=False)


def _strided_columns(xpad: np.ndarray, kh: int, kw: int, stride: tuple[int, int],
                     dilation: tuple[int, int], G: int, n0: int, n1: int, r0: int, r1: int,
                     Wo: int) -> np.ndarray:
    """View (G, kh, kw, Cg, n, rows, Wo) of im2col for images n0:n1, output rows r0:r1."""
    _, C, _, _ = xpad.shape
    sN, sC, sH, sW = xpad.strides
    base = xpad[n0:n1, :, r0 * stride[0]:]
    return as_strided(base, shape=(G, kh, kw, C // G, n1 - n0, r1 - r0, Wo),
                      strides=((C // G) * sC, dilation[0] * sH, dilation[1] * sW, sC, sN,
                               stride[0] * sH, stride[1] * sW),
                      writeable=False)


def _chunks(N: int, rows: int, per_row: int, budget: int) -> list[tuple[int, int, int, int]]:
    """(n0, n1, r0, r1) chunks: whole images while ``budget`` allows, else row bands of one."""
    per_image = per_row * rows
    if per_image <= budget:
        images = max(1, budget // max(per_image, 1))
        return [(n, min(N, n + images), 0, rows) for n in range(0, N, images)]
    band = max(1, budget // max(per_row, 1))
    return [(n, n + 1, r, min(rows, r + band)) for n in range(N) for r in range(0, rows, band)]


def _share_out(threads: int, macs: int, work_bytes: int, budget: int,
               scratch_bytes: int) -> tuple[int, int]:
    """(threads, bytes per chunk) for ``macs`` multiply-adds over ``work_bytes`` of scratch.

    A thread per _CONV_TASK_MIN_MACS multiply-adds; then at least two
    chunks per thread (so that the others take over the share of a thread the
    scheduler puts aside), each thread's chunk within its share of the
    scratch bound.
    """
    threads = max(1, min(threads, macs // _CONV_TASK_MIN_MACS))
    if threads == 1:
        return 1, budget
    return threads, max(1, min(budget, scratch_bytes // threads,
                               -(-work_bytes // (2 * threads))))


def conv2d_gemm(xpad: np.ndarray, w: np.ndarray, stride: tuple[int, int],
                dilation: tuple[int, int], groups: int, out_hw: tuple[int, int],
                scratch_bytes: int, threads: int = 1) -> np.ndarray:
    """im2col into a bounded buffer + one matrix product (per group) per chunk.

    Columns are (kh*kw*C_in/groups, pixels of the chunk): the pixels of
    several images side by side, so one product covers the chunk.  With
    stride 1 the columns come from the channel-major layout of
    :func:`_channel_major` as long contiguous runs (rows pitched at the
    padded width; the surplus columns are dropped at the end).  Chunks are
    sized so that the column buffers of the chunks in flight stay under
    ``scratch_bytes``, and run on up to ``threads`` threads, each with
    single-threaded BLAS.
    """
    N, C, Hp, Wp = xpad.shape
    Cout, Cg, kh, kw = w.shape
    G = groups
    Coutg = Cout // G
    Ho, Wo = out_hw
    K = kh * kw * Cg
    it = xpad.dtype.itemsize
    wmat = np.ascontiguousarray(
        w.reshape(G, Coutg, Cg, kh, kw).transpose(0, 1, 3, 4, 2)).reshape(G, Coutg, K)
    flat = stride == (1, 1) and _FLAT_COLUMNS(Wp, Wo)
    pitch = Wp if flat else Wo
    # The columns, and the chunk's product before it is scattered to ``res``.
    per_row = (G * K + Cout) * pitch * it
    budget = min(scratch_bytes, _GEMM_CHUNK_BYTES if Coutg >= 16 else _GEMV_CHUNK_BYTES)
    macs = N * Ho * Wo * Cout * K
    threads, budget = _share_out(threads, macs, N * Ho * per_row, budget, scratch_bytes)
    out = np.empty((N, Cout, Ho, Wo), dtype=xpad.dtype)
    xcm = _channel_major(xpad, G, (kw - 1) * dilation[1]) if flat else None

    def run(chunk: tuple[int, int, int, int]) -> None:
        n0, n1, r0, r1 = chunk
        nb, nr = n1 - n0, r1 - r0
        if flat:
            view = _taps_view(xcm, kh, kw, dilation, Wp, n0 * Hp * Wp + r0 * Wp, nb, Hp * Wp,
                              nr * Wp)
        else:
            view = _strided_columns(xpad, kh, kw, stride, dilation, G, n0, n1, r0, r1, Wo)
        n_cols = nb * nr * pitch
        with _scratch.scratch(G * K * n_cols, xpad.dtype) as cols, \
                _scratch.scratch(Cout * n_cols, xpad.dtype) as prod:
            cols = cols.reshape(view.shape)
            np.copyto(cols, view)
            prod = prod.reshape(G, Coutg, n_cols)
            np.matmul(wmat, cols.reshape(G, K, n_cols), out=prod)
            # Straight into the NCHW output: (Cout, images, rows, pitch) minus the surplus.
            out[n0:n1, :, r0:r1, :] = prod.reshape(Cout, nb, nr, pitch)[..., :Wo].transpose(
                1, 0, 2, 3)

    try:
        with single_threaded_blas() if macs > _BLAS_SERIAL_MACS else _AS_IS:
            run_tasks(run, _chunks(N, Ho, per_row, budget), threads)
    finally:
        _scratch.give(xcm)
    return out


def conv2d_direct(xpad: np.ndarray, w: np.ndarray, stride: tuple[int, int],
                  dilation: tuple[int, int], groups: int, out_hw: tuple[int, int],
                  scratch_bytes: int, threads: int = 1) -> np.ndarray:
    """Accumulate one (C_out x C_in) matrix product per kernel tap, no column buffer.

    With stride 1 each tap's operand is a strided view of the channel-major
    images (:func:`_channel_major`) that BLAS reads in place: no copies but
    the accumulation, at the price of computing the padded rows and columns
    too.  Chunks of consecutive positions of that layout (up to 64 MiB of
    accumulator) bound the scratch, and run on up to ``threads`` threads,
    each with single-threaded BLAS.
    """
    N, C, Hp, Wp = xpad.shape
    Cout, Cg, kh, kw = w.shape
    G = groups
    Coutg = Cout // G
    Ho, Wo = out_hw
    # The in-place views compute every position of the padded images; where the
    # outputs are a small part of them (a kernel nearly as large as the input,
    # as in a weight gradient's swapped arrays) that wastes the work many times
    # over (a 3x3 output of a 400² input: 1.2 s), so copy each tap's window.
    if stride != (1, 1) or Hp * Wp > 4 * Ho * Wo:
        return _generic.conv2d_direct(np, xpad, w, stride, dilation, groups, out_hw)
    it = xpad.dtype.itemsize
    wt = np.ascontiguousarray(w.reshape(G, Coutg, Cg, kh, kw).transpose(3, 4, 0, 1, 2))
    tail = (kh - 1) * dilation[0] * Wp + (kw - 1) * dilation[1]
    xcm = _channel_major(xpad, G, tail)
    M = N * Hp * Wp
    # A position's accumulator and its temporary.
    per_position = 2 * Cout * it
    macs = M * Cout * Cg * kh * kw
    threads, budget = _share_out(threads, macs, M * per_position,
                                 min(scratch_bytes, _DIRECT_CHUNK_BYTES), scratch_bytes)
    step = max(1, budget // per_position)
    res = _scratch.take(G * Coutg * M, xpad.dtype).reshape(G, Coutg, M)

    def run(m0: int) -> None:
        m1 = min(M, m0 + step)
        acc = res[:, :, m0:m1]
        with _scratch.scratch(G * Coutg * (m1 - m0), xpad.dtype) as t:
            t = t.reshape(G, Coutg, m1 - m0)
            first = True
            for u in range(kh):
                for v in range(kw):
                    off = u * dilation[0] * Wp + v * dilation[1]
                    np.matmul(wt[u, v], xcm[:, :, m0 + off:m1 + off], out=acc if first else t)
                    if not first:
                        np.add(acc, t, out=acc)
                    first = False

    try:
        with single_threaded_blas() if macs > _BLAS_SERIAL_MACS else _AS_IS:
            run_tasks(run, range(0, M, step), threads)
        # A fresh array: ``res`` goes back to the pool (ascontiguousarray could return
        # a view of it when the transpose happens to be contiguous already).
        return res.reshape(Cout, N, Hp, Wp)[:, :, :Ho, :Wo].transpose(1, 0, 2, 3).copy()
    finally:
        _scratch.give(res)
        _scratch.give(xcm)


def conv_transpose_as_conv(x: np.ndarray, w: np.ndarray, padding: tuple[int, int],
                           dilation: tuple[int, int], groups: int,
                           out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For stride 1: the input (zero-extended or cropped) and weight of an equivalent conv2d.

    A stride-1 transposed convolution is the full correlation with the
    spatially flipped kernel whose in/out channels are swapped per group.
    """
    N, Cin, H, W = x.shape
    _, Coutg, kh, kw = w.shape
    G = groups
    Ho, Wo = out_hw
    top = dilation[0] * (kh - 1) - padding[0]
    left = dilation[1] * (kw - 1) - padding[1]
    bottom = Ho + dilation[0] * (kh - 1) - H - top
    right = Wo + dilation[1] * (kw - 1) - W - left
    xe = _generic.extend_planes(np, x, top, bottom, left, right, "fill", 0)
    wf = w.reshape(G, Cin // G, Coutg, kh, kw)[:, :, :, ::-1, ::-1]
    wf = np.ascontiguousarray(wf.transpose(0, 2, 1, 3, 4)).reshape(G * Coutg, Cin // G, kh, kw)
    return np.ascontiguousarray(xe), wf


class NumpyBackend(ArrayBackend):
    """Compute with NumPy and SciPy on the CPU."""

    name = "numpy"
    xp = np

    @property
    def fft(self) -> Any:
        import scipy.fft

        return scipy.fft

    def asarray(self, x: Any) -> np.ndarray:
        # A CuPy array refuses implicit conversion; its .get() is the explicit copy.
        if array_library(x) == "cupy":
            return x.get()
        return np.asarray(x)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def device_key(self) -> str:
        return "cpu"

    def available_memory(self) -> int | None:
        return available_ram()

    # -- kernels -----------------------------------------------------------
    def winograd_options(self) -> dict[str, Any]:
        # One chunk at a time, its products on single-threaded BLAS, the copies into
        # the output on gpuconv's threads.  Measured on the idle 2-core machine, two
        # chunks at once were 1.3-1.6x slower than one ((32,64,28,28)->64 3x3: 10-11
        # against 8.2-8.4 ms; (8,256,14,14)->256: 8.5-9 against 5.4-5.7 ms, float32):
        # the transforms are memory-bound and the two chunks only compete.
        threads = num_threads()

        def run(fn: Callable[[Any], None], tasks: list[Any]) -> None:
            run_tasks(fn, tasks, threads)

        return {"chunk_bytes": _WINOGRAD_CHUNK_BYTES, "workers": 1, "run_tasks": run,
                "scratch": _scratch}

    @_quiet
    def correlate_planes(self, x, w, out_shape, origin, boundary, fillvalue, method,
                         scratch_bytes):
        if method not in ("direct", "gemm"):
            return super().correlate_planes(x, w, out_shape, origin, boundary, fillvalue,
                                            method, scratch_bytes)
        H, W = x.shape[-2:]
        (kh, kw), (oh, ow), (top, left) = w.shape, out_shape, origin
        ext = _generic.extend_planes(np, x, top, oh + kh - 1 - H - top, left,
                                     ow + kw - 1 - W - left, boundary, fillvalue)
        if method == "direct":
            return planes_direct(ext, w, out_shape, num_threads())
        ext = np.ascontiguousarray(ext)[:, None]
        return conv2d_gemm(ext, w[None, None], (1, 1), (1, 1), 1, out_shape, scratch_bytes,
                           num_threads())[:, 0]

    @_quiet
    def conv2d(self, x, w, stride, pads, dilation, groups, padding_mode, method,
               scratch_bytes, bias=None):
        if method not in ("direct", "gemm"):
            return super().conv2d(x, w, stride, pads, dilation, groups, padding_mode, method,
                                  scratch_bytes, bias)
        xpad = np.ascontiguousarray(_generic.pad_nchw(np, x, pads, padding_mode))
        Ho = (xpad.shape[2] - dilation[0] * (w.shape[2] - 1) - 1) // stride[0] + 1
        Wo = (xpad.shape[3] - dilation[1] * (w.shape[3] - 1) - 1) // stride[1] + 1
        out = self._conv(xpad, w, stride, dilation, groups, (Ho, Wo), method, scratch_bytes)
        return _generic.add_bias(out, bias)

    def _conv(self, xpad, w, stride, dilation, groups, out_hw, method, scratch_bytes):
        if method == "gemm":
            return conv2d_gemm(xpad, w, stride, dilation, groups, out_hw, scratch_bytes,
                               num_threads())
        if w.shape[:2] == (1, 1) and stride == (1, 1) and dilation == (1, 1):
            # One input and one output channel: the planes kernel, threaded.
            return planes_direct(xpad[:, 0], w[0, 0], out_hw, num_threads())[:, None]
        return conv2d_direct(xpad, w, stride, dilation, groups, out_hw, scratch_bytes,
                             num_threads())

    @_quiet
    def conv2d_weight_grad(self, x, grad_out, kernel_hw, stride, pads, dilation, groups,
                           padding_mode, method, scratch_bytes):
        """The base class's row-pitched products, spread over gpuconv's threads; past
        small strides (and for complex), one product per tap over strided views.

        Each thread takes a share of the flat positions (the products'
        reduction axis) on single-threaded BLAS and the shares are summed:
        left to OpenBLAS's own threads, which keep spinning for about 0.1 s
        after the call, the next call of a training step (the input
        gradient, the next layer's forward) ran up to 1.5x slower.
        """
        # 'gemm' and 'direct' too: these products are an exact summation of the
        # weight gradient, in GEMM form (as the CuPy backend's im2col columns are).
        # As a conv2d of the swapped arrays, with a kernel as large as the output
        # gradient, 'gemm' copies that kernel's im2col columns and 'direct' runs a
        # product per tap of it: 30-50x slower on a (32,64,28,28) 3x3 training step.
        if method not in ("auto", "gemm", "direct"):
            return NotImplemented
        _, C, _, _ = x.shape
        _, O, Ho, Wo = grad_out.shape
        kh, kw = kernel_hw
        need_h = dilation[0] * (kh - 1) + stride[0] * (Ho - 1) + 1
        need_w = dilation[1] * (kw - 1) + stride[1] * (Wo - 1) + 1
        dtype = np.dtype(x.dtype)
        rowpitched = stride[0] * stride[1] <= 4 and dtype in (np.float32, np.float64)
        # float16 and integers go through conv2d, which widens them first.
        if not rowpitched and (dtype.kind not in "fc" or dtype == np.float16):
            return NotImplemented
        # Rows past need_h are never read (they are the remainder of the stride).
        xpad = _generic.pad_nchw(np, x, pads, padding_mode)[:, :, :need_h, :need_w]
        if not rowpitched:
            # Larger strides (and complex): the products per tap, exactly the
            # gradient's multiply-adds.  As a conv2d of the swapped arrays, whose
            # kernel is as large as the output gradient, 'auto' measured 1-1.9x
            # slower and 'direct' looped over that kernel's taps (a 252² output
            # gradient took minutes).
            return _generic.conv2d_weight_grad_taps(np, xpad, grad_out, kernel_hw, stride,
                                                    dilation, groups, scratch_bytes)
        x_cm, canvas = _generic.rowpitched_layout(np, xpad, grad_out, kernel_hw, stride,
                                                  dilation, groups)
        P = canvas.shape[2]
        macs = P * O * (C // groups) * kh * kw
        threads = max(1, min(num_threads(), macs // _CONV_TASK_MIN_MACS))
        bounds = np.linspace(0, P, threads + 1).astype(int)
        shares: list[np.ndarray | None] = [None] * threads

        def run(i: int) -> None:
            shares[i] = _generic.rowpitched_products(
                np, x_cm, canvas, kernel_hw, dilation, xpad.shape[3], int(bounds[i]),
                int(bounds[i + 1]), scratch_bytes // threads)

        with single_threaded_blas() if macs > _BLAS_SERIAL_MACS else _AS_IS:
            run_tasks(run, list(range(threads)), threads)
        out = shares[0]
        for share in shares[1:]:
            out += share
        return out.reshape(O, C // groups, kh, kw)

    @_quiet
    def conv_transpose2d(self, x, w, stride, padding, dilation, groups, out_hw, method,
                         scratch_bytes, bias=None):
        # The base class scatters each input pixel's window: its work grows with the
        # input, the convolutions below with the output (per output phase of the
        # stride).  Where the output is many times the input spread by the stride (a
        # large dilation or kernel on a small input: dilation 3000 on 10x10 made 36M
        # outputs of 9 taps, 9 s), scattering is the cheap one.
        spread = x.shape[2] * stride[0] * x.shape[3] * stride[1]
        scatter = out_hw[0] * out_hw[1] > 4 * spread
        if (method not in ("direct", "gemm") or (stride != (1, 1) and dilation != (1, 1))
                or scatter):
            return super().conv_transpose2d(x, w, stride, padding, dilation, groups, out_hw,
                                            method, scratch_bytes, bias)
        if stride != (1, 1):
            out = self._conv_transpose_phases(x, w, stride, padding, groups, out_hw, method,
                                              scratch_bytes)
            return _generic.add_bias(out, bias)
        xe, wf = conv_transpose_as_conv(x, w, padding, dilation, groups, out_hw)
        out = self._conv(xe, wf, (1, 1), dilation, groups, out_hw, method, scratch_bytes)
        return _generic.add_bias(out, bias)

    def _conv_transpose_phases(self, x, w, stride, padding, groups, out_hw, method,
                               scratch_bytes):
        """A strided ``conv_transpose2d`` (dilation 1) as one stride-1 transposed
        convolution per output phase.

        Output pixel ``Y`` sits at ``y = Y + padding`` of the uncropped canvas,
        where input pixel ``i`` and tap ``u`` land at ``y = s*i + u``.  The
        pixels with ``y % s == r`` (a phase) take only the taps ``u = r, r + s,
        ...``, and along the phase (``y = s*q + r``) they form the stride-1
        transposed convolution of the input with that sub-kernel.  Each phase
        runs through the threaded stride-1 kernels and is written to its
        strided view of the output: the same multiply-adds as scattering every
        tap, without the column buffer or the scatter-add passes of the
        generic code (3-5x faster on (32,64,14,14)->64 3x3 stride 2).
        """
        N, _, _, _ = x.shape
        _, Coutg, kh, kw = w.shape
        Ho, Wo = out_hw
        # Phases r >= k (kernel smaller than the stride) take no tap: zero them all
        # at once and visit only the min(s, k) phases per axis that have taps, so the
        # loop is at most kh*kw long whatever the stride (4096 would be 16.7M phases).
        sparse = stride[0] > kh or stride[1] > kw
        out = (np.zeros if sparse else np.empty)((N, groups * Coutg, Ho, Wo), dtype=x.dtype)
        for rh in range(min(stride[0], kh)):
            first_h = (rh - padding[0]) % stride[0]   # the first output row of this phase
            rows = len(range(first_h, Ho, stride[0]))
            for rw in range(min(stride[1], kw)):
                first_w = (rw - padding[1]) % stride[1]
                cols = len(range(first_w, Wo, stride[1]))
                if not rows or not cols:
                    continue
                view = out[:, :, first_h::stride[0], first_w::stride[1]]
                sub = w[:, :, rh::stride[0], rw::stride[1]]
                # The phase's rows q start at (first + padding - r) / s on its own canvas.
                crop = ((first_h + padding[0] - rh) // stride[0],
                        (first_w + padding[1] - rw) // stride[1])
                xe, wf = conv_transpose_as_conv(x, sub, crop, (1, 1), groups, (rows, cols))
                view[...] = self._conv(xe, wf, (1, 1), (1, 1), groups, (rows, cols), method,
                                       scratch_bytes)
        return out
