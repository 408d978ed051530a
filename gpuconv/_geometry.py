"""Shapes of every op: padding rules, SciPy's plane geometry, output sizes.

Pure functions of integers, used by the front doors, the method chooser, the
dask layer, the backends and ``gpuconv.nn``, so that each formula is written
once.  Along one axis, a kernel of ``k`` taps with dilation ``d`` spans
``extent = d*(k - 1) + 1`` samples, and a convolution with stride ``s`` over
``n`` (padded) samples has ``(n - extent) // s + 1`` outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validation import pair

__all__ = [
    "extent",
    "same_padding",
    "resolve_padding",
    "conv_output_hw",
    "transpose_output_hw",
    "plane_geometry",
    "source_index",
]


def extent(k: int, d: int) -> int:
    """Samples spanned by ``k`` taps ``d`` apart."""
    return d * (k - 1) + 1


def same_padding(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """(before, after) padding that keeps ``ceil(size / s)`` outputs.

    TensorFlow's rule: the odd pixel of padding goes after (bottom/right).
    With ``s == 1`` this is PyTorch's ``padding="same"``.
    """
    out = -(-size // s)
    total = max((out - 1) * s + extent(k, d) - size, 0)
    return total // 2, total - total // 2


def resolve_padding(padding: Any, hw: tuple[int, int], k: tuple[int, int],
                    stride: tuple[int, int], dilation: tuple[int, int],
                    ) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for an int, a pair, ``'valid'`` or ``'same'``."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            top, bottom = same_padding(hw[0], k[0], stride[0], dilation[0])
            left, right = same_padding(hw[1], k[1], stride[1], dilation[1])
            return top, bottom, left, right
        raise ValueError(
            f"padding must be an int, a pair of ints, 'valid' or 'same'; got {padding!r}"
        )
    ph, pw = pair("padding", padding, minimum=0)
    return ph, ph, pw, pw


def conv_output_hw(hw: tuple[int, int], pads: tuple[int, int, int, int],
                   k: tuple[int, int], stride: tuple[int, int],
                   dilation: tuple[int, int]) -> tuple[int, int]:
    """Output ``(Ho, Wo)`` of a convolution; may be < 1 when the kernel does not fit."""
    ho = (hw[0] + pads[0] + pads[1] - extent(k[0], dilation[0])) // stride[0] + 1
    wo = (hw[1] + pads[2] + pads[3] - extent(k[1], dilation[1])) // stride[1] + 1
    return ho, wo


def transpose_output_hw(hw: tuple[int, int], k: tuple[int, int], stride: tuple[int, int],
                        padding: tuple[int, int], output_padding: tuple[int, int],
                        dilation: tuple[int, int]) -> tuple[int, int]:
    """Output ``(Ho, Wo)`` of a transposed convolution (PyTorch's formula)."""
    return tuple(  # type: ignore[return-value]
        (hw[a] - 1) * stride[a] - 2 * padding[a] + extent(k[a], dilation[a])
        + output_padding[a] for a in range(2))


def plane_geometry(mode: str, convolution: bool, in_hw: tuple[int, int],
                   k_hw: tuple[int, int], swap: bool = True,
                   names: tuple[str, str] = ("in1", "in2"),
                   ) -> tuple[tuple[int, int], tuple[int, int], bool]:
    """(out_shape, origin, swapped) of one plane for a SciPy mode.

    ``origin`` is the position in the extended input of output ``(0, 0)``'s
    first tap, counted from the input's top-left corner backwards; ``swapped``
    is SciPy's rule for ``'valid'`` when the kernel contains the input.
    """
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


def source_index(positions: np.ndarray, n: int, rule: str) -> np.ndarray:
    """Index of the input sample each extended position copies, or -1 for a fill value.

    ``rule`` is a boundary (``'fill'``, ``'wrap'``, ``'symm'``) or a padding
    mode spelled as NumPy's ``pad`` spells it (``'reflect'``, ``'edge'``).
    """
    if rule == "fill":
        return np.where((positions >= 0) & (positions < n), positions, -1)
    if rule == "wrap":
        return positions % n
    if rule == "symm":  # mirrored with the edge repeated (NumPy's "symmetric")
        q = positions % (2 * n)
        return np.where(q < n, q, 2 * n - 1 - q)
    if rule == "reflect":  # mirrored about the edge sample (NumPy's and PyTorch's "reflect")
        if n == 1:
            return np.zeros_like(positions)
        q = positions % (2 * n - 2)
        return np.where(q < n, q, 2 * n - 2 - q)
    if rule == "edge":
        return np.clip(positions, 0, n - 1)
    raise ValueError(f"unknown extension rule {rule!r}")
