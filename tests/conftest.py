"""Shared fixtures: the backends and dtypes every op is tested over.

CuPy in the test suite
----------------------
Tests parametrised over the ``backend`` fixture run on ``"numpy"`` and
``"cupy"``; tests marked ``gpu`` run on ``"cupy"`` only.  Where CuPy cannot
run, ``"cupy"`` is a strict NumPy-backed stand-in (``tests/cupy_standin``):
its arrays are a distinct type with CuPy's conversion rules (implicit
conversion to NumPy raises, NumPy operands are refused, results are device
arrays), ``cupy.cuda`` describes an NVIDIA H200, and gpuconv's CUDA kernels
run in the host emulator.  So:

* ``python -m pytest`` -- the real CuPy where it is usable (a GPU machine),
  the stand-in everywhere else (CI, laptops): CuPy paths always run;
* ``python -m pytest --cupy-standin`` -- the stand-in even where a GPU is
  usable (to check the stand-in itself, or to run fast without one);
* ``python -m pytest --no-cupy-standin`` -- never the stand-in: without a
  usable CuPy the CuPy tests skip, naming why (as they do where there is no
  host C++ compiler to build the emulator).

The stand-in is installed into :data:`sys.modules` at the start of the
session and removed at its end; the session header says which CuPy runs.
Tests that need the real CuPy's behaviour (its own error message for a
missing device, say) use ``cupy_standin.suspended()``.  Cases too heavy for
the emulator carry ``@pytest.mark.heavy_on_standin(reason)`` and are skipped
on the stand-in with that reason.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

import cupy_standin
import gpuconv
import kernel_emulator
from gpuconv._dispatch import array_library
from gpuconv.backend import get_backend_object

# The stand-in's own files are not tests (and its package shadows CuPy's name).
collect_ignore = ["cupy_standin"]

# The CuPy cases are marked "gpu": `pytest -m gpu` selects what only a GPU can show
# (the GPU check runs that selection).
BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)]

# Relative tolerances per working dtype, for sums of up to a few thousand
# products of O(1) numbers compared with a float64 (or better) oracle.
RTOL = {
    np.dtype(np.float16): 1e-2,
    np.dtype(np.float32): 2e-5,
    np.dtype(np.float64): 1e-12,
    np.dtype(np.complex64): 2e-5,
    np.dtype(np.complex128): 1e-12,
}

# Which CuPy this session runs on, for the header and for skip reasons.
CUPY_IN_USE = "not decided"


def pytest_addoption(parser):
    group = parser.getgroup("gpuconv")
    group.addoption("--cupy-standin", action="store_true", default=False,
                    help="run the CuPy tests on the NumPy-backed CuPy stand-in even where a "
                         "CUDA device is usable (without one it is the default)")
    group.addoption("--no-cupy-standin", action="store_true", default=False,
                    help="never use the CuPy stand-in: without a usable CuPy the CuPy tests "
                         "skip")


def pytest_configure(config):
    global CUPY_IN_USE
    config.addinivalue_line(
        "markers", "heavy_on_standin(reason): skipped where it would run on the CuPy "
                   "stand-in (too long for the kernel emulator); runs on a real GPU and on "
                   "the numpy backend")
    config.addinivalue_line(
        "markers", "slow_on_standin(reason): counts as slow where it runs on the CuPy "
                   "stand-in (tens of seconds of emulated kernels): CI's full run has it, "
                   "'-m \"not slow\"' leaves it out; on a real GPU and on numpy it is quick")
    forced = config.getoption("--cupy-standin")
    never = config.getoption("--no-cupy-standin")
    if forced and never:
        raise pytest.UsageError("--cupy-standin and --no-cupy-standin contradict each other")
    no_compiler = ("no host C++ compiler (g++ or $CXX) for the stand-in's kernel emulator"
                   if kernel_emulator.compiler() is None else None)
    if forced:
        if no_compiler:
            raise pytest.UsageError(f"--cupy-standin: {no_compiler}")
        cupy_standin.install()
        CUPY_IN_USE = "the NumPy-backed stand-in (--cupy-standin)"
        return
    reason = backend_skip_reason("cupy")
    if reason is None:
        CUPY_IN_USE = "the real CuPy"
    elif never or no_compiler:
        CUPY_IN_USE = f"none ({'--no-cupy-standin' if never else no_compiler}; {reason})"
    else:
        cupy_standin.install()
        CUPY_IN_USE = f"the NumPy-backed stand-in ({reason})"


def pytest_unconfigure(config):
    cupy_standin.uninstall()


def pytest_report_header(config):
    return f"cupy: {CUPY_IN_USE}"


def _on_numpy(item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("backend") == "numpy"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # Before '-m' deselects: a test that is slow only on the stand-in becomes 'slow' there.
    if not cupy_standin.installed():
        return
    for item in items:
        if item.get_closest_marker("slow_on_standin") is not None and not _on_numpy(item):
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item):
    marker = item.get_closest_marker("heavy_on_standin")
    if marker is not None and cupy_standin.installed() and not _on_numpy(item):
        reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "")
        pytest.skip(f"too heavy for the CuPy stand-in's kernel emulator: {reason}")


def backend_skip_reason(name: str) -> str | None:
    status = gpuconv.available_backends().get(name)
    if status is None:
        return f"backend {name!r} is not registered"
    if not status.usable:
        return f"backend {name!r} is not usable here: {status.reason}"
    return None


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend in turn, set for the test; skipped (with the reason) where unusable."""
    reason = backend_skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    with gpuconv.set_backend(request.param):
        yield get_backend_object(request.param)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: fresh inputs per test, reproducible."""
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def random_array(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        a = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    elif dtype.kind in "iu":
        a = rng.integers(-50, 50, size=shape)
    elif dtype.kind == "b":
        a = rng.integers(0, 2, size=shape)
    else:
        a = rng.standard_normal(shape)
    return a.astype(dtype)


def namespace_of(a: Any) -> Any:
    """The array module ``a`` belongs to (NumPy for NumPy arrays, scalars and lists)."""
    library = array_library(a)
    return np if library in (None, "numpy") else sys.modules[library]


def to_host(a: Any) -> np.ndarray:
    """``a`` as a NumPy array, through the explicit copy of its library."""
    xp = namespace_of(a)
    return np.asarray(a) if xp is np else xp.asnumpy(a)


def check_array(actual: Any, xp: Any, dtype: Any, shape: tuple[int, ...]) -> None:
    """``actual`` is an array of namespace ``xp`` (on its current device), of ``dtype`` and
    ``shape``: a CuPy run must return CuPy arrays of the dtype a NumPy run returns."""
    array_type = np.ndarray if xp is np else xp.ndarray
    assert isinstance(actual, array_type), (
        f"expected an array of {xp.__name__}, got {type(actual).__module__}."
        f"{type(actual).__qualname__}")
    if xp is not np and hasattr(xp, "cuda"):
        assert actual.device == xp.cuda.Device(), (actual.device, xp.cuda.Device())
    assert actual.dtype == np.dtype(dtype), f"dtype {actual.dtype}, expected {np.dtype(dtype)}"
    assert tuple(actual.shape) == tuple(shape), f"shape {actual.shape}, expected {shape}"


def assert_close(actual: Any, expected: Any, dtype: Any = None, scale: float = 1.0, *,
                 xp: Any = None) -> None:
    """Check that ``actual`` is the array ``expected`` describes, then its values.

    In order: ``actual`` is an array of the namespace ``xp`` (a CuPy run must
    return CuPy arrays, on the current device), its dtype is ``dtype``, its
    shape is that of ``expected`` (:func:`check_array`); then the values agree
    within the relative tolerance of ``dtype`` (:data:`RTOL`), taken relative
    to the largest ``|expected|`` (times ``scale``).  Integer and bool results
    must be exact.

    Parameters
    ----------
    actual : array
        What the code under test returned.
    expected : array_like
        The oracle's answer, usually NumPy in a higher precision.
    dtype : dtype, optional
        The dtype ``actual`` must have; by default that of ``expected``.
    scale : float, optional
        Multiplies the tolerance, for sums longer than :data:`RTOL` assumes.
    xp : module, optional
        The namespace of ``actual`` (``backend.xp``); by default that of
        ``expected``.
    """
    xp = namespace_of(expected) if xp is None else xp
    expected = to_host(expected)
    want_dtype = np.dtype(dtype if dtype is not None else expected.dtype)
    check_array(actual, xp, want_dtype, expected.shape)
    actual = to_host(actual)
    rtol = RTOL.get(want_dtype, 0.0)
    magnitude = max(float(np.max(np.abs(expected), initial=0.0)), 1e-30) * scale
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * magnitude)
