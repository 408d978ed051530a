"""Which array library an input belongs to, found without importing any library.

Detection looks at ``type(x)`` only, against a table of *claims*: each backend
registered with :func:`gpuconv.register_backend` may claim array types as
``(module, class)`` pairs (NumPy claims ``("numpy", "ndarray")``, CuPy
``("cupy", "ndarray")``), and Dask is claimed as a *deferred* library whose
chunks decide the backend.  A pair is matched the way array-api-compat's
``_issubclass_fast`` matches: the module is looked up in :data:`sys.modules`
and never imported, since a library that is not imported cannot have produced
the array.  ``import gpuconv`` therefore imports no array library but NumPy.

A type nobody claims that exports DLPack (``__dlpack__`` and
``__dlpack_device__``: a torch tensor, say) is *foreign*: it belongs to the
library named by its top-level module, and is computed by the backend of its
device (:func:`dlpack_backend`).
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["array_library", "chunk_array_library", "common_array_library", "has_dask",
           "deferred_module", "claim_array_types", "release_array_types", "check_array_types",
           "is_claimed", "is_foreign", "dlpack_backend"]

#: What a registration may claim: ``(module, class)`` pairs, or a predicate on a type.
ArrayTypes = Iterable[tuple[str, str]] | Callable[[type], bool]


@dataclass(frozen=True)
class _Claim:
    pairs: tuple[tuple[str, str], ...]
    predicate: Callable[[type], bool] | None


_claims: dict[str, _Claim] = {}          # library (= backend) name -> what it claims
# Libraries whose arrays are not computed by a backend but deferred to a layer above
# the ops, which builds a task graph of in-memory calls.  The ops reach it through
# deferred_module, by name: that layer imports the ops, the ops never import it.
_deferred: dict[str, str] = {}           # library name -> module computing it lazily
_lock = threading.Lock()


def check_array_types(array_types: Any) -> _Claim:
    """``array_types`` as a claim, or a TypeError saying what is allowed."""
    if callable(array_types) and not isinstance(array_types, type):
        return _Claim((), array_types)
    allowed = ("array_types must be (module, class) pairs of str, such as "
               "[('numpy', 'ndarray')], or a predicate taking a type")
    if isinstance(array_types, (str, bytes)):
        raise TypeError(f"{allowed}; got {array_types!r}")
    try:
        pairs = tuple(tuple(pair) for pair in array_types)
    except TypeError:
        raise TypeError(f"{allowed}; got {array_types!r}") from None
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(part, str) and part for part in pair):
            raise TypeError(f"{allowed}; got {array_types!r}")
    return _Claim(pairs, None)  # type: ignore[arg-type]


def claim_array_types(library: str, array_types: ArrayTypes, *,
                      deferred: str | None = None) -> None:
    """Record that arrays of ``array_types`` belong to ``library``.

    Replaces what ``library`` claimed before.  A ``(module, class)`` pair
    already claimed by another library is a ValueError: which backend computes
    an array must not depend on registration order.  ``deferred`` names the
    module that computes the library's arrays lazily (Dask's).
    """
    claim = check_array_types(array_types)
    with _lock:
        for other, other_claim in _claims.items():
            shared = set(claim.pairs) & set(other_claim.pairs)
            if other != library and shared:
                module, cls = min(shared)
                raise ValueError(
                    f"array type {module}.{cls} is already claimed by backend {other!r}; "
                    f"replace that registration instead (register_backend({other!r}, ..., "
                    "replace=True))")
        _claims[library] = claim
        if deferred is None:
            _deferred.pop(library, None)
        else:
            _deferred[library] = deferred
        _library_of_type.cache_clear()


def release_array_types(library: str) -> None:
    """Forget what ``library`` claimed."""
    with _lock:
        _claims.pop(library, None)
        _deferred.pop(library, None)
        _library_of_type.cache_clear()


def _resolve(module_name: str, qualname: str) -> Any:
    obj = sys.modules.get(module_name)
    for part in qualname.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part, None)
    return obj


@lru_cache(maxsize=256)
def _library_of_type(cls: type) -> tuple[str | None, bool]:
    """(library, claimed) for ``cls``; cleared whenever a claim changes.

    Among matching pairs the most derived class wins (a claimed subclass of
    ``numpy.ndarray`` is not NumPy's); predicates are asked after the pairs.
    """
    mro = cls.__mro__
    best, best_depth = None, len(mro)
    for library, claim in list(_claims.items()):
        for module_name, qualname in claim.pairs:
            parent = _resolve(module_name, qualname)
            if isinstance(parent, type) and parent in mro and mro.index(parent) < best_depth:
                best, best_depth = library, mro.index(parent)
    if best is not None:
        return best, True
    for library, claim in list(_claims.items()):
        if claim.predicate is not None and claim.predicate(cls):
            return library, True
    if hasattr(cls, "__dlpack__") and hasattr(cls, "__dlpack_device__"):
        return cls.__module__.split(".")[0], False
    return None, False


def array_library(x: Any) -> str | None:
    """Name of the array library that owns ``x``, or ``None`` for anything else.

    A claimed type gives the name of the backend (or deferred library) that
    claimed it; an unclaimed type exporting DLPack gives its top-level module
    (``"torch"``).  Python scalars, lists and objects that merely support
    ``__array__`` return ``None``: they follow whatever library the other
    inputs use.
    """
    return _library_of_type(type(x))[0]


def is_claimed(x: Any) -> bool:
    """Whether a registration claims the type of ``x``."""
    return _library_of_type(type(x))[1]


def is_foreign(x: Any) -> bool:
    """Whether ``x`` is an array no registration claims that exports DLPack."""
    library, claimed = _library_of_type(type(x))
    return library is not None and not claimed


def chunk_array_library(x: Any) -> str | None:
    """The library that computes ``x``: for a dask array, that of its chunks.

    A dask array's ``_meta`` is an empty array of its chunks' type (NumPy, or
    CuPy under dask-cuda), so the chunks decide the backend, as an in-memory
    array of that library would.
    """
    library = array_library(x)
    if library in _deferred:
        return array_library(x._meta)
    return library


def has_dask(*values: Any) -> bool:
    """Whether any of ``values`` is a dask array (dask is never imported here)."""
    return any(array_library(v) == "dask" for v in values)


def deferred_module(*values: Any) -> Any:
    """The module that computes a call lazily when one of ``values`` is a deferred array.

    ``None`` for in-memory arrays, so an op continues with its own code.
    """
    for v in values:
        name = _deferred.get(array_library(v))  # type: ignore[arg-type]
        if name is not None:
            return importlib.import_module(name)
    return None


def common_array_library(**arrays: Any) -> str | None:
    """The one library shared by all array inputs; mixing libraries is a TypeError.

    Keyword names are the argument names, so the error can say which argument
    came from which library.  A dask array counts as the library of its chunks.
    """
    found: dict[str, str] = {}
    for argname, value in arrays.items():
        if value is None:
            continue
        lib = chunk_array_library(value)
        if lib is not None:
            found[argname] = lib
    libraries = sorted(set(found.values()))
    if len(libraries) > 1:
        detail = ", ".join(
            f"{arg} is a dask array of {lib} chunks" if array_library(arrays[arg]) == "dask"
            else f"{arg} is a {lib} array" for arg, lib in found.items())
        raise TypeError(
            f"Multiple array libraries in one call ({detail}); pass arrays of one "
            "library, or choose a backend explicitly with gpuconv.set_backend(...) "
            "to move inputs to it."
        )
    return libraries[0] if libraries else None


# DLPack device types (dlpack.h's DLDeviceType) and the built-in backend that computes
# on each: host memory on NumPy (which reads pinned CUDA/ROCm host memory too), device
# memory on CuPy.
_DLPACK_DEVICES = {
    1: ("CPU", "numpy"), 3: ("CUDA host", "numpy"), 11: ("ROCm host", "numpy"),
    2: ("CUDA", "cupy"), 13: ("CUDA managed", "cupy"), 10: ("ROCm", "cupy"),
}


def dlpack_backend(argname: str, x: Any) -> str:
    """The backend that computes a foreign array: the one of its DLPack device."""
    library = array_library(x)
    where = str(getattr(x, "device", "unknown"))
    try:
        device_type = int(x.__dlpack_device__()[0])
    except (AttributeError, BufferError, RuntimeError, TypeError, ValueError) as exc:
        # The library's own refusal: torch's meta tensors, say.
        raise TypeError(f"{argname} is a {library} array on device '{where}', which gpuconv "
                        f"cannot import through DLPack ({exc}); move it to the CPU or a CUDA "
                        "device first") from None
    if device_type not in _DLPACK_DEVICES:
        raise TypeError(
            f"{argname} is a {library} array on device '{where}' (DLPack device type "
            f"{device_type}), where no gpuconv backend computes; move it to the CPU or a "
            "CUDA device first")
    return _DLPACK_DEVICES[device_type][1]
