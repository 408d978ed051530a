"""Time every column of every case, interleaved, and keep the medians."""

from __future__ import annotations

import math
import random
import statistics
import time
from typing import Any, Callable

import numpy as np

from ._clock import clock_for
from ._registry import GRIDS, Case, Grid, Unavailable

__all__ = ["Settings", "measure_ceilings", "run_grids"]


class Settings:
    """How hard the runner tries.

    ``repeat`` samples per column, each at least ``min_sample`` seconds long
    (a fast call is looped); a column whose warm (second) call takes longer than
    ``cap`` seconds is timed once, and one predicted (from a smaller case of
    the same family) to take longer is not run at all but extrapolated.
    ``case_budget`` seconds stops sampling a case early (at least 3 samples).
    ``budget`` seconds (None: no limit) stops starting new cases: the rest are
    reported as skipped.  ``verify`` compares each gpuconv column's first
    result with the grid's float64 reference (``rel_err``).
    """

    def __init__(self, repeat: int = 5, min_sample: float = 0.02, cap: float = 2.0,
                 case_budget: float = 30.0, budget: float | None = None, verify: bool = True):
        self.repeat = repeat
        self.min_sample = min_sample
        self.cap = cap
        self.case_budget = case_budget
        self.budget = budget
        self.verify = verify

    def as_dict(self) -> dict[str, Any]:
        return {"repeat": self.repeat, "min_sample_s": self.min_sample, "cap_s": self.cap,
                "case_budget_s": self.case_budget, "budget_s": self.budget,
                "verify": self.verify}


def _relative_error(xp: Any, got: Any, ref: Any) -> float:
    """‖got − ref‖ / ‖ref‖ in float64; a wrong shape or a non-finite value gives inf."""
    got = xp.asarray(got)
    if tuple(got.shape) != tuple(ref.shape):
        return math.inf
    wide = xp.complex128 if "c" in (got.dtype.kind, ref.dtype.kind) else xp.float64
    got = got.astype(wide)
    err = float(xp.linalg.norm((got - ref).ravel()))
    if not math.isfinite(err):
        return math.inf
    return err / max(float(xp.linalg.norm(ref.ravel())), 1e-300)


class _Reference:
    """The grid's float64 reference of one case, computed on first use."""

    def __init__(self, grid: Grid, inputs: Any, case: Case, backend: Any):
        self._args = (inputs, case, backend)
        self._grid = grid
        self._value: Any = None
        self._why = ""

    def get(self) -> tuple[Any, str]:
        if self._value is None and not self._why and self._grid.reference is not None:
            try:
                self._value = self._grid.reference(*self._args)
            except Unavailable as exc:
                self._why = f"no reference: {exc}"
        return self._value, self._why


# A first call this many times the cap is not called again.
_NO_SECOND_CALL = 10


def _rates(case: Case, seconds: float) -> dict[str, float]:
    rates = {}
    if case.bytes:
        rates["gbps"] = case.bytes / seconds / 1e9
    if case.flops:
        rates["gflops"] = case.flops / seconds / 1e9
    return rates


def _run_case(grid: Grid, case: Case, columns: list[str], backend: Any, settings: Settings,
              history: dict[tuple[str, str], tuple[float, float]], clock: Any) -> dict[str, Any]:
    inputs = grid.setup(case, backend, np.random.default_rng(0))
    reference = _Reference(grid, inputs, case, backend)
    results: dict[str, dict[str, Any]] = {}
    active: dict[str, tuple[Callable[[], Any], int]] = {}
    per_call = case.calls
    for name in columns:
        key = (name, case.family)
        if key in history:
            work, seconds = history[key]
            estimate = seconds * case.work / work
            if estimate > settings.cap:
                results[name] = {"status": "extrapolated", "median_s": estimate,
                                 "note": f"not run: extrapolated from a smaller case of the same "
                                         f"family ({seconds:.3g} s x work ratio "
                                         f"{case.work / work:.3g})"}
                history[key] = (case.work, estimate)
                continue
        column = grid.columns[name]
        try:
            fn = column.factory(inputs, case, backend)
            first, result = clock.call(fn)
        except Unavailable as exc:
            results[name] = {"status": "unavailable", "note": str(exc)}
            continue
        except Exception as exc:  # a column that fails must not sink the table
            results[name] = {"status": "error", "note": f"{type(exc).__name__}: {exc}"}
            continue
        first /= per_call
        res: dict[str, Any] = {"first_s": first}
        note = getattr(fn, "note", None)
        if note:
            res["note"] = str(note)
        if not column.anchor and settings.verify:
            ref, why = reference.get()
            if ref is not None:
                try:
                    res["rel_err"] = _relative_error(backend.xp, result, ref)
                except Exception as exc:  # a result the reference cannot be compared with
                    res["rel_err"] = math.inf
                    res["note"] = (res.get("note", "") + "; compared with the reference: "
                                   f"{type(exc).__name__}: {exc}").lstrip("; ")
            elif why:
                res["note"] = (res.get("note", "") + "; " + why).lstrip("; ")
        del result
        # The first call paid for compilation, caches, plans, autotuning and thread
        # start-up; the second is a fair guess of one call's cost, and decides the cap,
        # unless the first was so slow that no start-up explains it.
        guess = first if first > _NO_SECOND_CALL * settings.cap \
            else clock.sample(fn, 1) / per_call
        if guess > settings.cap:
            res.update(status="capped", median_s=guess, samples=[guess],
                       note=(res.get("note", "") + "; one warm call only: it took longer "
                             f"than the {settings.cap} s cap").lstrip("; "))
            res.update(_rates(case, guess))
            results[name] = res
            history[key] = (case.work, guess)
            continue
        guess = max(guess, 1e-7)
        number = max(1, int(settings.min_sample / (guess * per_call)))
        active[name] = (fn, number)
        res.update(status="ok", samples=[], number=number)
        results[name] = res
    start = time.perf_counter()
    for r in range(settings.repeat):
        # Every column once per round, so that a burst of load from another
        # process hits every column alike; in a new (seeded) order each round,
        # because a call leaves state behind for the next one (OpenBLAS's and
        # the FFT's worker threads keep spinning for a while after a call),
        # and a fixed order would always charge it to the same column.
        order = list(active)
        random.Random(f"{case.id}/{r}").shuffle(order)
        for name in order:
            fn, number = active[name]
            results[name]["samples"].append(clock.sample(fn, number) / per_call)
        if r >= 2 and time.perf_counter() - start > settings.case_budget:
            break
    for name in active:
        res = results[name]
        res["median_s"] = statistics.median(res["samples"])
        res["min_s"] = min(res["samples"])
        res.update(_rates(case, res["median_s"]))
        history[(name, case.family)] = (case.work, res["median_s"])
    measured = {n: r["median_s"] for n, r in results.items() if r["status"] in ("ok", "capped")}
    fastest = min(measured, key=measured.get) if measured else None
    for res in results.values():
        if fastest is not None and "median_s" in res:
            res["ratio"] = res["median_s"] / measured[fastest]
    return {"id": case.id, "params": case.params, "fastest": fastest,
            "results": {n: results[n] for n in columns if n in results}}


