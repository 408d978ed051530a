"""Module namespaces of the stand-in: NumPy's (or SciPy's) functions under CuPy's rules."""

from __future__ import annotations

import sys
import types
from typing import Any, Callable

from ._core import wrap_module_function

__all__ = ["NOT_IN_CUPY", "module_getattr"]

# Public names of NumPy 2 that CuPy 14.2 does not have: using one through
# ``cupy`` is an AttributeError there, and so here.
NOT_IN_CUPY = frozenset("""
False_ ScalarType True_ asmatrix block bmat busday_count busday_offset busdaycalendar bytes_
char character clongdouble complex256 core ctypeslib datetime64 datetime_as_string
datetime_data dtypes einsum_path emath errstate f2py flexible float128 frompyfunc fromregex
geomspace get_include getbufsize geterr geterrcall histogram_bin_edges info insert is_busday
isnat little_endian longdouble ma matrix matvec memmap nanpercentile nanquantile ndenumerate
nditer nested_iters object_ polyder polydiv polyint rec recarray record sctypeDict setbufsize
seterr seterrcall show_runtime spacing str_ strings test timedelta64 typecodes unstack vecdot
vecmat void
""".split())


def module_getattr(module_name: str, host_module: types.ModuleType,
                   allowed: frozenset[str] | None = None,
                   excluded: frozenset[str] = frozenset()) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` exposing ``host_module``'s functions under CuPy's
    rules (device arrays in and out); each is wrapped once and cached on the module."""

    def __getattr__(name: str) -> Any:
        missing = AttributeError(f"module {module_name!r} has no attribute {name!r}")
        if name.startswith("_") or name in excluded or (allowed is not None
                                                         and name not in allowed):
            raise missing
        try:
            value = getattr(host_module, name)
        except AttributeError:
            raise missing from None
        if isinstance(value, types.ModuleType):
            raise missing
        wrapped = wrap_module_function(name, value)
        setattr(sys.modules[module_name], name, wrapped)
        return wrapped

    return __getattr__
