"""Gradients of a convolution layer, written with gpuconv's own convolutions.

For ``y = conv2d(x, w, stride=s, padding=p, dilation=d, groups=g)`` and the
gradient ``dy`` of a scalar loss with respect to ``y``:

* the **weight gradient** is a correlation of the (padded) input with the
  output gradient, ``dw[o, c] = sum_n corr(x_pad[n, c], dy[n, o])`` sampled
  every ``d`` pixels with taps ``s`` apart.  That is :func:`gpuconv.conv2d`
  applied to the arrays with batch and channel axes swapped, with the roles of
  stride and dilation exchanged; groups stay groups.  With small strides,
  ``method='auto'`` evaluates the same correlation as one matrix product per
  weight tap over the row-pitched input (see :func:`conv2d_weight_grad`).
* the **input gradient** is the adjoint of the convolution,
  :func:`gpuconv.conv_transpose2d` of ``dy`` with the same weights, with an
  ``output_padding`` that recovers the exact input size when ``s > 1``; for
  the ``'reflect'``, ``'replicate'`` and ``'circular'`` padding modes the
  gradient that lands on the padding is folded back onto the pixels it copied.

Both use only the backend's array namespace and gpuconv's ops, so they run on
whichever backend computes the forward pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _winograd
from .._config import get_scratch_limit
from .._validation import parse_padding_mode
from ..backend import resolve_backend
from ..conv import conv2d, conv_transpose2d

__all__ = [
    "pad_nchw",
    "fold_padding",
    "conv2d_weight_grad",
    "conv2d_input_grad",
]

_XP_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                "circular": "wrap"}


def pad_nchw(xp: Any, x: Any, pads: tuple[int, int, int, int], padding_mode: str) -> Any:
    """Pad the last two axes by ``(top, bottom, left, right)`` as ``torch.nn.Conv2d`` does.

    Parameters
    ----------
    xp : module
        The array namespace (``backend.xp``).
    x : array, shape (..., H, W)
    pads : (int, int, int, int)
        ``(top, bottom, left, right)``.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}

    Returns
    -------
    array, shape (..., H + top + bottom, W + left + right)

    Raises
    ------
    ValueError
        If ``padding_mode`` is not one of the four.

    See Also
    --------
    fold_padding : its adjoint.
    gpuconv.conv2d : pads this way with ``padding_mode``.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv.nn.functional import pad_nchw
    >>> pad_nchw(np, np.array([[[[1.0, 2.0, 3.0]]]]), (0, 0, 2, 1), "circular")
    array([[[[2., 3., 1., 2., 3., 1.]]]])
    """
    padding_mode = parse_padding_mode(padding_mode)
    top, bottom, left, right = pads
    if not (top or bottom or left or right):
        return x
    widths = ((0, 0),) * (x.ndim - 2) + ((top, bottom), (left, right))
    return xp.pad(x, widths, mode=_XP_PAD_MODE[padding_mode])


def _source_index(n: int, before: int, after: int, padding_mode: str) -> np.ndarray:
    """For each padded position, the input position whose value it holds."""
    i = np.arange(-before, n + after)
    if padding_mode == "replicate":
        return np.clip(i, 0, n - 1)
    if padding_mode == "circular":
        return i % n
    if padding_mode == "reflect":
        i = np.abs(i)
        return np.where(i > n - 1, 2 * (n - 1) - i, i)
    raise ValueError(f"padding_mode must be 'reflect', 'replicate' or 'circular' here; "
                     f"got {padding_mode!r}")


def _fold_matrix(n: int, before: int, after: int, padding_mode: str, dtype: Any) -> np.ndarray:
    src = _source_index(n, before, after, padding_mode)
    m = np.zeros((n, src.size), dtype=dtype)
    m[src, np.arange(src.size)] = 1
    return m


def fold_padding(backend: Any, grad_padded: Any, pads: tuple[int, int, int, int],
                 hw: tuple[int, int], padding_mode: str) -> Any:
    """The adjoint of :func:`pad_nchw`: gradient on the padded array -> gradient on the input.

    Parameters
    ----------
    backend : Backend
        The backend of ``grad_padded``.
    grad_padded : array, shape (..., H + top + bottom, W + left + right)
    pads : (int, int, int, int)
        ``(top, bottom, left, right)``.
    hw : (int, int)
        The unpadded ``(H, W)``.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}

    Returns
    -------
    array, shape (..., H, W)

    Notes
    -----
    Zero padding copies nothing, so its adjoint is a crop.  The other modes
    copy input pixels into the border; each padded position's gradient is
    added to the pixel it came from.  Padding is separable, so the adjoint is
    ``F_h @ g @ F_w.T`` with 0/1 fold matrices (exact in floating point: each
    output is a plain sum of the gradients that belong to it).

    Raises
    ------
    ValueError
        If ``padding_mode`` is not one of the four.

    See Also
    --------
    pad_nchw : the padding it undoes.
    conv2d_input_grad : uses it for the non-zero padding modes.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv.backend import get_backend_object
    >>> from gpuconv.nn.functional import fold_padding
    >>> ones = np.ones((1, 1, 1, 6))  # d(sum of the padded row)/d(padded row)
    >>> fold_padding(get_backend_object("numpy"), ones, (0, 0, 2, 1), (1, 3), "circular")
    array([[[[2., 2., 2.]]]])
    """
    top, bottom, left, right = pads
    H, W = hw
    if padding_mode == "zeros" or not (top or bottom or left or right):
        return grad_padded[..., top:top + H, left:left + W]
    xp = backend.xp
    dtype = np.dtype(grad_padded.dtype)
    fh = backend.asarray(_fold_matrix(H, top, bottom, padding_mode, dtype))
    fw = backend.asarray(_fold_matrix(W, left, right, padding_mode, dtype))
    return xp.matmul(xp.matmul(fh, grad_padded), fw.T)


def _needed(size_out: int, k: int, s: int, d: int) -> int:
    """Rows of the padded input that a convolution with these parameters reads."""
    return d * (k - 1) + s * (size_out - 1) + 1


def conv2d_weight_grad(x: Any, grad_out: Any, kernel_hw: tuple[int, int],
                       stride: tuple[int, int], pads: tuple[int, int, int, int],
                       dilation: tuple[int, int], groups: int, padding_mode: str = "zeros",
                       *, method: str = "auto") -> Any:
    """Gradient of a :func:`gpuconv.conv2d` with respect to its weight.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        The forward input.
    grad_out : array, shape (N, O, Ho, Wo)
        Gradient of the loss with respect to the output.
    kernel_hw : (int, int)
        The kernel's spatial size ``(kh, kw)``.
    stride : (int, int)
        As in the forward call.
    pads : (int, int, int, int)
        Padding ``(top, bottom, left, right)`` of the forward call.
    dilation : (int, int)
        As in the forward call.
    groups : int
        As in the forward call.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}
        As in the forward call.
    method : str, keyword-only
        ``'auto'``, ``'gemm'`` (and on NumPy ``'direct'``): the backend's own
        exact algorithm where it has one (NumPy: with ``stride[0] * stride[1] <= 4``
        and float32/float64, ``kh * kw`` matrix products over the row-pitched
        input, see below, and at larger strides or for complex one product per
        tap over strided views of the input; CuPy: im2col columns and one matrix
        product per chunk); ``'winograd'``
        (3x3 kernels, stride 1, dilation 1): the transpose of Winograd's
        algorithm, one product per transform position over all tiles
        (measured 1.3-2x faster than ``'auto'`` on 64-256 channel layers, at
        1.5-7x its rounding error); otherwise, and for any other value,
        :func:`gpuconv.conv2d` of the swapped arrays with this method.

    Returns
    -------
    array, shape (O, C / groups, kh, kw)

    Raises
    ------
    TypeError
        If the arrays come from different array libraries.
    ValueError
        If ``method`` is not one of :func:`gpuconv.conv2d`'s methods.

    See Also
    --------
    conv2d_input_grad : the gradient with respect to the input.
    gpuconv.nn.Conv2D : the layer whose ``backward`` calls it.

    Notes
    -----
    As a :func:`gpuconv.conv2d`, the weight gradient has a kernel as large as
    the output gradient and an output as small as the weight, the opposite of
    what convolution kernels are built for: their loops run over kernel taps
    (``Ho * Wo`` of them here).  With small strides, ``'auto'`` computes the same
    correlation looped over its ``kh * kw`` output positions instead, each one
    matrix product of the channel-major output gradient with a shifted view of
    the channel-major input (the layout the NumPy backend's implicit GEMM
    uses), which on (32,64,28,28)->64 3x3 is several times faster.

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> from gpuconv.nn.functional import conv2d_weight_grad
    >>> rng = np.random.default_rng(0)
    >>> x, w = rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((4, 3, 3, 3))
    >>> y = gpuconv.conv2d(x, w, stride=2)
    >>> dw = conv2d_weight_grad(x, np.ones_like(y), (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 1)
    >>> # d(sum y)/dw[o, c, u, v] is the sum of the input pixels tap (u, v) reads
    >>> bool(np.isclose(dw[1, 2, 0, 1], x[:, 2, 0:5:2, 1:6:2].sum()))
    True
    """
    backend = resolve_backend(x=x, grad_out=grad_out)
    x = backend.asarray(x)
    grad_out = backend.asarray(grad_out)
    if grad_out.dtype != x.dtype:
        dtype = np.result_type(x.dtype, grad_out.dtype)
        x, grad_out = x.astype(dtype), grad_out.astype(dtype)
    x = backend.xp.ascontiguousarray(x)
    grad_out = backend.xp.ascontiguousarray(grad_out)
    N, C, _, _ = x.shape
    _, O, Ho, Wo = grad_out.shape
    kh, kw = kernel_hw
    G = groups
    # The backend's own algorithm where it has one for this case (the NumPy
    # backend: products over the row-pitched input at small strides; CuPy:
    # im2col columns and one matrix product per chunk).
    dw = backend.conv2d_weight_grad(x, grad_out, (kh, kw), stride, pads, dilation, G,
                                    padding_mode, method, get_scratch_limit())
    if dw is not NotImplemented:
        return dw
    need_h = _needed(Ho, kh, stride[0], dilation[0])
    need_w = _needed(Wo, kw, stride[1], dilation[1])
    # Rows past need_h are never read (they are the remainder of the stride).
    xpad = pad_nchw(backend.xp, x, pads, padding_mode)[:, :, :need_h, :need_w]
    if method == "winograd":
        _winograd.check_winograd((kh, kw), stride, dilation, argname="kernel_hw")
        xp = backend.xp
        # float16 computes in float32, as the ops do.
        work = np.promote_types(x.dtype, np.float32) if x.dtype.kind == "f" else x.dtype
        dw = _winograd.weight_grad(xp, xp.ascontiguousarray(xpad, dtype=work),
                                   xp.ascontiguousarray(grad_out, dtype=work), G,
                                   get_scratch_limit(),
                                   **getattr(backend, "winograd_options", dict)())
        return dw.astype(x.dtype, copy=False)
    return _as_swapped_conv2d(backend.xp, xpad, grad_out, stride, dilation, G, method)


def _as_swapped_conv2d(xp: Any, xpad: Any, grad_out: Any, stride: tuple[int, int],
                       dilation: tuple[int, int], groups: int, method: str) -> Any:
    """The weight gradient as :func:`gpuconv.conv2d` of the swapped arrays: the padded
    input (cropped to what the taps read) correlated with the output gradient as kernel."""
    N, C, need_h, need_w = xpad.shape
    _, O, Ho, Wo = grad_out.shape
    G = groups
    # Swap batch and channel axes so the batch becomes the reduction axis; the
    # groups stay independent because each group's images form one channel group.
    xt = xpad.reshape(N, G, C // G, need_h, need_w).transpose(2, 1, 0, 3, 4)
    xt = xt.reshape(C // G, G * N, need_h, need_w)
    dyt = grad_out.reshape(N, G, O // G, Ho, Wo).transpose(1, 2, 0, 3, 4)
    dyt = dyt.reshape(O, N, Ho, Wo)
    dw = conv2d(xt, dyt, stride=dilation, dilation=stride, groups=G, method=method)
    return xp.ascontiguousarray(dw.transpose(1, 0, 2, 3))


def conv2d_input_grad(grad_out: Any, weight: Any, input_hw: tuple[int, int],
                      stride: tuple[int, int], pads: tuple[int, int, int, int],
                      dilation: tuple[int, int], groups: int, padding_mode: str = "zeros",
                      *, method: str = "auto") -> Any:
    """Gradient of a :func:`gpuconv.conv2d` with respect to its input.

    Parameters
    ----------
    grad_out : array, shape (N, O, Ho, Wo)
        Gradient of the loss with respect to the output.
    weight : array, shape (O, C / groups, kh, kw)
        The forward weight.
    input_hw : (int, int)
        The input's spatial size ``(H, W)``.
    stride : (int, int)
        As in the forward call.
    pads : (int, int, int, int)
        Padding ``(top, bottom, left, right)`` of the forward call.
    dilation : (int, int)
        As in the forward call.
    groups : int
        As in the forward call.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}
        As in the forward call; the gradient on the border is folded back.
    method : str, keyword-only
        Passed to :func:`gpuconv.conv_transpose2d`.

    Returns
    -------
    array, shape (N, C, H, W)

    Raises
    ------
    TypeError
        If the arrays come from different array libraries.
    ValueError
        If ``method`` is not one of :func:`gpuconv.conv_transpose2d`'s methods.

    See Also
    --------
    conv2d_weight_grad : the gradient with respect to the weight.
    gpuconv.conv_transpose2d : the adjoint it computes.

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> from gpuconv.nn.functional import conv2d_input_grad
    >>> rng = np.random.default_rng(0)
    >>> x, w = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3))
    >>> dy = rng.standard_normal(gpuconv.conv2d(x, w, stride=2, padding=1).shape)
    >>> dx = conv2d_input_grad(dy, w, (8, 8), (2, 2), (1, 1, 1, 1), (1, 1), 1)
    >>> dx.shape
    (2, 3, 8, 8)
    >>> # the adjoint identity <conv(x), dy> == <x, dx>
    >>> bool(np.isclose((gpuconv.conv2d(x, w, stride=2, padding=1) * dy).sum(), (x * dx).sum()))
    True
    """
    backend = resolve_backend(grad_out=grad_out, weight=weight)
    grad_out = backend.asarray(grad_out)
    weight = backend.asarray(weight)
    H, W = input_hw
    _, _, Ho, Wo = grad_out.shape
    _, _, kh, kw = weight.shape
    top, bottom, left, right = pads
    Hp, Wp = H + top + bottom, W + left + right
    need_h = _needed(Ho, kh, stride[0], dilation[0])
    need_w = _needed(Wo, kw, stride[1], dilation[1])
    # Hp - need_h < stride, so output_padding recovers the whole padded size.
    extra = (Hp - need_h, Wp - need_w)
    if padding_mode == "zeros" and top == bottom and left == right:
        return conv_transpose2d(grad_out, weight, stride=stride, padding=(top, left),
                                output_padding=extra, groups=groups, dilation=dilation,
                                method=method)
    grad_padded = conv_transpose2d(grad_out, weight, stride=stride, padding=0,
                                   output_padding=extra, groups=groups, dilation=dilation,
                                   method=method)
    return fold_padding(backend, grad_padded, pads, (H, W), padding_mode)
