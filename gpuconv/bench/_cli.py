"""``gpuconv bench`` and ``python benchmarks/run.py``: the options, declared once, and a run.

The grid benchmark's options and the out-of-core dask benchmark's options
(``--dask``; declared by :mod:`gpuconv.bench._dask`) live on one parser;
the options both use (``--quick``, ``--out``, ``--note``) are declared here
once.  Every value is checked while parsing (counts >= 1, seconds >= 0, known
grid and column names, a writable output folder, a plot file matplotlib can
write), and options of one benchmark given to the other are refused before
anything runs.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from .._argtypes import (
    UsageError,
    add_backend_option,
    nonnegative_float,
    output_folder,
    plot_file,
    positive_int,
)
from ._registry import GRIDS

__all__ = ["add_arguments", "add_parser", "add_shared_arguments", "build_parser", "main",
           "run_from_cli"]

DESCRIPTION = ("Time gpuconv's methods against SciPy and PyTorch on a grid of cases and write "
               "the results as JSON and markdown; with --dask, the out-of-core benchmark "
               "instead.")

DEFAULT_OUT = "benchmarks/results"


def results_folder(args: argparse.Namespace) -> str:
    """``--out``, or the default folder once it is known to be needed (checked like --out)."""
    if args.out is not None:
        return args.out
    try:
        return output_folder(DEFAULT_OUT)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"the default --out folder: {exc}; pass --out DIR") from None


# Options only the grid benchmark reads; their defaults are None so that
# "given" can be told from "left alone".
_GRID_ONLY = ("grid", "column", "threads", "repeat", "cap", "plot", "tag")


def add_shared_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--quick``, ``--out`` and ``--note``: what the grid and the dask benchmark share."""
    parser.add_argument("--quick", action="store_true",
                        help="a small, short run for a smoke test (the dask benchmark's is "
                             "printed, never written)")
    parser.add_argument("--out", metavar="DIR", type=output_folder,
                        help=f"folder for the JSON and markdown results, created if missing "
                             f"(default {DEFAULT_OUT})")
    parser.add_argument("--note", action="append", default=[], metavar="TEXT",
                        help="a line of context recorded with the results (repeatable)")


def _column_names() -> list[str]:
    names: dict[str, None] = {}
    for grid in GRIDS.values():
        names.update(dict.fromkeys(grid.columns))
    return list(names)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every option of ``gpuconv bench``, the ``--dask`` benchmark's included."""
    from . import _dask as _bench_dask

    add_backend_option(parser)
    add_shared_arguments(parser)
    grids, columns = list(GRIDS), _column_names()
    parser.add_argument("--grid", action="append", metavar="NAME", choices=grids,
                        help=f"run only this grid (repeatable): {', '.join(grids)}")
    parser.add_argument("--column", action="append", metavar="NAME", choices=columns,
                        help=f"run only this column (repeatable): {', '.join(columns)}")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="threads for gpuconv, torch and BLAS (default: each library's own)")
    parser.add_argument("--repeat", type=positive_int, metavar="N",
                        help="samples per cell (default 5; 3 with --quick)")
    parser.add_argument("--cap", type=nonnegative_float, metavar="SECONDS",
                        help="a longer single call is timed once; one predicted longer is "
                             "extrapolated (default 2; 0.5 with --quick)")
    parser.add_argument("--plot", metavar="PATH", type=plot_file,
                        help="also draw the direct-vs-FFT crossover of the planes grid (PNG; "
                             "needs matplotlib)")
    parser.add_argument("--tag", metavar="SUFFIX",
                        help="suffix of the result files' names (several runs a day)")
    dask = parser.add_argument_group(
        "out-of-core benchmark", "--dask runs it instead of the grid: a 16384² image "
                                 "correlated on a dask LocalCluster (needs the 'dask' extra; "
                                 "heavy, minutes); --quick, --out and --note apply to it too")
    dask.add_argument("--dask", action="store_true", help="run the out-of-core benchmark")
    _bench_dask.add_arguments(dask)
    return parser


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``bench`` subcommand of ``gpuconv``."""
    parser = subparsers.add_parser("bench", help="run the benchmark grid and write results",
                                   description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(func=run_from_cli)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python benchmarks/run.py`` (the options of ``gpuconv bench``)."""
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(func=run_from_cli)
    return parser


def _verb(options: list[str]) -> str:
    return "applies" if len(options) == 1 else "apply"


def _check_combination(args: argparse.Namespace) -> None:
    from . import _dask as _bench_dask

    if args.dask:
        given = [f"--{name}" for name in _GRID_ONLY if getattr(args, name) is not None]
        if args.backend not in ("numpy", "auto"):
            given.append("--backend")
        if given:
            raise UsageError(f"{', '.join(given)} {_verb(given)} to the benchmark grid, not to "
                             "--dask")
        return
    given = [f"--{name.replace('_', '-')}" for name in _bench_dask.OWN_OPTIONS
             if getattr(args, name) is not None]
    if given:
        raise UsageError(f"{', '.join(given)} {_verb(given)} only with --dask")
    if args.plot is not None and args.grid and "planes" not in args.grid:
        raise UsageError("--plot draws the planes grid; add --grid planes")
    if args.column and args.grid:
        for column in args.column:
            if not any(column in GRIDS[g].columns for g in args.grid):
                has = [g for g in GRIDS if column in GRIDS[g].columns]
                raise UsageError(f"column {column!r} is not in grid {', '.join(args.grid)}; "
                                 f"it is in {', '.join(has)}")


def run_from_cli(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed options ask for; returns the exit status."""
    _check_combination(args)
    if args.dask:
        from ._dask import run_from_cli as run_dask

        return run_dask(args)
    from ..backend import backend_for
    from . import Settings, run, to_markdown

    settings = None
    if args.repeat is not None or args.cap is not None:
        settings = Settings(repeat=3, min_sample=0.002, cap=0.5, case_budget=1.0) if args.quick \
            else Settings()
        if args.repeat is not None:
            settings.repeat = args.repeat
        if args.cap is not None:
            settings.cap = args.cap
    # The grid's inputs are made by the benchmark, as NumPy arrays: "auto" is NumPy.
    backend = backend_for(args.backend).name
    out = results_folder(args)
    report = run(backend=backend, grids=args.grid, columns=args.column, quick=args.quick,
                 settings=settings, threads=args.threads, out=out, notes=args.note,
                 tag=args.tag, progress=lambda line: print(line, flush=True))
    print(to_markdown(report))
    for path in report.get("files", []):
        print(f"wrote {path}")
    if args.plot:
        from ._fftcols import crossover_plot

        print(f"wrote {crossover_plot(report, args.plot)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python benchmarks/run.py``: exit status as ``gpuconv bench``'s."""
    from ..cli import run_parser

    return run_parser(build_parser(), argv)
