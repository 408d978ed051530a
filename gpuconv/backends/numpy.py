"""The NumPy backend: the embedded default, on the CPU.

Direct correlation is a cache-blocked shift-and-add run on a small thread pool
(NumPy's ufuncs release the GIL); matrix-product methods lean on the BLAS that
NumPy links.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .._dispatch import array_library
from . import ArrayBackend

__all__ = ["NumpyBackend", "num_threads"]

_MAX_THREADS = 8


def num_threads() -> int:
    """Threads the NumPy backend's kernels use.

    ``GPUCONV_NUM_THREADS`` if set, else the cores this process may run on
    (at most 8: the kernels are memory-bound well before that).
    """
    env = os.environ.get("GPUCONV_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"GPUCONV_NUM_THREADS must be an integer; got {env!r}") from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, _MAX_THREADS))


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
