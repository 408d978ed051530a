"""``cupy.linalg`` of the CuPy stand-in: ``numpy.linalg`` under CuPy's rules."""

import numpy as _np

from cupy_standin._namespace import module_getattr as _getattr

LinAlgError = _np.linalg.LinAlgError

__getattr__ = _getattr(__name__, _np.linalg, allowed=frozenset(
    "cholesky cond cross det eig eigh eigvals eigvalsh inv lstsq matmul matrix_power "
    "matrix_rank matrix_transpose norm pinv qr slogdet solve svd tensorinv tensorsolve".split()))
