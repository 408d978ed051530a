"""The chapter's claims about convolution, as functions that compute both sides.

Each ``*_claim`` function builds inputs, computes the two sides of one claim
with gpuconv on the chosen backend (and an independent computation where one
exists) and returns a :class:`ClaimResult`: the largest difference observed,
the tolerance that floating point allows for it, and whether it held.
Tolerances follow from the sizes: a sum of ``n`` products computed in
floating point is off by at most ``gamma_n * sum |terms|`` with
``gamma_n = n * u / (1 - n * u)`` (``u`` the unit roundoff); FFT results obey
the bound of :func:`gpuconv._fft.error_bound`.  Claims that hold exactly
(translation equivariance with a periodic boundary, the diagonal-edge
outputs) have tolerance 0.

Besides the claims, the module provides the objects the chapter talks about:
:func:`conv_matrix` (cross-correlation as a matrix product),
:func:`receptive_field`, :func:`derivative_kernel`, :func:`laplacian_kernel`
and :func:`summed_area`.  :func:`check` runs every claim; ``gpuconv check``
prints the table.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

__all__ = [
    "ClaimResult",
    "check",
    "commutativity_claim",
    "convolution_theorem_claim",
    "correlation_is_flipped_convolution_claim",
    "translation_equivariance_claim",
    "conv_matrix",
    "conv_matrix_claim",
    "one_by_one_is_dense_layer_claim",
    "receptive_field",
    "receptive_field_claim",
    "derivative_kernel",
    "derivative_kernel_claim",
    "laplacian_kernel",
    "laplacian_claim",
    "summed_area",
    "summed_area_claim",
    "diagonal_edges",
    "diagonal_edges_claim",
]


@dataclass(frozen=True)
class ClaimResult:
    """The outcome of checking one claim.

    Attributes
    ----------
    claim : str
        The claim, in words.
    max_error : float
        The largest difference observed between the two sides.
    tolerance : float
        The largest difference floating point allows (0 for exact claims).
    passed : bool
        ``max_error <= tolerance`` and any further condition of the claim.
    detail : str
        What was computed, and for the exercises the answers.
    """

    claim: str
    max_error: float
    tolerance: float
    passed: bool
    detail: str = ""

    def __str__(self) -> str:
        flag = "pass" if self.passed else "FAIL"
        return f"{flag}  {self.claim}: max error {self.max_error:.3g} <= {self.tolerance:.3g}"


# -- helpers ------------------------------------------------------------------------
@contextlib.contextmanager
def _on(backend: str | None) -> Iterator[Any]:
    import gpuconv
    from .backend import get_backend_object, resolve_backend

    if backend is None:
        yield resolve_backend()
        return
    with gpuconv.set_backend(backend):
        yield get_backend_object(backend)


def _np(backend: Any, a: Any) -> np.ndarray:
    return np.asarray(backend.to_numpy(a))


def _gamma(n: int, dtype: Any = np.float64) -> float:
    u = float(np.finfo(np.dtype(dtype)).eps) / 2
    return n * u / (1 - n * u)


def _result(claim: str, err: float, tol: float, detail: str = "",
            extra: bool = True) -> ClaimResult:
    err = float(err)
    return ClaimResult(claim, err, float(tol), bool(err <= tol and extra), detail)


# Argument checks at the front door of each public function: a sentence naming
# the argument instead of NumPy's own error from deep inside.
def _int(argname: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argname} must be an int; got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{argname} must be {bound}; got {value!r}")
    return int(value)


def _int_pair(argname: str, value: Any, minimum: int | None = None) -> tuple[int, int]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{argname} must be a pair of ints; got {value!r}")
    low = -(2**62) if minimum is None else minimum
    try:
        return _int(argname, value[0], low), _int(argname, value[1], low)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{exc} (in {argname}={value!r})") from None


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, (np.random.Generator, np.random.SeedSequence)):
        return np.random.default_rng(seed)
    return np.random.default_rng(_int("seed", seed, 0))


def _bool(argname: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argname} must be a bool; got {value!r}")
    return bool(value)


def _abs_full_conv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import scipy.signal

    return scipy.signal.convolve2d(np.abs(a), np.abs(b), "full")


# -- commutativity ------------------------------------------------------------------
def commutativity_claim(nonnegative: bool = False, *, backend: str | None = None,
                        seed: int = 0) -> ClaimResult:
    """``f * g = g * f`` for the full convolution.

    With ``nonnegative=True`` the inputs are probability mass functions, and
    the notes' argument is computed rather than quoted: ``f * g`` is the
    distribution of ``X + Y`` for independent ``X ~ f``, ``Y ~ g``, obtained
    here independently by enumerating every pair of outcomes; since
    ``X + Y = Y + X``, both ``f * g`` and ``g * f`` must equal it.

    Parameters
    ----------
    nonnegative : bool, optional
        Use probability mass functions instead of signed random inputs.
    backend : str, optional
        Backend to compute on (default: the current one).
    seed : int, optional
        Seed of the random inputs.

    Returns
    -------
    ClaimResult

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.commutativity_claim().passed
    True
    >>> theory.commutativity_claim(nonnegative=True).passed
    True
    """
    import gpuconv

    nonnegative = _bool("nonnegative", nonnegative)
    rng = _rng(seed)
    f = rng.standard_normal((9, 7))
    g = rng.standard_normal((4, 6))
    if nonnegative:
        f, g = np.abs(f), np.abs(g)
        f, g = f / f.sum(), g / g.sum()
    n = min(f.size, g.size)
    tol = 2 * _gamma(n) * float(_abs_full_conv(f, g).max())
    with _on(backend) as be:
        fg = _np(be, gpuconv.convolve2d(f, g, "full", method="direct"))
        gf = _np(be, gpuconv.convolve2d(g, f, "full", method="direct"))
    err = float(np.abs(fg - gf).max())
    detail = "convolve2d(f, g) vs convolve2d(g, f), full mode, direct method"
    if nonnegative:
        # The law of X + Y by enumeration: every pair (a, b) adds f[a] g[b] at a + b.
        pmf = np.zeros(fg.shape)
        ai, aj = np.indices(f.shape)
        bi, bj = np.indices(g.shape)
        si = (ai.ravel()[:, None] + bi.ravel()[None, :]).ravel()
        sj = (aj.ravel()[:, None] + bj.ravel()[None, :]).ravel()
        np.add.at(pmf, (si, sj), np.outer(f.ravel(), g.ravel()).ravel())
        err = max(err, float(np.abs(fg - pmf).max()), float(np.abs(gf - pmf).max()))
        tol += _gamma(n) * float(pmf.max())
        detail = ("f, g probability mass functions: f*g and g*f both equal the law of "
                  "X + Y = Y + X, enumerated pair by pair")
    claim = "f*g = g*f" + (" (pmfs: law of X+Y)" if nonnegative else "")
    return _result(claim, err, tol, detail)


# -- the convolution theorem -----------------------------------------------------------
def convolution_theorem_claim(*, backend: str | None = None, seed: int = 0,
                              dtype: Any = np.float64) -> ClaimResult:
    """``ifft(fft(f) * fft(g)) = f * g`` at any transform size covering the full output.

    The left side is computed with the backend's FFT module directly; the right
    side with the direct method.

    Parameters
    ----------
    backend : str, optional
        Backend to compute on.
    seed : int, optional
        Seed of the random inputs.
    dtype : dtype, optional
        Working precision of both sides (float32 or float64).

    Returns
    -------
    ClaimResult

    Examples
    --------
    >>> from gpuconv import theory
    >>> r = theory.convolution_theorem_claim()
    >>> r.passed, r.max_error < 1e-12
    (True, True)
    """
    import gpuconv
    from ._fft import error_bound

    try:
        parsed = np.dtype(dtype)
    except TypeError:
        parsed = None
    if parsed is None or parsed.kind != "f":
        raise TypeError(f"dtype must be a real floating dtype (float16, float32, float64); "
                        f"got {dtype!r}")
    dtype = parsed
    rng = _rng(seed)
    f = rng.standard_normal((20, 17)).astype(dtype)
    g = rng.standard_normal((6, 5)).astype(dtype)
    s = (f.shape[0] + g.shape[0] - 1, f.shape[1] + g.shape[1] - 1)
    with _on(backend) as be:
        F = be.fft.rfftn(be.asarray(f), s=s)
        G = be.fft.rfftn(be.asarray(g), s=s)
        lhs = _np(be, be.fft.irfftn(F * G, s=s))
        rhs = _np(be, gpuconv.convolve2d(f, g, "full", method="direct"))
    exact = _abs_full_conv(f.astype(np.float64), g.astype(np.float64))
    tol = error_bound(f, g, s, dtype) + _gamma(g.size, dtype) * float(exact.max())
    return _result(f"convolution theorem ({np.dtype(dtype).name}): FFT product = direct "
                   "convolution",
                   np.abs(lhs - rhs).max(), tol,
                   f"irfftn(rfftn(f, s) * rfftn(g, s), s) with s = {s}, vs direct convolve2d")


# -- correlation and convolution --------------------------------------------------------
def correlation_is_flipped_convolution_claim(*, backend: str | None = None,
                                             seed: int = 0) -> ClaimResult:
    """``correlate2d(x, k) = convolve2d(x, conj(k)[::-1, ::-1])`` in every mode.

    Parameters
    ----------
    backend : str, optional
        Backend to compute on.
    seed : int, optional
        Seed of the random (complex) inputs.

    Returns
    -------
    ClaimResult

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.correlation_is_flipped_convolution_claim().passed
    True
    """
    import gpuconv

    rng = _rng(seed)
    x = rng.standard_normal((11, 13)) + 1j * rng.standard_normal((11, 13))
    k = rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))
    err = tol = 0.0
    with _on(backend) as be:
        for mode in ("full", "valid"):
            a = _np(be, gpuconv.correlate2d(x, k, mode, method="direct"))
            b = _np(be, gpuconv.convolve2d(x, np.conj(k)[::-1, ::-1], mode, method="direct"))
            err = max(err, float(np.abs(a - b).max()))
        tol = 2 * _gamma(k.size) * float(_abs_full_conv(x, k).max())
    return _result("correlation = convolution with the flipped (conjugated) kernel", err, tol,
                   "modes full and valid; 'same' centres even kernels differently, as in SciPy")


# -- translation equivariance ------------------------------------------------------------
def translation_equivariance_claim(boundary: str = "wrap", *, shift: tuple[int, int] = (3, -2),
                                   backend: str | None = None, seed: int = 0) -> ClaimResult:
    """Shifting the input shifts the output: ``corr(T x) = T corr(x)``.

    Exact (tolerance 0) everywhere with ``boundary='wrap'``, where the shift is
    circular; with ``'fill'`` or ``'symm'`` it holds exactly away from the
    border (outputs whose window does not reach the edge), and fails near it.

    Parameters
    ----------
    boundary : {'wrap', 'fill', 'symm'}, optional
        The boundary rule of the ``'same'`` correlation.
    shift : (int, int), keyword-only
        The translation.
    backend : str, optional
        Backend to compute on.
    seed : int, optional
        Seed of the random inputs.

    Returns
    -------
    ClaimResult

    Examples
    --------
    >>> from gpuconv import theory
    >>> r = theory.translation_equivariance_claim("wrap")
    >>> r.passed, r.max_error
    (True, 0.0)
    >>> theory.translation_equivariance_claim("fill").passed
    True
    """
    import gpuconv
    from ._validation import parse_boundary

    dy, dx = _int_pair("shift", shift)
    boundary = parse_boundary(boundary)
    if boundary not in ("wrap", "circular") and (abs(dy) > 6 or abs(dx) > 6):
        raise ValueError(f"shift {tuple(shift)} leaves no output of the 24x20 image away from "
                         f"the border with boundary {boundary!r}; each component must lie in "
                         "[-6, 6] (any shift works with 'wrap')")
    rng = _rng(seed)
    x = rng.standard_normal((24, 20))
    k = rng.standard_normal((5, 3))
    with _on(backend) as be:
        y = _np(be, gpuconv.correlate2d(x, k, "same", boundary, method="direct"))
        y_shifted = _np(be, gpuconv.correlate2d(np.roll(x, (dy, dx), (0, 1)), k, "same",
                                                boundary, method="direct"))
    expected = np.roll(y, (dy, dx), (0, 1))
    if boundary in ("wrap", "circular"):
        region = (slice(None), slice(None))
        where = "everywhere (circular shift)"
    else:
        # Outputs whose window, before and after the shift, stays inside the image.
        mh = k.shape[0] + abs(dy)
        mw = k.shape[1] + abs(dx)
        region = (slice(mh, x.shape[0] - mh), slice(mw, x.shape[1] - mw))
        near = float(np.abs(y_shifted - expected).max())
        where = f"away from the border (near it the difference is {near:.3g})"
    err = float(np.abs(y_shifted[region] - expected[region]).max())
    return _result(f"translation equivariance ({boundary})", err, 0.0,
                   f"shift {shift}, checked {where}")


# -- cross-correlation as a matrix product ------------------------------------------------
def conv_matrix(kernel: Any, input_shape: tuple[int, int], mode: str = "valid", *,
                sparse: bool = False) -> Any:
    """The doubly block Toeplitz matrix of a 2-D cross-correlation.

    ``conv_matrix(K, X.shape, mode) @ X.ravel()`` equals
    ``correlate2d(X, K, mode).ravel()`` (zero boundary).  Row ``i*Wo + j``
    holds the (conjugated) kernel taps at the columns of the pixels of the
    window of output ``(i, j)``: each block of ``Wo`` rows by ``W`` columns is
    a Toeplitz matrix, and the blocks form a Toeplitz pattern.

    Parameters
    ----------
    kernel : array_like, shape (kh, kw)
        The kernel.
    input_shape : (int, int)
        ``(H, W)`` of the input.
    mode : {'full', 'same', 'valid'}, optional
        As in :func:`gpuconv.correlate2d`; ``'valid'`` needs the kernel to fit
        in the input.
    sparse : bool, keyword-only
        Return a :class:`scipy.sparse.csr_matrix` instead of a dense NumPy array.

    Returns
    -------
    ndarray or scipy.sparse.csr_matrix, shape (Ho * Wo, H * W)

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> from gpuconv.theory import conv_matrix
    >>> X = np.arange(9.0).reshape(3, 3)
    >>> K = np.array([[0., 1.], [2., 3.]])
    >>> M = conv_matrix(K, X.shape)
    >>> M
    array([[0., 1., 0., 2., 3., 0., 0., 0., 0.],
           [0., 0., 1., 0., 2., 3., 0., 0., 0.],
           [0., 0., 0., 0., 1., 0., 2., 3., 0.],
           [0., 0., 0., 0., 0., 1., 0., 2., 3.]])
    >>> (M @ X.ravel()).reshape(2, 2)
    array([[19., 25.],
           [37., 43.]])
    >>> conv_matrix(K, (100, 100), "same", sparse=True).nnz
    39601
    """
    from .correlate import _plane_geometry
    from ._validation import parse_mode

    mode = parse_mode(mode)
    K = np.asarray(kernel)
    if K.dtype.kind not in "biufc":
        raise TypeError(f"kernel must hold real or complex numbers; got dtype {K.dtype}")
    if K.ndim != 2 or 0 in K.shape:
        raise ValueError(f"kernel must be a non-empty 2-D array; got shape {K.shape}")
    H, W = _int_pair("input_shape", input_shape, minimum=1)
    kh, kw = K.shape
    if mode == "valid" and (kh > H or kw > W):
        raise ValueError(f"mode='valid' needs the kernel {K.shape} to fit in input_shape "
                         f"{(H, W)}")
    (oh, ow), (top, left), _ = _plane_geometry(mode, False, (H, W), (kh, kw))
    _check_fits(oh * ow * kh * kw * 3 * 8 + (0 if sparse else oh * ow * H * W * 16),
                f"conv_matrix for input_shape {(H, W)} and kernel {K.shape}",
                "" if sparse else "; sparse=True needs far less")
    Kc = np.conj(K) if K.dtype.kind == "c" else K
    i, j = np.indices((oh, ow))
    rows, cols, vals = [], [], []
    for u in range(kh):
        for v in range(kw):
            r = i - top + u
            c = j - left + v
            ok = (r >= 0) & (r < H) & (c >= 0) & (c < W)
            rows.append((i * ow + j)[ok])
            cols.append((r * W + c)[ok])
            vals.append(np.full(int(ok.sum()), Kc[u, v]))
    rows_a, cols_a, vals_a = (np.concatenate(a) for a in (rows, cols, vals))
    dtype = np.result_type(K.dtype, np.float64)
    if sparse:
        import scipy.sparse

        return scipy.sparse.csr_matrix((vals_a.astype(dtype), (rows_a, cols_a)),
                                       shape=(oh * ow, H * W))
    M = np.zeros((oh * ow, H * W), dtype=dtype)
    np.add.at(M, (rows_a, cols_a), vals_a)
    return M


def _check_fits(nbytes: int, what: str, hint: str = "") -> None:
    # Refuse before allocating what this machine cannot hold.
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not on a POSIX system
        return
    if nbytes > total:
        raise ValueError(f"{what} would need about {nbytes / 2**30:.3g} GiB, more than this "
                         f"machine's {total / 2**30:.3g} GiB of memory{hint}")


def _is_doubly_block_toeplitz(M: np.ndarray, out_hw: tuple[int, int],
                              in_hw: tuple[int, int]) -> bool:
    (oh, ow), (H, W) = out_hw, in_hw
    blocks = M.reshape(oh, ow, H, W).transpose(0, 2, 1, 3)  # (block row, block col, ow, W)
    for a in range(oh):
        for b in range(H):
            blk = blocks[a, b]
            # Toeplitz inside each block, and block (a, b) depends on b - a only.
            if not np.array_equal(blk[1:, 1:], blk[:-1, :-1]):
                return False
            if a and b and not np.array_equal(blk, blocks[a - 1, b - 1]):
                return False
    return True


def conv_matrix_claim(mode: str = "valid", *, backend: str | None = None,
                      seed: int = 0) -> ClaimResult:
    """``conv_matrix(K, X.shape, mode) @ X.ravel() == correlate2d(X, K, mode).ravel()``.

    Also checks that the matrix is doubly block Toeplitz and that the sparse
    form gives the same product.

    Parameters
    ----------
    mode : {'full', 'same', 'valid'}, optional
        The correlation mode.
    backend : str, optional
        Backend computing ``correlate2d``.
    seed : int, optional
        Seed of the random inputs.

    Returns
    -------
    ClaimResult

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.conv_matrix_claim("same").passed
    True
    """
    import gpuconv
    from .correlate import _plane_geometry

    rng = _rng(seed)
    X = rng.standard_normal((7, 9))
    K = rng.standard_normal((3, 4))
    M = conv_matrix(K, X.shape, mode)
    S = conv_matrix(K, X.shape, mode, sparse=True)
    out_hw = _plane_geometry(mode, False, X.shape, K.shape)[0]
    with _on(backend) as be:
        y = _np(be, gpuconv.correlate2d(X, K, mode, method="direct")).ravel()
    err = max(float(np.abs(M @ X.ravel() - y).max()), float(np.abs(S @ X.ravel() - y).max()))
    tol = 2 * _gamma(K.size) * float(_abs_full_conv(X, K).max())
    toeplitz = _is_doubly_block_toeplitz(M, out_hw, X.shape)
    return _result(f"cross-correlation = matrix product ({mode})", err, tol,
                   f"matrix {M.shape}, doubly block Toeplitz: {toeplitz}", extra=toeplitz)


# -- 1x1 convolution --------------------------------------------------------------------
def one_by_one_is_dense_layer_claim(*, backend: str | None = None,
                                    seed: int = 0) -> ClaimResult:
    """A 1x1 convolution (Delta = 0) is the same dense layer applied at every pixel.

    ``conv2d(x, w)[n, :, i, j] == w[:, :, 0, 0] @ x[n, :, i, j] + b``: an MLP
    over the channels, independently for each pixel.

    Parameters
    ----------
    backend : str, optional
        Backend to compute on.
    seed : int, optional
        Seed of the random inputs.

    Returns
    -------
    ClaimResult

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.one_by_one_is_dense_layer_claim().passed
    True
    """
    import gpuconv

    rng = _rng(seed)
    x = rng.standard_normal((2, 5, 6, 7))
    w = rng.standard_normal((3, 5, 1, 1))
    b = rng.standard_normal(3)
    with _on(backend) as be:
        y = _np(be, gpuconv.conv2d(x, w, b, method="direct"))
    pixels = x.transpose(0, 2, 3, 1).reshape(-1, 5)            # one row per pixel
    dense = (pixels @ w[:, :, 0, 0].T + b).reshape(2, 6, 7, 3).transpose(0, 3, 1, 2)
    tol = 2 * _gamma(6) * float((np.abs(x).transpose(0, 2, 3, 1) @ np.abs(w[:, :, 0, 0]).T
                                 + np.abs(b)).max())
    return _result("1x1 convolution = dense layer at each pixel", np.abs(y - dense).max(), tol,
                   "conv2d with a (3, 5, 1, 1) weight vs pixels @ W.T + b")


# -- receptive fields -------------------------------------------------------------------
Layer = Sequence[Any]


def _layer(layer: Layer, index: int = 0) -> tuple[tuple[int, int], ...]:
    from ._validation import pair

    if not isinstance(layer, (tuple, list)) or not 1 <= len(layer) <= 4:
        raise ValueError(f"layers[{index}] must be a tuple (kernel[, stride[, padding[, "
                         f"dilation]]]) of 1 to 4 entries; got {layer!r}")
    k, s, p, d = (tuple(layer) + (1, 0, 1)[len(layer) - 1:])[:4]
    return (pair("kernel", k, minimum=1), pair("stride", s, minimum=1),
            pair("padding", p, minimum=0), pair("dilation", d, minimum=1))


def receptive_field(layers: Sequence[Layer]) -> dict[str, tuple[int, int]]:
    """Receptive field of one output of a stack of convolution layers.

    Output ``(i, j)`` of the last layer depends on input rows
    ``start[0] + i * jump[0]`` to ``start[0] + i * jump[0] + size[0] - 1``
    (and likewise columns), clipped to the image; padding makes ``start``
    negative.  Layer by layer, with ``j`` the product of the earlier strides:
    ``size += (k - 1) * d * j``, ``start -= p * j``, ``j *= s``.

    Parameters
    ----------
    layers : sequence of (kernel, stride, padding, dilation)
        One tuple per layer, first layer first; trailing entries may be
        omitted (stride 1, padding 0, dilation 1).  Each entry is an int or a
        pair.

    Returns
    -------
    dict
        ``{"size": (h, w), "jump": (h, w), "start": (h, w)}``.

    Examples
    --------
    >>> from gpuconv.theory import receptive_field
    >>> receptive_field([(3,), (3,)])["size"]
    (5, 5)
    >>> receptive_field([(7, 2, 3), (3, 2, 1), (3, 1, 1, 2)])
    {'size': (27, 27), 'jump': (4, 4), 'start': (-9, -9)}
    """
    if not isinstance(layers, (tuple, list)):
        raise TypeError(f"layers must be a sequence of (kernel, stride, padding, dilation) "
                        f"tuples; got {layers!r}")
    size, jump, start = [1, 1], [1, 1], [0, 0]
    for index, layer in enumerate(layers):
        k, s, p, d = _layer(layer, index)
        for a in range(2):
            size[a] += (k[a] - 1) * d[a] * jump[a]
            start[a] -= p[a] * jump[a]
            jump[a] *= s[a]
    return {"size": tuple(size), "jump": tuple(jump), "start": tuple(start)}


def receptive_field_claim(layers: Sequence[Layer] = ((3, 1, 1), (3, 2, 0, 2), (5, 2, 2)),
                          input_shape: tuple[int, int] = (40, 37), *,
                          backend: str | None = None, seed: int = 0) -> ClaimResult:
    """:func:`receptive_field` agrees with the gradient of one output w.r.t. the input.

    The gradient is backpropagated from a one-hot output with
    :func:`gpuconv.conv_transpose2d` (the adjoint of each layer) through
    positive weights, so no cancellation hides a dependence; the bounding box
    of its non-zero pattern is compared with the formula's window, clipped to
    the image.  The error is the number of box edges that differ.

    Parameters
    ----------
    layers : sequence of (kernel, stride, padding, dilation), optional
        The stack, first layer first.
    input_shape : (int, int), optional
        Spatial size of the input.
    backend : str, optional
        Backend to compute on.
    seed : int, optional
        Seed of the positive random weights.

    Returns
    -------
    ClaimResult

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.receptive_field_claim().passed
    True
    """
    import gpuconv

    rf = receptive_field(layers)   # checks layers
    rng = _rng(seed)
    parsed = [_layer(layer) for layer in layers]
    shapes = [_int_pair("input_shape", input_shape, minimum=1)]
    for k, s, p, d in parsed:
        h, w = shapes[-1]
        shapes.append(((h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1,
                       (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1))
    oh, ow = shapes[-1]
    if oh < 1 or ow < 1:
        raise ValueError(f"the layers do not fit input_shape {input_shape}: sizes {shapes}")
    i, j = oh // 2, ow // 2
    weights = [rng.uniform(0.5, 1.5, (1, 1) + k) for k, _, _, _ in parsed]
    with _on(backend) as be:
        g = np.zeros((1, 1, oh, ow))
        g[0, 0, i, j] = 1.0
        for (k, s, p, d), w, shape_in in zip(parsed[::-1], weights[::-1], shapes[-2::-1]):
            full = [(g.shape[2 + a] - 1) * s[a] - 2 * p[a] + d[a] * (k[a] - 1) + 1
                    for a in range(2)]
            op = (shape_in[0] - full[0], shape_in[1] - full[1])
            g = _np(be, gpuconv.conv_transpose2d(g, w, stride=s, padding=p, output_padding=op,
                                                 dilation=d, method="direct"))
    nz = np.argwhere(g[0, 0] != 0)
    observed = (*nz.min(axis=0), *nz.max(axis=0))
    lo = [rf["start"][a] + (i, j)[a] * rf["jump"][a] for a in range(2)]
    hi = [lo[a] + rf["size"][a] - 1 for a in range(2)]
    H, W = input_shape
    predicted = (max(lo[0], 0), max(lo[1], 0), min(hi[0], H - 1), min(hi[1], W - 1))
    err = sum(int(a != b) for a, b in zip(observed, predicted))
    return _result("receptive field = support of the input gradient", err, 0,
                   f"output ({i}, {j}) of {len(layers)} layers: rows/cols "
                   f"{predicted[0]}..{predicted[2]} x {predicted[1]}..{predicted[3]} predicted, "
                   f"{observed[0]}..{observed[2]} x {observed[1]}..{observed[3]} observed; "
                   f"size {rf['size']}")


# -- derivative kernels --------------------------------------------------------------------
def derivative_kernel(order: int, accuracy: int = 1) -> np.ndarray:
    """A centred finite-difference kernel for the ``order``-th derivative (unit spacing).

    The kernel has ``order + accuracy`` taps at centred offsets and is exact
    for polynomials of degree below ``order + accuracy``, so its error is
    ``O(h**accuracy)`` (one order better when the stencil is symmetric).  The
    smallest kernel for a derivative of order ``d`` has ``d + 1`` taps
    (``accuracy=1``): ``d`` taps cannot satisfy the ``d + 1`` moment conditions
    (sum of ``c_j x_j**m / m!`` = 1 for ``m = d``, 0 for ``m < d``).

    It is a cross-correlation kernel of shape ``(1, n)``: use its transpose
    for the vertical derivative.  With an even number of taps the output
    sits halfway between samples.

    Parameters
    ----------
    order : int
        Derivative order, at least 1.
    accuracy : int, optional
        Taps beyond the minimum ``order + 1``, plus one; at least 1.

    Returns
    -------
    ndarray, shape (1, order + accuracy)

    Examples
    --------
    >>> from gpuconv.theory import derivative_kernel
    >>> derivative_kernel(1)          # the chapter's edge detector, negated
    array([[-1.,  1.]])
    >>> derivative_kernel(2)          # the second-derivative kernel
    array([[ 1., -2.,  1.]])
    >>> derivative_kernel(1, accuracy=2)
    array([[-0.5,  0. ,  0.5]])
    >>> derivative_kernel(3).shape    # minimum size for order d is d + 1
    (1, 4)
    """
    order = _int("order", order, 1)
    accuracy = _int("accuracy", accuracy, 1)
    n = order + accuracy
    if n > _MAX_TAPS:
        # Beyond this the moment equations are too ill-conditioned for float64
        # (their residual grows past 1e-10), and their factorials overflow int64.
        raise ValueError(f"order + accuracy must be <= {_MAX_TAPS} (taps of the kernel); got "
                         f"{order} + {accuracy} = {n}")
    x = np.arange(n) - (n - 1) / 2
    m = np.arange(n)
    A = x[None, :] ** m[:, None] / np.array([math.factorial(int(k)) for k in m])[:, None]
    rhs = (m == order).astype(float)
    c = np.linalg.solve(A, rhs)
    c[np.abs(c) < 1e-12 * np.abs(c).max()] = 0.0
    return c[None, :] + 0.0


_MAX_TAPS = 20


def _best_residual(order: int, taps: int) -> float:
    """Smallest residual of the moment conditions up to ``order`` with ``taps`` taps."""
    x = np.arange(taps) - (taps - 1) / 2
    m = np.arange(order + 1)
    A = x[None, :] ** m[:, None] / np.array([math.factorial(int(k)) for k in m])[:, None]
    rhs = (m == order).astype(float)
    c, *_ = np.linalg.lstsq(A, rhs, rcond=None)
    return float(np.abs(A @ c - rhs).max())


def derivative_kernel_claim(max_order: int = 4, *, backend: str | None = None) -> ClaimResult:
    """Minimal derivative kernels: ``d + 1`` taps suffice for order ``d``, ``d`` taps do not.

    For each order ``d`` up to ``max_order``, the ``(d+1)``-tap kernel,
    correlated with samples of every polynomial of degree ``<= d``, returns
    the exact ``d``-th derivative (the error reported); and no ``d``-tap
    kernel satisfies the moment conditions (its best least-squares residual
    must stay above 0.1).

    Parameters
    ----------
    max_order : int, optional
        Largest order checked.
    backend : str, optional
        Backend computing the correlations.

    Returns
    -------
    ClaimResult

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.derivative_kernel_claim().passed
    True
    """
    import gpuconv

    t = np.arange(-8.0, 9.0)
    # The (max_order + 1)-tap kernel must fit in the len(t) samples.
    max_order = _int("max_order", max_order, 1, len(t) - 1)
    err = 0.0
    scale = 0.0
    gaps = []
    with _on(backend) as be:
        for d in range(1, max_order + 1):
            k = derivative_kernel(d)
            n = k.shape[1]
            for deg in range(d + 1):
                p = t ** deg / math.factorial(deg)
                y = _np(be, gpuconv.correlate2d(p[None, :], k, "valid", method="direct"))[0]
                # Where the stencil sits, the d-th derivative of t**deg/deg! is 1 if deg == d.
                err = max(err, float(np.abs(y - (1.0 if deg == d else 0.0)).max()))
                scale = max(scale, float(np.abs(k).sum() * np.abs(p).max()))
            gaps.append(_best_residual(d, d))
    tol = 4 * _gamma(max_order + 1) * scale
    minimal = min(gaps) > 0.1
    return _result("derivative of order d needs d+1 taps", err, tol,
                   f"(d+1)-tap kernels exact on polynomials of degree <= d; best d-tap residuals "
                   f"{', '.join(f'{g:.2f}' for g in gaps)} (> 0: impossible)", extra=minimal)


def laplacian_kernel() -> np.ndarray:
    """The 5-point Laplacian: the second-derivative kernel along rows plus along columns.

    Returns
    -------
    ndarray, shape (3, 3)

    Examples
    --------
    >>> from gpuconv.theory import laplacian_kernel
    >>> laplacian_kernel()
    array([[ 0.,  1.,  0.],
           [ 1., -4.,  1.],
           [ 0.,  1.,  0.]])
    """
    d2 = derivative_kernel(2)[0]
    L = np.zeros((3, 3))
    L[1, :] += d2
    L[:, 1] += d2
    return L


def laplacian_claim(*, backend: str | None = None) -> ClaimResult:
    """The Laplacian kernel is exact on quadratics: ``laplace(a x^2 + b xy + c y^2) = 2a + 2c``.

    Parameters
    ----------
    backend : str, optional
        Backend computing the correlation.

    Returns
    -------
    ClaimResult

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.laplacian_claim().passed
    True
    """
    import gpuconv

    y, x = np.mgrid[-6.0:7.0, -5.0:6.0]
    a, b, c = 0.7, -1.3, 2.1
    f = a * x ** 2 + b * x * y + c * y ** 2 + 3 * x - y + 5
    with _on(backend) as be:
        lap = _np(be, gpuconv.correlate2d(f, laplacian_kernel(), "valid", method="direct"))
    tol = 8 * _gamma(9) * float(np.abs(f).max())
    return _result("Laplacian kernel exact on quadratics", np.abs(lap - (2 * a + 2 * c)).max(),
                   tol, "5-point stencil on a x^2 + b xy + c y^2 + linear terms")


# -- the integral ------------------------------------------------------------------------
def summed_area(X: Any) -> np.ndarray:
    """The integral image: ``S[i, j] = sum of X[:i+1, :j+1]``.

    It is a convolution, but with a kernel of ones as large as the image
    itself: ``S = convolve2d(X, ones(X.shape), 'full')[:H, :W]``.  Its support
    grows with the image, so no fixed small kernel computes it; two cumulative
    sums do, in ``O(HW)``.

    Parameters
    ----------
    X : array_like, shape (H, W)
        The image.

    Returns
    -------
    ndarray, shape (H, W)

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv.theory import summed_area
    >>> summed_area(np.ones((3, 4)))
    array([[ 1.,  2.,  3.,  4.],
           [ 2.,  4.,  6.,  8.],
           [ 3.,  6.,  9., 12.]])
    """
    X = np.asarray(X)
    if X.dtype.kind not in "biufc":
        raise TypeError(f"X must hold real or complex numbers; got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D; got shape {X.shape}")
    return np.cumsum(np.cumsum(X, axis=0), axis=1)


def summed_area_claim(*, backend: str | None = None, seed: int = 0) -> ClaimResult:
    """The integral image is a convolution with an image-sized kernel, and with no smaller one.

    Checks ``summed_area(X) == convolve2d(X, ones((H, W)))[:H, :W]``, that a
    kernel one row and one column smaller misses the corner sum, and that the
    first-difference kernels undo the integral (the derivative inverts it).

    Parameters
    ----------
    backend : str, optional
        Backend computing the convolutions.
    seed : int, optional
        Seed of the positive random image.

    Returns
    -------
    ClaimResult

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.summed_area_claim().passed
    True
    """
    import gpuconv

    rng = _rng(seed)
    X = rng.uniform(0.1, 1.0, (9, 12))
    H, W = X.shape
    S = summed_area(X)
    with _on(backend) as be:
        big = _np(be, gpuconv.convolve2d(X, np.ones((H, W)), "full", method="direct"))[:H, :W]
        small = _np(be, gpuconv.convolve2d(X, np.ones((H - 1, W - 1)), "full",
                                           method="direct"))[:H, :W]
        dx = _np(be, gpuconv.convolve2d(S, np.array([[1.0, -1.0]]), "full",
                                        method="direct"))[:H, :W]
        back = _np(be, gpuconv.convolve2d(dx, np.array([[1.0], [-1.0]]), "full",
                                          method="direct"))[:H, :W]
    err = max(float(np.abs(S - big).max()), float(np.abs(back - X).max()))
    tol = 4 * _gamma(H * W) * float(S.max())
    missing = float(S[-1, -1] - small[-1, -1])
    return _result("integral = image-sized kernel of ones", err, tol,
                   f"an (H-1)x(W-1) kernel misses {missing:.3g} of the corner sum; the "
                   "difference kernels [[1, -1]] and its transpose invert the integral",
                   extra=missing > 0)


# -- the diagonal-edge exercises -------------------------------------------------------------
def diagonal_edges(n: int = 6, *, backend: str | None = None) -> dict[str, np.ndarray]:
    """The chapter's exercise: an image ``X`` with a diagonal edge, the edge kernel
    ``K = [[1, -1]]``, and what ``K`` and ``K.T`` do to ``X`` and to ``X.T``.

    ``X[i, j] = 1`` on and above the diagonal, 0 below.  None of the outputs
    is the zero matrix (the notes' answer): a diagonal edge changes value
    along rows *and* columns, so both kernels respond with a diagonal line.
    ``K`` on ``X`` gives -1 just below the diagonal; on ``X.T`` the line is +1
    on the diagonal (transposing ``X`` does change the answer: the sign flips
    and the line moves); ``K.T`` on ``X`` gives +1 on the diagonal; and
    ``corr(X.T, K.T) == corr(X, K).T`` always.

    Parameters
    ----------
    n : int, optional
        Size of the square image, at least 2.
    backend : str, optional
        Backend computing the correlations.

    Returns
    -------
    dict of ndarray
        ``X``, ``K``, ``K_on_X``, ``K_on_XT``, ``KT_on_X``, ``KT_on_XT``
        (valid correlations).

    Examples
    --------
    >>> from gpuconv.theory import diagonal_edges
    >>> r = diagonal_edges(4)
    >>> r["X"]
    array([[1., 1., 1., 1.],
           [0., 1., 1., 1.],
           [0., 0., 1., 1.],
           [0., 0., 0., 1.]])
    >>> r["K_on_X"]
    array([[ 0.,  0.,  0.],
           [-1.,  0.,  0.],
           [ 0., -1.,  0.],
           [ 0.,  0., -1.]])
    >>> r["K_on_XT"]
    array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.],
           [0., 0., 0.]])
    >>> r["KT_on_X"]
    array([[1., 0., 0., 0.],
           [0., 1., 0., 0.],
           [0., 0., 1., 0.]])
    """
    import gpuconv

    n = _int("n", n, 2)
    X = np.triu(np.ones((n, n)))
    K = np.array([[1.0, -1.0]])
    with _on(backend) as be:
        def corr(a: np.ndarray, k: np.ndarray) -> np.ndarray:
            return _np(be, gpuconv.correlate2d(a, k, "valid", method="direct")) + 0.0
        return {"X": X, "K": K, "K_on_X": corr(X, K), "K_on_XT": corr(X.T, K),
                "KT_on_X": corr(X, K.T), "KT_on_XT": corr(X.T, K.T)}


def diagonal_edges_claim(n: int = 6, *, backend: str | None = None) -> ClaimResult:
    """The diagonal-edge exercise, with the right answers (the notes say "zero matrix").

    Checks that every output is a diagonal line of ``n - 1`` entries of
    magnitude 1 (not zero), that ``K`` on ``X.T`` differs from ``K`` on ``X``
    (not "no change"), and that ``corr(X.T, K.T) == corr(X, K).T`` exactly.

    Parameters
    ----------
    n : int, optional
        Size of the image.
    backend : str, optional
        Backend computing the correlations.

    Returns
    -------
    ClaimResult

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.diagonal_edges_claim().passed
    True
    """
    n = _int("n", n, 2)
    r = diagonal_edges(n, backend=backend)
    outs = [r["K_on_X"], r["K_on_XT"], r["KT_on_X"], r["KT_on_XT"]]
    lines = all(int(np.count_nonzero(o)) == n - 1 and set(np.unique(np.abs(o))) == {0.0, 1.0}
                for o in outs)
    changed = r["K_on_X"].shape != r["K_on_XT"].shape or not np.array_equal(r["K_on_X"],
                                                                              r["K_on_XT"])
    err = float(np.abs(r["KT_on_XT"] - r["K_on_X"].T).max())
    return _result("diagonal edges: K and K.T both respond", err, 0.0,
                   f"each output is a diagonal line of {n - 1} entries (not the zero matrix); "
                   "transposing X flips the sign and moves the line (not 'no change'); "
                   "corr(X.T, K.T) = corr(X, K).T", extra=lines and changed)


# -- all of them ----------------------------------------------------------------------------
def _claims() -> list[Callable[..., ClaimResult]]:
    from functools import partial

    return [
        commutativity_claim,
        partial(commutativity_claim, True),
        convolution_theorem_claim,
        partial(convolution_theorem_claim, dtype=np.float32),
        correlation_is_flipped_convolution_claim,
        translation_equivariance_claim,
        partial(translation_equivariance_claim, "fill"),
        conv_matrix_claim,
        partial(conv_matrix_claim, "full"),
        one_by_one_is_dense_layer_claim,
        receptive_field_claim,
        derivative_kernel_claim,
        laplacian_claim,
        summed_area_claim,
        diagonal_edges_claim,
    ]


def check(backend: str | None = None) -> list[ClaimResult]:
    """Check every claim of the chapter on one backend.

    Parameters
    ----------
    backend : str, optional
        Backend to compute on (default: the current one).

    Returns
    -------
    list of ClaimResult

    Examples
    --------
    >>> from gpuconv import theory
    >>> results = theory.check("numpy")
    >>> all(r.passed for r in results), len(results) >= 10
    (True, True)
    """
    out = []
    for claim in _claims():
        out.append(claim(backend=backend))
    return out
