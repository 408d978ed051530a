"""The backend registry: set_backend as call and context manager, isolation across
threads and asyncio tasks, third-party backends, 'auto' dispatch and mixed
libraries, and that ``import gpuconv`` imports no optional library."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import subprocess
import sys
import threading
import types

import numpy as np
import pytest
import scipy.signal

import gpuconv
from gpuconv import _dispatch, backend as registry
from gpuconv.backends import ArrayBackend
from gpuconv.backends.numpy import NumpyBackend


@contextlib.contextmanager
def registered(name, factory):
    """Register a backend for one test and remove it afterwards."""
    gpuconv.register_backend(name, factory)
    try:
        yield
    finally:
        registry._unregister_backend(name)


def in_fresh_context(fn, *args):
    return contextvars.copy_context().run(fn, *args)


class CountingBackend(ArrayBackend):
    """A third-party backend: NumPy arithmetic through the generic kernels."""

    name = "counting"
    xp = np

    def __init__(self):
        self.calls = []

    def correlate_planes(self, *args):
        self.calls.append("correlate_planes")
        return super().correlate_planes(*args)

    def conv2d(self, *args):
        self.calls.append("conv2d")
        return super().conv2d(*args)


# -- set_backend / get_backend ----------------------------------------------

def test_default_is_auto():
    assert in_fresh_context(gpuconv.get_backend) == "auto"


def test_set_backend_as_a_plain_call_takes_effect_at_once():
    def body():
        result = gpuconv.set_backend("numpy")
        assert gpuconv.get_backend() == "numpy"
        assert "numpy" in repr(result)
        gpuconv.set_backend("auto")
        return gpuconv.get_backend()

    assert in_fresh_context(body) == "auto"
    assert gpuconv.get_backend() == "auto"


def test_context_manager_restores_previous_and_nests():
    with registered("numpy-b", NumpyBackend):
        assert gpuconv.get_backend() == "auto"
        with gpuconv.set_backend("numpy") as name:
            assert name == "numpy"
            with gpuconv.set_backend("numpy-b"):
                assert gpuconv.get_backend() == "numpy-b"
            assert gpuconv.get_backend() == "numpy"
        assert gpuconv.get_backend() == "auto"


def test_context_manager_restores_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with gpuconv.set_backend("numpy"):
            1 / 0
    assert gpuconv.get_backend() == "auto"


def test_failed_set_backend_keeps_the_current_choice():
    with gpuconv.set_backend("numpy"):
        with pytest.raises(ValueError, match="unknown backend 'nope'"):
            gpuconv.set_backend("nope")
        assert gpuconv.get_backend() == "numpy"


def test_threads_do_not_see_each_others_choice():
    barrier = threading.Barrier(3)
    seen = {}
    errors = []

    def worker(name):
        try:
            with gpuconv.set_backend(name):
                barrier.wait(timeout=10)   # all threads have set their choice
                seen[name] = gpuconv.get_backend()
                x = np.arange(12.0).reshape(3, 4)
                seen[name + "-result"] = gpuconv.correlate2d(x, np.ones((2, 2)), "valid")
                barrier.wait(timeout=10)
        except Exception as exc:  # surfaced in the main thread below
            errors.append(exc)

    with registered("numpy-b", NumpyBackend):
        with gpuconv.set_backend("numpy"):
            threads = [threading.Thread(target=worker, args=(n,)) for n in ("numpy-b", "auto")]
            for t in threads:
                t.start()
            barrier.wait(timeout=10)
            main_saw = gpuconv.get_backend()
            barrier.wait(timeout=10)
            for t in threads:
                t.join(timeout=10)
    assert not errors, errors
    assert seen["numpy-b"] == "numpy-b"
    assert seen["auto"] == "auto"
    assert main_saw == "numpy"
    np.testing.assert_array_equal(seen["numpy-b-result"], seen["auto-result"])


def test_asyncio_tasks_do_not_see_each_others_choice():
    async def task(name, log):
        with gpuconv.set_backend(name):
            for _ in range(3):
                await asyncio.sleep(0)   # let the other task run and set its choice
                log.append((name, gpuconv.get_backend()))
        return gpuconv.get_backend()

    async def main():
        log = []
        with gpuconv.set_backend("numpy"):
            after = await asyncio.gather(task("numpy-b", log), task("auto", log))
            return log, after, gpuconv.get_backend()

    with registered("numpy-b", NumpyBackend):
        log, after, outer = asyncio.run(main())
    assert len(log) == 6
    assert all(name == seen for name, seen in log)
    # Each task inherited the parent's choice and restored it on exit.
    assert after == ["numpy", "numpy"]
    assert outer == "numpy"
    assert gpuconv.get_backend() == "auto"


def test_unknown_backend_lists_the_allowed_names():
    with registered("numpy-b", NumpyBackend):
        with pytest.raises(ValueError, match=r"unknown backend 'torch'.*'auto', 'numpy'.*"
                                             r"'numpy-b'"):
            gpuconv.set_backend("torch")


# -- third-party backends and available_backends -----------------------------

def test_register_backend_is_used_via_set_backend(rng):
    instances = []

    def factory():
        instances.append(CountingBackend())
        return instances[-1]

    x = rng.standard_normal((2, 7, 6))
    k = rng.standard_normal((3, 2))
    w = rng.standard_normal((4, 2, 3, 3))
    with registered("counting", factory):
        assert instances == []   # registering does not instantiate
        with gpuconv.set_backend("counting"):
            got = gpuconv.correlate2d(x, k, "same", "wrap", method="direct")
            y = gpuconv.conv2d(x[None], w, padding=1, method="gemm")
        assert len(instances) == 1 and instances[0].calls == ["correlate_planes", "conv2d"]
        assert gpuconv.available_backends()["counting"] == gpuconv.BackendStatus(
            "counting", True, "ok")
        with gpuconv.set_backend("counting"):
            gpuconv.correlate2d(x, k)
        assert len(instances) == 1   # the instance is cached
    expected = np.stack([scipy.signal.correlate2d(p, k, "same", "wrap") for p in x])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, gpuconv.conv2d(x[None], w, padding=1), rtol=1e-12)


def test_register_backend_refuses_duplicates_unless_replace():
    with registered("dup", NumpyBackend):
        with pytest.raises(ValueError, match="already registered"):
            gpuconv.register_backend("dup", CountingBackend)
        gpuconv.register_backend("dup", CountingBackend, replace=True)
        with gpuconv.set_backend("dup"):
            pass
        assert isinstance(registry.get_backend_object("dup"), CountingBackend)


def test_available_backends_reports_why_a_backend_cannot_run():
    def factory():
        raise gpuconv.BackendUnavailableError("frobnicator is not installed")

    with registered("frob", factory):
        status = gpuconv.available_backends()["frob"]
        assert status == gpuconv.BackendStatus("frob", False, "frobnicator is not installed")
        assert not status
        with gpuconv.set_backend("numpy"):
            with pytest.raises(gpuconv.BackendUnavailableError,
                               match=r"backend 'frob' is not usable: frobnicator is not "
                                     r"installed"):
                gpuconv.set_backend("frob")
            assert gpuconv.get_backend() == "numpy"


def test_every_registered_backend_has_a_status_with_a_reason():
    statuses = gpuconv.available_backends()
    assert statuses["numpy"] == gpuconv.BackendStatus("numpy", True, "ok")
    for name, status in statuses.items():
        assert status.name == name
        assert isinstance(status.usable, bool)
        assert isinstance(status.reason, str) and status.reason
        assert (status.reason == "ok") == status.usable


# -- 'auto' dispatch, mixed libraries, moving inputs --------------------------

class FakeArray(np.ndarray):
    """An array of a pretend third-party library (a NumPy subclass underneath)."""


@contextlib.contextmanager
def fake_array_library(monkeypatch):
    """Make ``fakearray`` an array library gpuconv recognises; yield a constructor."""
    module = types.ModuleType("fakearray")
    module.ndarray = FakeArray
    monkeypatch.setitem(sys.modules, "fakearray", module)
    # Claimed as a backend registration claims it (FakeArray, also an ndarray, is more
    # derived than NumPy's claim, so it wins).
    _dispatch.claim_array_types("fakearray", [("fakearray", "ndarray")])
    try:
        yield lambda a: np.asarray(a).view(FakeArray)
    finally:
        _dispatch.release_array_types("fakearray")


class FakeBackend(ArrayBackend):
    """Computes with NumPy, returns FakeArray: a backend for the fake library."""

    name = "fakearray"
    xp = np

    def asarray(self, x):
        return np.asarray(x).view(FakeArray)

    def correlate_planes(self, *args):
        return super().correlate_planes(*args).view(FakeArray)

    def conv2d(self, *args):
        return super().conv2d(*args).view(FakeArray)


def test_common_array_library(monkeypatch):
    assert _dispatch.common_array_library(a=np.ones(2), b=[1.0], c=3.0, d=None) == "numpy"
    assert _dispatch.common_array_library(a=[1.0], b=2) is None
    with fake_array_library(monkeypatch) as make:
        assert _dispatch.array_library(make([1.0])) == "fakearray"
        assert _dispatch.common_array_library(a=make([1.0]), b=make([2.0])) == "fakearray"
        with pytest.raises(TypeError, match=r"a is a numpy array, b is a fakearray array"):
            _dispatch.common_array_library(a=np.ones(2), b=make([2.0]))


def test_auto_with_mixed_libraries_names_both(monkeypatch):
    with fake_array_library(monkeypatch) as make:
        with pytest.raises(TypeError, match=r"in1 is a numpy array, in2 is a fakearray array"):
            gpuconv.correlate2d(np.ones((4, 4)), make(np.ones((2, 2))))
        with pytest.raises(TypeError, match=r"weight is a fakearray array.*set_backend"):
            gpuconv.conv2d(np.ones((1, 2, 5, 5)), make(np.ones((3, 2, 2, 2))))
        with pytest.raises(TypeError, match=r"bias is a fakearray array"):
            gpuconv.conv2d(np.ones((1, 2, 5, 5)), np.ones((3, 2, 2, 2)), make(np.ones(3)))


def test_auto_dispatches_to_the_inputs_library(monkeypatch, rng):
    x = rng.standard_normal((6, 5))
    k = rng.standard_normal((2, 3))
    with fake_array_library(monkeypatch) as make, registered("fakearray", FakeBackend):
        got = gpuconv.correlate2d(make(x), make(k), "same", "symm")
        assert type(got) is FakeArray
        np.testing.assert_allclose(got, scipy.signal.correlate2d(x, k, "same", "symm"))
        # Python lists follow the one array argument.
        assert type(gpuconv.correlate2d(make(x), k.tolist())) is FakeArray


def test_explicit_backend_moves_foreign_inputs(monkeypatch, rng):
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((4, 3, 2, 2))
    with fake_array_library(monkeypatch) as make, registered("fakearray", FakeBackend):
        # NumPy inputs, fake backend chosen: computed there, its array returned.
        with gpuconv.set_backend("fakearray"):
            got = gpuconv.conv2d(x, w, padding=1)
        assert type(got) is FakeArray
        # Mixed inputs are fine once a backend is chosen: both move to it.
        with gpuconv.set_backend("numpy"):
            back = gpuconv.conv2d(make(x), w, padding=1)
            mixed = gpuconv.correlate2d(x[0, 0], make(w[0, 0]))
        assert type(back) is np.ndarray and type(mixed) is np.ndarray
    np.testing.assert_allclose(np.asarray(got), back, rtol=1e-12)
    np.testing.assert_allclose(mixed, scipy.signal.correlate2d(x[0, 0], w[0, 0]), rtol=1e-12)


def test_auto_with_no_arrays_uses_numpy():
    got = gpuconv.correlate2d([[1.0, 2.0], [3.0, 4.0]], [[1.0]])
    assert type(got) is np.ndarray


# -- import hygiene -------------------------------------------------------------

OPTIONAL = ["cupy", "cupyx", "dask", "distributed", "matplotlib", "torch", "tqdm", "sklearn",
            "numba", "pandas"]


def test_import_gpuconv_imports_no_optional_library():
    code = f"""
