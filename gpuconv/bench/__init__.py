"""The benchmark harness behind ``gpuconv bench`` and ``python benchmarks/run.py``.

One harness for the CPU and the GPU.  A *grid* is a list of cases (rows) with
a recipe for their inputs; a *column* is one implementation timed on every
case.  The built-in grids (sizes in :mod:`gpuconv.bench._cases`) are
``"planes"`` (single-channel valid correlation, 256² to 4096², 3x3 to 31x31
kernels), ``"conv2d"`` (four CNN layers in float32 and float64), the training
step grids, and for a GPU backend ``"bandwidth"`` (3x3 over 4096² and 8192²)
and ``"batched"`` (64 planes in one call).  Their columns are gpuconv's
methods and the anchors of the backend's array library: SciPy and PyTorch on
the CPU for NumPy, ``cupyx.scipy`` and PyTorch on CUDA (cuDNN, TF32 off) for
CuPy.  Other modules add theirs with :func:`register_grid` and
:func:`register_column`.

Every column blocks until its result is ready; every cell is the median of
interleaved samples (CUDA events on a GPU, the host clock otherwise), reported
as a ratio to the fastest column of its row, with the gpuconv results' error
against a float64 reference; the results go to JSON and markdown files.
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

from . import _columns, _grids  # noqa: F401  (_grids registers the built-in grids)
from ._cli import build_parser, main, run_from_cli
from ._registry import GRIDS, Case, Column, Grid, Unavailable, register_column, register_grid
from ._clock import clock_for
from ._report import (device_info, library_versions, machine_info, now, today, to_markdown,
                      write_results)
from ._runner import Settings, measure_ceilings, run_grids

__all__ = [
    "GRIDS",
    "Case",
    "Column",
    "Grid",
    "Settings",
    "Unavailable",
    "build_parser",
    "main",
    "register_column",
    "register_grid",
    "run",
    "run_from_cli",
    "to_markdown",
]


def _thread_counts(threads: int | None) -> dict[str, Any]:
    from ..backends.numpy import num_threads

    counts: dict[str, Any] = {"gpuconv_numpy": num_threads()}
    try:
        from threadpoolctl import threadpool_info

        counts["blas"] = [p.get("num_threads") for p in threadpool_info()
                          if p.get("user_api") == "blas"]
    except ImportError:
        pass
    counts["torch"] = threads if threads is not None else "default"
    return counts


def run(*, backend: str = "numpy", grids: Sequence[str] | None = None,
        columns: Sequence[str] | None = None, quick: bool = False,
        settings: Settings | None = None, threads: int | None = None,
        out: str | os.PathLike[str] | None = None, progress: Any = None,
        notes: Sequence[str] = (), tag: str | None = None, ceilings: bool = False,
        stem: str | None = None) -> dict[str, Any]:
    """Run the benchmark grids and return (and, with ``out``, write) the report.

    Parameters
    ----------
    backend : str
        The gpuconv backend the gpuconv columns run on; the anchors are the
        libraries of that backend's arrays (SciPy and torch on the CPU for
        ``"numpy"``; cupyx and torch on CUDA for ``"cupy"``).
    grids, columns : sequence of str, optional
        Restrict the run to these grids / column names (default: every grid
        and column that runs on ``backend``).
    quick : bool
        A tiny grid with short timings, for a smoke test.
    settings : Settings, optional
        Repeats, caps and budgets; the default is ``Settings()``, or a short
        one with ``quick``.
    threads : int, optional
        Threads for gpuconv's NumPy backend, for torch and (with threadpoolctl)
        for BLAS; default: leave every library's own default.
    out : path, optional
        Directory for ``<device>-<date>[-<tag>].json`` and ``.md``, written
        after every case (``"partial": true`` until the run ends).
    progress : callable, optional
        Called with one line of text per finished case.
    notes : sequence of str
        Context recorded with the results.
    tag : str, optional
        Suffix of the file names, to keep several runs of one day apart.
    ceilings : bool
        Also measure the device's copy bandwidth and float32 matrix-product
        rate (``report["ceilings"]``; the bandwidth target needs them).
    stem : str, optional
        The result files' name without extension, instead of the device and date.

    Returns
    -------
    dict
        The report, as written to the JSON file, with ``"targets"`` (see
        :mod:`gpuconv.bench._targets`).
    """
    import gpuconv
    from ..backend import get_backend_object
    from ._targets import evaluate

    names = list(grids) if grids else [g for g in GRIDS if GRIDS[g].runs_on(backend)]
    unknown = [g for g in names if g not in GRIDS]
    if unknown:
        raise ValueError(f"unknown benchmark grid(s) {unknown}; registered: {sorted(GRIDS)}")
    known = {c for g in names for c in GRIDS[g].columns}
    unknown = [c for c in columns or () if c not in known]
    if unknown:
        raise ValueError(f"column(s) {unknown} are in none of the grids {names}; their columns: "
                         f"{sorted(known)}")
    if settings is None:
        settings = Settings(repeat=3, min_sample=0.002, cap=0.5, case_budget=1.0) if quick \
            else Settings()
    if threads is not None:
        os.environ["GPUCONV_NUM_THREADS"] = str(threads)
    _columns.torch_threads(threads)
    limiter = None
    if threads is not None:
        try:
            from threadpoolctl import threadpool_limits

            limiter = threadpool_limits(limits=threads, user_api="blas")
        except ImportError:
            pass
    paths: list[Any] = []
    try:
        with gpuconv.set_backend(backend):
            be = get_backend_object(backend)
            report: dict[str, Any] = {
                "schema": 2,
                "date": now(),
                "backend": backend,
                "device": be.device_key(),
                "quick": quick,
                "partial": True,
                "machine": machine_info(),
                "device_info": device_info(be),
                "versions": library_versions(),
                "threads": _thread_counts(threads),
                "settings": settings.as_dict(),
                "clock": clock_for(be).name,
                "notes": list(notes),
                "grids": [],
            }
            if out is not None:
                if stem is None:
                    stem = re.sub(r"[^A-Za-z0-9]+", "-", report["device"]).strip("-") + "-" \
                        + today()
                    if quick:
                        stem = "quick-" + stem
                    if tag:
                        stem += "-" + re.sub(r"[^A-Za-z0-9]+", "-", tag).strip("-")

            def checkpoint(measured: list[dict[str, Any]]) -> None:
                report["grids"] = measured
                if out is not None:
                    report["targets"] = evaluate(report)
                    paths[:] = write_results(report, out, stem)

            if ceilings:
                report["ceilings"] = measure_ceilings(be, quick)
                if progress is not None:
                    progress("ceilings: " + ", ".join(f"{k} {v:.4g}" for k, v in
                                                      report["ceilings"].items()))
            report["grids"] = run_grids(names, be, settings, quick,
                                        list(columns) if columns else None, progress,
                                        checkpoint)
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    if hasattr(os, "getloadavg"):
        report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["partial"] = False
    report["targets"] = evaluate(report)
    if out is not None:
        paths = list(write_results(report, out, stem))
        report["files"] = [str(p) for p in paths]
    return report