def _skipped(case: Case, columns: list[str], why: str) -> dict[str, Any]:
    return {"id": case.id, "params": case.params, "fastest": None,
            "results": {n: {"status": "skipped", "note": why} for n in columns}}


def run_grids(grid_names: list[str], backend: Any, settings: Settings, quick: bool,
              columns: list[str] | None = None,
              progress: Callable[[str], None] | None = None,
              checkpoint: Callable[[list[dict[str, Any]]], None] | None = None,
              ) -> list[dict[str, Any]]:
    """Run the named grids; ``columns`` restricts the columns (None: all that run on ``backend``).

    ``checkpoint`` receives the grids measured so far after every case (a run
    stopped early keeps them).  Once ``settings.budget`` seconds have passed,
    the remaining cases are listed as skipped instead of run.
    """
    clock = clock_for(backend)
    deadline = None if settings.budget is None else time.perf_counter() + settings.budget
    out: list[dict[str, Any]] = []
    for gname in grid_names:
        grid = GRIDS[gname]
        cols = [c for c in grid.columns if grid.columns[c].runs_on(backend.name)
                and (columns is None or c in columns)]
        history: dict[tuple[str, str], tuple[float, float]] = {}
        cases: list[dict[str, Any]] = []
        out.append({
            "name": grid.name, "title": grid.title, "notes": grid.notes, "clock": clock.name,
            "columns": [{"name": c, "anchor": grid.columns[c].anchor,
                         "doc": grid.columns[c].doc} for c in cols],
            "cases": cases,
        })
        for case in grid.cases(quick):
            if deadline is not None and time.perf_counter() > deadline:
                row = _skipped(case, cols, f"not run: the run's time budget "
                                           f"({settings.budget:g} s) was spent")
            else:
                row = _run_case(grid, case, cols, backend, settings, history, clock)
            cases.append(row)
            if progress is not None:
                cells = ", ".join(f"{n} {r['median_s'] * 1e3:.3g} ms"
                                  for n, r in row["results"].items() if "median_s" in r)
                progress(f"[{gname}] {case.id}: {cells or 'skipped'}")
            if checkpoint is not None:
                checkpoint(out)
    return out


def measure_ceilings(backend: Any, quick: bool = False) -> dict[str, float]:
    """The device's measured copy bandwidth and float32 matrix-product rate.

    ``copy_gbps`` counts the bytes read and written by ``xp.copyto`` of
    ``CEILING_COPY_ELEMENTS`` float32 (1 GiB); ``sgemm_gflops`` is ``2 n³`` per
    float32 ``n x n`` product on random inputs (on CuPy: cuBLAS, no TF32).  Each
    is the median of a few samples, timed like a column.
    """
    from . import _cases as C
    from ._columns import blocking

    xp, clock = backend.xp, clock_for(backend)
    n = C.QUICK_CEILING_COPY_ELEMENTS if quick else C.CEILING_COPY_ELEMENTS
    m = C.QUICK_CEILING_MATMUL_N if quick else C.CEILING_MATMUL_N

    def median_seconds(fn: Callable[[], Any]) -> float:
        clock.call(fn)
        guess = max(clock.sample(fn, 1), 1e-7)
        number = max(1, int(0.02 / guess))
        return statistics.median(clock.sample(fn, number) for _ in range(5))

    def copy_seconds() -> float:  # its 2 GiB are freed on return
        a = xp.ones(n, dtype=xp.float32)
        b = xp.empty_like(a)
        return median_seconds(blocking(backend, lambda: xp.copyto(b, a)))

    copy_s = copy_seconds()
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.standard_normal((m, m), dtype=np.float32))
    y = backend.asarray(rng.standard_normal((m, m), dtype=np.float32))
    matmul_s = median_seconds(blocking(backend, lambda: xp.matmul(x, y)))
    return {"copy_gbps": 2 * 4 * n / copy_s / 1e9,
            "sgemm_gflops": 2 * m ** 3 / matmul_s / 1e9,
            "copy_bytes": 4 * n, "matmul_n": m}
