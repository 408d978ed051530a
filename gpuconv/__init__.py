"""gpuconv: 2-D convolution and cross-correlation on NumPy or on a GPU through CuPy.

One array API with SciPy's ``correlate2d``/``convolve2d`` semantics and
PyTorch's ``conv2d`` semantics, a backend chosen per context with
:func:`set_backend`, and the ideas of a CNN chapter made executable.

The submodules (:mod:`gpuconv.nn`, :mod:`gpuconv.theory`,
:mod:`gpuconv.reference`, :mod:`gpuconv.examples`, ...) load on first use:
``import gpuconv`` then ``gpuconv.nn.Conv2D`` works without importing them
all up front.  :func:`show_config` (``gpuconv info``) prints what a bug
report needs.
"""

from ._choose import MethodChoice
from ._config import get_scratch_limit, scratch_limit
from ._info import show_config
from ._measure import choose_method
from .backend import (
    BackendStatus,
    BackendUnavailableError,
    available_backends,
    get_backend,
    register_backend,
    set_backend,
)
from .conv import conv2d, conv_transpose2d, output_shape
from .correlate import convolve2d, corr2d, correlate2d
from .pool import avg_pool2d, max_pool2d

__version__ = "0.1.0"


def _register_builtin_backends() -> None:
    from . import _dispatch
    from .backends.numpy import NumpyBackend

    # Each backend claims its library's arrays, for "auto"; dask arrays are deferred to
    # gpuconv._dask, whose chunks (their _meta) then pick one of these backends.
    register_backend("numpy", NumpyBackend, array_types=[("numpy", "ndarray")])
    register_backend("cupy", _make_cupy_backend, array_types=[("cupy", "ndarray")])
    _dispatch.claim_array_types("dask", [("dask.array", "Array")], deferred="gpuconv._dask")


def _make_cupy_backend():
    # Imported on first use: registering the backend imports nothing.
    from .backends.cupy import make_backend

    return make_backend()


_register_builtin_backends()

# Public submodules, imported on first attribute access (PEP 562), as SciPy does.
_SUBMODULES = ("backends", "bench", "cli", "data", "demo", "examples", "kernels", "nn",
               "reference", "theory")


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))

__all__ = [
    "__version__",
    "BackendStatus",
    "BackendUnavailableError",
    "MethodChoice",
    "available_backends",
    "avg_pool2d",
    "choose_method",
    "conv2d",
    "conv_transpose2d",
    "convolve2d",
    "corr2d",
    "correlate2d",
    "get_backend",
    "get_scratch_limit",
    "max_pool2d",
    "output_shape",
    "register_backend",
    "scratch_limit",
    "set_backend",
    "show_config",
]
