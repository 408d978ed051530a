"""Shared fixtures: the backends and dtypes every op is tested over."""

from __future__ import annotations

import numpy as np
import pytest

import gpuconv
from gpuconv.backend import get_backend_object

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


def assert_close(actual, expected, dtype, scale=1.0):
    """Compare with a per-dtype relative tolerance, relative to the expected magnitude."""
    # CuPy arrays refuse implicit conversion; .get() is the explicit copy.
    actual, expected = (a.get() if type(a).__module__.startswith("cupy") else a
                        for a in (actual, expected))
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    rtol = RTOL[np.dtype(dtype)]
    magnitude = max(float(np.max(np.abs(expected), initial=0.0)), 1e-30) * scale
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * magnitude)
