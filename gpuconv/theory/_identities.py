"""Identities of convolution: commutativity, the convolution theorem, correlation as
flipped convolution, translation equivariance."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._claim import _abs_full_conv, _bool, ClaimResult, _gamma, _int_pair, _np, _on, _result, _rng

__all__ = [
    "commutativity_claim",
    "convolution_theorem_claim",
    "correlation_is_flipped_convolution_claim",
    "translation_equivariance_claim",
]


# -- commutativity ------------------------------------------------------------------
def commutativity_claim(nonnegative: bool = False, *, backend: str | None = None,
                        seed: int = 0) -> ClaimResult:
    """``f * g = g * f`` for the full convolution.

    With ``nonnegative=True`` the inputs are probability mass functions, and
    the probabilistic argument is computed rather than quoted: ``f * g`` is the
    distribution of ``X + Y`` for independent ``X ~ f``, ``Y ~ g``, obtained
    here independently by enumerating every pair of outcomes; since
    ``X + Y = Y + X``, both ``f * g`` and ``g * f`` must equal it.

    Parameters
    ----------
    nonnegative : bool, optional
        Use probability mass functions instead of signed random inputs.
    backend : str, optional
        Backend to compute on (default: the current one).
    seed : int, optional
        Seed of the random inputs.

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
    gpuconv.convolve2d : the convolution both sides compute.
    correlation_is_flipped_convolution_claim : correlation, which does not commute.

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.commutativity_claim().passed
    True
    >>> theory.commutativity_claim(nonnegative=True).passed
    True
    """
    import gpuconv

    nonnegative = _bool("nonnegative", nonnegative)
    rng = _rng(seed)
    f = rng.standard_normal((9, 7))
    g = rng.standard_normal((4, 6))
    if nonnegative:
        f, g = np.abs(f), np.abs(g)
        f, g = f / f.sum(), g / g.sum()
    n = min(f.size, g.size)
    tol = 2 * _gamma(n) * float(_abs_full_conv(f, g).max())
    with _on(backend) as be:
        fg = _np(be, gpuconv.convolve2d(f, g, "full", method="direct"))
        gf = _np(be, gpuconv.convolve2d(g, f, "full", method="direct"))
    err = float(np.abs(fg - gf).max())
    detail = "convolve2d(f, g) vs convolve2d(g, f), full mode, direct method"
    if nonnegative:
        # The law of X + Y by enumeration: every pair (a, b) adds f[a] g[b] at a + b.
        pmf = np.zeros(fg.shape)
        ai, aj = np.indices(f.shape)
        bi, bj = np.indices(g.shape)
        si = (ai.ravel()[:, None] + bi.ravel()[None, :]).ravel()
        sj = (aj.ravel()[:, None] + bj.ravel()[None, :]).ravel()
        np.add.at(pmf, (si, sj), np.outer(f.ravel(), g.ravel()).ravel())
        err = max(err, float(np.abs(fg - pmf).max()), float(np.abs(gf - pmf).max()))
        tol += _gamma(n) * float(pmf.max())
        detail = ("f, g probability mass functions: f*g and g*f both equal the law of "
                  "X + Y = Y + X, enumerated pair by pair")
    claim = "f*g = g*f" + (" (pmfs: law of X+Y)" if nonnegative else "")
    return _result(claim, err, tol, detail)


# -- the convolution theorem -----------------------------------------------------------
def convolution_theorem_claim(*, backend: str | None = None, seed: int = 0,
                              dtype: Any = np.float64) -> ClaimResult:
    """``ifft(fft(f) * fft(g)) = f * g`` at any transform size covering the full output.

    The left side is computed with the backend's FFT module directly; the right
    side with the direct method.

    Parameters
    ----------
    backend : str, optional
        Backend to compute on.
    seed : int, optional
        Seed of the random inputs.
    dtype : dtype, optional
        Working precision of both sides (float32 or float64).

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
    ValueError
        If ``dtype`` is not float32 or float64.

    See Also
    --------
    gpuconv.convolve2d : ``method="fft"`` computes through this theorem.

    Examples
    --------
    >>> from gpuconv import theory
    >>> r = theory.convolution_theorem_claim()
    >>> r.passed, r.max_error < 1e-12
    (True, True)
    """
    import gpuconv
    from .._fft import error_bound

    try:
        parsed = np.dtype(dtype)
    except TypeError:
        parsed = None
    if parsed is None or parsed.kind != "f":
        raise TypeError(f"dtype must be a real floating dtype (float16, float32, float64); "
                        f"got {dtype!r}")
    dtype = parsed
    rng = _rng(seed)
    f = rng.standard_normal((20, 17)).astype(dtype)
    g = rng.standard_normal((6, 5)).astype(dtype)
    s = (f.shape[0] + g.shape[0] - 1, f.shape[1] + g.shape[1] - 1)
    with _on(backend) as be:
        F = be.fft.rfftn(be.asarray(f), s=s)
        G = be.fft.rfftn(be.asarray(g), s=s)
        lhs = _np(be, be.fft.irfftn(F * G, s=s))
        rhs = _np(be, gpuconv.convolve2d(f, g, "full", method="direct"))
    exact = _abs_full_conv(f.astype(np.float64), g.astype(np.float64))
    tol = error_bound(f, g, s, dtype) + _gamma(g.size, dtype) * float(exact.max())
    return _result(f"convolution theorem ({np.dtype(dtype).name}): FFT product = direct "
                   "convolution",
                   np.abs(lhs - rhs).max(), tol,
                   f"irfftn(rfftn(f, s) * rfftn(g, s), s) with s = {s}, vs direct convolve2d")


# -- correlation and convolution --------------------------------------------------------
def correlation_is_flipped_convolution_claim(*, backend: str | None = None,
                                             seed: int = 0) -> ClaimResult:
    """``correlate2d(x, k) = convolve2d(x, conj(k)[::-1, ::-1])`` in every mode.

    Parameters
    ----------
    backend : str, optional
        Backend to compute on.
    seed : int, optional
        Seed of the random (complex) inputs.

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
    gpuconv.correlate2d, gpuconv.convolve2d : the two sides.

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.correlation_is_flipped_convolution_claim().passed
    True
    """
    import gpuconv

    rng = _rng(seed)
    x = rng.standard_normal((11, 13)) + 1j * rng.standard_normal((11, 13))
    k = rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))
    err = tol = 0.0
    with _on(backend) as be:
        for mode in ("full", "valid"):
            a = _np(be, gpuconv.correlate2d(x, k, mode, method="direct"))
            b = _np(be, gpuconv.convolve2d(x, np.conj(k)[::-1, ::-1], mode, method="direct"))
            err = max(err, float(np.abs(a - b).max()))
        tol = 2 * _gamma(k.size) * float(_abs_full_conv(x, k).max())
    return _result("correlation = convolution with the flipped (conjugated) kernel", err, tol,
                   "modes full and valid; 'same' centres even kernels differently, as in SciPy")


# -- translation equivariance ------------------------------------------------------------
def translation_equivariance_claim(boundary: str = "wrap", *, shift: tuple[int, int] = (3, -2),
                                   backend: str | None = None, seed: int = 0) -> ClaimResult:
    """Shifting the input shifts the output: ``corr(T x) = T corr(x)``.

    Exact (tolerance 0) everywhere with ``boundary='wrap'``, where the shift is
    circular; with ``'fill'`` or ``'symm'`` it holds exactly away from the
    border (outputs whose window does not reach the edge), and fails near it.

    Parameters
    ----------
    boundary : {'wrap', 'fill', 'symm'}, optional
        The boundary rule of the ``'same'`` correlation.
    shift : (int, int), keyword-only
        The translation.
    backend : str, optional
        Backend to compute on.
    seed : int, optional
        Seed of the random inputs.

    Returns
    -------
    ClaimResult

    Raises
    ------
    ValueError
        If ``boundary`` is not one of the boundary rules.
    ValueError
        If ``backend`` is not a registered backend name.
    BackendUnavailableError
        If the backend cannot run here (the message says why).
    TypeError
        If ``seed`` is not an int.

    See Also
    --------
    gpuconv.correlate2d : the ``'same'`` correlation whose boundary rule matters here.

    Examples
    --------
    >>> from gpuconv import theory
    >>> r = theory.translation_equivariance_claim("wrap")
    >>> r.passed, r.max_error
    (True, 0.0)
    >>> theory.translation_equivariance_claim("fill").passed
    True
    """
    import gpuconv
    from .._validation import parse_boundary

    dy, dx = _int_pair("shift", shift)
    boundary = parse_boundary(boundary)
    if boundary not in ("wrap", "circular") and (abs(dy) > 6 or abs(dx) > 6):
        raise ValueError(f"shift {tuple(shift)} leaves no output of the 24x20 image away from "
                         f"the border with boundary {boundary!r}; each component must lie in "
                         "[-6, 6] (any shift works with 'wrap')")
    rng = _rng(seed)
    x = rng.standard_normal((24, 20))
    k = rng.standard_normal((5, 3))
    with _on(backend) as be:
        y = _np(be, gpuconv.correlate2d(x, k, "same", boundary, method="direct"))
        y_shifted = _np(be, gpuconv.correlate2d(np.roll(x, (dy, dx), (0, 1)), k, "same",
                                                boundary, method="direct"))
    expected = np.roll(y, (dy, dx), (0, 1))
    if boundary in ("wrap", "circular"):
        region = (slice(None), slice(None))
        where = "everywhere (circular shift)"
    else:
        # Outputs whose window, before and after the shift, stays inside the image.
        mh = k.shape[0] + abs(dy)
        mw = k.shape[1] + abs(dx)
        region = (slice(mh, x.shape[0] - mh), slice(mw, x.shape[1] - mw))
        near = float(np.abs(y_shifted - expected).max())
        where = f"away from the border (near it the difference is {near:.3g})"
    err = float(np.abs(y_shifted[region] - expected[region]).max())
    return _result(f"translation equivariance ({boundary})", err, 0.0,
                   f"shift {shift}, checked {where}")


