"""The textbook loops: slow, plain NumPy, obviously right.

These follow the chapter's definitions line by line and are the oracle the
tests compare every fast path against.  Do not optimise them.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "corr2d",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "corr2d_multi_in_out_1x1",
    "pool2d",
    "conv2d",
    "conv_transpose2d",
]


def corr2d(X, K):
    """Valid 2-D cross-correlation, one output pixel at a time.

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
    """Sum over input channels of the per-channel correlations: X (C, H, W), K (C, kh, kw).

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
    """One multi-input correlation per output channel: K (C_out, C_in, kh, kw)."""
    return np.stack([corr2d_multi_in(X, k) for k in K])


def corr2d_multi_in_out_1x1(X, K):
    """A 1x1 convolution is a matrix product over channels at every pixel.

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


def conv2d(x, w, bias=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1,
           padding_mode="zeros"):
    """NCHW convolution layer by its definition, pixel by pixel.

    ``padding`` is (top, bottom, left, right); ``padding_mode`` is one of
    PyTorch's.  Used as the oracle for :func:`gpuconv.conv2d`.
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

    ``w`` is (C_in, C_out / groups, kh, kw), as in PyTorch.  Used as the oracle
    for :func:`gpuconv.conv_transpose2d`.

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
