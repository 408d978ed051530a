"""Small data sets shipped inside the package (no download).

``digits.npz``: the 1,797 handwritten digits of scikit-learn's
``load_digits`` (8x8 images, integer pixels 0..16, labels 0..9), stored as
``uint8`` arrays ``images`` (1797, 8, 8) and ``labels`` (1797,) with
``numpy.savez_compressed``.

Provenance: the test set of the "Optical Recognition of Handwritten Digits"
data set of the UCI Machine Learning Repository (E. Alpaydin and C. Kaynak,
1998; https://archive.ics.uci.edu/dataset/80), as distributed with
scikit-learn 1.9 (``sklearn/datasets/data/digits.csv.gz``, BSD-3-Clause).
The UCI repository publishes the data set under CC BY 4.0: cite it when you
publish results on it.  Generated once with::

    from sklearn.datasets import load_digits
    d = load_digits()
    np.savez_compressed("digits.npz", images=d.images.astype(np.uint8),
                        labels=d.target.astype(np.uint8))
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np

__all__ = ["load_digits", "stratified_split"]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 handwritten digits: ``(images, labels)``.

    Returns
    -------
    images : numpy.ndarray, shape (1797, 8, 8), dtype uint8
        Pixel counts 0..16.
    labels : numpy.ndarray, shape (1797,), dtype int64
        The digit, 0..9.

    Examples
    --------
    >>> from gpuconv.data import load_digits
    >>> images, labels = load_digits()
    >>> images.shape, int(images.max()), labels[:10].tolist()
    ((1797, 8, 8), 16, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """
    with resources.files(__name__).joinpath("digits.npz").open("rb") as f:
        with np.load(f) as data:
            return data["images"], data["labels"].astype(np.int64)


def stratified_split(labels: Any, test_fraction: float = 0.25, *,
                     seed: Any = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a train/test split that keeps each class's share, shuffled with ``seed``.

    Parameters
    ----------
    labels : array_like of int, shape (n,)
    test_fraction : float, optional
        Share of each class held out, in (0, 1).
    seed : int or numpy.random.Generator, keyword-only

    Returns
    -------
    train, test : numpy.ndarray of int
        Disjoint indices covering ``range(n)``.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv.data import stratified_split
    >>> labels = np.array([0] * 8 + [1] * 4)
    >>> train, test = stratified_split(labels, 0.25, seed=0)
    >>> len(train), np.bincount(labels[test]).tolist()
    (9, [2, 1])
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D; got shape {labels.shape}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(test_fraction * members.size))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
