"""Cross-correlation as a matrix product (the doubly block Toeplitz matrix) and the 1x1
convolution as a dense layer at every pixel."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._claim import _abs_full_conv, ClaimResult, _gamma, _int_pair, _np, _on, _result, _rng

__all__ = ["conv_matrix", "conv_matrix_claim", "one_by_one_is_dense_layer_claim"]


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

    Raises
    ------
    ValueError
        If ``kernel`` is not a non-empty 2-D array, ``mode`` is unknown, or in
        ``'valid'`` mode the kernel does not fit in ``input_shape``.

    See Also
    --------
    conv_matrix_claim : checks the product against :func:`gpuconv.correlate2d`.
    gpuconv.correlate2d : the same correlation, computed without the matrix.

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
    from ..correlate import _plane_geometry
    from .._validation import parse_mode

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

    Raises
    ------
    ValueError
        If ``mode`` is unknown.
    ValueError
        If ``backend`` is not a registered backend name.
    BackendUnavailableError
        If the backend cannot run here (the message says why).
    TypeError
        If ``seed`` is not an int.

    See Also
    --------
    conv_matrix : the matrix.

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.conv_matrix_claim("same").passed
    True
    """
    import gpuconv
    from ..correlate import _plane_geometry

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

    Raises
    ------
    ValueError
        If ``backend`` is not a registered backend name.
    BackendUnavailableError
        If the backend cannot run here (the message says why).
    TypeError
        If ``seed`` is not an int.

    See Also
    --------
    gpuconv.conv2d : the convolution with a ``(C_out, C_in, 1, 1)`` weight.
    gpuconv.reference.corr2d_multi_in_out_1x1 : the same product, as a loop-free reference.

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


