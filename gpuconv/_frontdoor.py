"""Input conversion shared by the public ops: one place that turns arguments into
contiguous backend arrays of the working dtype."""

from __future__ import annotations

import reprlib
from typing import Any

import numpy as np

__all__ = ["as_backend_array", "native_work_dtype", "to_work"]


def _not_convertible(argname: str, value: Any, exc: Exception) -> TypeError:
    return TypeError(f"{argname} must be an array or array_like of numbers; got "
                     f"{reprlib.repr(value)}, which could not be converted: {exc}")


def as_backend_array(backend: Any, argname: str, value: Any) -> Any:
    """``value`` as an array of ``backend``; unsupported element types are a TypeError.

    The element type is checked before the value moves to the backend, so an
    object or string array gets the same message on every backend (CuPy, for
    one, would refuse it with its own error).
    """
    if not hasattr(value, "dtype") or not hasattr(value, "shape"):
        # Lists and scalars: NumPy decides their element type.
        try:
            value = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise _not_convertible(argname, value, exc) from None
    if _is_numpy_dtype(value.dtype):
        _check_kind(argname, value.dtype)
    try:
        arr = backend.asarray(value)
    except (TypeError, ValueError) as exc:
        raise _not_convertible(argname, value, exc) from None
    _check_kind(argname, arr.dtype)
    return arr


def _is_numpy_dtype(dtype: Any) -> bool:
    # Other libraries' dtypes (torch.float32, ...) are checked after conversion.
    try:
        np.dtype(dtype)
    except TypeError:
        return False
    return True


def _check_kind(argname: str, dtype: Any) -> None:
    dtype = np.dtype(dtype)
    if dtype.kind not in "biufc":
        raise TypeError(
            f"{argname} has dtype {dtype}, which gpuconv cannot convolve; allowed: float16, "
            "float32, float64, complex64, complex128, or integer/bool (promoted to float64)"
        )


def to_work(backend: Any, arr: Any, work_dtype: np.dtype) -> Any:
    """C-contiguous copy (only if needed) in the working dtype."""
    return backend.xp.ascontiguousarray(arr, dtype=work_dtype)


def native_work_dtype(backend: Any, method: str, result_dtype: np.dtype,
                      work_dtype: np.dtype) -> np.dtype:
    """float16 stays float16 where the backend's kernel for ``method`` reads and writes it
    (accumulating in float32), which halves the memory traffic; elsewhere it is widened."""
    if result_dtype == np.float16 and method in getattr(backend, "native_float16", ()):
        return result_dtype
    return work_dtype
