"""Which array library an input belongs to, found without importing any library.

Detection looks at ``type(x)`` only.  A library that is not yet imported cannot
have produced the array, so CuPy (or Dask) is only consulted when it already is
in :data:`sys.modules`; ``import gpuconv`` therefore never imports it.
"""

from __future__ import annotations

import importlib
import sys
from functools import lru_cache
from typing import Any

__all__ = ["array_library", "chunk_array_library", "common_array_library", "has_dask",
           "deferred_module"]

# Array libraries gpuconv knows how to recognise, by top-level module name.
# NumPy is always importable (it is a core dependency); the others are looked
# up lazily in ``sys.modules``.
_KNOWN_LIBRARIES = ("numpy", "cupy", "dask")


@lru_cache(maxsize=256)
def _library_of_type(cls: type) -> str | None:
    for name in _KNOWN_LIBRARIES:
        module = sys.modules.get(name)
        if module is None:
            continue
        if name == "dask":
            array_module = sys.modules.get("dask.array")
            if array_module is not None and issubclass(cls, array_module.Array):
                return "dask"
            continue
        if issubclass(cls, module.ndarray):
            return name
    return None


def array_library(x: Any) -> str | None:
    """Name of the array library that owns ``x``, or ``None`` for anything else.

    Python scalars, lists and objects that merely support ``__array__`` return
    ``None``: they follow whatever library the other inputs use.
    """
    return _library_of_type(type(x))


def chunk_array_library(x: Any) -> str | None:
    """The library that computes ``x``: for a dask array, that of its chunks.

    A dask array's ``_meta`` is an empty array of its chunks' type (NumPy, or
    CuPy under dask-cuda), so the chunks decide the backend, as an in-memory
    array of that library would.
    """
    library = array_library(x)
    if library == "dask":
        return array_library(x._meta)
    return library


def has_dask(*values: Any) -> bool:
    """Whether any of ``values`` is a dask array (dask is never imported here)."""
    return any(array_library(v) == "dask" for v in values)


# Array libraries whose arrays are not computed by a backend but deferred to a layer
# above the ops, which builds a task graph of in-memory calls.  The ops reach it through
# deferred_module, by name: that layer imports the ops, the ops never import it.
_DEFERRED = {"dask": "gpuconv._dask"}


def deferred_module(*values: Any) -> Any:
    """The module that computes a call lazily when one of ``values`` is a deferred array.

    ``None`` for in-memory arrays, so an op continues with its own code.
    """
    for v in values:
        name = _DEFERRED.get(array_library(v))  # type: ignore[arg-type]
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
