"""``gpuconv calibrate``: time every method, fit the cost model of ``method="auto"``, store it."""

from __future__ import annotations

import argparse

from ._argtypes import add_backend_option

__all__ = ["add_parser", "run_from_cli"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``calibrate`` subcommand of ``gpuconv``."""
    parser = subparsers.add_parser(
        "calibrate", help="time small cases of every method, fit the cost model of "
                          "method='auto' and store it",
        description="Time small cases of every method on one backend, fit the constants of "
                    "the cost model that method='auto' ranks methods with, and store them in "
                    "the cache file (see `gpuconv info`).")
    add_backend_option(parser)
    parser.add_argument("--quick", action="store_true", help="fewer, smaller cases")
    parser.set_defaults(func=run_from_cli)
    return parser


def run_from_cli(args: argparse.Namespace) -> int:
    """Calibrate and print where the constants went and how well they fit."""
    from ._measure import calibrate

    report = calibrate(args.backend, quick=args.quick,
                       progress=lambda line: print(f"timed {line}", flush=True))
    print(f"constants for {report['device_key']} written to {report['path']}")
    for family, errs in report["fit_error"].items():
        cells = ", ".join(f"{m} {e:.0%}" for m, e in errs.items())
        print(f"median relative fit error, {family}: {cells}")
    return 0
