"""Losses that return their value and their gradient with respect to the prediction.

``loss, grad = cross_entropy(logits, labels)``: ``loss`` is a Python float and
``grad`` an array of the prediction's backend and shape, ready for
``model.backward(grad)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import resolve_backend

__all__ = ["LossResult", "mse_loss", "cross_entropy"]

_REDUCTIONS = ("mean", "sum")


class LossResult(NamedTuple):
    """A loss value and its gradient with respect to the prediction.

    Attributes
    ----------
    value : float
        The loss.
    grad : array
        Its gradient with respect to the prediction, of the prediction's
        backend, shape and dtype.

    See Also
    --------
    mse_loss, cross_entropy : the losses that return it.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv.nn import mse_loss
    >>> result = mse_loss(np.array([3.0]), np.array([1.0]))
    >>> result.value, result.grad
    (4.0, array([4.]))
    >>> value, grad = result            # a named tuple unpacks
    """

    value: float
    grad: Any


def _floating(be: Any, input: Any) -> Any:
    # Integer (or bool) predictions get a float64 loss and gradient: a gradient
    # cast back to int would truncate to zero.
    input = be.asarray(input)
    if np.dtype(input.dtype).kind not in "fc":
        input = input.astype(np.float64)
    return input


def _reduction(reduction: Any) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, _REDUCTIONS))}; "
                         f"got {reduction!r}")
    return reduction


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> LossResult:
    """Squared error, ``sum((input - target)**2)`` or its mean over all elements.

    Parameters
    ----------
    input : array
        The prediction.
    target : array_like
        Same shape as ``input``.
    reduction : {'mean', 'sum'}, optional
        ``'sum'`` is the loss the tutorial learns the edge kernel with.

    Returns
    -------
    LossResult
        ``(value, grad)`` with ``grad = 2 * (input - target)`` (divided by the
        number of elements for ``'mean'``), of ``input``'s floating dtype;
        float64 when ``input`` holds integers.

    Raises
    ------
    ValueError
        If the shapes differ or ``reduction`` is unknown.
    TypeError
        If the inputs come from different array libraries.

    See Also
    --------
    cross_entropy : the loss for classification.
    gpuconv.examples.learn_edge_kernel : trains with it.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv.nn import mse_loss
    >>> value, grad = mse_loss(np.array([1.0, 2.0]), np.array([0.0, 0.0]), reduction="sum")
    >>> value, grad
    (5.0, array([2., 4.]))
    """
    reduction = _reduction(reduction)
    be = resolve_backend(input=input, target=target)
    input = _floating(be, input)
    target = be.asarray(target)
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"input and target must have the same shape; got {tuple(input.shape)} "
                         f"and {tuple(target.shape)}")
    diff = input - target
    value = float((diff * diff).sum())
    grad = 2 * diff
    if reduction == "mean":
        n = max(int(np.prod(diff.shape)), 1)
        value /= n
        grad = grad / n
    return LossResult(value, grad.astype(input.dtype, copy=False))


def cross_entropy(input: Any, target: Any, reduction: str = "mean") -> LossResult:
    """Softmax cross-entropy of logits against class labels (or class probabilities).

    Computed from ``log_softmax(x) = x - max(x) - log(sum(exp(x - max(x))))``,
    so large logits neither overflow nor lose the small probabilities.

    Parameters
    ----------
    input : array, shape (N, K)
        Unnormalised scores (logits).
    target : array_like, shape (N,) of ints in [0, K), or shape (N, K)
        Class labels, or a probability distribution per row: entries >= 0,
        each row summing to 1 up to rounding.
    reduction : {'mean', 'sum'}, optional
        Over the batch.

    Returns
    -------
    LossResult
        ``(value, grad)`` with ``grad = softmax(input) - onehot(target)``
        (divided by ``N`` for ``'mean'``), of ``input``'s floating dtype;
        float64 when ``input`` holds integers.

    Raises
    ------
    ValueError
        If ``input`` is not 2-D, ``target`` has the wrong shape or labels
        outside ``[0, K)``, or ``reduction`` is unknown; or for a probability
        row with a negative entry or a sum other than 1.  PyTorch computes
        ``-sum(target * log_softmax(input))`` for any target without
        checking; a row that is not a distribution is almost always a mistake
        (logits, counts or unnormalised scores passed as targets), so gpuconv
        says so instead of training on it.  Normalise with
        ``target / target.sum(axis=1, keepdims=True)`` if that is meant.
    TypeError
        If 1-D targets are not integers.

    See Also
    --------
    mse_loss : the squared-error loss.
    Trainer.fit : trains with a loss like this one.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv.nn import cross_entropy
    >>> logits = np.array([[1000.0, 0.0], [0.0, 0.0]])
    >>> value, grad = cross_entropy(logits, np.array([0, 1]))
    >>> round(value, 6)  # (0 + log 2) / 2, with no overflow from exp(1000)
    0.346574
    >>> grad
    array([[ 0.  ,  0.  ],
           [ 0.25, -0.25]])
    """
    reduction = _reduction(reduction)
    be = resolve_backend(input=input, target=target)
    xp = be.xp
    input = _floating(be, input)
    target = be.asarray(target)
    if input.ndim != 2:
        raise ValueError(f"input must be 2-D logits (N, K); got shape {tuple(input.shape)}")
    N, K = input.shape
    shifted = input - input.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    log_probs = shifted - xp.log(total)
    probs = exp / total
    if target.ndim == 1:
        if np.dtype(target.dtype).kind not in "iu":
            raise TypeError(f"target labels must be integers; got dtype {target.dtype}")
        if target.shape[0] != N:
            raise ValueError(f"target must have {N} labels (one per row of input); got "
                             f"{target.shape[0]}")
        if N and (int(target.min()) < 0 or int(target.max()) >= K):
            raise ValueError(f"target labels must lie in [0, {K}); got values in "
                             f"[{int(target.min())}, {int(target.max())}]")
        rows = xp.arange(N)
        value = -float(log_probs[rows, target].sum())
        grad = probs
        grad[rows, target] -= 1
    elif tuple(target.shape) == (N, K):
        _check_distributions(target)
        value = -float((target * log_probs).sum())
        grad = probs * target.sum(axis=1, keepdims=True) - target
    else:
        raise ValueError(f"target must have shape ({N},) (labels) or ({N}, {K}) "
                         f"(probabilities); got {tuple(target.shape)}")
    if reduction == "mean" and N:
        value /= N
        grad = grad / N
    return LossResult(value, grad.astype(input.dtype, copy=False))


def _check_distributions(target: Any) -> None:
    """Each row of ``target`` is a probability distribution, up to rounding."""
    kind = np.dtype(target.dtype).kind
    if kind not in "biuf":
        raise TypeError(f"target probabilities must be real numbers; got dtype {target.dtype}")
    if target.size == 0:
        return
    sums = target.sum(axis=1, dtype=np.float64)
    low = float(target.min())
    # Rounding of K terms summed in the target's precision (exact for integers).
    eps = float(np.finfo(target.dtype).eps) if kind == "f" else 0.0
    tol = 4 * target.shape[1] * eps
    worst = int(abs(sums - 1).argmax())
    if low < 0 or abs(float(sums[worst]) - 1) > tol:
        detail = (f"an entry is {low:g}" if low < 0
                  else f"row {worst} sums to {float(sums[worst])!r}")
        raise ValueError(
            f"target of shape {tuple(target.shape)} must hold a probability distribution per "
            f"row (entries >= 0, each row summing to 1); {detail}. Pass class labels of shape "
            f"({target.shape[0]},), or normalise: target / target.sum(axis=1, keepdims=True)")
