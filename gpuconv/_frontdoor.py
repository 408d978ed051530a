"""What every public op does at its front door: take arrays of other libraries
(through DLPack), convert arguments into contiguous backend arrays of the working
dtype, check that a call fits in memory before it allocates, and test inputs for
NaN and Inf when the method needs to know."""

from __future__ import annotations

import cmath
import functools
import inspect
import reprlib
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from ._dispatch import is_foreign
from ._foreign import call_with_foreign

__all__ = ["foreign_arrays", "as_backend_array", "native_work_dtype", "to_work", "all_finite",
           "warn_nonfinite", "check_fits", "PlanCache", "signature"]

_Op = TypeVar("_Op", bound=Callable[..., Any])


def foreign_arrays(*argnames: str) -> Callable[[_Op], _Op]:
    """Let a public op take arrays of libraries no backend claims, e.g. torch tensors.

    ``argnames`` are the op's array arguments.  When one of them is such an
    array (it exports DLPack), :func:`gpuconv._foreign.call_with_foreign`
    imports it without a copy, runs the op on the backend of its device and,
    under ``"auto"``, returns the result in the caller's library; otherwise
    the op runs as written, after one cached type lookup per array argument.
    The op's body never sees a foreign array.
    """
    def decorate(op: _Op) -> _Op:
        params = list(inspect.signature(op).parameters)
        slots = tuple((name, params.index(name)) for name in argnames)

        @functools.wraps(op)
        def front_door(*args: Any, **kwargs: Any) -> Any:
            for name, pos in slots:
                value = args[pos] if pos < len(args) else kwargs.get(name)
                if value is not None and is_foreign(value):
                    return call_with_foreign(op, slots, args, kwargs)
            return op(*args, **kwargs)

        return front_door  # type: ignore[return-value]

    return decorate


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
        if not np.dtype(value.dtype).isnative:
            # Big-endian data (from a file, say) is as good as any: compute in native order.
            value = value.astype(np.dtype(value.dtype).newbyteorder("="))
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


def all_finite(backend: Any, arrays: tuple[Any, ...], scalars: tuple[Any, ...] = ()) -> bool:
    """Whether every array and scalar is free of NaN and Inf.

    One reduction per array and a single device-to-host transfer for all of
    them: a sum is NaN or Inf when any term is (or when finite terms overflow,
    which sends the call to an exact method too, where it belongs).
    """
    if not all(cmath.isfinite(complex(v)) for v in scalars):
        return False
    xp = backend.xp
    flags = None
    for a in arrays:
        total = a.sum(dtype=np.float32) if a.dtype == np.float16 else a.sum()
        ok = xp.isfinite(total)
        flags = ok if flags is None else flags & ok
    return True if flags is None else bool(flags)


def warn_nonfinite(method: str) -> None:
    """Warn that an explicitly chosen inexact method got a NaN or an Inf."""
    reach = ("every output of the tiles that read them, as NaN" if method == "winograd"
             else "every output element")
    warnings.warn(
        f"non-finite values (NaN or Inf) in the input of method={method!r}: through the "
        f"transform they spread to {reach}, unlike method='direct' (which method='auto' "
        "uses for such inputs)", RuntimeWarning, stacklevel=4)


_SMALL_CALL_BYTES = 64 * 2**20


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def check_fits(backend: Any, nbytes: int, what: str, fix: str) -> None:
    """Raise ``MemoryError`` before allocating when a call needs more than the machine has.

    ``what`` names the arrays and their shapes, ``fix`` the arguments to change.
    The backend says what it can give (``available_memory()``: free RAM, or
    free device memory); a backend that cannot tell is not checked.
    """
    if nbytes < _SMALL_CALL_BYTES:
        return  # no machine gpuconv runs on lacks this much; asking costs a file read
    probe = getattr(backend, "available_memory", None)
    available = probe() if probe is not None else None
    if available is not None and nbytes > available:
        raise MemoryError(f"{what} need {_mib(nbytes)}, more than the {_mib(available)} "
                          f"available on backend {backend.name!r}; {fix}")


# -- validated calls, by signature ---------------------------------------------------------
def signature(arrays: tuple[Any, ...], options: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """A hashable key for a call whose validation depends only on these: the arrays'
    types, shapes and dtypes, and the options.  ``None`` where a call cannot be cached
    (an argument that is not an array, or an unhashable option)."""
    parts: list[Any] = []
    for a in arrays:
        if a is None:
            parts.append(None)
            continue
        shape = getattr(a, "shape", None)
        dtype = getattr(a, "dtype", None)
        if shape is None or dtype is None:
            return None
        parts.append((type(a), tuple(shape), dtype))
    key = (tuple(parts), options)
    try:
        hash(key)
    except TypeError:
        return None
    return key


class PlanCache:
    """Validated calls (with their arrays left out) by :func:`signature`: a repeated
    call shape skips validation, the way cuDNN reuses a plan.  Bounded: cleared when
    full, since a program repeats a few shapes, not thousands."""

    def __init__(self, maxsize: int = 1024):
        self._plans: dict[Any, Any] = {}
        self._maxsize = maxsize

    def get(self, key: Any) -> Any:
        return None if key is None else self._plans.get(key)

    def put(self, key: Any, plan: Any) -> None:
        if key is None:
            return
        if len(self._plans) >= self._maxsize:
            self._plans.clear()
        self._plans[key] = plan

    def clear(self) -> None:
        self._plans.clear()
