"""The ``gpuconv`` command: ``gpuconv demo``, ``gpuconv bench`` and friends."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main"]


def _add_backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="numpy",
                        help="backend to run on: numpy (default), cupy, or any registered name")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(backend=args.backend, plot=args.plot)


def _cmd_train_digits(args: argparse.Namespace) -> int:
    from .examples import run_train_digits

    return run_train_digits(backend=args.backend, epochs=args.epochs, seed=args.seed,
                            plot=args.plot, progress=not args.no_progress)


def _cmd_bench(args: argparse.Namespace) -> int:
    if getattr(args, "dask", False):
        from .bench._dask import run_from_cli as run_dask

        return run_dask(args)
    from .bench import run_from_cli

    return run_from_cli(args)


def _cmd_check(args: argparse.Namespace) -> int:
    from .theory import check

    results = check(args.backend)
    width = max(len(r.claim) for r in results)
    print(f"{'claim':<{width}}  {'max error':>10}  {'tolerance':>10}  result")
    for r in results:
        print(f"{r.claim:<{width}}  {r.max_error:>10.3g}  {r.tolerance:>10.3g}  "
              f"{'pass' if r.passed else 'FAIL'}")
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)}/{len(results)} claims hold on backend {args.backend!r}")
    for r in failed:
        print(f"FAILED: {r.claim}: {r.detail}")
    return 1 if failed else 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from ._costmodel import calibrate

    report = calibrate(args.backend, quick=args.quick,
                       progress=lambda line: print(f"timed {line}", flush=True))
    print(f"constants for {report['device_key']} written to {report['path']}")
    for family, errs in report["fit_error"].items():
        cells = ", ".join(f"{m} {e:.0%}" for m, e in errs.items())
        print(f"median relative fit error, {family}: {cells}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpuconv",
        description="2-D convolution and cross-correlation on NumPy or CuPy.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="a tour of the library: edge detection, correlation "
                                       "vs convolution, timings")
    _add_backend_option(demo)
    demo.add_argument("--plot", metavar="PATH", help="also save a figure (needs matplotlib)")
    demo.set_defaults(func=_cmd_demo)

    digits = sub.add_parser("train-digits", help="train a small CNN (gpuconv.nn) on the "
                                                 "shipped 8x8 handwritten digits")
    _add_backend_option(digits)
    digits.add_argument("--epochs", type=int, default=20, help="passes over the training "
                                                              "images (default 20)")
    digits.add_argument("--seed", type=int, default=0, help="seeds the split, the "
                                                            "initialisation and the shuffling")
    digits.add_argument("--plot", metavar="PATH", help="also save the loss curve and the "
                                                       "learned first-layer kernels (PNG)")
    digits.add_argument("--no-progress", action="store_true", help="no progress bar")
    digits.set_defaults(func=_cmd_train_digits)

    bench = sub.add_parser("bench", help="run the benchmark grid and write results")
    _add_backend_option(bench)
    bench.add_argument("--quick", action="store_true", help="a small grid, for a smoke test")
    bench.add_argument("--out", metavar="DIR", default="benchmarks/results",
                       help="where the JSON and markdown results go")
    bench.add_argument("--dask", action="store_true",
                       help="instead, the out-of-core benchmark: a 16384² image on a dask "
                            "LocalCluster (needs the 'dask' extra; heavy, minutes)")
    bench.add_argument("--plot", metavar="PATH",
                       help="also write the direct-vs-FFT crossover plot (PNG; needs matplotlib)")
    bench.add_argument("--grid", action="append", metavar="NAME",
                       help="run only this grid (repeatable): planes, conv2d, ...")
    bench.add_argument("--column", action="append", metavar="NAME",
                       help="run only this column (repeatable)")
    bench.add_argument("--threads", type=int, metavar="N",
                       help="threads for gpuconv, torch and BLAS (default: each library's own)")
    bench.add_argument("--repeat", type=int, metavar="N", help="samples per cell (default 5)")
    bench.add_argument("--cap", type=float, metavar="SECONDS",
                       help="a longer single call is timed once; predicted longer: extrapolated")
    bench.add_argument("--tag", help="suffix of the result files' names (several runs a day)")
    bench.add_argument("--note", action="append", default=[],
                       help="a line of context recorded with the results (repeatable)")
    bench.set_defaults(func=_cmd_bench)

    check = sub.add_parser("check", help="check the chapter's claims (commutativity, the "
                                         "convolution theorem, ...) and print a table")
    _add_backend_option(check)
    check.set_defaults(func=_cmd_check)

    calibrate = sub.add_parser("calibrate", help="time small cases of every method, fit the "
                                                 "cost model of method='auto' and store it")
    _add_backend_option(calibrate)
    calibrate.add_argument("--quick", action="store_true", help="fewer, smaller cases")
    calibrate.set_defaults(func=_cmd_calibrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
