"""gpuconv: 2-D convolution and cross-correlation on NumPy or on a GPU through CuPy.

One array API with SciPy's ``correlate2d``/``convolve2d`` semantics and
PyTorch's ``conv2d`` semantics, a backend chosen per context with
:func:`set_backend`, and the ideas of a CNN chapter made executable.
"""

from ._choose import MethodChoice, choose_method
from ._config import get_scratch_limit, scratch_limit
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
    from .backends.numpy import NumpyBackend

    register_backend("numpy", NumpyBackend)
    register_backend("cupy", _make_cupy_backend)


def _make_cupy_backend():
    # Imported on first use: registering the backend imports nothing.
    from .backends.cupy import make_backend

    return make_backend()


_register_builtin_backends()

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
]
