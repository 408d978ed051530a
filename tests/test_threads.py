"""The NumPy backend's thread pool: forks, thread-count changes, errors, BLAS's threads."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import numpy as np
import pytest
import scipy.signal

import gpuconv
from gpuconv import reference
from gpuconv.backends import _threads
from gpuconv.backends import numpy as npb

# Larger than one block of planes_direct (2**18 elements) and over its threading
# threshold (2**22 multiply-adds): the pool runs with the default settings.
_POOLED_SHAPE, _POOLED_KERNEL = (700, 513), (3, 5)


def _pooled_call_matches_scipy(seed: int) -> None:
    """Runs in a child process: a call that uses the pool, checked against SciPy."""
    os.environ["GPUCONV_NUM_THREADS"] = "3"
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(_POOLED_SHAPE)
    k = rng.standard_normal(_POOLED_KERNEL)
    got = gpuconv.correlate2d(x, k, "valid", method="direct")
    np.testing.assert_allclose(got, scipy.signal.correlate2d(x, k, "valid"), rtol=1e-12,
                               atol=1e-12)


def _start_methods():
    available = multiprocessing.get_all_start_methods()
    params = []
    for method in ("fork", "spawn", "forkserver"):
        # A spawned child imports everything anew: seconds.
        marks = [] if method == "fork" else [pytest.mark.slow]
        if method not in available:
            marks.append(pytest.mark.skip(reason=f"no {method!r} start method here"))
        params.append(pytest.param(method, marks=marks))
    return params


# Python >= 3.12 warns that forking a process with threads may deadlock the
# child: what these tests check gpuconv's own threads do not cause.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("method", _start_methods())
def test_child_process_after_pooled_call_finishes(method, monkeypatch):
    monkeypatch.setenv("GPUCONV_NUM_THREADS", "3")
    # The parent uses its pool first, with every thread busy for a while: a forked
    # child inherits the pool object, which believes it has these threads.
    _threads.run_tasks(lambda i: time.sleep(0.005), list(range(24)), 3)
    _pooled_call_matches_scipy(0)
    assert _threads._executor is not None
    ctx = multiprocessing.get_context(method)
    child = ctx.Process(target=_pooled_call_matches_scipy, args=(1,))
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail(f"a {method!r} child hung in a pooled call")
    assert child.exitcode == 0
    # The parent's pool still works after the fork.
    _pooled_call_matches_scipy(2)


# Python >= 3.12 warns that forking a process with threads may deadlock the
# child: what these tests check gpuconv's own threads do not cause.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_child_of_a_pool_with_busy_threads_finishes(monkeypatch):
    """fork while other threads of the parent are inside pooled calls."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no 'fork' start method here")
    monkeypatch.setenv("GPUCONV_NUM_THREADS", "3")
    stop = threading.Event()
    failures = []

    def busy():
        try:
            while not stop.is_set():
                _pooled_call_matches_scipy(3)
        except BaseException as exc:  # reported below
            failures.append(exc)

    workers = [threading.Thread(target=busy) for _ in range(2)]
    for t in workers:
        t.start()
    try:
        time.sleep(0.05)
        child = multiprocessing.get_context("fork").Process(target=_pooled_call_matches_scipy,
                                                            args=(4,))
        child.start()
        child.join(timeout=120)
        alive = child.is_alive()
        if alive:
            child.kill()
            child.join()
    finally:
        stop.set()
        for t in workers:
            t.join()
    assert not alive, "a forked child hung in a pooled call"
    assert child.exitcode == 0 and not failures, failures


@pytest.fixture
def small_pooled_calls(monkeypatch):
    """Blocks of 256 elements and threads for any size: small calls use the pool."""
    monkeypatch.setattr(npb, "_BLOCK_ELEMENTS", 256)
    monkeypatch.setattr(npb, "_THREAD_MIN_MACS", 0)


def test_thread_count_changes_while_other_threads_compute(small_pooled_calls, rng,
                                                          monkeypatch):
    monkeypatch.setenv("GPUCONV_NUM_THREADS", "2")
    x = rng.standard_normal((4, 40, 50))
    k = rng.standard_normal((3, 4))
    expected = np.stack([scipy.signal.correlate2d(p, k, "valid") for p in x])
    stop = threading.Event()
    failures = []
    done = [0]

    def compute():
        try:
            while not stop.is_set():
                got = gpuconv.correlate2d(x, k, "valid", method="direct")
                np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
                done[0] += 1
        except BaseException as exc:  # reported below
            failures.append(exc)

    def change(values):
        try:
            for _ in range(200):
                for v in values:
                    os.environ["GPUCONV_NUM_THREADS"] = v
                    time.sleep(0)
        except BaseException as exc:
            failures.append(exc)

    computers = [threading.Thread(target=compute) for _ in range(3)]
    changers = [threading.Thread(target=change, args=(vs,))
                for vs in (["1", "2", "3", "5"], ["4", "2", "7"])]
    for t in computers + changers:
        t.start()
    for t in changers:
        t.join()
    stop.set()
    for t in computers:
        t.join()
    assert not failures, failures[0]
    assert done[0] >= 3


