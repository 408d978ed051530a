"""asv-style benchmark classes over gpuconv's benchmark grids.

Each class is one grid of :mod:`gpuconv.bench`; its parameters are the backend,
the grid's cases and its columns, so a grid or column registered there shows up
here too.  ``setup`` chooses the backend (in force until ``teardown``), builds
the inputs from ``numpy.random.default_rng(0)`` and raises
``NotImplementedError`` (asv's "skip this combination") where the backend
cannot run here, or the grid or column does not run on it (e.g. a cupyx anchor
on NumPy, torch not installed).  The timed method only calls the column, which
blocks until its result is ready.
"""

import numpy as np

import gpuconv
from gpuconv.backend import get_backend_object
from gpuconv.bench import GRIDS, Unavailable

BACKENDS = ["numpy", "cupy"]


class _GridBenchmark:
    grid = ""
    param_names = ["backend", "case", "column"]
    timeout = 120

    def setup(self, backend, case_id, column):
        status = gpuconv.available_backends().get(backend)
        if status is None or not status.usable:
            raise NotImplementedError(f"backend {backend!r} cannot run here: "
                                      f"{status.reason if status else 'not registered'}")
        grid = GRIDS[self.grid]
        if not grid.runs_on(backend) or not grid.columns[column].runs_on(backend):
            raise NotImplementedError(f"{self.grid}/{column} does not run on {backend!r}")
        case = {c.id: c for c in grid.cases(False)}[case_id]
        self._choice = gpuconv.set_backend(backend)
        be = get_backend_object(backend)
        inputs = grid.setup(case, be, np.random.default_rng(0))
        try:
            self.fn = grid.columns[column].factory(inputs, case, be)
        except Unavailable as exc:
            self.teardown(backend, case_id, column)
            raise NotImplementedError(str(exc)) from None

    def teardown(self, backend, case_id, column):
        choice = getattr(self, "_choice", None)
        if choice is not None:
            choice.__exit__(None, None, None)
            self._choice = None

    def time_call(self, backend, case_id, column):
        self.fn()


def _params(grid):
    return (BACKENDS, [c.id for c in GRIDS[grid].cases(False)], list(GRIDS[grid].columns))


class Planes(_GridBenchmark):
    """Single-channel valid correlation (grid "planes")."""

    grid = "planes"
    params = _params("planes")


class Conv2d(_GridBenchmark):
    """conv2d layers (grid "conv2d")."""

    grid = "conv2d"
    params = _params("conv2d")


class Bandwidth(_GridBenchmark):
    """Memory-bound 3x3 planes, queued calls (grid "bandwidth", device backends)."""

    grid = "bandwidth"
    params = _params("bandwidth")


class Batched(_GridBenchmark):
    """Many planes in one call (grid "batched", device backends)."""

    grid = "batched"
    params = _params("batched")
