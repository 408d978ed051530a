"""Scratch buffers the NumPy backend reuses from one call to the next.

A large temporary that is allocated and freed on every call goes back to the
operating system each time (glibc maps allocations over its threshold, at most
32 MiB, directly) and its pages fault in again on the next call: on the
development machine that doubled the time of a 3x3 Winograd layer whose
arenas are tens of MiB.  Like PyTorch's and CuPy's caching allocators, this
pool keeps freed scratch for the next call instead.  Only scratch goes
through it, never an array an op returns, and at most
:data:`IDLE_BYTES_MAX` stay cached while idle.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator

import numpy as np

__all__ = ["IDLE_BYTES_MAX", "take", "give", "scratch", "clear"]

#: Largest total size of the buffers kept while no call uses them.
IDLE_BYTES_MAX = 256 * 2**20

_lock = threading.Lock()
_free: list[np.ndarray] = []   # uint8 buffers, smallest first


def take(n: int, dtype: Any) -> np.ndarray:
    """A 1-D array of ``n`` elements of ``dtype`` (uninitialised), from the pool when
    a free buffer is large enough (but not wastefully so)."""
    dtype = np.dtype(dtype)
    nbytes = max(int(n) * dtype.itemsize, 1)
    with _lock:
        for i, buf in enumerate(_free):
            if nbytes <= buf.nbytes <= 2 * nbytes:
                del _free[i]
                break
        else:
            buf = None
    if buf is None:
        buf = np.empty(nbytes, dtype=np.uint8)
    return buf[:nbytes].view(dtype)


def give(arr: np.ndarray | None) -> None:
    """Return a buffer from :func:`take` (no array derived from it may be used after)."""
    if arr is None:
        return
    buf = arr.base if isinstance(arr.base, np.ndarray) else arr
    while isinstance(buf.base, np.ndarray):
        buf = buf.base
    if buf.dtype != np.uint8 or buf.nbytes > IDLE_BYTES_MAX:
        return
    with _lock:
        _free.append(buf)
        _free.sort(key=lambda b: b.nbytes)
        total = sum(b.nbytes for b in _free)
        while total > IDLE_BYTES_MAX:
            total -= _free.pop().nbytes   # the largest go first


@contextlib.contextmanager
def scratch(n: int, dtype: Any) -> Iterator[np.ndarray]:
    """:func:`take` for the duration of a ``with`` block, then :func:`give`."""
    arr = take(n, dtype)
    try:
        yield arr
    finally:
        give(arr)


def clear() -> None:
    """Drop every cached buffer."""
    with _lock:
        _free.clear()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
