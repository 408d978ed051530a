"""Input conversion shared by the public ops: one place that turns arguments into
contiguous backend arrays of the working dtype."""

from __future__ import annotations

import reprlib
from typing import Any

import numpy as np

__all__ = ["as_backend_array"]


def as_backend_array(backend: Any, argname: str, value: Any) -> Any:
    """``value`` as an array of ``backend``; unsupported element types are a TypeError."""
    try:
        arr = backend.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{argname} must be an array or array_like of numbers; got {reprlib.repr(value)}, "
            f"which could not be converted: {exc}"
        ) from None
    dtype = np.dtype(arr.dtype)
    if dtype.kind not in "biufc":
        raise TypeError(
            f"{argname} has dtype {dtype}, which gpuconv cannot convolve; allowed: float16, "
            "float32, float64, complex64, complex128, or integer/bool (promoted to float64)"
        )
    return arr


def to_work(backend: Any, arr: Any, work_dtype: np.dtype) -> Any:
    """C-contiguous copy (only if needed) in the working dtype."""
    return backend.xp.ascontiguousarray(arr, dtype=work_dtype)
