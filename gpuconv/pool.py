"""Pooling: ``max_pool2d`` and ``avg_pool2d`` with PyTorch's semantics, on any backend.

Pooling summarises each window of every channel by one number, the largest
or the mean, and so makes the output less sensitive to where exactly a
feature sits.  Both functions take the arguments of
:func:`torch.nn.functional.max_pool2d` and :func:`torch.nn.functional.avg_pool2d`
and follow their rules: ``stride`` defaults to ``kernel_size``, padding is at
most half the kernel, and with ``ceil_mode`` the last window must start inside
the input or its left padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ._dispatch import has_dask
from ._frontdoor import as_backend_array, foreign_arrays
from ._validation import compute_dtype, pair
from .backend import get_backend, resolve_backend, set_backend

__all__ = ["max_pool2d", "avg_pool2d"]


@dataclass(frozen=True)
class PoolGeometry:
    """Validated pooling arguments; :meth:`output` adds what depends on the input size."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    ceil_mode: bool

    def output(self, hw: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """``(Ho, Wo)`` and the padding ``(top, bottom, left, right)`` the windows read.

        The bottom/right padding covers every window: with ``ceil_mode`` the
        last one may reach past the symmetric padding, and there it reads
        nothing (padding values never count).
        """
        out, after = [], []
        for a in range(2):
            n, k, s = hw[a], self.kernel[a], self.stride[a]
            p, d = self.padding[a], self.dilation[a]
            span = n + 2 * p - d * (k - 1) - 1
            o = (span + (s - 1 if self.ceil_mode else 0)) // s + 1
            if self.ceil_mode and (o - 1) * s >= n + p:
                o -= 1  # the last window would start in the right padding
            if o < 1:
                raise ValueError(
                    f"kernel_size {self.kernel} with dilation {self.dilation} does not fit in "
                    f"the input of spatial size {tuple(hw)} padded by {self.padding} on each "
                    f"side: the output would have size {o} along axis {a - 2}")
            out.append(o)
            after.append(max((o - 1) * s + d * (k - 1) + 1 - n - p, 0))
        return (out[0], out[1]), (self.padding[0], after[0], self.padding[1], after[1])


def check_flag(argname: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argname} must be True or False; got {value!r}")
    return bool(value)


def pool_geometry(kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                  ceil_mode: Any = False) -> PoolGeometry:
    """Check the pooling arguments that do not depend on the input."""
    kernel = pair("kernel_size", kernel_size, minimum=1)
    stride = kernel if stride is None else pair("stride", stride, minimum=1)
    padding = pair("padding", padding, minimum=0)
    dilation = pair("dilation", dilation, minimum=1)
    for a in range(2):
        if 2 * padding[a] > kernel[a]:
            raise ValueError(
                f"padding must be at most half the kernel size (as in PyTorch); got "
                f"padding={padding} for kernel_size={kernel}")
    return PoolGeometry(kernel, stride, padding, dilation, check_flag("ceil_mode", ceil_mode))


def pool_input(backend: Any, input: Any) -> tuple[Any, bool]:
    """``input`` as a 4-D array of ``backend`` and whether it came unbatched (C, H, W)."""
    x = as_backend_array(backend, "input", input)
    if x.ndim not in (3, 4):
        raise ValueError(f"input must be 4-D (N, C, H, W) or 3-D (C, H, W); got shape "
                         f"{tuple(x.shape)}")
    if 0 in x.shape[-3:]:
        raise ValueError(f"input must have non-empty C, H and W; got shape {tuple(x.shape)}")
    return (x[None] if x.ndim == 3 else x), x.ndim == 3


def avg_divisor(xp: Any, geometry: PoolGeometry, hw: tuple[int, int], out_hw: tuple[int, int],
                count_include_pad: bool, divisor_override: int | None, dtype: Any) -> Any:
    """What each window's sum is divided by: a number or an ``(Ho, Wo)`` array."""
    if divisor_override is not None:
        return divisor_override
    counts = []
    for a in range(2):
        n, k, s, p = hw[a], geometry.kernel[a], geometry.stride[a], geometry.padding[a]
        start = np.arange(out_hw[a]) * s - p
        # PyTorch counts the symmetric padding but not what ceil_mode reads past it.
        end = np.minimum(start + k, n + p)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        counts.append(end - start)
    return xp.asarray(np.multiply.outer(counts[0], counts[1]).astype(dtype))


def _pool_chunk(x: Any, *, fn: Any, backend: str, part: int | None, **kwargs: Any) -> Any:
    # Workers run outside the caller's context: the backend choice travels along.
    with set_backend(backend):
        out = fn(x, **kwargs)
    return out if part is None else out[part]


def _dask_pool(fn: Any, input: Any, **kwargs: Any) -> Any:
    """Pool a dask array chunk by chunk: each chunk holds whole planes, so no halos."""
    import dask.array as da

    if input.ndim not in (3, 4):
        raise ValueError(f"input must be 4-D (N, C, H, W) or 3-D (C, H, W); got shape "
                         f"{tuple(input.shape)}")
    if len(input.chunks[-2]) > 1 or len(input.chunks[-1]) > 1:
        raise ValueError(
            f"input is a dask array chunked along H or W (chunks {input.chunks}); pooling "
            "takes whole planes per chunk: chunk it along N and C only, e.g. "
            "input.rechunk({-2: -1, -1: -1})")
    backend = resolve_backend(input=input)
    # The in-memory front door checks everything on an empty stand-in: same errors.
    probe = fn(backend.xp.zeros((0,) + tuple(input.shape[-3:]), dtype=input.dtype), **kwargs)
    parts = probe if isinstance(probe, tuple) else (probe,)
    Ho, Wo = parts[0].shape[-2:]
    chunks = tuple(input.chunks[:-2]) + ((Ho,), (Wo,))
    outs = tuple(
        da.map_blocks(partial(_pool_chunk, fn=fn, backend=get_backend(),
                              part=i if len(parts) > 1 else None, **kwargs),
                      input, chunks=chunks, dtype=part.dtype,
                      meta=backend.xp.empty((0,) * input.ndim, dtype=part.dtype))
        for i, part in enumerate(parts))
    return outs if len(outs) > 1 else outs[0]


@foreign_arrays("input")
def max_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """Maximum over each window of every channel, as :func:`torch.nn.functional.max_pool2d`.

    Output ``(n, c, i, j)`` is the largest input sample among rows
    ``i * stride[0] - padding[0] + u * dilation[0]`` and columns
    ``j * stride[1] - padding[1] + v * dilation[1]`` (``u < kh``, ``v < kw``)
    that lie inside the image: padding never wins (it acts as ``-inf``).  A
    NaN in a window makes that output NaN.

    Parameters
    ----------
    input : array_like, shape (N, C, H, W) or (C, H, W)
        The images; NumPy, CuPy (on the CuPy backend) or dask (chunked along
        N and C only).
    kernel_size : int or (int, int)
        ``(kh, kw)``, at least 1.
    stride : int or (int, int), optional
        Step between windows; ``None`` (the default) means ``kernel_size``.
    padding : int or (int, int), optional
        Implicit ``-inf`` rows/columns on each side, at most half the kernel.
    dilation : int or (int, int), optional
        Spacing between the samples of a window, at least 1.
    ceil_mode : bool, optional
        Round the output size up instead of down, so that a partial window at
        the bottom/right edge gives an output, as long as it starts inside the
        input or the top/left padding.
    return_indices : bool, optional
        Also return where each maximum came from.

    Returns
    -------
    out : array, shape (N, C, Ho, Wo) or (C, Ho, Wo)
        Same dtype as the input, with
        ``Ho = floor((H + 2*padding - dilation*(kh - 1) - 1) / stride) + 1``
        (``ceil`` with ``ceil_mode``).
    indices : array of int64, same shape as ``out``
        Only with ``return_indices=True``: the flat index ``row * W + col`` of
        each maximum within its plane.  Among equal maxima the first in
        row-major window order is chosen; a window with NaNs points at its
        last NaN (both as PyTorch).

    Raises
    ------
    TypeError
        If the input is not numeric or is complex (complex numbers have no
        order), or an argument has the wrong type.
    ValueError
        If the input is not 3-D or 4-D or has an empty C, H or W; if a
        size is below its minimum; if ``padding`` exceeds half the kernel; if
        the window does not fit in the padded input; or if a dask input is
        chunked along H or W.

    See Also
    --------
    avg_pool2d : the mean over each window.
    gpuconv.nn.MaxPool2D : the layer, with its gradient.
    gpuconv.reference.max_pool2d : the same definition as a plain loop.

    Notes
    -----
    Integer inputs keep their dtype, as in PyTorch (the maximum is exact);
    bool inputs too (the maximum is a logical or; PyTorch refuses them).
    float16 stays float16.  The computation visits each window's taps in the
    order PyTorch does, so the values and indices are PyTorch's exactly.

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> gpuconv.max_pool2d(x, 2)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    >>> out, idx = gpuconv.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    >>> out[0, 0], idx[0, 0]
    (array([[ 5.,  7.],
           [13., 15.]]), array([[ 5,  7],
           [13, 15]]))

    ``ceil_mode`` keeps the partial window at the edge:

    >>> gpuconv.max_pool2d(np.arange(5.0).reshape(1, 1, 5), (1, 2), ceil_mode=True)
    array([[[1., 3., 4.]]])
    """
    if has_dask(input):
        return _dask_pool(max_pool2d, input, kernel_size=kernel_size, stride=stride,
                          padding=padding, dilation=dilation, ceil_mode=ceil_mode,
                          return_indices=return_indices)
    backend = resolve_backend(input=input)
    geometry = pool_geometry(kernel_size, stride, padding, dilation, ceil_mode)
    return_indices = check_flag("return_indices", return_indices)
    x, unbatched = pool_input(backend, input)
    if np.dtype(x.dtype).kind == "c":
        raise TypeError(f"input has dtype {x.dtype}; max_pool2d needs real numbers (complex "
                        "numbers have no order)")
    H, W = x.shape[-2:]
    out_hw, pads = geometry.output((H, W))
    x = backend.xp.ascontiguousarray(x)
    out, taps = backend.max_pool2d(x, geometry.kernel, geometry.stride, pads,
                                   geometry.dilation, out_hw, return_indices)
    if unbatched:
        out = out[0]
    if not return_indices:
        return out
    indices = tap_to_index(backend.xp, taps, geometry, pads, out_hw, W)
    return out, (indices[0] if unbatched else indices)


def tap_to_index(xp: Any, taps: Any, geometry: PoolGeometry, pads: tuple[int, int, int, int],
                 out_hw: tuple[int, int], W: int) -> Any:
    """Tap numbers ``u * kw + v`` -> PyTorch's flat indices ``row * W + col`` in the plane."""
    (sh, sw), (dh, dw), kw = geometry.stride, geometry.dilation, geometry.kernel[1]
    u, v = taps // kw, taps % kw
    rows = (xp.arange(out_hw[0]) * sh - pads[0])[:, None] + u * dh
    cols = (xp.arange(out_hw[1]) * sw - pads[2])[None, :] + v * dw
    return (rows * W + cols).astype(xp.int64)


@foreign_arrays("input")
def avg_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Any:
    """Mean over each window of every channel, as :func:`torch.nn.functional.avg_pool2d`.

    Output ``(n, c, i, j)`` is the sum of the input samples in rows
    ``i * stride[0] - padding[0]`` to ``... + kh - 1`` and the matching
    columns (padding adds zeros), divided by the window's size.

    Parameters
    ----------
    input : array_like, shape (N, C, H, W) or (C, H, W)
        The images; NumPy, CuPy (on the CuPy backend) or dask (chunked along
        N and C only).
    kernel_size : int or (int, int)
        ``(kh, kw)``, at least 1.
    stride : int or (int, int), optional
        Step between windows; ``None`` (the default) means ``kernel_size``.
    padding : int or (int, int), optional
        Implicit zero rows/columns on each side, at most half the kernel.
    ceil_mode : bool, optional
        Round the output size up instead of down, so that a partial window at
        the bottom/right edge gives an output, as long as it starts inside the
        input or the top/left padding.
    count_include_pad : bool, optional
        Divide by the window's size including the padding it covers
        (``True``, the default) or by the number of input samples in it.
        Either way, what a ``ceil_mode`` window reads beyond the padding is not
        counted.
    divisor_override : int, optional
        Divide every sum by this nonzero number instead.

    Returns
    -------
    array, shape (N, C, Ho, Wo) or (C, Ho, Wo)
        ``Ho = floor((H + 2*padding - kh) / stride) + 1`` (``ceil`` with
        ``ceil_mode``).  Floating inputs keep their dtype (float16 sums in
        float32); integer and bool inputs give float64, as everywhere in
        gpuconv (PyTorch truncates an int64 mean and refuses other integers).

    Raises
    ------
    TypeError
        If the input is not numeric, or an argument has the wrong type.
    ValueError
        If the input is not 3-D or 4-D or has an empty C, H or W; if a
        size is below its minimum; if ``padding`` exceeds half the kernel; if
        the window does not fit in the padded input; if ``divisor_override``
        is 0; or if a dask input is chunked along H or W.

    See Also
    --------
    max_pool2d : the maximum over each window.
    gpuconv.nn.AvgPool2D : the layer, with its gradient.
    gpuconv.reference.avg_pool2d : the same definition as a plain loop.
    conv2d : average pooling is a depthwise convolution with a constant kernel.

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> gpuconv.avg_pool2d(x, 2)[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])

    At the border the padding counts by default; ``count_include_pad=False``
    averages only the pixels:

    >>> ones = np.ones((1, 3, 3))
    >>> gpuconv.avg_pool2d(ones, 3, stride=1, padding=1)[0]
    array([[0.44444444, 0.66666667, 0.44444444],
           [0.66666667, 1.        , 0.66666667],
           [0.44444444, 0.66666667, 0.44444444]])
    >>> gpuconv.avg_pool2d(ones, 3, stride=1, padding=1, count_include_pad=False)[0]
    array([[1., 1., 1.],
           [1., 1., 1.],
           [1., 1., 1.]])
    """
    if has_dask(input):
        return _dask_pool(avg_pool2d, input, kernel_size=kernel_size, stride=stride,
                          padding=padding, ceil_mode=ceil_mode,
                          count_include_pad=count_include_pad, divisor_override=divisor_override)
    backend = resolve_backend(input=input)
    geometry = pool_geometry(kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = check_flag("count_include_pad", count_include_pad)
    divisor_override = check_divisor_override(divisor_override)
    x, unbatched = pool_input(backend, input)
    result_dtype, work_dtype = compute_dtype({"input": x.dtype})
    out_hw, pads = geometry.output(tuple(x.shape[-2:]))
    x = backend.xp.ascontiguousarray(x, dtype=work_dtype)
    # Real divisors, also for complex input (np.finfo names the real part's dtype).
    divisor = avg_divisor(backend.xp, geometry, tuple(x.shape[-2:]), out_hw, count_include_pad,
                          divisor_override, np.finfo(work_dtype).dtype)
    out = backend.avg_pool2d(x, geometry.kernel, geometry.stride, pads, out_hw, divisor)
    out = out.astype(result_dtype, copy=False)
    return out[0] if unbatched else out


def check_divisor_override(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"divisor_override must be None or an int; got {value!r}")
    if value == 0:
        raise ValueError("divisor_override must not be 0")
    return int(value)
