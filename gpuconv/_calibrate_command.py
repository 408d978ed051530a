"""``gpuconv calibrate``: time every method, fit the cost model of ``method="auto"``, store it."""

from __future__ import annotations

import argparse
import json

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
    for family, errs in report["fit_error"].items():
        cells = ", ".join(f"{m} {e:.0%}" for m, e in errs.items())
        print(f"median relative fit error, {family}: {cells}")
    if report["write_error"] is not None:
        # The work is done: show the constants, so they are not lost, and say why they
        # were not stored.
        print(json.dumps({report["device_key"]: report["constants"]}, indent=1))
        raise RuntimeError(f"{report['write_error']}; the constants are printed above "
                           "(set GPUCONV_CACHE_DIR to a writable folder to store them)")
    print(f"constants for {report['device_key']} written to {report['path']}")
    return 0