@pytest.mark.parametrize("value", ["three", "0", "-2", "2.5", "1e3"])
def test_invalid_thread_count_names_the_variable(value, monkeypatch):
    monkeypatch.setenv("GPUCONV_NUM_THREADS", value)
    with pytest.raises(ValueError, match=f"GPUCONV_NUM_THREADS must be a positive integer; "
                                         f"got '{value}'"):
        _threads.num_threads()


def test_thread_count_follows_the_variable_and_reads_affinity_once(monkeypatch):
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no os.sched_getaffinity here")
    calls = []
    real = os.sched_getaffinity

    def counting(pid):
        calls.append(pid)
        return real(pid)

    monkeypatch.setattr(os, "sched_getaffinity", counting)
    monkeypatch.setattr(_threads, "_cores", None)
    monkeypatch.setattr(_threads, "_parsed", None)
    monkeypatch.setenv("GPUCONV_NUM_THREADS", "3")
    assert _threads.num_threads() == 3
    monkeypatch.setenv("GPUCONV_NUM_THREADS", "12")
    assert _threads.num_threads() == 12
    for empty in (None, ""):
        if empty is None:
            monkeypatch.delenv("GPUCONV_NUM_THREADS")
        else:
            monkeypatch.setenv("GPUCONV_NUM_THREADS", empty)
        for _ in range(3):
            assert _threads.num_threads() == min(len(real(0)), 8)
        monkeypatch.setenv("GPUCONV_NUM_THREADS", "2")
        assert _threads.num_threads() == 2
    assert len(calls) == 1


def test_a_failing_task_is_raised_after_every_started_task_finished():
    started, finished = [], []

    def task(i):
        started.append(i)
        if i == 1:
            raise KeyError("task 1 failed")
        time.sleep(0.01)
        finished.append(i)

    with pytest.raises(KeyError, match="task 1 failed"):
        _threads.run_tasks(task, list(range(40)), 4)
    # Nothing still runs once the error is raised, and the rest were not started.
    assert sorted(finished) == sorted(i for i in started if i != 1)
    assert len(started) < 40


def test_run_tasks_runs_every_task_once_on_several_threads():
    seen = []
    names = set()

    def task(i):
        time.sleep(0.002)
        seen.append(i)
        names.add(threading.current_thread().name)

    _threads.run_tasks(task, list(range(30)), 3)
    assert sorted(seen) == list(range(30))
    assert len(names) >= 2  # the caller and at least one pool thread


# -- BLAS's threads ------------------------------------------------------------------
def _blas_thread_counts():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not _blas_thread_counts():
        pytest.skip("threadpoolctl finds no BLAS library in this process")
    # Look the libraries up again: every BLAS loaded by now is limited, and checked.
    monkeypatch.setattr(_threads._blas_limit, "libs", None)
    # Two BLAS threads even on a one-core machine, so that a limit to one shows; set
    # without a context manager so that this thread does not keep control of OpenBLAS.
    limiter = threadpoolctl.threadpool_limits(limits=2, user_api="blas")
    _release_openblas_control(threadpoolctl)
    yield
    limiter.restore_original_limits()
    _release_openblas_control(threadpoolctl)


def _release_openblas_control(threadpoolctl):
    openblas = getattr(threadpoolctl, "OpenBLASController", None)
    if hasattr(openblas, "clear_controlling_thread"):
        openblas.clear_controlling_thread()


def test_blas_runs_on_one_thread_while_the_pool_runs(two_blas_threads):
    inside = []

    def task(i):
        inside.append(_blas_thread_counts())
        time.sleep(0.001)

    assert set(_blas_thread_counts()) == {2}
    _threads.run_tasks(task, list(range(8)), 2)
    assert inside and all(set(counts) == {1} for counts in inside), inside
    assert set(_blas_thread_counts()) == {2}
    # A serial call leaves BLAS alone.
    serial = []
    _threads.run_tasks(lambda i: serial.append(_blas_thread_counts()), [0, 1], 1)
    assert all(set(counts) == {2} for counts in serial)


