"""``cupy`` of the CuPy stand-in: NumPy's namespace under CuPy's rules (see cupy_standin)."""

import numpy as _np

from cupy_standin._core import (  # noqa: F401
    array,
    asanyarray,
    asarray,
    ascontiguousarray,
    asnumpy,
    get_array_module,
    ndarray,
)
from cupy_standin._kernels import (  # noqa: F401
    ElementwiseKernel,
    RawKernel,
    RawModule,
    ReductionKernel,
    fuse,
)
from cupy_standin._namespace import NOT_IN_CUPY as _NOT_IN_CUPY, module_getattr as _getattr

from . import cuda, fft, linalg, random  # noqa: F401

__version__ = "14.2.0"
__standin__ = True


def is_available():
    return True


def get_default_memory_pool():
    return cuda._memory_pool


def get_default_pinned_memory_pool():
    return cuda._pinned_memory_pool


__getattr__ = _getattr(__name__, _np, excluded=_NOT_IN_CUPY)
