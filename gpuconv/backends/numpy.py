"""The NumPy backend: the embedded default, on the CPU.

Direct correlation is a cache-blocked shift-and-add run on a small thread pool
(NumPy's ufuncs release the GIL); matrix-product methods lean on the BLAS that
NumPy links.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._dispatch import array_library
from . import ArrayBackend

__all__ = ["NumpyBackend"]


class NumpyBackend(ArrayBackend):
    """Compute with NumPy and SciPy on the CPU."""

    name = "numpy"
    xp = np

    @property
    def fft(self) -> Any:
        import scipy.fft

        return scipy.fft

    def asarray(self, x: Any) -> np.ndarray:
        # A CuPy array refuses implicit conversion; its .get() is the explicit copy.
        if array_library(x) == "cupy":
            return x.get()
        return np.asarray(x)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def device_key(self) -> str:
        return "cpu"
