"""Argument checking shared by the public front doors.

Every public op validates here, once; backends receive clean arrays.  Errors
name the argument, echo what was given and say what is allowed.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import numpy as np

from ._dispatch import array_library

__all__ = [
    "MODES",
    "BOUNDARIES",
    "METHODS",
    "PADDING_MODES",
    "parse_mode",
    "parse_boundary",
    "parse_method",
    "parse_padding_mode",
    "compute_dtype",
    "pair",
    "check_fillvalue",
]

MODES = ("full", "same", "valid")
# SciPy's spellings, mapped to one canonical name each.
BOUNDARIES = {
    "fill": "fill",
    "pad": "fill",
    "wrap": "wrap",
    "circular": "wrap",
    "symm": "symm",
    "symmetric": "symm",
}
METHODS = ("auto", "direct", "gemm", "fft", "overlap-add", "winograd")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

_FLOAT_KINDS = {
    np.dtype(np.float16),
    np.dtype(np.float32),
    np.dtype(np.float64),
    np.dtype(np.complex64),
    np.dtype(np.complex128),
}


def _choice(argname: str, value: Any, allowed: tuple[str, ...] | dict[str, str]) -> str:
    if isinstance(value, str):
        if isinstance(allowed, dict):
            if value in allowed:
                return allowed[value]
        elif value in allowed:
            return value
    listed = ", ".join(repr(a) for a in allowed)
    if not isinstance(value, str):
        raise TypeError(f"{argname} must be a str, one of {listed}; got {value!r}")
    raise ValueError(f"{argname} must be one of {listed}; got {value!r}")


def parse_mode(mode: Any) -> str:
    return _choice("mode", mode, MODES)


def parse_boundary(boundary: Any) -> str:
    return _choice("boundary", boundary, BOUNDARIES)


def parse_method(method: Any) -> str:
    return _choice("method", method, METHODS)


def parse_padding_mode(padding_mode: Any) -> str:
    return _choice("padding_mode", padding_mode, PADDING_MODES)


def compute_dtype(argname_dtypes: dict[str, Any]) -> tuple[np.dtype, np.dtype]:
    """Result dtype and the dtype arithmetic runs in, for these input dtypes.

    Integers and bools promote to float64 (SciPy keeps them integer and can
    overflow silently); float16 computes in float32 and is returned as float16.
    Anything not numeric raises ``TypeError`` naming the argument.
    """
    promoted = []
    for argname, dtype in argname_dtypes.items():
        dtype = np.dtype(dtype)
        if not dtype.isnative:
            dtype = dtype.newbyteorder("=")
        if dtype.kind in "biu":
            dtype = np.dtype(np.float64)
        elif dtype not in _FLOAT_KINDS:
            raise TypeError(
                f"{argname} has dtype {dtype}, which gpuconv cannot convolve; allowed: "
                "float16, float32, float64, complex64, complex128, or integer/bool "
                "(promoted to float64)"
            )
        promoted.append(dtype)
    result = np.result_type(*promoted)
    work = np.dtype(np.float32) if result == np.float16 else result
    return result, work


def pair(argname: str, value: Any, *, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each at least ``minimum``."""
    if type(value) is int and value >= minimum:  # the common case, without ABC checks
        return value, value
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int \
            and type(value[1]) is int and min(value) >= minimum:
        return value
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{argname} must be an int or a pair of ints; got {value!r}")
        items = tuple(value)
    else:
        items = (value, value)
    out = []
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Integral):
            raise TypeError(f"{argname} must be an int or a pair of ints; got {value!r}")
        item = operator.index(item)
        if item < minimum:
            raise ValueError(f"{argname} must be >= {minimum}; got {value!r}")
        out.append(item)
    return out[0], out[1]


def _is_device_array(value: Any) -> bool:
    return array_library(value) not in (None, "numpy", "dask")


def check_fillvalue(fillvalue: Any, work_dtype: np.dtype) -> Any:
    """A scalar fill value representable in ``work_dtype``."""
    if isinstance(fillvalue, (str, bytes)) or fillvalue is None:
        raise TypeError(f"fillvalue must be a real or complex number; got {fillvalue!r}")
    if _is_device_array(fillvalue):
        # CuPy refuses implicit conversion; a one-element device array (x.mean(),
        # say) converts explicitly, one device-to-host copy.
        shape = tuple(fillvalue.shape)
        if math.prod(shape) != 1:
            raise ValueError(f"fillvalue must be a scalar; got an array of shape {shape}")
        fillvalue = fillvalue.item()
    arr = np.asarray(fillvalue)
    if arr.size != 1:
        raise ValueError(f"fillvalue must be a scalar; got an array of shape {arr.shape}")
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"fillvalue must be a real or complex number; got {fillvalue!r}")
    value = arr.reshape(()).item()
    if isinstance(value, complex) and value.imag != 0 and work_dtype.kind != "c":
        raise ValueError(
            f"fillvalue {fillvalue!r} is complex but the inputs are real; pass a real "
            "fillvalue or complex inputs"
        )
    if work_dtype.kind != "c" and isinstance(value, complex):
        value = value.real
    return value
