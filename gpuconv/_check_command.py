"""``gpuconv check``: the chapter's claims (:func:`gpuconv.theory.check`) as a table."""

from __future__ import annotations

import argparse

from ._argtypes import add_backend_option

__all__ = ["add_parser", "run_from_cli"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``check`` subcommand of ``gpuconv``."""
    parser = subparsers.add_parser(
        "check", help="check the chapter's claims (commutativity, the convolution theorem, "
                      "...) and print a table",
        description="Compute both sides of each of the chapter's claims on one backend and "
                    "print the largest difference next to the floating-point bound. Exit "
                    "status 1 if a claim fails.")
    add_backend_option(parser)
    parser.set_defaults(func=run_from_cli)
    return parser


def run_from_cli(args: argparse.Namespace) -> int:
    """Print the table; 0 when every claim holds, 1 otherwise."""
    from .backend import backend_for
    from .theory import check

    results = check(args.backend)
    name = backend_for(args.backend).name
    width = max(len(r.claim) for r in results)
    print(f"{'claim':<{width}}  {'max error':>10}  {'tolerance':>10}  result")
    for r in results:
        print(f"{r.claim:<{width}}  {r.max_error:>10.3g}  {r.tolerance:>10.3g}  "
              f"{'pass' if r.passed else 'FAIL'}")
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)}/{len(results)} claims hold on backend {name!r}")
    for r in failed:
        print(f"FAILED: {r.claim}: {r.detail}")
    return 1 if failed else 0
