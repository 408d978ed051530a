"""Time every column of every case, interleaved, and keep the medians."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any, Callable

import numpy as np

from ._registry import GRIDS, Case, Grid, Unavailable

__all__ = ["Settings", "run_grids"]


class Settings:
    """How hard the runner tries.

    ``repeat`` samples per column, each at least ``min_sample`` seconds long
    (a fast call is looped); a column whose single call takes longer than
    ``cap`` seconds is timed once, and one predicted (from a smaller case of
    the same family) to take longer is not run at all but extrapolated.
    ``case_budget`` seconds stops sampling a case early (at least 3 samples).
    """

    def __init__(self, repeat: int = 5, min_sample: float = 0.02, cap: float = 2.0,
                 case_budget: float = 30.0):
        self.repeat = repeat
        self.min_sample = min_sample
        self.cap = cap
        self.case_budget = case_budget

    def as_dict(self) -> dict[str, Any]:
        return {"repeat": self.repeat, "min_sample_s": self.min_sample, "cap_s": self.cap,
                "case_budget_s": self.case_budget}


def _once(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _sample(fn: Callable[[], Any], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def _run_case(grid: Grid, case: Case, columns: list[str], backend: Any, settings: Settings,
              history: dict[tuple[str, str], tuple[float, float]]) -> dict[str, Any]:
    inputs = grid.setup(case, backend, np.random.default_rng(0))
    results: dict[str, dict[str, Any]] = {}
    active: dict[str, tuple[Callable[[], Any], int]] = {}
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
        try:
            fn = grid.columns[name].factory(inputs, case, backend)
            first = _once(fn)
        except Unavailable as exc:
            results[name] = {"status": "unavailable", "note": str(exc)}
            continue
        except Exception as exc:  # a column that fails must not sink the table
            results[name] = {"status": "error", "note": f"{type(exc).__name__}: {exc}"}
            continue
        if first > settings.cap:
            results[name] = {"status": "capped", "median_s": first, "samples": [first],
                             "note": f"one call only: it took longer than the {settings.cap} s cap"}
            history[key] = (case.work, first)
            continue
        # The first call paid for caches, plans and thread start-up; the second
        # is a fair guess of one call's cost.
        guess = max(_once(fn), 1e-7)
        number = max(1, int(settings.min_sample / guess))
        active[name] = (fn, number)
        results[name] = {"status": "ok", "samples": [], "number": number}
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
            results[name]["samples"].append(_sample(fn, number))
        if r >= 2 and time.perf_counter() - start > settings.case_budget:
            break
    for name in active:
        res = results[name]
        res["median_s"] = statistics.median(res["samples"])
        res["min_s"] = min(res["samples"])
        history[(name, case.family)] = (case.work, res["median_s"])
    measured = {n: r["median_s"] for n, r in results.items() if r["status"] in ("ok", "capped")}
    fastest = min(measured, key=measured.get) if measured else None
    for res in results.values():
        if fastest is not None and "median_s" in res:
            res["ratio"] = res["median_s"] / measured[fastest]
    return {"id": case.id, "params": case.params, "fastest": fastest,
            "results": {n: results[n] for n in columns if n in results}}


def run_grids(grid_names: list[str], backend: Any, settings: Settings, quick: bool,
              columns: list[str] | None = None,
              progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run the named grids; ``columns`` restricts the columns (None: all)."""
    out = []
    for gname in grid_names:
        grid = GRIDS[gname]
        cols = [c for c in grid.columns if columns is None or c in columns]
        history: dict[tuple[str, str], tuple[float, float]] = {}
        cases = []
        for case in grid.cases(quick):
            row = _run_case(grid, case, cols, backend, settings, history)
            cases.append(row)
            if progress is not None:
                cells = ", ".join(f"{n} {r['median_s'] * 1e3:.3g} ms"
                                  for n, r in row["results"].items() if "median_s" in r)
                progress(f"[{gname}] {case.id}: {cells}")
        out.append({
            "name": grid.name, "title": grid.title, "notes": grid.notes,
            "columns": [{"name": c, "anchor": grid.columns[c].anchor,
                         "doc": grid.columns[c].doc} for c in cols],
            "cases": cases,
        })
    return out
