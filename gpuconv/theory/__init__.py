"""The claims of *Dive into Deep Learning*'s convolution chapter, as functions that compute
both sides.

The chapter is chapter 6, "Convolutional Neural Networks", of Zhang, Lipton, Li
and Smola's book (sections 6.1-6.5; the documentation's tutorial walks through
it).

Each ``*_claim`` function builds inputs, computes the two sides of one claim
with gpuconv on the chosen backend (and an independent computation where one
exists) and returns a :class:`ClaimResult`: the largest difference observed,
the tolerance that floating point allows for it, and whether it held.
Tolerances follow from the sizes: a sum of ``n`` products computed in
floating point is off by at most ``gamma_n * sum |terms|`` with
``gamma_n = n * u / (1 - n * u)`` (``u`` the unit roundoff); FFT results obey
the bound of :func:`gpuconv._fft.error_bound`.  Claims that hold exactly
(translation equivariance with a periodic boundary, the diagonal-edge
outputs) have tolerance 0.

Besides the claims, the package provides the objects the chapter talks about:
:func:`conv_matrix` (cross-correlation as a matrix product),
:func:`receptive_field`, :func:`derivative_kernel`, :func:`laplacian_kernel`
and :func:`summed_area`.  :func:`check` runs every claim; ``gpuconv check``
prints the table.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._claim import ClaimResult
from ._exercises import diagonal_edges, diagonal_edges_claim
from ._identities import (
    commutativity_claim,
    convolution_theorem_claim,
    correlation_is_flipped_convolution_claim,
    translation_equivariance_claim,
)
from ._kernels import (
    derivative_kernel,
    derivative_kernel_claim,
    laplacian_claim,
    laplacian_kernel,
    summed_area,
    summed_area_claim,
)
from ._matrix import conv_matrix, conv_matrix_claim, one_by_one_is_dense_layer_claim
from ._receptive_field import receptive_field, receptive_field_claim

__all__ = [
    "ClaimResult",
    "check",
    "commutativity_claim",
    "convolution_theorem_claim",
    "correlation_is_flipped_convolution_claim",
    "translation_equivariance_claim",
    "conv_matrix",
    "conv_matrix_claim",
    "one_by_one_is_dense_layer_claim",
    "receptive_field",
    "receptive_field_claim",
    "derivative_kernel",
    "derivative_kernel_claim",
    "laplacian_kernel",
    "laplacian_claim",
    "summed_area",
    "summed_area_claim",
    "diagonal_edges",
    "diagonal_edges_claim",
]


# -- all of them ----------------------------------------------------------------------------
def _claims() -> list[Callable[..., ClaimResult]]:
    from functools import partial

    return [
        commutativity_claim,
        partial(commutativity_claim, True),
        convolution_theorem_claim,
        partial(convolution_theorem_claim, dtype=np.float32),
        correlation_is_flipped_convolution_claim,
        translation_equivariance_claim,
        partial(translation_equivariance_claim, "fill"),
        conv_matrix_claim,
        partial(conv_matrix_claim, "full"),
        one_by_one_is_dense_layer_claim,
        receptive_field_claim,
        derivative_kernel_claim,
        laplacian_claim,
        summed_area_claim,
        diagonal_edges_claim,
    ]


def check(backend: str | None = None) -> list[ClaimResult]:
    """Check every claim on one backend (``gpuconv check`` prints the result as a table).

    Parameters
    ----------
    backend : str, optional
        Backend to compute on (default: the current one).

    Returns
    -------
    list of ClaimResult

    Raises
    ------
    ValueError
        If ``backend`` is not a registered backend name.
    BackendUnavailableError
        If the backend cannot run here (the message says why).

    See Also
    --------
    ClaimResult : what each check returns.
    commutativity_claim : one of the checks; each ``*_claim`` function runs one.

    Examples
    --------
    >>> from gpuconv import theory
    >>> results = theory.check("numpy")
    >>> all(r.passed for r in results), len(results) >= 10
    (True, True)
    """
    out = []
    for claim in _claims():
        out.append(claim(backend=backend))
    return out
