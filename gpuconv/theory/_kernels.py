"""Designed kernels: finite-difference derivatives of any order, the Laplacian, and the
integral image as a convolution."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._claim import ClaimResult, _gamma, _int, _np, _on, _result, _rng

__all__ = [
    "derivative_kernel",
    "derivative_kernel_claim",
    "laplacian_kernel",
    "laplacian_claim",
    "summed_area",
    "summed_area_claim",
]


# -- derivative kernels --------------------------------------------------------------------
def derivative_kernel(order: int, accuracy: int = 1) -> np.ndarray:
    """A centred finite-difference kernel for the ``order``-th derivative (unit spacing).

    The kernel has ``order + accuracy`` taps at centred offsets and is exact
    for polynomials of degree below ``order + accuracy``, so its error is
    ``O(h**accuracy)`` (one order better when the stencil is symmetric).  The
    smallest kernel for a derivative of order ``d`` has ``d + 1`` taps
    (``accuracy=1``): ``d`` taps cannot satisfy the ``d + 1`` moment conditions
    (sum of ``c_j x_j**m / m!`` = 1 for ``m = d``, 0 for ``m < d``).

    It is a cross-correlation kernel of shape ``(1, n)``: use its transpose
    for the vertical derivative.  With an even number of taps the output
    sits halfway between samples.

    Parameters
    ----------
    order : int
        Derivative order, at least 1.
    accuracy : int, optional
        Taps beyond the minimum ``order + 1``, plus one; at least 1.

    Returns
    -------
    ndarray, shape (1, order + accuracy)

    Raises
    ------
    TypeError
        If ``order`` or ``accuracy`` is not an int.
    ValueError
        If ``order`` or ``accuracy`` is below 1.

    See Also
    --------
    derivative_kernel_claim : ``d + 1`` taps suffice for order ``d``, ``d`` do not.
    laplacian_kernel : the second derivative along both axes.

    Examples
    --------
    >>> from gpuconv.theory import derivative_kernel
    >>> derivative_kernel(1)          # the chapter's edge detector, negated
    array([[-1.,  1.]])
    >>> derivative_kernel(2)          # the second-derivative kernel
    array([[ 1., -2.,  1.]])
    >>> derivative_kernel(1, accuracy=2)
    array([[-0.5,  0. ,  0.5]])
    >>> derivative_kernel(3).shape    # minimum size for order d is d + 1
    (1, 4)
    """
    order = _int("order", order, 1)
    accuracy = _int("accuracy", accuracy, 1)
    n = order + accuracy
    if n > _MAX_TAPS:
        # Beyond this the moment equations are too ill-conditioned for float64
        # (their residual grows past 1e-10), and their factorials overflow int64.
        raise ValueError(f"order + accuracy must be <= {_MAX_TAPS} (taps of the kernel); got "
                         f"{order} + {accuracy} = {n}")
    x = np.arange(n) - (n - 1) / 2
    m = np.arange(n)
    A = x[None, :] ** m[:, None] / np.array([math.factorial(int(k)) for k in m])[:, None]
    rhs = (m == order).astype(float)
    c = np.linalg.solve(A, rhs)
    c[np.abs(c) < 1e-12 * np.abs(c).max()] = 0.0
    return c[None, :] + 0.0


_MAX_TAPS = 20


def _best_residual(order: int, taps: int) -> float:
    """Smallest residual of the moment conditions up to ``order`` with ``taps`` taps."""
    x = np.arange(taps) - (taps - 1) / 2
    m = np.arange(order + 1)
    A = x[None, :] ** m[:, None] / np.array([math.factorial(int(k)) for k in m])[:, None]
    rhs = (m == order).astype(float)
    c, *_ = np.linalg.lstsq(A, rhs, rcond=None)
    return float(np.abs(A @ c - rhs).max())


def derivative_kernel_claim(max_order: int = 4, *, backend: str | None = None) -> ClaimResult:
    """Minimal derivative kernels: ``d + 1`` taps suffice for order ``d``, ``d`` taps do not.

    For each order ``d`` up to ``max_order``, the ``(d+1)``-tap kernel,
    correlated with samples of every polynomial of degree ``<= d``, returns
    the exact ``d``-th derivative (the error reported); and no ``d``-tap
    kernel satisfies the moment conditions (its best least-squares residual
    must stay above 0.1).

    Parameters
    ----------
    max_order : int, optional
        Largest order checked.
    backend : str, optional
        Backend computing the correlations.

    Returns
    -------
    ClaimResult

    Raises
    ------
    TypeError
        If ``max_order`` is not an int.
    ValueError
        If ``max_order`` is below 1.
    ValueError
        If ``backend`` is not a registered backend name.
    BackendUnavailableError
        If the backend cannot run here (the message says why).

    See Also
    --------
    derivative_kernel : the kernels checked.

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.derivative_kernel_claim().passed
    True
    """
    import gpuconv

    t = np.arange(-8.0, 9.0)
    # The (max_order + 1)-tap kernel must fit in the len(t) samples.
    max_order = _int("max_order", max_order, 1, len(t) - 1)
    err = 0.0
    scale = 0.0
    gaps = []
    with _on(backend) as be:
        for d in range(1, max_order + 1):
            k = derivative_kernel(d)
            for deg in range(d + 1):
                p = t ** deg / math.factorial(deg)
                y = _np(be, gpuconv.correlate2d(p[None, :], k, "valid", method="direct"))[0]
                # Where the stencil sits, the d-th derivative of t**deg/deg! is 1 if deg == d.
                err = max(err, float(np.abs(y - (1.0 if deg == d else 0.0)).max()))
                scale = max(scale, float(np.abs(k).sum() * np.abs(p).max()))
            gaps.append(_best_residual(d, d))
    tol = 4 * _gamma(max_order + 1) * scale
    minimal = min(gaps) > 0.1
    return _result("derivative of order d needs d+1 taps", err, tol,
                   f"(d+1)-tap kernels exact on polynomials of degree <= d; best d-tap residuals "
                   f"{', '.join(f'{g:.2f}' for g in gaps)} (> 0: impossible)", extra=minimal)


def laplacian_kernel() -> np.ndarray:
    """The 5-point Laplacian: the second-derivative kernel along rows plus along columns.

    Returns
    -------
    ndarray, shape (3, 3)

    See Also
    --------
    derivative_kernel : its rows and columns are ``derivative_kernel(2)``.
    laplacian_claim : the kernel is exact on quadratics.

    Examples
    --------
    >>> from gpuconv.theory import laplacian_kernel
    >>> laplacian_kernel()
    array([[ 0.,  1.,  0.],
           [ 1., -4.,  1.],
           [ 0.,  1.,  0.]])
    """
    d2 = derivative_kernel(2)[0]
    L = np.zeros((3, 3))
    L[1, :] += d2
    L[:, 1] += d2
    return L


def laplacian_claim(*, backend: str | None = None) -> ClaimResult:
    """The Laplacian kernel is exact on quadratics: ``laplace(a x^2 + b xy + c y^2) = 2a + 2c``.

    Parameters
    ----------
    backend : str, optional
        Backend computing the correlation.

    Returns
    -------
    ClaimResult

    Raises
    ------
    ValueError
        If ``backend`` is not a registered backend name.
    BackendUnavailableError
        If the backend cannot run here (the message says why).

    See Also
    --------
    laplacian_kernel : the kernel checked.

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.laplacian_claim().passed
    True
    """
    import gpuconv

    y, x = np.mgrid[-6.0:7.0, -5.0:6.0]
    a, b, c = 0.7, -1.3, 2.1
    f = a * x ** 2 + b * x * y + c * y ** 2 + 3 * x - y + 5
    with _on(backend) as be:
        lap = _np(be, gpuconv.correlate2d(f, laplacian_kernel(), "valid", method="direct"))
    tol = 8 * _gamma(9) * float(np.abs(f).max())
    return _result("Laplacian kernel exact on quadratics", np.abs(lap - (2 * a + 2 * c)).max(),
                   tol, "5-point stencil on a x^2 + b xy + c y^2 + linear terms")


# -- the integral ------------------------------------------------------------------------
def summed_area(X: Any) -> np.ndarray:
    """The integral image: ``S[i, j] = sum of X[:i+1, :j+1]``.

    It is a convolution, but with a kernel of ones as large as the image
    itself: ``S = convolve2d(X, ones(X.shape), 'full')[:H, :W]``.  Its support
    grows with the image, so no fixed small kernel computes it; two cumulative
    sums do, in ``O(HW)``.

    Parameters
    ----------
    X : array_like, shape (H, W)
        The image.

    Returns
    -------
    ndarray, shape (H, W)

    Raises
    ------
    ValueError
        If ``X`` is not 2-D.

    See Also
    --------
    summed_area_claim : the convolution with an image-sized kernel, and with no smaller one.
    gpuconv.convolve2d : the convolution that computes it (slowly).

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv.theory import summed_area
    >>> summed_area(np.ones((3, 4)))
    array([[ 1.,  2.,  3.,  4.],
           [ 2.,  4.,  6.,  8.],
           [ 3.,  6.,  9., 12.]])
    """
    X = np.asarray(X)
    if X.dtype.kind not in "biufc":
        raise TypeError(f"X must hold real or complex numbers; got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D; got shape {X.shape}")
    return np.cumsum(np.cumsum(X, axis=0), axis=1)


def summed_area_claim(*, backend: str | None = None, seed: int = 0) -> ClaimResult:
    """The integral image is a convolution with an image-sized kernel, and with no smaller one.

    Checks ``summed_area(X) == convolve2d(X, ones((H, W)))[:H, :W]``, that a
    kernel one row and one column smaller misses the corner sum, and that the
    first-difference kernels undo the integral (the derivative inverts it).

    Parameters
    ----------
    backend : str, optional
        Backend computing the convolutions.
    seed : int, optional
        Seed of the positive random image.

    Returns
    -------
    ClaimResult

    Raises
    ------
    ValueError
        If ``backend`` is not a registered backend name.
    BackendUnavailableError
        If the backend cannot run here (the message says why).
    TypeError
        If ``seed`` is not an int.

    See Also
    --------
    summed_area : the integral image.

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.summed_area_claim().passed
    True
    """
    import gpuconv

    rng = _rng(seed)
    X = rng.uniform(0.1, 1.0, (9, 12))
    H, W = X.shape
    S = summed_area(X)
    with _on(backend) as be:
        big = _np(be, gpuconv.convolve2d(X, np.ones((H, W)), "full", method="direct"))[:H, :W]
        small = _np(be, gpuconv.convolve2d(X, np.ones((H - 1, W - 1)), "full",
                                           method="direct"))[:H, :W]
        dx = _np(be, gpuconv.convolve2d(S, np.array([[1.0, -1.0]]), "full",
                                        method="direct"))[:H, :W]
        back = _np(be, gpuconv.convolve2d(dx, np.array([[1.0], [-1.0]]), "full",
                                          method="direct"))[:H, :W]
    err = max(float(np.abs(S - big).max()), float(np.abs(back - X).max()))
    tol = 4 * _gamma(H * W) * float(S.max())
    missing = float(S[-1, -1] - small[-1, -1])
    return _result("integral = image-sized kernel of ones", err, tol,
                   f"an (H-1)x(W-1) kernel misses {missing:.3g} of the corner sum; the "
                   "difference kernels [[1, -1]] and its transpose invert the integral",
                   extra=missing > 0)


