"""The ``gpuconv`` command: ``gpuconv demo``, ``gpuconv bench``, ``gpuconv info`` and friends.

Each subcommand's options are declared by the module that runs it, through
its ``add_parser(subparsers)``; this module adds the global options
(``--version``, ``--debug``) and turns what happens into an exit status:

* 0: done;
* 1: a runtime failure, such as a backend that cannot run here: one line on
  stderr, ``gpuconv: error: backend 'cupy' is not usable: ...``;
* 2: bad usage (an unknown option, a number out of range, a folder that
  does not exist): argparse's usage and one line naming the argument;
* 130: interrupted (Ctrl-C).

No traceback is printed unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, Sequence

from .backend import BackendUnavailableError

__all__ = ["build_parser", "main", "run_parser"]

# The modules that declare and run each subcommand, in the order --help lists them.
_COMMANDS = (
    "gpuconv.demo",
    "gpuconv.examples",
    "gpuconv._check_command",
    "gpuconv.bench._cli",
    "gpuconv._calibrate_command",
    "gpuconv._info",
)

# Exceptions whose message is the whole story; anything else is shown with its
# type and the hint that --debug shows where it came from.
_EXPECTED = (OSError, ValueError, TypeError, NotImplementedError, MemoryError, ImportError,
             BackendUnavailableError)


def _add_debug_option(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the full traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    """The ``gpuconv`` parser: global options and one subparser per command.

    Returns
    -------
    argparse.ArgumentParser
        ``parse_args`` returns a namespace whose ``func(args)`` runs the command.

    Examples
    --------
    >>> from gpuconv.cli import build_parser
    >>> args = build_parser().parse_args(["check", "--backend", "auto"])
    >>> args.command, args.backend, args.debug
    ('check', 'auto', False)
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="gpuconv",
        description="2-D convolution and cross-correlation on NumPy or CuPy.",
        epilog="Exit status: 0 done, 1 failed (one line on stderr), 2 bad usage, "
               "130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"gpuconv {__version__}")
    _add_debug_option(parser, False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        command = importlib.import_module(name).add_parser(sub)
        # Also after the command (`gpuconv bench --debug`), without resetting
        # `gpuconv --debug bench` when absent.
        _add_debug_option(command, argparse.SUPPRESS)
        command.set_defaults(command_parser=command)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, _EXPECTED):
        return text
    return f"{type(exc).__name__}: {text} (rerun with --debug for the traceback)"


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` with ``parser`` and run ``args.func(args)``; the exit status.

    The command-line conventions of ``gpuconv`` for any parser whose
    namespace carries ``func`` (``benchmarks/run.py`` uses it too).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Sets ``func`` (and may set ``debug`` and ``command_parser``, the parser
        that reports a :class:`~gpuconv._argtypes.UsageError`).
    argv : sequence of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0, 1 (runtime failure), 2 (bad usage) or 130 (interrupted).
    """
    from ._argtypes import UsageError
    from .backend import backend_for

    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            # Reported by the subcommand's parser, with its usage (argparse
            # leaves unknown arguments to the top-level parser).
            getattr(args, "command_parser", parser).error(
                f"unrecognized arguments: {' '.join(extras)}")
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    debug = getattr(args, "debug", False)
    try:
        if getattr(args, "backend", None) is not None:
            # Refuse a backend that cannot run here before doing any work.
            backend_for(args.backend)
        return int(args.func(args) or 0)
    except UsageError as exc:
        try:
            getattr(args, "command_parser", parser).error(str(exc))
        except SystemExit as stop:
            return stop.code if isinstance(stop.code, int) else 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`gpuconv info | head -1`): stop quietly, and
        # keep Python from complaining while it flushes stdout at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except Exception as exc:
        if debug:
            raise
        sys.stdout.flush()
        print(f"{parser.prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - parser.error always exits


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gpuconv`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The command line without the program name.

    Returns
    -------
    int
        0, 1 (runtime failure), 2 (bad usage) or 130 (interrupted).

    Examples
    --------
    >>> from gpuconv.cli import main
    >>> main(["--version"])  # doctest: +ELLIPSIS
    gpuconv ...
    0
    """
    try:
        parser = build_parser()
    except KeyboardInterrupt:  # while importing the commands' modules
        print("gpuconv: interrupted", file=sys.stderr)
        return 130
    return run_parser(parser, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
