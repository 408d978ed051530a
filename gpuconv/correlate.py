"""SciPy-style 2-D cross-correlation and convolution of (batches of) planes.

``correlate2d`` and ``convolve2d`` are thin wrappers over one private function:
convolution is correlation with the kernel flipped instead of conjugated, and
a different centre for ``mode="same"`` with even kernels.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from . import _choose
from ._config import get_scratch_limit
from ._dispatch import has_dask
from ._frontdoor import as_backend_array, native_work_dtype, to_work
from ._validation import check_fillvalue, compute_dtype, parse_boundary, parse_method, parse_mode
from ._winograd import check_winograd
from .backend import resolve_backend

__all__ = ["correlate2d", "convolve2d", "corr2d"]

Mode = Literal["full", "same", "valid"]
Boundary = Literal["fill", "wrap", "symm", "pad", "circular", "symmetric"]
Method = Literal["auto", "direct", "gemm", "fft", "overlap-add", "winograd"]


def correlate2d(in1: Any, in2: Any, mode: Mode = "full", boundary: Boundary = "fill",
                fillvalue: Any = 0, *, method: Method = "auto") -> Any:
    """Cross-correlate planes with a 2-D kernel, as :func:`scipy.signal.correlate2d`.

    .. math:: z[..., i, j] = \\sum_{u, v} x[..., i + u - t, j + v - l]\\,\\overline{k[u, v]}

    where ``(t, l)`` is the origin offset fixed by ``mode``.

    Parameters
    ----------
    in1 : array_like, shape (..., H, W)
        The input.  Leading axes are a batch: every plane is correlated with
        the same kernel in one call.
    in2 : array_like, shape (kh, kw)
        The kernel.  It is complex-conjugated, as in SciPy.
    mode : {'full', 'valid', 'same'}, optional
        ``'full'`` (default): every overlap, shape ``(H + kh - 1, W + kw - 1)``.
        ``'valid'``: only full overlaps, ``(H - kh + 1, W - kw + 1)``; as in
        SciPy, if the kernel is at least as large as the input in both axes the
        roles are swapped exactly as SciPy swaps them, and if
        neither contains the other a ``ValueError`` is raised.
        ``'same'``: the size of ``in1``, centred on the full output.
    boundary : {'fill', 'wrap', 'symm'}, optional
        How ``in1`` is extended beyond its edges: by ``fillvalue`` (``'fill'``,
        alias ``'pad'``), periodically (``'wrap'``, alias ``'circular'``) or
        mirrored with the edge repeated (``'symm'``, alias ``'symmetric'``).
    fillvalue : scalar, optional
        The value used with ``boundary='fill'`` (default 0).
    method : {'auto', 'direct', 'gemm', 'fft', 'overlap-add'}, keyword-only
        The algorithm.  ``'auto'`` asks :func:`gpuconv.choose_method`.

    Returns
    -------
    array, shape (..., Ho, Wo)
        An array of the backend's library.  Its dtype is the promoted dtype of
        the inputs: integer and bool inputs give float64 (SciPy keeps them
        integer and can overflow); float16 is accumulated in float32 and
        returned as float16 (the CuPy ``"direct"`` kernels read and write
        float16 as it is; other paths widen it to float32 first).

    Raises
    ------
    ValueError
        For an unknown ``mode``/``boundary``/``method``, empty or wrongly
        shaped inputs, or ``'valid'`` shapes where neither input contains
        the other.
    TypeError
        For non-numeric inputs, or inputs from two array libraries with the
        ``"auto"`` backend.

    See Also
    --------
    convolve2d : the same with the kernel flipped.
    corr2d : the chapter's name for ``correlate2d(X, K, mode="valid")``.

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> x = np.array([[0., 1., 2.], [3., 4., 5.], [6., 7., 8.]])
    >>> k = np.array([[0., 1.], [2., 3.]])
    >>> gpuconv.correlate2d(x, k, mode="valid")
    array([[19., 25.],
           [37., 43.]])
    >>> gpuconv.correlate2d(np.stack([x, -x]), k, mode="valid").shape
    (2, 2, 2)
    """
    return _correlate2d(in1, in2, mode, boundary, fillvalue, method, convolution=False)


def convolve2d(in1: Any, in2: Any, mode: Mode = "full", boundary: Boundary = "fill",
               fillvalue: Any = 0, *, method: Method = "auto") -> Any:
    """Convolve planes with a 2-D kernel, as :func:`scipy.signal.convolve2d`.

    .. math:: z[..., i, j] = \\sum_{u, v} x[..., i - u + t, j - v + l]\\, k[u, v]

    Parameters and return value are those of :func:`correlate2d`; the kernel
    is flipped in both axes instead of conjugated, and ``mode='same'`` is
    centred as SciPy centres convolution (for even kernels this differs by
    one sample from correlation).

    Parameters
    ----------
    in1 : array_like, shape (..., H, W)
        The input; leading axes are a batch.
    in2 : array_like, shape (kh, kw)
        The kernel.
    mode : {'full', 'valid', 'same'}, optional
        Output size, as in :func:`correlate2d`.
    boundary : {'fill', 'wrap', 'symm'}, optional
        Edge extension, as in :func:`correlate2d`.
    fillvalue : scalar, optional
        The value used with ``boundary='fill'``.
    method : {'auto', 'direct', 'gemm', 'fft', 'overlap-add'}, keyword-only
        The algorithm.

    Returns
    -------
    array, shape (..., Ho, Wo)
        See :func:`correlate2d`.

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> x = np.arange(9.0).reshape(3, 3)
    >>> k = np.array([[0., 1.], [2., 3.]])
    >>> gpuconv.convolve2d(x, k, mode="valid")
    array([[ 5., 11.],
           [23., 29.]])
    >>> np.allclose(gpuconv.convolve2d(x, k), gpuconv.convolve2d(k, x))  # f * g = g * f
    True
    """
    return _correlate2d(in1, in2, mode, boundary, fillvalue, method, convolution=True)


def corr2d(X: Any, K: Any) -> Any:
    """The chapter's 2-D cross-correlation: ``correlate2d(X, K, mode="valid")``.

    The output has shape ``(nh - kh + 1, nw - kw + 1)``.

    Parameters
    ----------
    X : array_like, shape (..., nh, nw)
        The input.
    K : array_like, shape (kh, kw)
        The kernel, no larger than ``X`` in either axis.

    Returns
    -------
    array, shape (..., nh - kh + 1, nw - kw + 1)

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> X = np.ones((6, 8)); X[:, 2:6] = 0
    >>> gpuconv.corr2d(X, np.array([[1.0, -1.0]]))[0]
    array([ 0.,  1.,  0.,  0.,  0., -1.,  0.])
    """
    return _correlate2d(X, K, "valid", "fill", 0, "auto", convolution=False, swap=False,
                        names=("X", "K"))


def _plane_geometry(mode: str, convolution: bool, in_hw: tuple[int, int],
                    k_hw: tuple[int, int], swap: bool = True,
                    names: tuple[str, str] = ("in1", "in2"),
                    ) -> tuple[tuple[int, int], tuple[int, int], bool]:
    """(out_shape, origin, swapped) of one plane for a SciPy mode."""
    (H, W), (kh, kw) = in_hw, k_hw
    if mode == "full":
        return (H + kh - 1, W + kw - 1), (kh - 1, kw - 1), False
    if mode == "same":
        # SciPy centres correlation at (k-1)//2 and convolution at k//2.
        if convolution:
            return (H, W), (kh // 2, kw // 2), False
        return (H, W), ((kh - 1) // 2, (kw - 1) // 2), False
    fits = H >= kh and W >= kw
    contains = swap and kh >= H and kw >= W
    if not (fits or contains):
        needs = ("one input at least as large as the other in every axis" if swap
                 else f"the kernel {names[1]} no larger than {names[0]} in either axis")
        raise ValueError(f"mode='valid' needs {needs}; got {names[0]} planes of shape "
                         f"{(H, W)} and {names[1]} of shape {(kh, kw)}")
    if fits:
        return (H - kh + 1, W - kw + 1), (0, 0), False
    # SciPy swaps the inputs.  The result is a window of the full correlation.
    return (kh - H + 1, kw - W + 1), (kh - H, kw - W), True


def _correlate2d(in1, in2, mode, boundary, fillvalue, method, *, convolution, swap=True,
                 names=("in1", "in2")):
    if has_dask(in1, in2):
        from . import _dask

        return _dask.correlate2d(in1, in2, mode, boundary, fillvalue, method,
                                 convolution=convolution, swap=swap, names=names)
    backend = resolve_backend(**{names[0]: in1, names[1]: in2})
    mode = parse_mode(mode)
    boundary = parse_boundary(boundary)
    method = parse_method(method)
    name1, name2 = names
    in1 = as_backend_array(backend, name1, in1)
    in2 = as_backend_array(backend, name2, in2)
    if in1.ndim < 2:
        raise ValueError(f"{name1} must have at least 2 dimensions (..., H, W); "
                         f"got shape {in1.shape}")
    if in2.ndim != 2:
        raise ValueError(f"{name2} must be a 2-D kernel (kh, kw); got shape {in2.shape}")
    if 0 in in1.shape[-2:]:
        raise ValueError(f"{name1} planes must be non-empty; got shape {in1.shape}")
    if 0 in in2.shape:
        raise ValueError(f"{name2} must be non-empty; got shape {in2.shape}")
    if method == "winograd":
        check_winograd(tuple(in2.shape), argname=name2)
    result_dtype, work_dtype = compute_dtype({name1: in1.dtype, name2: in2.dtype})
    fillvalue = check_fillvalue(fillvalue, work_dtype)
    batch = in1.shape[:-2]
    in_hw = in1.shape[-2:]
    out_shape, origin, swapped = _plane_geometry(mode, convolution, in_hw, in2.shape, swap,
                                                 names)
    if mode == "valid":
        # No extension is read in valid mode except SciPy's swapped case, where
        # the window must see zeros, whatever the boundary.
        boundary, fillvalue = "fill", 0
    xp = backend.xp
    planes = int(math.prod(batch))
    if planes and method == "auto":
        method = _choose.choose_planes_method(
            backend, (planes,) + tuple(in_hw), tuple(in2.shape), out_shape, work_dtype,
            boundary, exact=in1.dtype.kind in "biu" and in2.dtype.kind in "biu").method
    work_dtype = native_work_dtype(backend, method, result_dtype, work_dtype)
    x = to_work(backend, in1.reshape((-1,) + tuple(in_hw)), work_dtype)
    w = to_work(backend, in2, work_dtype)
    if convolution:
        w = xp.ascontiguousarray(w[::-1, ::-1])
    elif swapped:
        # SciPy conjugates the (now) kernel in1 and flips the result; the same
        # numbers are the conjugated image against the plain kernel.
        x = xp.conj(x) if work_dtype.kind == "c" else x
    elif work_dtype.kind == "c":
        w = xp.conj(w)
    if x.shape[0] == 0:
        return xp.empty(tuple(batch) + out_shape, dtype=result_dtype)
    out = backend.correlate_planes(x, w, out_shape, origin, boundary, fillvalue, method,
                                   get_scratch_limit())
    out = out.reshape(tuple(batch) + out_shape)
    return out.astype(result_dtype, copy=False)
