"""Max and average pooling written once against an array namespace ``xp``.

Inputs are validated NCHW arrays; the geometry (output size, padding on each
side) comes from :mod:`gpuconv.pool`.  Both loops run over the kernel taps in
row-major order, vectorised over every image, channel and output pixel, which
is the order PyTorch's CPU kernels visit a window in: the maximum picks the
same element (the first of equal maxima, the last NaN) and the average adds
the same numbers in the same order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["lowest", "max_pool2d", "avg_pool2d", "first_tap", "window_view"]


def lowest(dtype: Any) -> Any:
    """A value no element of ``dtype`` is greater than: -inf, the integer minimum, False."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return -np.inf
    if dtype.kind == "b":
        return False
    return np.iinfo(dtype).min


def window_view(xpad: Any, u: int, v: int, out_hw: tuple[int, int], stride: tuple[int, int],
                dilation: tuple[int, int]) -> Any:
    """The input sample tap ``(u, v)`` reads for every output pixel: a strided view."""
    (Ho, Wo), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return xpad[:, :, u * dh:u * dh + sh * (Ho - 1) + 1:sh, v * dw:v * dw + sw * (Wo - 1) + 1:sw]


def _padded(xp: Any, x: Any, pads: tuple[int, int, int, int], value: Any) -> Any:
    top, bottom, left, right = pads
    if not (top or bottom or left or right):
        return x
    return xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode="constant",
                  constant_values=value)


def first_tap(xp: Any, out_hw: tuple[int, int], kernel: tuple[int, int],
              stride: tuple[int, int], pads: tuple[int, int, int, int],
              dilation: tuple[int, int]) -> Any:
    """Per output pixel, the first tap of its window that is not padding (PyTorch's start).

    With dilation a window can skip the whole input; the formula then points
    past it, as PyTorch's does.
    """
    (Ho, Wo), (sh, sw), (dh, dw) = out_hw, stride, dilation
    top, left = pads[0], pads[2]
    # ceil((top - i*s) / d) taps lie above row 0 (none when the window starts inside).
    u0 = xp.maximum(-((xp.arange(Ho) * sh - top) // dh), 0)
    v0 = xp.maximum(-((xp.arange(Wo) * sw - left) // dw), 0)
    return (u0[:, None] * kernel[1] + v0[None, :]).astype(xp.int64)


def max_pool2d(xp: Any, x: Any, kernel: tuple[int, int], stride: tuple[int, int],
               pads: tuple[int, int, int, int], dilation: tuple[int, int],
               out_hw: tuple[int, int], taps: bool) -> tuple[Any, Any]:
    """The maximum of each window and, if ``taps``, which tap (``u * kw + v``) holds it.

    Padding holds :func:`lowest`, which never beats the running maximum (the
    comparison is strict), so it is never picked; a NaN always is, so it
    propagates.
    """
    N, C = x.shape[:2]
    kh, kw = kernel
    low = lowest(x.dtype)
    xpad = _padded(xp, x, pads, low)
    best = xp.full((N, C) + tuple(out_hw), low, dtype=x.dtype)
    tap = None
    if taps:
        tap = xp.broadcast_to(first_tap(xp, out_hw, kernel, stride, pads, dilation),
                              best.shape).copy()
    can_be_nan = np.dtype(x.dtype).kind == "f"
    for u in range(kh):
        for v in range(kw):
            view = window_view(xpad, u, v, out_hw, stride, dilation)
            take = view > best
            if can_be_nan:
                take |= xp.isnan(view)
            best = xp.where(take, view, best)
            if taps:
                tap = xp.where(take, u * kw + v, tap)
    return best, tap


def avg_pool2d(xp: Any, x: Any, kernel: tuple[int, int], stride: tuple[int, int],
               pads: tuple[int, int, int, int], out_hw: tuple[int, int], divisor: Any) -> Any:
    """The sum of each window (padding counts as zero) divided by ``divisor``.

    ``divisor`` is a number or an ``(Ho, Wo)`` array of the backend.
    """
    N, C = x.shape[:2]
    xpad = _padded(xp, x, pads, 0)
    total = xp.zeros((N, C) + tuple(out_hw), dtype=x.dtype)
    for u in range(kernel[0]):
        for v in range(kernel[1]):
            total += window_view(xpad, u, v, out_hw, stride, (1, 1))
    return total / divisor
