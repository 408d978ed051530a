"""``cupy.random`` of the CuPy stand-in: NumPy's generator, with CuPy's ``dtype=``."""

import numpy as _np

from cupy_standin._core import ndarray as _ndarray

_rng = _np.random.default_rng(0)


def _device(host):
    return _ndarray._from_host(_np.ascontiguousarray(host))


def seed(seed=None):
    global _rng
    _rng = _np.random.default_rng(seed)


def standard_normal(size=None, dtype=float):
    return _device(_rng.standard_normal(size).astype(dtype))


def randn(*size, dtype=float):
    return standard_normal(size, dtype)


def random(size=None, dtype=float):
    return _device(_rng.random(size).astype(dtype))


def rand(*size, dtype=float):
    return random(size, dtype)


def uniform(low=0.0, high=1.0, size=None, dtype=float):
    return _device(_rng.uniform(low, high, size).astype(dtype))


def normal(loc=0.0, scale=1.0, size=None, dtype=float):
    return _device(_rng.normal(loc, scale, size).astype(dtype))


def randint(low, high=None, size=None, dtype=int):
    return _device(_rng.integers(low, high, size).astype(dtype))
