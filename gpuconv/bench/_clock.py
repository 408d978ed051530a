"""How the runner times a column: the host's clock, or CUDA events on a GPU stream.

Every column blocks until its result is ready (it calls
``backend.synchronize()``), so both clocks time whole calls, Python overhead
included.  On a GPU the events read the device's own timer, at half a
microsecond resolution, around the same calls.
"""

from __future__ import annotations

import time
from typing import Any, Callable

__all__ = ["HostClock", "CudaEventClock", "clock_for"]


class HostClock:
    """``time.perf_counter`` around the calls."""

    name = "host perf_counter"

    def call(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        """(seconds, result) of one call."""
        t0 = time.perf_counter()
        result = fn()
        return time.perf_counter() - t0, result

    def sample(self, fn: Callable[[], Any], number: int) -> float:
        """Seconds per call of ``number`` consecutive calls."""
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number


class CudaEventClock:
    """CUDA events recorded on CuPy's current stream before and after the calls.

    The work of libraries on the legacy default stream (CuPy's and PyTorch's
    default) is ordered with the events; each column's own synchronisation
    makes the end event wait for all of it.
    """

    name = "CUDA events"

    def __init__(self, cupy: Any):
        self._cuda = cupy.cuda

    def _between(self, fn: Callable[[], Any], number: int) -> tuple[float, Any]:
        start, end = self._cuda.Event(), self._cuda.Event()
        start.record()
        result = None
        for _ in range(number):
            result = fn()
        end.record()
        end.synchronize()
        return self._cuda.get_elapsed_time(start, end) * 1e-3, result

    def call(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        return self._between(fn, 1)

    def sample(self, fn: Callable[[], Any], number: int) -> float:
        return self._between(fn, number)[0] / number


def clock_for(backend: Any) -> HostClock | CudaEventClock:
    """CUDA events for the CuPy backend, the host clock for every other."""
    if backend.name == "cupy":
        return CudaEventClock(backend.xp)
    return HostClock()
