"""Stochastic gradient descent with momentum and weight decay."""

from __future__ import annotations

from typing import Any, Iterable

from ._module import Parameter

__all__ = ["SGD"]


class SGD:
    """Stochastic gradient descent, with PyTorch's momentum and weight-decay rules.

    For each parameter ``p`` with gradient ``g``::

        g = g + weight_decay * p
        buf = momentum * buf + g        (buf = g on the first step)
        p = p - lr * buf                (p = p - lr * g without momentum)

    Parameters
    ----------
    params : iterable of Parameter
        Usually ``model.parameters()``.
    lr : float
        Learning rate, > 0.
    momentum : float, optional
        In [0, 1).
    weight_decay : float, optional
        L2 penalty coefficient, >= 0.

    Raises
    ------
    TypeError
        If an item of ``params`` is not a :class:`Parameter`, or a number is not
        real.
    ValueError
        If ``params`` is empty or a number is out of its range.

    See Also
    --------
    Module.parameters : the usual ``params``.
    Trainer : calls ``step()`` after every batch.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv.nn import SGD, Parameter
    >>> p = Parameter(np.array([1.0, -2.0]))
    >>> p.grad = np.array([0.5, 0.5])
    >>> SGD([p], lr=0.1).step()
    >>> p.data
    array([ 0.95, -2.05])
    """

    def __init__(self, params: Iterable[Parameter], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        self.params = list(params)
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(f"params must be Parameter objects (model.parameters()); "
                                f"item {i} is {type(p).__name__}")
        if not self.params:
            raise ValueError("params is empty: there is nothing to optimise")
        self.lr = _number("lr", lr, low=0.0, low_open=True)
        self.momentum = _number("momentum", momentum, low=0.0, high=1.0)
        self.weight_decay = _number("weight_decay", weight_decay, low=0.0)
        self._buffers: dict[int, Any] = {}

    def __repr__(self) -> str:
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, "
                f"weight_decay={self.weight_decay})")

    def zero_grad(self) -> None:
        """Forget the accumulated gradients (set them to ``None``)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        for p in self.params:
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.momentum:
                buf = self._buffers.get(id(p))
                buf = g if buf is None else self.momentum * buf + g
                self._buffers[id(p)] = buf
                g = buf
            p.data -= (self.lr * g).astype(p.data.dtype, copy=False)


def _number(argname: str, value: Any, *, low: float, high: float | None = None,
            low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{argname} must be a real number; got {value!r}") from None
    value = float(value)
    too_low = value <= low if low_open else value < low
    if too_low or (high is not None and value >= high) or value != value:
        bound = f"> {low}" if low_open else f">= {low}"
        if high is not None:
            bound += f" and < {high}"
        raise ValueError(f"{argname} must be {bound}; got {value!r}")
    return value
