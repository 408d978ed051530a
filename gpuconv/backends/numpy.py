"""The NumPy backend: the embedded default, on the CPU.

Direct correlation of planes is a cache-blocked shift-and-add run on a small
thread pool (NumPy's ufuncs release the GIL).  ``conv2d`` is an implicit GEMM
over row-pitched images: with stride 1, every kernel tap's operand is one
contiguous run per channel, so ``"gemm"`` builds its bounded column buffer
with long memcpys and ``"direct"`` hands BLAS strided views with no copy.
BLAS keeps its own threads; the pool never calls BLAS, so the two never
oversubscribe the cores, except for ``"winograd"``, whose chunks run on the
pool with BLAS limited to one thread meanwhile (with threadpoolctl).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .._dispatch import array_library
from . import ArrayBackend, _generic

__all__ = ["NumpyBackend", "num_threads", "planes_direct", "conv2d_gemm", "conv2d_direct"]

_MAX_THREADS = 8


def num_threads() -> int:
    """Threads the NumPy backend's kernels use.

    ``GPUCONV_NUM_THREADS`` if set, else the cores this process may run on
    (at most 8: the kernels are memory-bound well before that).
    """
    env = os.environ.get("GPUCONV_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"GPUCONV_NUM_THREADS must be an integer; got {env!r}") from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, _MAX_THREADS))


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


_BLAS_LIMIT_LOCK = threading.Lock()
_BLAS_LIMIT_DEPTH = 0
_BLAS_LIMITER: Any = None


@contextlib.contextmanager
def _blas_single_thread() -> Iterator[None]:
    """BLAS at one thread for the duration (threadpoolctl must be installed).

    Reference-counted, so that calls from several threads restore the
    original limit only when the last one leaves.
    """
    global _BLAS_LIMIT_DEPTH, _BLAS_LIMITER
    with _BLAS_LIMIT_LOCK:
        if _BLAS_LIMIT_DEPTH == 0:
            _BLAS_LIMITER = _blas_controller().limit(limits=1, user_api="blas")
        _BLAS_LIMIT_DEPTH += 1
    try:
        yield
    finally:
        with _BLAS_LIMIT_LOCK:
            _BLAS_LIMIT_DEPTH -= 1
            if _BLAS_LIMIT_DEPTH == 0:
                _BLAS_LIMITER.restore_original_limits()
                _BLAS_LIMITER = None


# -- thread pool -----------------------------------------------------------------------
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def _pool(size: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE != size:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(size, thread_name_prefix="gpuconv")
            _POOL_SIZE = size
        return _POOL


def _run_tasks(fn: Callable[[Any], None], tasks: list[Any], threads: int) -> None:
    if threads <= 1 or len(tasks) <= 1:
        for t in tasks:
            fn(t)
        return
    # list() re-raises the first exception of any task.
    list(_pool(threads).map(fn, tasks))


# -- single-channel planes: cache-blocked shift-and-add ----------------------------------
# A block's output, one temporary and the input rows it reads should stay in
# the core's cache between the kernel taps: about 1 MiB of float32 each.
# Measured on a 2-core EPYC (512 KiB L2, large L3): 2**18 elements beat
# 2**15 (L2-sized: the per-ufunc overhead of 2*kh*kw calls per block then
# dominates) and 2**20.
_BLOCK_ELEMENTS = 2**18
# Below this many multiply-adds a call is over before threads could help.
_THREAD_MIN_MACS = 2**22
# Largest chunk of the conv2d kernels when the scratch bound allows more.
# Each BLAS call wakes BLAS's threads; on a busy machine a call can wait a
# scheduler slice for a descheduled worker, so fewer, larger calls win:
# measured on the shared 2-core machine, (32,64,28,28)->64 3x3 float32 took
# 371 ms in 4 MiB chunks, 93 ms in 16 MiB and 42 ms in 64 MiB, while on one
# thread the chunk size made no measurable difference.
_GEMM_CHUNK_BYTES = 2**26
_DIRECT_CHUNK_BYTES = 2**26
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

    _run_tasks(run, blocks, threads)
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
    buf = np.empty((C, M + tail), dtype=xpad.dtype)
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


def conv2d_gemm(xpad: np.ndarray, w: np.ndarray, stride: tuple[int, int],
                dilation: tuple[int, int], groups: int, out_hw: tuple[int, int],
                scratch_bytes: int) -> np.ndarray:
    """im2col into a bounded buffer + one matrix product (per group) per chunk.

    Columns are (kh*kw*C_in/groups, pixels of the chunk): the pixels of
    several images side by side, so one product covers the chunk.  With
    stride 1 the columns come from the channel-major layout of
    :func:`_channel_major` as long contiguous runs (rows pitched at the
    padded width; the surplus columns are dropped at the end).  Chunks are
    sized so that the column buffer stays under ``scratch_bytes``.
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
    res = np.empty((G, Coutg, N, Ho * pitch), dtype=xpad.dtype)
    xcm = _channel_major(xpad, G, (kw - 1) * dilation[1]) if flat else None
    for n0, n1, r0, r1 in _chunks(N, Ho, per_row, budget):
        nb, nr = n1 - n0, r1 - r0
        if flat:
            cols = _taps_view(xcm, kh, kw, dilation, Wp, n0 * Hp * Wp + r0 * Wp, nb, Hp * Wp,
                              nr * Wp)
        else:
            cols = _strided_columns(xpad, kh, kw, stride, dilation, G, n0, n1, r0, r1, Wo)
        cols = np.ascontiguousarray(cols).reshape(G, K, nb * nr * pitch)
        prod = np.matmul(wmat, cols)
        res[:, :, n0:n1, r0 * pitch:r1 * pitch] = prod.reshape(G, Coutg, nb, nr * pitch)
    out = res.reshape(Cout, N, Ho, pitch)[..., :Wo].transpose(1, 0, 2, 3)
    return np.ascontiguousarray(out)


