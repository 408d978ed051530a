"""Receptive fields of a stack of convolution layers, and their check against the
input gradient."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._claim import ClaimResult, _int_pair, _np, _on, _result, _rng

__all__ = ["receptive_field", "receptive_field_claim"]


# -- receptive fields -------------------------------------------------------------------
Layer = Sequence[Any]


def _layer(layer: Layer, index: int = 0) -> tuple[tuple[int, int], ...]:
    from .._validation import pair

    if not isinstance(layer, (tuple, list)) or not 1 <= len(layer) <= 4:
        raise ValueError(f"layers[{index}] must be a tuple (kernel[, stride[, padding[, "
                         f"dilation]]]) of 1 to 4 entries; got {layer!r}")
    k, s, p, d = (tuple(layer) + (1, 0, 1)[len(layer) - 1:])[:4]
    return (pair("kernel", k, minimum=1), pair("stride", s, minimum=1),
            pair("padding", p, minimum=0), pair("dilation", d, minimum=1))


def receptive_field(layers: Sequence[Layer]) -> dict[str, tuple[int, int]]:
    """Receptive field of one output of a stack of convolution layers.

    Output ``(i, j)`` of the last layer depends on input rows
    ``start[0] + i * jump[0]`` to ``start[0] + i * jump[0] + size[0] - 1``
    (and likewise columns), clipped to the image; padding makes ``start``
    negative.  Layer by layer, with ``j`` the product of the earlier strides:
    ``size += (k - 1) * d * j``, ``start -= p * j``, ``j *= s``.

    Parameters
    ----------
    layers : sequence of (kernel, stride, padding, dilation)
        One tuple per layer, first layer first; trailing entries may be
        omitted (stride 1, padding 0, dilation 1).  Each entry is an int or a
        pair.

    Returns
    -------
    dict
        ``{"size": (h, w), "jump": (h, w), "start": (h, w)}``.

    Raises
    ------
    TypeError
        If a layer's entry is not an int or a pair of ints.
    ValueError
        If a kernel size, stride or dilation is below 1 or a padding below 0.

    See Also
    --------
    receptive_field_claim : checks the formula against backpropagated gradients.
    gpuconv.output_shape : the output size of one layer.

    Examples
    --------
    >>> from gpuconv.theory import receptive_field
    >>> receptive_field([(3,), (3,)])["size"]
    (5, 5)
    >>> receptive_field([(7, 2, 3), (3, 2, 1), (3, 1, 1, 2)])
    {'size': (27, 27), 'jump': (4, 4), 'start': (-9, -9)}
    """
    if not isinstance(layers, (tuple, list)):
        raise TypeError(f"layers must be a sequence of (kernel, stride, padding, dilation) "
                        f"tuples; got {layers!r}")
    size, jump, start = [1, 1], [1, 1], [0, 0]
    for index, layer in enumerate(layers):
        k, s, p, d = _layer(layer, index)
        for a in range(2):
            size[a] += (k[a] - 1) * d[a] * jump[a]
            start[a] -= p[a] * jump[a]
            jump[a] *= s[a]
    return {"size": tuple(size), "jump": tuple(jump), "start": tuple(start)}


def receptive_field_claim(layers: Sequence[Layer] = ((3, 1, 1), (3, 2, 0, 2), (5, 2, 2)),
                          input_shape: tuple[int, int] = (40, 37), *,
                          backend: str | None = None, seed: int = 0) -> ClaimResult:
    """:func:`receptive_field` agrees with the gradient of one output w.r.t. the input.

    The gradient is backpropagated from a one-hot output with
    :func:`gpuconv.conv_transpose2d` (the adjoint of each layer) through
    positive weights, so no cancellation hides a dependence; the bounding box
    of its non-zero pattern is compared with the formula's window, clipped to
    the image.  The error is the number of box edges that differ.

    Parameters
    ----------
    layers : sequence of (kernel, stride, padding, dilation), optional
        The stack, first layer first.
    input_shape : (int, int), optional
        Spatial size of the input.
    backend : str, optional
        Backend to compute on.
    seed : int, optional
        Seed of the positive random weights.

    Returns
    -------
    ClaimResult

    Raises
    ------
    TypeError, ValueError
        If a layer is invalid (see :func:`receptive_field`).
    ValueError
        If the layers do not fit in ``input_shape``.
    ValueError
        If ``backend`` is not a registered backend name.
    BackendUnavailableError
        If the backend cannot run here (the message says why).

    See Also
    --------
    receptive_field : the formula.
    gpuconv.conv_transpose2d : the adjoint that carries the gradient back.

    Examples
    --------
    >>> from gpuconv import theory
    >>> theory.receptive_field_claim().passed
    True
    """
    import gpuconv

    rf = receptive_field(layers)   # checks layers
    rng = _rng(seed)
    parsed = [_layer(layer) for layer in layers]
    shapes = [_int_pair("input_shape", input_shape, minimum=1)]
    for k, s, p, d in parsed:
        h, w = shapes[-1]
        shapes.append(((h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1,
                       (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1))
    oh, ow = shapes[-1]
    if oh < 1 or ow < 1:
        raise ValueError(f"the layers do not fit input_shape {input_shape}: sizes {shapes}")
    i, j = oh // 2, ow // 2
    weights = [rng.uniform(0.5, 1.5, (1, 1) + k) for k, _, _, _ in parsed]
    with _on(backend) as be:
        g = np.zeros((1, 1, oh, ow))
        g[0, 0, i, j] = 1.0
        for (k, s, p, d), w, shape_in in zip(parsed[::-1], weights[::-1], shapes[-2::-1]):
            full = [(g.shape[2 + a] - 1) * s[a] - 2 * p[a] + d[a] * (k[a] - 1) + 1
                    for a in range(2)]
            op = (shape_in[0] - full[0], shape_in[1] - full[1])
            g = _np(be, gpuconv.conv_transpose2d(g, w, stride=s, padding=p, output_padding=op,
                                                 dilation=d, method="direct"))
    nz = np.argwhere(g[0, 0] != 0)
    observed = (*nz.min(axis=0), *nz.max(axis=0))
    lo = [rf["start"][a] + (i, j)[a] * rf["jump"][a] for a in range(2)]
    hi = [lo[a] + rf["size"][a] - 1 for a in range(2)]
    H, W = input_shape
    predicted = (max(lo[0], 0), max(lo[1], 0), min(hi[0], H - 1), min(hi[1], W - 1))
    err = sum(int(a != b) for a, b in zip(observed, predicted))
    return _result("receptive field = support of the input gradient", err, 0,
                   f"output ({i}, {j}) of {len(layers)} layers: rows/cols "
                   f"{predicted[0]}..{predicted[2]} x {predicted[1]}..{predicted[3]} predicted, "
                   f"{observed[0]}..{observed[2]} x {observed[1]}..{observed[3]} observed; "
                   f"size {rf['size']}")


