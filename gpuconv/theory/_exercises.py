"""The diagonal-edge exercise: what the edge kernel and its transpose do to an image
with a diagonal edge and to its transpose."""

from __future__ import annotations

import numpy as np

from ._claim import ClaimResult, _int, _np, _on, _result

__all__ = ["diagonal_edges", "diagonal_edges_claim"]


# -- the diagonal-edge exercises -------------------------------------------------------------
def diagonal_edges(n: int = 6, *, backend: str | None = None) -> dict[str, np.ndarray]:
    """The exercise of section 6.2: an image ``X`` with a diagonal edge, the edge kernel
    ``K = [[1, -1]]``, and what ``K`` and ``K.T`` do to ``X`` and to ``X.T``.

    ``X[i, j] = 1`` on and above the diagonal, 0 below.  None of the outputs
    is the zero matrix (a common wrong answer): a diagonal edge changes value
    along rows *and* columns, so both kernels respond with a diagonal line.
    ``K`` on ``X`` gives -1 just below the diagonal; on ``X.T`` the line is +1
    on the diagonal (transposing ``X`` does change the answer: the sign flips
    and the line moves); ``K.T`` on ``X`` gives +1 on the diagonal; and
    ``corr(X.T, K.T) == corr(X, K).T`` always.

    Parameters
    ----------
    n : int, optional
        Size of the square image, at least 2.
    backend : str, optional
        Backend computing the correlations.

    Returns
    -------
    dict of ndarray
        ``X``, ``K``, ``K_on_X``, ``K_on_XT``, ``KT_on_X``, ``KT_on_XT``
        (valid correlations).

    Raises
    ------
    ValueError
        If ``n`` is not an int of at least 2.
    ValueError
        If ``backend`` is not a registered backend name.
    BackendUnavailableError
        If the backend cannot run here (the message says why).

    See Also
    --------
    diagonal_edges_claim : checks these answers.
    gpuconv.corr2d : the valid correlation each output is.

    Examples
    --------
    >>> from gpuconv.theory import diagonal_edges
    >>> r = diagonal_edges(4)
    >>> r["X"]
    array([[1., 1., 1., 1.],
           [0., 1., 1., 1.],
           [0., 0., 1., 1.],
           [0., 0., 0., 1.]])
    >>> r["K_on_X"]
    array([[ 0.,  0.,  0.],
           [-1.,  0.,  0.],
           [ 0., -1.,  0.],
           [ 0.,  0., -1.]])
    >>> r["K_on_XT"]
    array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.],
           [0., 0., 0.]])
    >>> r["KT_on_X"]
    array([[1., 0., 0., 0.],
           [0., 1., 0., 0.],
           [0., 0., 1., 0.]])
    """
    import gpuconv

    n = _int("n", n, 2)
    X = np.triu(np.ones((n, n)))
    K = np.array([[1.0, -1.0]])
    with _on(backend) as be:
        def corr(a: np.ndarray, k: np.ndarray) -> np.ndarray:
            return _np(be, gpuconv.correlate2d(a, k, "valid", method="direct")) + 0.0
        return {"X": X, "K": K, "K_on_X": corr(X, K), "K_on_XT": corr(X.T, K),
                "KT_on_X": corr(X, K.T), "KT_on_XT": corr(X.T, K.T)}


def diagonal_edges_claim(n: int = 6, *, backend: str | None = None) -> ClaimResult:
    """The diagonal-edge exercise, with the right answers (not "the zero matrix").

    Checks that every output is a diagonal line of ``n - 1`` entries of
    magnitude 1 (not zero), that ``K`` on ``X.T`` differs from ``K`` on ``X``
    (not "no change"), and that ``corr(X.T, K.T) == corr(X, K).T`` exactly.

    Parameters
    ----------
    n : int, optional
        Size of the image.
    backend : str, optional
        Backend computing the correlations.

    Returns
    -------
    ClaimResult

    Raises
    ------
    ValueError
        If ``n`` is not an int of at least 2.
    ValueError
        If ``backend`` is not a registered backend name.
    BackendUnavailableError
        If the backend cannot run here (the message says why).

    See Also
    --------
    diagonal_edges : the arrays themselves.

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.diagonal_edges_claim().passed
    True
    """
    n = _int("n", n, 2)
    r = diagonal_edges(n, backend=backend)
    outs = [r["K_on_X"], r["K_on_XT"], r["KT_on_X"], r["KT_on_XT"]]
    lines = all(int(np.count_nonzero(o)) == n - 1 and set(np.unique(np.abs(o))) == {0.0, 1.0}
                for o in outs)
    changed = r["K_on_X"].shape != r["K_on_XT"].shape or not np.array_equal(r["K_on_X"],
                                                                              r["K_on_XT"])
    err = float(np.abs(r["KT_on_XT"] - r["K_on_X"].T).max())
    return _result("diagonal edges: K and K.T both respond", err, 0.0,
                   f"each output is a diagonal line of {n - 1} entries (not the zero matrix); "
                   "transposing X flips the sign and moves the line (not 'no change'); "
                   "corr(X.T, K.T) = corr(X, K).T", extra=lines and changed)


