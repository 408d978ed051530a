"""Grids and columns of the benchmark table, and how other modules add theirs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Case", "Column", "Grid", "Unavailable", "GRIDS", "register_grid",
           "register_column"]


class Unavailable(Exception):
    """Raised by a column factory when the column cannot run this case; the message says why."""


@dataclass(frozen=True)
class Case:
    """One row of a grid.

    ``family`` and ``work`` let the runner extrapolate a slow column instead of
    running it: within a family, time is assumed proportional to ``work``
    (e.g. output pixels for a fixed kernel), and cases are run in the order
    given, smallest work first.  ``bytes`` (inputs read once, output written
    once) and ``flops`` (2 per multiply-add) of one operation, when given, add
    GB/s and GFLOP/s to the results.  ``calls`` is the number of operations
    one call of a column performs (queued, then one synchronisation); times
    are reported per operation.
    """

    id: str
    params: dict[str, Any]
    family: str = ""
    work: float = 1.0
    bytes: int = 0
    flops: int = 0
    calls: int = 1


@dataclass
class Column:
    """One column: ``factory(inputs, case, backend)`` returns a zero-argument callable.

    The callable must block until its result is ready (call
    ``backend.synchronize()`` before returning) and return that result.  The
    factory raises :class:`Unavailable` where the column does not apply or its
    library is missing.  ``anchor`` marks a reference implementation (SciPy,
    CuPy's cupyx, PyTorch) rather than a gpuconv method.  ``backends`` names the
    gpuconv backends the column runs on (None: every backend); a run leaves the
    others out of its table.
    """

    name: str
    factory: Callable[[Any, Case, Any], Callable[[], Any]]
    anchor: bool = False
    doc: str = ""
    backends: tuple[str, ...] | None = None

    def runs_on(self, backend: str) -> bool:
        return self.backends is None or backend in self.backends


@dataclass
class Grid:
    """A family of benchmark cases sharing their inputs' recipe and a set of columns.

    ``cases(quick)`` lists the rows (a tiny list when ``quick``);
    ``setup(case, backend, rng)`` builds the inputs every column of that row
    receives.  ``reference(inputs, case, backend)``, when given, returns a
    float64 result computed independently of gpuconv's methods (or raises
    :class:`Unavailable`); the runner reports each gpuconv column's relative
    error against it.  ``backends`` names the backends a run includes the grid
    for by default (None: every backend).
    """

    name: str
    title: str
    cases: Callable[[bool], list[Case]]
    setup: Callable[[Case, Any, Any], Any]
    columns: dict[str, Column] = field(default_factory=dict)
    notes: str = ""
    reference: Callable[[Any, Case, Any], Any] | None = None
    backends: tuple[str, ...] | None = None

    def runs_on(self, backend: str) -> bool:
        return self.backends is None or backend in self.backends


GRIDS: dict[str, Grid] = {}


def register_grid(grid: Grid, *, replace: bool = False) -> Grid:
    """Add a grid to the benchmark table (``replace=True`` to redefine one)."""
    if grid.name in GRIDS and not replace:
        raise ValueError(f"benchmark grid {grid.name!r} is already registered; "
                         "pass replace=True to redefine it")
    GRIDS[grid.name] = grid
    return grid


def register_column(grid: str, name: str, factory: Callable[[Any, Case, Any], Callable[[], Any]],
                    *, anchor: bool = False, doc: str = "", backends: tuple[str, ...] | None = None,
                    replace: bool = False) -> Column:
    """Add a column to a registered grid.

    Examples
    --------
    >>> from gpuconv.bench import GRIDS, register_column
    >>> def scaled(inputs, case, backend):
    ...     x = inputs["x"]
    ...     def call():
    ...         out = x * 2.0
    ...         backend.synchronize()  # a GPU backend: wait for the result
    ...         return out
    ...     return call
    >>> col = register_column("planes", "x2", scaled, doc="a toy column")
    >>> "x2" in GRIDS["planes"].columns
    True
    >>> del GRIDS["planes"].columns["x2"]
    """
    if grid not in GRIDS:
        raise ValueError(f"unknown benchmark grid {grid!r}; registered: {sorted(GRIDS)}")
    columns = GRIDS[grid].columns
    if name in columns and not replace:
        raise ValueError(f"column {name!r} is already registered in grid {grid!r}; "
                         "pass replace=True to redefine it")
    column = Column(name, factory, anchor=anchor, doc=doc,
                    backends=tuple(backends) if backends is not None else None)
    columns[name] = column
    return column
