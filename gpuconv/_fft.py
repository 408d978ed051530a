"""Convolution through the FFT: the ``"fft"`` and ``"overlap-add"`` methods.

Written once against ``backend.xp`` and ``backend.fft`` (a ``scipy.fft``-like
module: :mod:`scipy.fft` on NumPy, :mod:`cupyx.scipy.fft` on CuPy).  Every op
reduces to one engine, a zero-extended multi-channel correlation

    out[n, g, o, i, j] = sum_{c, u, v} x[n, g, c, i - top + u, j - left + v] * w[g, o, c, u, v]

computed as a product of spectra at ``next_fast_len`` sizes (real FFTs for
real data), batched over every leading axis in one transform, with the sum
over input channels done per frequency as a batched matrix product.

* ``"fft"`` transforms whole planes, at the smallest size free of circular
  aliasing for the outputs asked for (``H`` for a valid correlation, not
  ``H + kh - 1``).  A ``wrap`` boundary is a circular FFT of the plane itself,
  without padding.
* ``"overlap-add"`` cuts the planes into blocks whose size follows from the
  kernel size, transforms all blocks of a chunk in one call, and adds the
  overlapping tails; chunks keep the scratch memory under
  :func:`gpuconv.get_scratch_limit`.

Stride is handled by polyphase decomposition: the ``s0*s1`` sub-sampled
phases of the input and of the kernel become extra input channels, so a
stride-2 convolution transforms planes a quarter of the size instead of
computing every stride-1 output and throwing three quarters away.
Transposed convolution uses the same decomposition on its output.

Accuracy
--------
With unit roundoff ``eps`` of the working dtype and transform size
``N = Nh * Nw`` (the block size for overlap-add), every output element obeys
the normwise bound

    |out_fft - out_exact| <= C * eps * log2(N) * ||x||_2 * ||w||_1

(``||x||_2`` over the input planes contracted into that output, ``||w||_1``
over the kernel), because each transform perturbs its spectrum by at most
``~eps * log2(N)`` times its norm, the spectrum of ``w`` is bounded by
``||w||_1``, and Parseval carries the error back.  :func:`error_bound`
computes it with ``C = 4``.  Unlike direct summation the error is spread over
every output: one NaN or Inf in the input makes the whole output non-finite,
so the FFT entry points warn (``RuntimeWarning``) when they see one.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from typing import Any

import numpy as np

from .backends._generic import extend_planes

__all__ = [
    "correlate_planes",
    "conv2d",
    "conv_transpose2d",
    "error_bound",
    "oa_block_shape",
    "fft_shape",
]

_BOUND_C = 4.0
_THREADED = 1 << 18  # transform elements from which the FFT module's threads are used


# -- the transform module ---------------------------------------------------
@functools.lru_cache(maxsize=None)
def _fft_kwargs(fft: Any) -> tuple[tuple[str, Any], ...]:
    """Keyword options the FFT module understands: ``workers`` where it threads."""
    try:
        params = inspect.signature(fft.rfftn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return ()
    return (("workers", -1),) if "workers" in params else ()


@functools.lru_cache(maxsize=4096)
def _fast_len(fft: Any, n: int, real: bool) -> int:
    return int(fft.next_fast_len(int(n), real))


def fft_shape(fft: Any, need: tuple[int, int], real: bool) -> tuple[int, int]:
    """The transform size: ``next_fast_len`` of each needed length."""
    return _fast_len(fft, need[0], real), _fast_len(fft, need[1], real)


class _Spectra:
    """Forward and inverse transforms over the last two axes, real or complex."""

    def __init__(self, backend: Any, complex_: bool):
        self.fft = backend.fft
        self.kw = dict(_fft_kwargs(backend.fft))
        self.complex = complex_

    def _options(self, a: Any, s: tuple[int, int]) -> dict[str, Any]:
        # Threads pay off only on large transforms; on a busy machine a small
        # threaded transform mostly waits for its second thread.
        if self.kw and (a.size // max(a.shape[-1] * a.shape[-2], 1)) * s[0] * s[1] < _THREADED:
            return {}
        return self.kw

    def forward(self, a: Any, s: tuple[int, int]) -> Any:
        f = self.fft.fftn if self.complex else self.fft.rfftn
        return f(a, s=s, axes=(-2, -1), **self._options(a, s))

    def inverse(self, a: Any, s: tuple[int, int]) -> Any:
        f = self.fft.ifftn if self.complex else self.fft.irfftn
        return f(a, s=s, axes=(-2, -1), **self._options(a, s))


# -- accuracy ---------------------------------------------------------------
def error_bound(x: Any, w: Any, n_shape: tuple[int, int], dtype: Any) -> float:
    """The normwise error bound of an FFT correlation (see the module docstring).

    ``C * eps * log2(Nh * Nw) * ||x||_2 * ||w||_1`` with ``C = 4`` and ``eps``
    the unit roundoff of ``dtype``.

    Parameters
    ----------
    x, w : array_like
        The input planes contracted into one output, and the kernel.
    n_shape : (int, int)
        The transform size.
    dtype : dtype
        The working dtype (float16 counts as float32, the dtype it computes in).

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv._fft import error_bound
    >>> b = error_bound(np.ones((8, 8)), np.ones((3, 3)), (16, 16), np.float64)
    >>> 0 < b < 1e-12
    True
    """
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        dtype = np.dtype(np.float32)
    eps = float(np.finfo(dtype).eps) / 2
    nx = float(np.linalg.norm(np.asarray(x, dtype=np.complex128).ravel()))
    nw = float(np.abs(np.asarray(w, dtype=np.complex128)).sum())
    return _BOUND_C * eps * math.log2(max(n_shape[0] * n_shape[1], 2)) * nx * nw


def _warn_nonfinite(xp: Any, *arrays: Any) -> None:
    for a in arrays:
        if not bool(xp.isfinite(a).all()):
            warnings.warn(
                "non-finite values (NaN or Inf) in the input of an FFT convolution: through "
                "the transform they spread to every output element, unlike method='direct'",
                RuntimeWarning, stacklevel=4)
            return


# -- block sizes --------------------------------------------------------------
def _candidates(fft: Any, k: int, size: int, real: bool) -> list[int]:
    """Fast transform lengths worth trying along one axis for a kernel of length k."""
    lo = max(2 * (k - 1) + 1, 8)
    hi = max(lo, min(_fast_len(fft, size + k - 1, real), 16 * k + 64, 1024))
    out, n = [], _fast_len(fft, lo, real)
    while n <= hi:
        out.append(n)
        n = _fast_len(fft, n + 1, real)
    return out or [_fast_len(fft, lo, real)]


@functools.lru_cache(maxsize=1024)
def _oa_block_shape(fft: Any, image_hw: tuple[int, int], kernel_hw: tuple[int, int],
                    real: bool) -> tuple[int, int]:
    (H, W), (kh, kw) = image_hw, kernel_hw
    best, best_cost = None, math.inf
    for nh in _candidates(fft, kh, H, real):
        bh = nh - kh + 1
        nbh = -(-H // bh)
        for nw in _candidates(fft, kw, W, real):
            bw = nw - kw + 1
            blocks = nbh * -(-W // bw)
            # Transform work, plus a per-block term for the canvas additions.
            cost = blocks * (nh * nw * math.log2(nh * nw) + 4 * (bh * bw + nh * nw))
            if cost < best_cost:
                best, best_cost = (nh, nw), cost
    assert best is not None
    return best


def oa_block_shape(backend: Any, image_hw: tuple[int, int], kernel_hw: tuple[int, int],
                   real: bool = True) -> tuple[int, int]:
    """Transform size ``(Nh, Nw)`` of one overlap-add block; blocks hold ``N - k + 1`` samples.

    Chosen from the kernel size to minimise transform work per output sample
    (``N log N / (N - k + 1)``), never below ``2k - 1`` so that a block's tail
    overlaps only its neighbour.
    """
    return _oa_block_shape(backend.fft, tuple(image_hw), tuple(kernel_hw), bool(real))


# -- the engine ---------------------------------------------------------------
def _contract(xp: Any, X: Any, Wf: Any) -> Any:
    """Sum over input channels per frequency: X (N, G, Ci, F...), Wf (G, Co, Ci, F...)."""
    N, G, Ci = X.shape[:3]
    Co = Wf.shape[1]
    fshape = X.shape[3:]
    if Ci == 1:
        # Nothing to sum: a broadcast product (N, G, 1, F) * (G, Co, F).
        return X * Wf[:, :, 0]
    F = int(np.prod(fshape))
    # Frequency-major copies make every per-frequency matrix contiguous for the
    # batched product, and the result is copied back so the inverse transform
    # reads contiguous planes.
    # Xm (F, G, Ci, N), Wm (F, G, Co, Ci), Y (N, G, Co, F).
    Xm = xp.ascontiguousarray(xp.transpose(X.reshape(N, G, Ci, F), (3, 1, 2, 0)))
    Wm = xp.ascontiguousarray(xp.transpose(Wf.reshape(G, Co, Ci, F), (3, 0, 1, 2)))
    Y = xp.ascontiguousarray(xp.transpose(xp.matmul(Wm, Xm), (3, 1, 2, 0)))
    return Y.reshape((N, G, Co) + tuple(fshape))


def _rows_of(total: int, per_item_bytes: int, scratch_bytes: int) -> int:
    return max(1, min(total, scratch_bytes // max(per_item_bytes, 1)))


def _correlate_fft(backend: Any, x: Any, w: Any, top: tuple[int, int],
                   out_hw: tuple[int, int], scratch_bytes: int) -> Any:
    """The engine, whole planes: x (N, G, Ci, H, W), w (G, Co, Ci, kh, kw) -> (N, G, Co, oh, ow).

    ``top`` is at most ``(kh - 1, kw - 1)``: every caller's window starts inside
    the full correlation (the front doors pad explicitly for larger paddings).
    """
    xp = backend.xp
    N, G, Ci, H, W = x.shape
    Co, kh, kw = w.shape[1], w.shape[3], w.shape[4]
    oh, ow = out_hw
    p0 = (kh - 1 - top[0], kw - 1 - top[1])
    complex_ = x.dtype.kind == "c" or w.dtype.kind == "c"
    # Linear-correlation index p = i + p0 is alias-free for n >= H + top and n > p0 + oh - 1.
    need = (max(H + top[0], p0[0] + oh), max(W + top[1], p0[1] + ow))
    s = fft_shape(backend.fft, need, real=not complex_)
    sp = _Spectra(backend, complex_)
    Wf = sp.forward(w[..., ::-1, ::-1], s)
    cdtype = Wf.dtype
    per_image = (G * (Ci + Co) * Wf.shape[-2] * Wf.shape[-1] * 2 * cdtype.itemsize
                 + G * Co * s[0] * s[1] * x.dtype.itemsize)
    step = _rows_of(N, per_image, scratch_bytes)
    out = xp.empty((N, G, Co, oh, ow), dtype=x.dtype)
    for n0 in range(0, N, step):
        X = sp.forward(x[n0:n0 + step], s)
        y = sp.inverse(_contract(xp, X, Wf), s)
        out[n0:n0 + step] = y[..., p0[0]:p0[0] + oh, p0[1]:p0[1] + ow]
    return out


def _correlate_oa(backend: Any, x: Any, w: Any, top: tuple[int, int],
                  out_hw: tuple[int, int], scratch_bytes: int) -> Any:
    """The engine by overlap-add over blocks; same contract as :func:`_correlate_fft`."""
    xp = backend.xp
    N, G, Ci, H, W = x.shape
    Co, kh, kw = w.shape[1], w.shape[3], w.shape[4]
    oh, ow = out_hw
    p0 = (kh - 1 - top[0], kw - 1 - top[1])
    complex_ = x.dtype.kind == "c" or w.dtype.kind == "c"
    s = oa_block_shape(backend, (H, W), (kh, kw), real=not complex_)
    bh, bw = s[0] - kh + 1, s[1] - kw + 1
    nbh, nbw = -(-H // bh), -(-W // bw)
    sp = _Spectra(backend, complex_)
    Wf = sp.forward(w[..., ::-1, ::-1], s)
    xb = extend_planes(xp, x, 0, nbh * bh - H, 0, nbw * bw - W, "fill", 0)
    xb = xb.reshape(N, G, Ci, nbh, bh, nbw, bw)
    canvas = xp.zeros((N, G, Co, nbh + 1, bh, nbw + 1, bw), dtype=x.dtype)
    th, tw = kh - 1, kw - 1
    # Scratch of one block row of one image: block spectra (in and out) and real blocks.
    per_row = nbw * G * ((Ci + Co) * Wf.shape[-2] * Wf.shape[-1] * 2 * Wf.dtype.itemsize
                         + (Ci + 2 * Co) * s[0] * s[1] * x.dtype.itemsize)
    if per_row * nbh <= scratch_bytes:
        images, step = _rows_of(N, per_row * nbh, scratch_bytes), nbh
    else:
        images, step = 1, _rows_of(nbh, per_row, scratch_bytes)
    for n0 in range(0, N, images):
        n1 = min(N, n0 + images)
        for r0 in range(0, nbh, step):
            r1 = min(nbh, r0 + step)
            _oa_chunk(xp, sp, xb[n0:n1, :, :, r0:r1], Wf, s, (bh, bw), (th, tw),
                      canvas[n0:n1, :, :, r0:r1 + 1])
    full = canvas.reshape(N, G, Co, (nbh + 1) * bh, (nbw + 1) * bw)
    return xp.ascontiguousarray(full[..., p0[0]:p0[0] + oh, p0[1]:p0[1] + ow])


def _oa_chunk(xp: Any, sp: _Spectra, xb: Any, Wf: Any, s: tuple[int, int],
              b: tuple[int, int], t: tuple[int, int], canvas: Any) -> None:
    """Add the full correlations of the blocks ``xb`` (n, G, Ci, R, bh, nbw, bw) into
    ``canvas`` (n, G, Co, R + 1, bh, nbw + 1, bw): each block's tail overlaps its neighbours."""
    n, G, Ci, R, bh, nbw, bw = xb.shape
    Co = Wf.shape[1]
    th, tw = t
    # (n, R, nbw, G, Ci, bh, bw): every block of the chunk is one plane of the batch.
    blocks = xp.transpose(xb, (0, 3, 5, 1, 2, 4, 6)).reshape(n * R * nbw, G, Ci, bh, bw)
    Y = sp.inverse(_contract(xp, sp.forward(blocks, s), Wf), s)
    Y = Y[..., :bh + th, :bw + tw].reshape(n, R, nbw, G, Co, bh + th, bw + tw)
    Y = xp.transpose(Y, (0, 3, 4, 1, 5, 2, 6))  # (n, G, Co, R, bh+th, nbw, bw+tw)
    canvas[:, :, :, :R, :, :nbw, :] += Y[:, :, :, :, :bh, :, :bw]
    if th:
        canvas[:, :, :, 1:, :th, :nbw, :] += Y[:, :, :, :, bh:, :, :bw]
    if tw:
        canvas[:, :, :, :R, :, 1:, :tw] += Y[:, :, :, :, :bh, :, bw:]
    if th and tw:
        canvas[:, :, :, 1:, :th, 1:, :tw] += Y[:, :, :, :, bh:, :, bw:]


