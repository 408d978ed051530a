"""The NumPy backend's threads: how many, the pool they come from, and BLAS's meanwhile.

One process-wide pool serves every call, whatever its thread count: a call
submits ``threads - 1`` helper jobs, and the caller and its helpers take the
call's tasks one by one from a shared counter until none is left (a helper
the scheduler has put aside simply takes fewer).  The executor is created
once with room for :data:`_MAX_WORKERS` threads, which start only when jobs
are waiting, so changing ``GPUCONV_NUM_THREADS`` never replaces or shuts
down a pool that other threads are still submitting to (replacing it is
what made such calls fail with "cannot schedule new futures after
shutdown").  Idle pool threads block on a queue: they never spin, so they
take no core from BLAS, OpenMP (torch) or other processes between calls.

A forked child inherits the pool object but not its threads, so its jobs
would wait forever; :func:`os.register_at_fork` drops the pool and its lock
in the child, which then starts its own.

gpuconv, not BLAS, spreads its kernels over the cores.  While a call runs
tasks on several of gpuconv's threads, and while conv2d's tasks call BLAS,
:func:`single_threaded_blas` limits BLAS to one thread (through
threadpoolctl): gpuconv's threads already fill the cores, so BLAS threads
woken meanwhile, by a task or by another thread of the process (dask's
threaded scheduler, a user's thread pool), would only oversubscribe them,
and OpenBLAS's threads keep spinning for about 0.1 s after each call they
serve, taking a core from whatever runs next.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["num_threads", "run_tasks", "single_threaded_blas"]

# Without GPUCONV_NUM_THREADS: the cores this process may use, at most this many
# (the kernels are memory-bound well before).
_MAX_DEFAULT_THREADS = 8
# Threads the shared executor may start; more requested helpers wait their turn.
_MAX_WORKERS = 64


# -- how many threads ---------------------------------------------------------------
_parsed: tuple[str | None, int] | None = None  # (GPUCONV_NUM_THREADS as read, its value)
_cores: int | None = None


def _default_threads() -> int:
    global _cores
    if _cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        _cores = max(1, cores)
    return min(_cores, _MAX_DEFAULT_THREADS)


def num_threads() -> int:
    """Threads the NumPy backend's kernels use.

    ``GPUCONV_NUM_THREADS`` if set (a positive integer), else the cores this
    process may run on (at most 8: the kernels are memory-bound well before
    that).  The variable is parsed once per value it takes and the affinity
    read once per process, so a small call pays one dictionary lookup.

    Returns
    -------
    int
        At least 1.

    Raises
    ------
    ValueError
        If ``GPUCONV_NUM_THREADS`` is set to something other than a positive integer.
    """
    global _parsed
    env = os.environ.get("GPUCONV_NUM_THREADS") or None
    hit = _parsed
    if hit is not None and hit[0] == env:
        return hit[1]
    if env is None:
        value = _default_threads()
    else:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"GPUCONV_NUM_THREADS must be a positive integer; got {env!r}")
    _parsed = (env, value)
    return value


# -- the shared pool ------------------------------------------------------------------
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _shared_executor() -> ThreadPoolExecutor:
    global _executor
    executor = _executor
    if executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(_MAX_WORKERS, thread_name_prefix="gpuconv")
            executor = _executor
    return executor


def run_tasks(fn: Callable[[Any], None], tasks: Sequence[Any], threads: int) -> None:
    """Call ``fn(task)`` for every task, on up to ``threads`` threads (the caller's included).

    Returns when every task has finished; the first exception of a task is
    re-raised after the others have stopped (no worker is left writing).
    """
    n = len(tasks)
    workers = min(threads, n)
    if workers <= 1:
        for task in tasks:
            fn(task)
        return
    lock = threading.Lock()
    position = [0]
    errors: list[BaseException] = []
    # NumPy's floating-point error state is per thread: the tasks run under the caller's.
    fp_state = np.geterr()

    def drain() -> None:
        with np.errstate(**fp_state):
            _drain()

    def _drain() -> None:
        while True:
            with lock:
                i = position[0]
                if i >= n or errors:
                    return
                position[0] = i + 1
            try:
                fn(tasks[i])
            except BaseException as exc:  # re-raised by the caller
                with lock:
                    errors.append(exc)
                return

    helpers: list[Future[None]] = []
    with single_threaded_blas():
        try:
            executor = _shared_executor()
            for _ in range(workers - 1):
                helpers.append(executor.submit(drain))
        except RuntimeError:
            # The interpreter is shutting down and starts no threads: the caller does it all.
            pass
        try:
            drain()
        finally:
            with lock:
                position[0] = n  # after an interrupt in the caller: helpers take no more tasks
            for helper in helpers:
                # A helper that has not started has nothing left to do; a running one
                # still writes into the output: wait for it.
                if not helper.cancel():
                    helper.result()
    if errors:
        raise errors[0]


# -- BLAS threads ---------------------------------------------------------------------
class _BlasLimit:
    """Reference-counted "BLAS on one thread", shared by concurrent calls.

    OpenBLAS (pthreads) keeps one process-wide thread count: the first call
    in limits it, the last call out restores what it was, whichever threads
    those are.  threadpoolctl lets only one thread at a time change
    OpenBLAS's count (the "controlling thread"; others are silently
    ignored), so each change releases control at once: the user's own
    ``threadpool_limits`` in another thread keeps working, and while it
    holds control, its limit wins over this one.  The controller is built
    once (building one scans the loaded libraries: about 0.4 ms); a limit
    and its restore then cost a few microseconds.  Libraries loaded later
    (SciPy's own OpenBLAS, first used after gpuconv's first parallel call)
    are not limited: gpuconv's kernels call NumPy's.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.libs: list[Any] | None = None  # threadpoolctl's BLAS controllers, looked up once
        self.release: Callable[[], None] = lambda: None
        self.saved: list[tuple[Any, int]] = []  # (library, its thread count) to restore

    def _blas(self) -> list[Any]:
        if self.libs is None:
            try:
                import threadpoolctl
            except ImportError:
                self.libs = []
            else:
                controller = threadpoolctl.ThreadpoolController().select(user_api="blas")
                self.libs = list(controller.lib_controllers)
                # threadpoolctl >= 3.7; older versions have no controlling thread.
                openblas = getattr(threadpoolctl, "OpenBLASController", None)
                self.release = getattr(openblas, "clear_controlling_thread", lambda: None)
        return self.libs

    def __enter__(self) -> None:
        with self.lock:
            if self.depth == 0:
                # Only libraries with more than one thread are touched: a pinned BLAS
                # costs one query per call.
                for lib in self._blas():
                    count = lib.get_num_threads()
                    if count is not None and count > 1:
                        lib.set_num_threads(1)
                        self.saved.append((lib, count))
                if self.saved:
                    self.release()
            self.depth += 1

    def __exit__(self, *exc_info: object) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth == 0 and self.saved:
                self._restore()

    def _restore(self) -> None:
        saved, self.saved = self.saved, []
        for lib, count in saved:
            lib.set_num_threads(count)
        self.release()

    def after_fork_in_child(self) -> None:
        # Calls of other parent threads that were inside are not in the child.
        self.lock = threading.Lock()
        self.depth = 0
        try:
            self._restore()
        except Exception:  # a fork handler must not raise; BLAS just stays limited
            self.saved = []


_blas_limit = _BlasLimit()


def single_threaded_blas() -> _BlasLimit:
    """Context manager: BLAS runs on one thread inside (process-wide; nests across threads).

    Without threadpoolctl it does nothing.
    """
    return _blas_limit


def _after_fork_in_child() -> None:
    global _executor, _executor_lock
    # The pool's threads did not survive the fork; a lock another thread held stays held.
    _executor = None
    _executor_lock = threading.Lock()
    _blas_limit.after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
