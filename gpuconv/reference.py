"""The textbook loops: slow, plain NumPy, obviously right.

``corr2d``, ``corr2d_multi_in``, ``corr2d_multi_in_out``,
``corr2d_multi_in_out_1x1`` and ``pool2d`` follow the definitions of chapter 6
of *Dive into Deep Learning* line by line; ``conv2d``, ``max_pool2d`` and
``avg_pool2d`` those of PyTorch's layers.  They are the oracle the tests compare
every fast path against.  Do not optimise them, and do not feed them large
inputs: they loop over every output pixel in Python.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "corr2d",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "corr2d_multi_in_out_1x1",
    "pool2d",
    "max_pool2d",
    "avg_pool2d",
    "conv2d",
    "conv_transpose2d",
]


def corr2d(X, K):
    """Valid 2-D cross-correlation, one output pixel at a time.

    ``Y[i, j] = sum(X[i:i + kh, j:j + kw] * K)``.

    Parameters
    ----------
    X : array_like, shape (H, W)
        The image.
    K : array_like, shape (kh, kw)
        The kernel, no larger than the image.

    Returns
    -------
    numpy.ndarray, shape (H - kh + 1, W - kw + 1)
        Floating point (at least float64 for integer inputs).

    Raises
    ------
    ValueError
        If the kernel is larger than the image (NumPy refuses the negative
        output size).

    See Also
    --------
    gpuconv.corr2d : the same, fast, on any backend.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import reference
    >>> reference.corr2d(np.arange(9.0).reshape(3, 3), np.array([[0., 1.], [2., 3.]]))
    array([[19., 25.],
           [37., 43.]])
    """
    X = np.asarray(X)
    K = np.asarray(K)
    h, w = K.shape
    Y = np.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1), dtype=np.result_type(X, K, float))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i:i + h, j:j + w] * K).sum()
    return Y


def corr2d_multi_in(X, K):
    """Sum over input channels of the per-channel correlations.

    Parameters
    ----------
    X : array_like, shape (C, H, W)
        One image with ``C`` channels.
    K : array_like, shape (C, kh, kw)
        One kernel per channel.

    Returns
    -------
    numpy.ndarray, shape (H - kh + 1, W - kw + 1)

    Raises
    ------
    ValueError
        If a kernel is larger than the image.

    See Also
    --------
    corr2d_multi_in_out : one such sum per output channel.
    gpuconv.conv2d : the same with ``C_out = 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import reference
    >>> X = np.stack([np.arange(9.0).reshape(3, 3), np.arange(1.0, 10.0).reshape(3, 3)])
    >>> K = np.stack([np.array([[0., 1.], [2., 3.]]), np.array([[1., 2.], [3., 4.]])])
    >>> reference.corr2d_multi_in(X, K)
    array([[ 56.,  72.],
           [104., 120.]])
    """
    return sum(corr2d(x, k) for x, k in zip(X, K))


def corr2d_multi_in_out(X, K):
    """One multi-input correlation per output channel.

    Parameters
    ----------
    X : array_like, shape (C_in, H, W)
        One image.
    K : array_like, shape (C_out, C_in, kh, kw)
        The filters.

    Returns
    -------
    numpy.ndarray, shape (C_out, H - kh + 1, W - kw + 1)

    Raises
    ------
    ValueError
        If a kernel is larger than the image.

    See Also
    --------
    corr2d_multi_in : each output channel.
    gpuconv.conv2d : the same for a batch, fast.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import reference
    >>> X = np.arange(18.0).reshape(2, 3, 3)
    >>> K = np.ones((4, 2, 2, 2))
    >>> K[1] *= 2
    >>> Y = reference.corr2d_multi_in_out(X, K)
    >>> Y.shape
    (4, 2, 2)
    >>> bool(np.array_equal(Y[1], 2 * Y[0]))
    True
    """
    return np.stack([corr2d_multi_in(X, k) for k in K])


def corr2d_multi_in_out_1x1(X, K):
    """A 1x1 convolution is a matrix product over channels at every pixel.

    Parameters
    ----------
    X : array_like, shape (C_in, H, W)
        One image.
    K : array_like, shape (C_out, C_in, 1, 1)
        1x1 filters.

    Returns
    -------
    numpy.ndarray, shape (C_out, H, W)

    Raises
    ------
    ValueError
        If the shapes do not match (NumPy's reshape or matrix product refuses).

    See Also
    --------
    corr2d_multi_in_out : the general loop it agrees with.
    gpuconv.theory.one_by_one_is_dense_layer_claim : the same claim, checked.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import reference
    >>> rng = np.random.default_rng(0)
    >>> X, K = rng.normal(size=(3, 3, 3)), rng.normal(size=(2, 3, 1, 1))
    >>> np.allclose(reference.corr2d_multi_in_out_1x1(X, K), reference.corr2d_multi_in_out(X, K))
    True
    """
    X = np.asarray(X)
    K = np.asarray(K)
    c_i, h, w = X.shape
    c_o = K.shape[0]
    Y = K.reshape(c_o, c_i) @ X.reshape(c_i, h * w)
    return Y.reshape(c_o, h, w)


def pool2d(X, pool_size, mode="max"):
    """Max or average pooling with stride 1, one window at a time.

    Parameters
    ----------
    X : array_like, shape (H, W)
        The image.
    pool_size : (int, int)
        The window ``(ph, pw)``.
    mode : {'max', 'avg'}, optional
        Maximum or mean of each window.

    Returns
    -------
    numpy.ndarray, shape (H - ph + 1, W - pw + 1)

    Raises
    ------
    ValueError
        If ``mode`` is not ``'max'`` or ``'avg'``, or the window is larger than
        the image.

    See Also
    --------
    max_pool2d, avg_pool2d : with stride, padding and PyTorch's other options.
    gpuconv.max_pool2d, gpuconv.avg_pool2d : fast, on any backend.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import reference
    >>> reference.pool2d(np.arange(9.0).reshape(3, 3), (2, 2))
    array([[4., 5.],
           [7., 8.]])
    >>> reference.pool2d(np.arange(9.0).reshape(3, 3), (2, 2), "avg")
    array([[2., 3.],
           [5., 6.]])
    """
    if mode not in ("max", "avg"):
        raise ValueError(f"mode must be 'max' or 'avg'; got {mode!r}")
    X = np.asarray(X)
    p_h, p_w = pool_size
    Y = np.zeros((X.shape[0] - p_h + 1, X.shape[1] - p_w + 1), dtype=np.result_type(X, float))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            window = X[i:i + p_h, j:j + p_w]
            Y[i, j] = window.max() if mode == "max" else window.mean()
    return Y


def _pool_size(n, k, s, p, d, ceil_mode):
    """Windows along one axis: floor (or ceil) of the span over the stride, plus one;
    with ceil_mode a last window that would start in the right padding is dropped."""
    span = (n + 2 * p - d * (k - 1) - 1) / s
    out = (math.ceil(span) if ceil_mode else math.floor(span)) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def _as_pairs(*values):
    return [v if isinstance(v, tuple) else (v, v) for v in values]


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max pooling of (N, C, H, W) as PyTorch defines it, one window at a time.

    Each window's in-image samples are scanned row by row; a sample replaces
    the running maximum when it is larger or NaN.  Padding is never a
    candidate.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
        The images.
    kernel_size : int or (int, int)
        The window.
    stride : int or (int, int), optional
        Step between windows (default: ``kernel_size``).
    padding : int or (int, int), optional
        Implicit border on each side.
    dilation : int or (int, int), optional
        Spacing between a window's samples.
    ceil_mode : bool, optional
        Round the number of windows up, dropping a last window that would
        start in the right padding.
    return_indices : bool, optional
        Also return the flat indices ``row * W + col`` of the maxima.

    Returns
    -------
    out : numpy.ndarray, shape (N, C, Ho, Wo)
        Same dtype as ``x``.
    indices : numpy.ndarray of int64
        Only with ``return_indices=True``.

    Raises
    ------
    ValueError
        If no window fits (NumPy refuses the negative output size).

    See Also
    --------
    gpuconv.max_pool2d : the same, validated and fast.
    avg_pool2d : the mean over each window.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import reference
    >>> x = np.array([[[[1.0, 5.0, 2.0], [0.0, 3.0, 4.0], [6.0, 1.0, 1.0]]]])
    >>> out, idx = reference.max_pool2d(x, 2, stride=1, return_indices=True)
    >>> out[0, 0], idx[0, 0]
    (array([[5., 5.],
           [6., 4.]]), array([[1, 1],
           [6, 5]]))
    """
    x = np.asarray(x)
    (kh, kw), (ph, pw), (dh, dw) = _as_pairs(kernel_size, padding, dilation)
    sh, sw = (kh, kw) if stride is None else _as_pairs(stride)[0]
    N, C, H, W = x.shape
    Ho = _pool_size(H, kh, sh, ph, dh, ceil_mode)
    Wo = _pool_size(W, kw, sw, pw, dw, ceil_mode)
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    idx = np.empty((N, C, Ho, Wo), dtype=np.int64)
    if x.dtype.kind == "f":
        lowest = -np.inf
    elif x.dtype.kind == "b":
        lowest = False
    else:
        lowest = np.iinfo(x.dtype).min
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    rows = [i * sh - ph + u * dh for u in range(kh)]
                    cols = [j * sw - pw + v * dw for v in range(kw)]
                    # Before any sample is seen: the lowest value, at the window's
                    # first position that is not above or left of the image.
                    best = lowest
                    where = min(r for r in rows if r >= 0) * W + min(q for q in cols if q >= 0)
                    for r in rows:
                        for q in cols:
                            if 0 <= r < H and 0 <= q < W:
                                value = x[n, c, r, q]
                                if value > best or value != value:
                                    best, where = value, r * W + q
                    out[n, c, i, j] = best
                    idx[n, c, i, j] = where
    return (out, idx) if return_indices else out


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Average pooling of (N, C, H, W) as PyTorch defines it, one window at a time.

    The window's in-image samples are summed; the divisor is
    ``divisor_override`` if given, else the window's size clipped to the
    padded image (``count_include_pad``) or to the image.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
        The images.
    kernel_size : int or (int, int)
        The window.
    stride : int or (int, int), optional
        Step between windows (default: ``kernel_size``).
    padding : int or (int, int), optional
        Implicit zero border on each side.
    ceil_mode : bool, optional
        Round the number of windows up, dropping a last window that would
        start in the right padding.
    count_include_pad : bool, optional
        Count the padding in the divisor.
    divisor_override : int, optional
        Divide by this instead.

    Returns
    -------
    numpy.ndarray, shape (N, C, Ho, Wo)

    Raises
    ------
    ValueError
        If no window fits (NumPy refuses the negative output size).

    See Also
    --------
    gpuconv.avg_pool2d : the same, validated and fast.
    max_pool2d : the maximum over each window.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import reference
    >>> reference.avg_pool2d(np.ones((1, 1, 2, 2)), 2, stride=1, padding=1)[0, 0]
    array([[0.25, 0.5 , 0.25],
           [0.5 , 1.  , 0.5 ],
           [0.25, 0.5 , 0.25]])
    """
    x = np.asarray(x)
    (kh, kw), (ph, pw) = _as_pairs(kernel_size, padding)
    sh, sw = (kh, kw) if stride is None else _as_pairs(stride)[0]
    N, C, H, W = x.shape
    Ho = _pool_size(H, kh, sh, ph, 1, ceil_mode)
    Wo = _pool_size(W, kw, sw, pw, 1, ceil_mode)
    out = np.zeros((N, C, Ho, Wo), dtype=np.result_type(x, float))
    for i in range(Ho):
        for j in range(Wo):
            r0, q0 = i * sh - ph, j * sw - pw
            r1, q1 = min(r0 + kh, H + ph), min(q0 + kw, W + pw)
            size = (r1 - r0) * (q1 - q0)
            r0, q0, r1, q1 = max(r0, 0), max(q0, 0), min(r1, H), min(q1, W)
            if divisor_override is not None:
                divisor = divisor_override
            elif count_include_pad:
                divisor = size
            else:
                divisor = (r1 - r0) * (q1 - q0)
            for n in range(N):
                for c in range(C):
                    total = 0
                    for r in range(r0, r1):
                        for q in range(q0, q1):
                            total = total + x[n, c, r, q]
                    out[n, c, i, j] = total / divisor
    return out

def conv2d(x, w, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1,
           padding_mode="zeros"):
    """NCHW convolution layer by its definition, pixel by pixel.

    Used as the oracle for :func:`gpuconv.conv2d`.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
        The input batch.
    w : array_like, shape (C_out, C / groups, kh, kw)
        The filters.
    bias : array_like, shape (C_out,), optional
        Added to each output channel.
    stride : (int, int), optional
        Step between outputs.
    padding : (int, int, int, int), optional
        ``(top, bottom, left, right)``.
    dilation : (int, int), optional
        Spacing between kernel taps.
    groups : int, optional
        Independent channel groups.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}, optional
        How the padding is filled, as in PyTorch.

    Returns
    -------
    numpy.ndarray, shape (N, C_out, Ho, Wo)

    Raises
    ------
    KeyError
        If ``padding_mode`` is unknown.
    ValueError
        If the kernel does not fit in the padded input.

    See Also
    --------
    gpuconv.conv2d : the same, validated and fast.
    corr2d_multi_in_out : the unbatched, unpadded case.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import reference
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> reference.conv2d(x, np.ones((1, 1, 3, 3)), stride=(2, 2), padding=(1, 1, 1, 1))[0, 0]
    array([[10., 24.],
           [51., 90.]])
    """
    x = np.asarray(x)
    w = np.asarray(w)
    numpy_mode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                  "circular": "wrap"}[padding_mode]
    t, b, l, r = padding
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), mode=numpy_mode)
    N, C, H, W = xp.shape
    Cout, Cg, kh, kw = w.shape
    sh, sw = stride
    dh, dw = dilation
    Ho = (H - dh * (kh - 1) - 1) // sh + 1
    Wo = (W - dw * (kw - 1) - 1) // sw + 1
    out_per_group = Cout // groups
    y = np.zeros((N, Cout, Ho, Wo), dtype=np.result_type(x, w, float))
    for n in range(N):
        for o in range(Cout):
            g = o // out_per_group
            for i in range(Ho):
                for j in range(Wo):
                    window = xp[n, g * Cg:(g + 1) * Cg,
                                i * sh:i * sh + dh * (kh - 1) + 1:dh,
                                j * sw:j * sw + dw * (kw - 1) + 1:dw]
                    y[n, o, i, j] = (window * w[o]).sum()
            if bias is not None:
                y[n, o] += bias[o]
    return y


def conv_transpose2d(x, w, bias=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                     groups=1, dilation=(1, 1)):
    """Transposed convolution by its definition: every input pixel scatters its window.

    Used as the oracle for :func:`gpuconv.conv_transpose2d`.

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W)
        The input.
    w : array_like, shape (C_in, C_out / groups, kh, kw)
        The weight, as in PyTorch.
    bias : array_like, shape (C_out,), optional
        Added to every output pixel of its channel.
    stride : (int, int), optional
        Step between the windows the input pixels scatter.
    padding : (int, int), optional
        Rows/columns removed from each side of the output.
    output_padding : (int, int), optional
        Rows/columns added at the bottom/right.
    groups : int, optional
        Channel groups.
    dilation : (int, int), optional
        Spacing between kernel taps.

    Returns
    -------
    ndarray, shape (N, C_out, Ho, Wo)
        ``Ho = (H - 1)*stride - 2*padding + dilation*(kh - 1) + output_padding + 1``.

    Raises
    ------
    ValueError
        From NumPy, for shapes that do not agree (the loops do not validate).

    See Also
    --------
    gpuconv.conv_transpose2d : the fast version.
    conv2d : the convolution this is the adjoint of.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import reference
    >>> reference.conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), stride=(2, 2))
    array([[[[1., 1., 1., 1.],
             [1., 1., 1., 1.],
             [1., 1., 1., 1.],
             [1., 1., 1., 1.]]]])
    """
    x = np.asarray(x)
    w = np.asarray(w)
    N, Cin, H, W = x.shape
    _, Coutg, kh, kw = w.shape
    sh, sw = stride
    dh, dw = dilation
    ph, pw = padding
    Ho = (H - 1) * sh - 2 * ph + dh * (kh - 1) + output_padding[0] + 1
    Wo = (W - 1) * sw - 2 * pw + dw * (kw - 1) + output_padding[1] + 1
    in_per_group = Cin // groups
    y = np.zeros((N, Coutg * groups, Ho, Wo), dtype=np.result_type(x, w, float))
    for n in range(N):
        for c in range(Cin):
            g = c // in_per_group
            for i in range(H):
                for j in range(W):
                    for o in range(Coutg):
                        for u in range(kh):
                            for v in range(kw):
                                r = i * sh + u * dh - ph
                                q = j * sw + v * dw - pw
                                if 0 <= r < Ho and 0 <= q < Wo:
                                    y[n, g * Coutg + o, r, q] += x[n, c, i, j] * w[c, o, u, v]
    if bias is not None:
        y += np.asarray(bias)[None, :, None, None]
    return y