_ENGINES = {"fft": _correlate_fft, "overlap-add": _correlate_oa}


# -- correlate_planes -----------------------------------------------------------
def _fold(xp: Any, w: Any, H: int, W: int) -> Any:
    """The kernel wrapped onto an (H, W) torus: taps u and u + H act on the same sample."""
    kh, kw = w.shape[-2:]
    a, b = -(-kh // H), -(-kw // W)
    wp = extend_planes(xp, w, 0, a * H - kh, 0, b * W - kw, "fill", 0)
    return wp.reshape(w.shape[:-2] + (a, H, b, W)).sum(axis=(-4, -2))


def _correlate_wrap(backend: Any, x: Any, w: Any, out_shape: tuple[int, int],
                    origin: tuple[int, int]) -> Any:
    """Periodic boundary: one circular FFT of exactly the plane size, no padding."""
    xp = backend.xp
    B, H, W = x.shape
    complex_ = x.dtype.kind == "c" or w.dtype.kind == "c"
    sp = _Spectra(backend, complex_)
    # Circular correlation with w is circular convolution with g[r] = w[-r mod H].
    g = xp.roll(_fold(xp, w, H, W)[::-1, ::-1], (1, 1), axis=(0, 1))
    P = sp.inverse(sp.forward(x, (H, W)) * sp.forward(g, (H, W)), (H, W))
    rows = (xp.arange(out_shape[0]) - origin[0]) % H
    cols = (xp.arange(out_shape[1]) - origin[1]) % W
    return xp.ascontiguousarray(P[:, rows][:, :, cols].astype(x.dtype, copy=False))


def correlate_planes(backend: Any, x: Any, w: Any, out_shape: tuple[int, int],
                     origin: tuple[int, int], boundary: str, fillvalue: Any, method: str,
                     scratch_bytes: int) -> Any:
    """``correlate_planes`` of the backend protocol, by FFT or overlap-add.

    ``x`` (B, H, W) and ``w`` (kh, kw) are contiguous arrays of the working
    dtype; the result obeys the error bound of :func:`error_bound`.
    """
    xp = backend.xp
    _warn_nonfinite(xp, x, w)
    if boundary == "wrap" and method == "fft":
        return _correlate_wrap(backend, x, w, out_shape, origin)
    top = origin
    if boundary == "fill":
        if fillvalue != 0:
            # ext = (x - f) extended by zeros, plus f everywhere: the constant
            # part contributes f * sum(w) to every output.
            shift = xp.asarray(fillvalue, dtype=x.dtype)
            out = correlate_planes(backend, x - shift, w, out_shape, origin, "fill", 0, method,
                                   scratch_bytes)
            out += shift * w.sum()
            return out
    else:
        H, W = x.shape[-2:]
        kh, kw = w.shape
        x = extend_planes(xp, x, origin[0], out_shape[0] + kh - 1 - H - origin[0],
                          origin[1], out_shape[1] + kw - 1 - W - origin[1], boundary, fillvalue)
        top = (0, 0)
    engine = _ENGINES[method]
    out = engine(backend, x[:, None, None], w[None, None, None], top, out_shape, scratch_bytes)
    return out[:, 0, 0]


# -- conv2d and its transpose ----------------------------------------------------
def _dilate(xp: Any, w: Any, dilation: tuple[int, int]) -> Any:
    if dilation == (1, 1):
        return w
    kh, kw = w.shape[-2:]
    out = xp.zeros(w.shape[:-2] + (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1),
                   dtype=w.dtype)
    out[..., ::dilation[0], ::dilation[1]] = w
    return out


def _phases(xp: Any, a: Any, s: tuple[int, int]) -> Any:
    """(..., C, H, W) -> (..., C*s0*s1, ceil(H/s0), ceil(W/s1)): a[..., s*m + r] by phase r."""
    H, W = a.shape[-2:]
    hq, wq = -(-H // s[0]), -(-W // s[1])
    a = extend_planes(xp, a, 0, hq * s[0] - H, 0, wq * s[1] - W, "fill", 0)
    lead = a.shape[:-3]
    C = a.shape[-3]
    a = a.reshape(lead + (C, hq, s[0], wq, s[1]))
    nd = len(lead)
    perm = tuple(range(nd)) + (nd, nd + 2, nd + 4, nd + 1, nd + 3)
    a = xp.transpose(a, perm)  # (..., C, s0, s1, hq, wq)
    return a.reshape(lead + (C * s[0] * s[1], hq, wq))


def conv2d(backend: Any, xpad: Any, w: Any, stride: tuple[int, int], dilation: tuple[int, int],
           groups: int, out_hw: tuple[int, int], method: str, scratch_bytes: int) -> Any:
    """``conv2d`` on an already padded input: valid correlation, channels summed per frequency."""
    xp = backend.xp
    _warn_nonfinite(xp, xpad, w)
    N, C = xpad.shape[:2]
    Cout, Cg = w.shape[:2]
    G = groups
    x5 = xpad.reshape((N, G, Cg) + xpad.shape[2:])
    wd = _dilate(xp, w, dilation)
    w5 = wd.reshape((G, Cout // G, Cg) + wd.shape[2:])
    if stride != (1, 1):
        x5 = _phases(xp, x5, stride)
        w5 = _phases(xp, w5, stride)
    out = _ENGINES[method](backend, x5, w5, (0, 0), out_hw, scratch_bytes)
    return out.reshape(N, Cout, *out_hw)


def conv_transpose2d(backend: Any, x: Any, w: Any, stride: tuple[int, int],
                     padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                     out_hw: tuple[int, int], method: str, scratch_bytes: int) -> Any:
    """The adjoint of :func:`conv2d`: one full convolution per output phase of the stride."""
    xp = backend.xp
    _warn_nonfinite(xp, x, w)
    N, Cin, H, W = x.shape
    _, Coutg, _, _ = w.shape
    G = groups
    s = stride
    wd = _dilate(xp, w, dilation)                     # (Cin, Coutg, khd, kwd)
    khd, kwd = wd.shape[-2:]
    a0, a1 = -(-khd // s[0]), -(-kwd // s[1])
    wd = extend_planes(xp, wd, 0, a0 * s[0] - khd, 0, a1 * s[1] - kwd, "fill", 0)
    wd = wd.reshape(G, Cin // G, Coutg, a0, s[0], a1, s[1])
    # (G, Coutg, s0, s1, Cing, a0, a1): each output phase is an output channel.
    wd = xp.transpose(wd, (0, 2, 4, 6, 1, 3, 5))
    w5 = xp.ascontiguousarray(wd.reshape(G, Coutg * s[0] * s[1], Cin // G, a0, a1)[..., ::-1, ::-1])
    q = (H + a0 - 1, W + a1 - 1)
    y = _ENGINES[method](backend, x.reshape(N, G, Cin // G, H, W), w5, (a0 - 1, a1 - 1), q,
                         scratch_bytes)
    y = y.reshape(N, G * Coutg, s[0], s[1], q[0], q[1])
    canvas = xp.transpose(y, (0, 1, 4, 2, 5, 3)).reshape(N, G * Coutg, q[0] * s[0], q[1] * s[1])
    Ho, Wo = out_hw
    canvas = extend_planes(xp, canvas, 0, max(padding[0] + Ho - canvas.shape[-2], 0),
                           0, max(padding[1] + Wo - canvas.shape[-1], 0), "fill", 0)
    return xp.ascontiguousarray(canvas[..., padding[0]:padding[0] + Ho, padding[1]:padding[1] + Wo])
