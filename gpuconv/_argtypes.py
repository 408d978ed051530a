"""Argument types of the ``gpuconv`` command: each checks one value at parse time.

Every subcommand declares its options with these ``type=`` functions.  A bad
value raises :class:`argparse.ArgumentTypeError`, so argparse prints the
usage and one line, ``gpuconv bench: error: argument --repeat: must be an
integer >= 1; got '0'``, and exits with status 2 before any work starts.
A check that needs two options at once raises :class:`UsageError` from the
command instead; the command line turns it into the same kind of message.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path

__all__ = [
    "UsageError",
    "add_backend_option",
    "backend_name",
    "memory_size",
    "nonnegative_float",
    "output_folder",
    "plot_file",
    "nonnegative_int",
    "positive_int",
    "existing_folder",
]


class UsageError(Exception):
    """Options that are each valid but not together; reported like a parse error (exit 2)."""


def _integer(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}; got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}; got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts: epochs of at least one pass, repeats, threads, sizes)."""
    return _integer(text, 1)


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    return _integer(text, 0)


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (seconds)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0; got {text!r}")
    return value


def backend_name(text: str) -> str:
    """``"auto"`` or a registered backend name (whether it can run here is checked later)."""
    from .backend import _check_name

    try:
        return _check_name(text)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_MEMORY = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([kmgtp]i?b|b)?\s*", re.IGNORECASE)


def memory_size(text: str) -> str:
    """A size such as ``1.5GiB``, ``800MB`` or ``2000000000`` (as dask reads it)."""
    match = _MEMORY.fullmatch(text)
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a positive size such as 1.5GiB, 800MB or a number of bytes; got {text!r}")
    return text


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def existing_folder(text: str) -> str:
    """A folder that exists and can be written to."""
    path = Path(text).expanduser()
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r} {what}")
    if not _writable(path):
        raise argparse.ArgumentTypeError(f"folder {text!r} is not writable")
    return str(path)  # with ~ expanded, as it was checked


def output_folder(text: str) -> str:
    """A folder to write results into: writable, or creatable (like ``mkdir -p``).

    Nothing is created here; the command creates it when it writes.
    """
    path = Path(text).expanduser()
    if path.exists():
        return existing_folder(text)
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create folder {text!r}: {str(ancestor)!r} is "
                                         "not a folder")
    if not _writable(ancestor):
        raise argparse.ArgumentTypeError(f"cannot create folder {text!r}: {str(ancestor)!r} is "
                                         "not writable")
    return str(path)  # with ~ expanded, as it was checked


def plot_file(text: str) -> str:
    """Where a figure goes: its folder exists and is writable, and matplotlib can draw it."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name such as "
                                         f"{os.path.join(text, 'figure.png')!r}")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: folder {str(folder)!r} {what}")
    if not _writable(folder):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: folder {str(folder)!r} is "
                                         "not writable")
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise argparse.ArgumentTypeError(
            "drawing a figure needs matplotlib: pip install 'gpuconv[plot]'") from None
    suffix = path.suffix.lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        raise argparse.ArgumentTypeError(
            f"cannot write {text!r}: matplotlib does not write {suffix!r} files; use one of "
            f"{', '.join(sorted(formats))}")
    return str(path)  # with ~ expanded, as it was checked


def add_backend_option(parser: argparse.ArgumentParser, default: str = "numpy") -> None:
    """``--backend NAME``: auto, numpy, cupy or any registered name."""
    parser.add_argument(
        "--backend", type=backend_name, default=default, metavar="NAME",
        help=f"backend to run on: numpy, cupy, auto (follow the inputs: the command's own "
             f"inputs are NumPy arrays) or any registered name (default {default})")
