"""Which method computes a call when ``method="auto"``.

A first, operation-count model; calibrated models and measurement build on the
same entry points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MethodChoice", "choose_planes_method", "choose_conv2d_method"]


@dataclass(frozen=True)
class MethodChoice:
    """A method and the reason it was chosen."""

    method: str
    reason: str


def choose_planes_method(backend: Any, x_shape: tuple[int, ...], w_shape: tuple[int, int],
                         out_shape: tuple[int, int], dtype: Any, boundary: str,
                         exact: bool) -> MethodChoice:
    """Method for a single-channel (batched) correlation."""
    return MethodChoice("direct", "shift-and-add over the kernel taps")


def choose_conv2d_method(backend: Any, x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                         out_hw: tuple[int, int], stride: tuple[int, int], groups: int,
                         dtype: Any, exact: bool) -> MethodChoice:
    """Method for a multi-channel conv2d (or its transpose)."""
    cout, cin_per_group, kh, kw = w_shape
    if cin_per_group * kh * kw >= 64 and cout // groups >= 8:
        return MethodChoice("gemm", "deep reduction (C_in/groups * kh * kw >= 64): one "
                                    "matrix product per chunk uses BLAS best")
    return MethodChoice("direct", "shallow reduction: one matrix product per kernel tap")
