"""asv-style benchmark classes over gpuconv's benchmark grids.

Each class is one grid of :mod:`gpuconv.bench`; its parameters are the grid's
cases and columns, so a grid or column registered there shows up here too.
``setup`` builds the inputs from ``numpy.random.default_rng(0)`` and raises
``NotImplementedError`` (asv's "skip this combination") where a column cannot
run, e.g. torch is not installed.
"""

import numpy as np

import gpuconv
from gpuconv.backend import get_backend_object
from gpuconv.bench import GRIDS, Unavailable


class _GridBenchmark:
    grid = ""
    backend = "numpy"

    def setup(self, case_id, column):
        grid = GRIDS[self.grid]
        case = {c.id: c for c in grid.cases(False)}[case_id]
        be = get_backend_object(self.backend)
        inputs = grid.setup(case, be, np.random.default_rng(0))
        try:
            self.fn = grid.columns[column].factory(inputs, case, be)
        except Unavailable as exc:
            raise NotImplementedError(str(exc)) from None

    def time_call(self, case_id, column):
        with gpuconv.set_backend(self.backend):
            self.fn()




class Planes(_GridBenchmark):
    """Single-channel valid correlation (grid "planes")."""

    grid = "planes"
    params = ([c.id for c in GRIDS["planes"].cases(False)], list(GRIDS["planes"].columns))
    param_names = ["case", "column"]
    timeout = 120


class Conv2d(_GridBenchmark):
    """conv2d layers (grid "conv2d")."""

    grid = "conv2d"
    params = ([c.id for c in GRIDS["conv2d"].cases(False)], list(GRIDS["conv2d"].columns))
    param_names = ["case", "column"]
    timeout = 120
