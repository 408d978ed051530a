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


def _cmd_bench(args: argparse.Namespace) -> int:
    if getattr(args, "dask", False):
        from ._bench_dask import run_from_cli as run_dask

        return run_dask(args)
    from .bench import run_from_cli

    return run_from_cli(args)


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

    bench = sub.add_parser("bench", help="run the benchmark grid and write results")
    _add_backend_option(bench)
    bench.add_argument("--quick", action="store_true", help="a small grid, for a smoke test")
    bench.add_argument("--out", metavar="DIR", default="benchmarks/results",
                       help="where the JSON and markdown results go")
    bench.add_argument("--dask", action="store_true",
                       help="instead, the out-of-core benchmark: a 16384² image on a dask "
                            "LocalCluster (needs the 'dask' extra; heavy, minutes)")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