def conv2d_direct(xpad: np.ndarray, w: np.ndarray, stride: tuple[int, int],
                  dilation: tuple[int, int], groups: int, out_hw: tuple[int, int],
                  scratch_bytes: int) -> np.ndarray:
    """Accumulate one (C_out x C_in) matrix product per kernel tap, no column buffer.

    With stride 1 each tap's operand is a strided view of the channel-major
    images (:func:`_channel_major`) that BLAS reads in place: no copies but
    the accumulation, at the price of computing the padded rows and columns
    too.  Chunks of whole images (up to 64 MiB of accumulator) bound the scratch.
    """
    N, C, Hp, Wp = xpad.shape
    Cout, Cg, kh, kw = w.shape
    G = groups
    Coutg = Cout // G
    Ho, Wo = out_hw
    if stride != (1, 1):
        return _generic.conv2d_direct(np, xpad, w, stride, dilation, groups, out_hw)
    it = xpad.dtype.itemsize
    wt = np.ascontiguousarray(w.reshape(G, Coutg, Cg, kh, kw).transpose(3, 4, 0, 1, 2))
    tail = (kh - 1) * dilation[0] * Wp + (kw - 1) * dilation[1]
    xcm = _channel_major(xpad, G, tail)
    img = Hp * Wp
    budget = min(scratch_bytes, _DIRECT_CHUNK_BYTES)
    images = max(1, min(N, budget // max(2 * Cout * img * it, 1)))
    res = np.empty((G, Coutg, N * img), dtype=xpad.dtype)
    tmp = np.empty((G, Coutg, images * img), dtype=xpad.dtype)
    for n0 in range(0, N, images):
        m0, m1 = n0 * img, min(N, n0 + images) * img
        acc = res[:, :, m0:m1]
        t = tmp[:, :, :m1 - m0]
        first = True
        for u in range(kh):
            for v in range(kw):
                off = u * dilation[0] * Wp + v * dilation[1]
                np.matmul(wt[u, v], xcm[:, :, m0 + off:m1 + off], out=acc if first else t)
                if not first:
                    np.add(acc, t, out=acc)
                first = False
    out = res.reshape(Cout, N, Hp, Wp)[:, :, :Ho, :Wo].transpose(1, 0, 2, 3)
    return np.ascontiguousarray(out)


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

    # -- kernels -----------------------------------------------------------
    def winograd_options(self) -> dict[str, Any]:
        threads = num_threads()
        if _blas_controller() is None:
            # Chunks one after the other, BLAS threading each product; the
            # pool runs only the copies into the output.
            return {"chunk_bytes": _WINOGRAD_CHUNK_BYTES,
                    "run_tasks": lambda fn, tasks: _run_tasks(fn, tasks, threads)}

        def run_tasks(fn: Callable[[Any], None], tasks: list[Any]) -> None:
            # Whole chunks on the pool's threads, each product on one thread:
            # the transforms' small products would not thread in BLAS.
            with _blas_single_thread():
                _run_tasks(fn, tasks, threads)

        return {"chunk_bytes": _WINOGRAD_CHUNK_BYTES, "workers": threads,
                "run_tasks": run_tasks}

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
        return conv2d_gemm(ext, w[None, None], (1, 1), (1, 1), 1, out_shape, scratch_bytes)[:, 0]

    def conv2d(self, x, w, stride, pads, dilation, groups, padding_mode, method,
               scratch_bytes):
        if method not in ("direct", "gemm"):
            return super().conv2d(x, w, stride, pads, dilation, groups, padding_mode, method,
                                  scratch_bytes)
        xpad = np.ascontiguousarray(_generic.pad_nchw(np, x, pads, padding_mode))
        Ho = (xpad.shape[2] - dilation[0] * (w.shape[2] - 1) - 1) // stride[0] + 1
        Wo = (xpad.shape[3] - dilation[1] * (w.shape[3] - 1) - 1) // stride[1] + 1
        return self._conv(xpad, w, stride, dilation, groups, (Ho, Wo), method, scratch_bytes)

    def _conv(self, xpad, w, stride, dilation, groups, out_hw, method, scratch_bytes):
        if method == "gemm":
            return conv2d_gemm(xpad, w, stride, dilation, groups, out_hw, scratch_bytes)
        if w.shape[:2] == (1, 1) and stride == (1, 1) and dilation == (1, 1):
            # One input and one output channel: the planes kernel, threaded.
            return planes_direct(xpad[:, 0], w[0, 0], out_hw, num_threads())[:, None]
        return conv2d_direct(xpad, w, stride, dilation, groups, out_hw, scratch_bytes)

    def conv_transpose2d(self, x, w, stride, padding, dilation, groups, out_hw, method,
                         scratch_bytes):
        if method not in ("direct", "gemm") or stride != (1, 1):
            return super().conv_transpose2d(x, w, stride, padding, dilation, groups, out_hw,
                                            method, scratch_bytes)
        xe, wf = conv_transpose_as_conv(x, w, padding, dilation, groups, out_hw)
        return self._conv(xe, wf, (1, 1), dilation, groups, out_hw, method, scratch_bytes)