def test_concurrent_pooled_calls_restore_blas_threads(two_blas_threads):
    """Overlapping calls from several threads: the last one out restores BLAS's count."""
    barrier = threading.Barrier(3)
    inside = []
    failures = []

    def task(i):
        inside.append(_blas_thread_counts())
        time.sleep(0.001 * (i % 3))

    def call(n):
        try:
            barrier.wait()
            for _ in range(8):
                _threads.run_tasks(task, list(range(n)), 2)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=call, args=(n,)) for n in (3, 5, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    assert all(set(counts) == {1} for counts in inside), [c for c in inside if set(c) != {1}]
    assert set(_blas_thread_counts()) == {2}


def test_pooled_calls_in_a_worker_thread_leave_blas_control_to_the_user(two_blas_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    worker = threading.Thread(target=_threads.run_tasks,
                              args=(lambda i: time.sleep(0.001), list(range(6)), 2))
    worker.start()
    worker.join()
    # The worker thread is alive no more, but a kept-alive one must not hold control either:
    keeper = threading.Event()
    ready = threading.Event()

    def pooled_then_wait():
        _threads.run_tasks(lambda i: time.sleep(0.001), list(range(6)), 2)
        ready.set()
        keeper.wait()

    alive = threading.Thread(target=pooled_then_wait)
    alive.start()
    try:
        ready.wait()
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            assert set(_blas_thread_counts()) == {1}
        assert set(_blas_thread_counts()) == {2}
    finally:
        keeper.set()
        alive.join()


@pytest.mark.parametrize("method", ["direct", "gemm"])
def test_conv2d_runs_blas_on_one_thread_and_its_chunks_on_the_pool(method, rng, monkeypatch,
                                                                   two_blas_threads):
    """gpuconv, not BLAS, spreads conv2d over the cores: BLAS never wakes its threads."""
    monkeypatch.setenv("GPUCONV_NUM_THREADS", "3")
    monkeypatch.setattr(npb, "_CONV_TASK_MIN_MACS", 1)
    calls = []
    real_matmul = np.matmul

    def spying_matmul(*args, **kwargs):
        calls.append((threading.current_thread().name, tuple(_blas_thread_counts())))
        return real_matmul(*args, **kwargs)

    monkeypatch.setattr(npb.np, "matmul", spying_matmul)
    x = rng.standard_normal((6, 4, 12, 10))
    w = rng.standard_normal((5, 4, 3, 3))
    with gpuconv.scratch_limit(30000):  # several chunks
        got = gpuconv.conv2d(x, w, padding=1, method=method)
    monkeypatch.undo()
    assert calls and all(counts and set(counts) == {1} for _, counts in calls), calls
    assert len({name for name, _ in calls}) >= 2  # the caller and a pool thread
    assert set(_blas_thread_counts()) == {2}
    expected = reference.conv2d(x, w, padding=(1, 1, 1, 1))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


_SPIN_CHECK = """
import json, time
import numpy as np
import threadpoolctl
import gpuconv

# Two BLAS threads even on a one-core machine; control released for gpuconv's limit.
threadpoolctl.threadpool_limits(limits=2, user_api="blas")
openblas = getattr(threadpoolctl, "OpenBLASController", None)
if hasattr(openblas, "clear_controlling_thread"):
    openblas.clear_controlling_thread()
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 32, 32, 32), dtype=np.float32)
w = rng.standard_normal((32, 32, 3, 3), dtype=np.float32)


def cpu_while_asleep():
    start = time.process_time()
    time.sleep(0.3)
    return time.process_time() - start


cpu = {}
for method in ("gemm", "direct"):
    gpuconv.conv2d(x, w, padding=1, method=method)
    cpu[method] = cpu_while_asleep()
# The control: BLAS's own threads after a plain product of the same process.
a = rng.standard_normal((400, 400))
a @ a
cpu["plain matmul"] = cpu_while_asleep()
print(json.dumps(cpu))
"""


def test_no_blas_thread_spins_after_a_conv2d_call():
    """After gpuconv's conv2d the process is idle: it takes no core from torch or others.

    OpenBLAS's threads spin for a while after each call they serve; gpuconv
    runs BLAS on one thread and its own idle threads sleep.
    """
    import json
    import subprocess
    import sys

    pytest.importorskip("threadpoolctl")
    env = dict(os.environ, GPUCONV_NUM_THREADS="2")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _SPIN_CHECK], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    cpu = json.loads(out.strip().splitlines()[-1])
    if cpu["plain matmul"] < 0.015:
        pytest.skip(f"this BLAS does not spin after a call here ({cpu}): nothing to compare")
    assert cpu["gemm"] < 0.01 and cpu["direct"] < 0.01, cpu