import json, sys
import numpy as np
import gpuconv
gpuconv.correlate2d(np.ones((5, 5)), np.ones((2, 2)))
gpuconv.convolve2d(np.ones((5, 5)), np.ones((2, 2)), "same", "symm")
gpuconv.conv2d(np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3)), padding="same")
gpuconv.conv_transpose2d(np.ones((1, 3, 5, 5)), np.ones((3, 2, 3, 3)), stride=2)
gpuconv.corr2d(np.ones((5, 5)), np.ones((1, 2)))
gpuconv.output_shape(8, 3)
# Public submodules load on first use (PEP 562); none is imported up front.
assert not [m for m in ("gpuconv.nn", "gpuconv.theory", "gpuconv.examples", "gpuconv.bench")
            if m in sys.modules]
gpuconv.nn.Conv2D, gpuconv.theory.check, gpuconv.reference, gpuconv.examples, gpuconv.bench
print(json.dumps(sorted(m for m in {OPTIONAL!r} if m in sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


class StrictBackend(ArrayBackend):
    """Like CuPy, refuses to convert non-numeric arrays with its own error."""

    name = "strict"
    xp = np

    def asarray(self, x):
        a = np.asarray(x)
        if a.dtype.kind not in "biufc":
            raise ValueError("Unsupported dtype object")
        return a


def test_non_numeric_input_gets_gpuconv_message_on_every_backend():
    # Regression: the dtype was checked only after the backend converted the
    # input, so a backend that refuses object arrays gave a vaguer message.
    with registered("strict", StrictBackend), gpuconv.set_backend("strict"):
        with pytest.raises(TypeError, match=r"in1 has dtype object.*allowed: float16"):
            gpuconv.correlate2d(np.ones((3, 3), dtype=object), np.ones((2, 2)))
        with pytest.raises(TypeError, match=r"weight has dtype <U1.*allowed: float16"):
            gpuconv.conv2d(np.ones((1, 1, 3, 3)), np.full((1, 1, 2, 2), "a"))
        got = gpuconv.correlate2d([[1, 2], [3, 4]], [[1]])
        np.testing.assert_array_equal(got, [[1.0, 2.0], [3.0, 4.0]])


def test_an_explicit_backend_converts_other_libraries_and_returns_its_arrays(rng):
    # Under "auto" a torch tensor comes back a tensor (tests/test_interop.py).
    torch = pytest.importorskip("torch", reason="torch is not installed: no foreign tensor "
                                                "to convert")
    x = rng.standard_normal((5, 6))
    k = rng.standard_normal((2, 3))
    with gpuconv.set_backend("numpy"):
        got = gpuconv.correlate2d(torch.from_numpy(x), torch.from_numpy(k), "same")
    assert type(got) is np.ndarray
    np.testing.assert_allclose(got, scipy.signal.correlate2d(x, k, "same"), rtol=1e-12)
