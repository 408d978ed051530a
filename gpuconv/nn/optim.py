"""Stochastic gradient descent with momentum and weight decay."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ._module import Parameter

__all__ = ["SGD"]


class SGD:
    """Stochastic gradient descent, with PyTorch's momentum and weight-decay rules.

    For each parameter ``p`` with gradient ``g`` (``torch.optim.SGD``'s update)::

        d = g + weight_decay * p
        buf = momentum * buf + (1 - dampening) * d     (buf = d on the first step)
        d = d + momentum * buf if nesterov else buf    (with momentum only)
        p = p - lr * d

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
    dampening : float, keyword-only
        In [0, 1]: the share of each new gradient left out of the momentum
        buffer (not of the first one).
    nesterov : bool, keyword-only
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.

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
                 weight_decay: float = 0.0, *, dampening: float = 0.0,
                 nesterov: bool = False) -> None:
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
        self.dampening = _number("dampening", dampening, low=0.0, high=1.0, high_open=False)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool; got {nesterov!r}")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError(f"nesterov=True needs momentum > 0 and dampening == 0; got "
                             f"momentum={self.momentum}, dampening={self.dampening}")
        self._buffers: dict[int, Any] = {}

    def __repr__(self) -> str:
        extra = (f", dampening={self.dampening}" if self.dampening else "") + \
            (", nesterov=True" if self.nesterov else "")
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, "
                f"weight_decay={self.weight_decay}{extra})")

    def zero_grad(self) -> None:
        """Forget the accumulated gradients (set them to ``None``)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        for p in self.params:
            if p.grad is None:
                continue
            d = p.grad
            if self.weight_decay:
                d = d + self.weight_decay * p.data
            if self.momentum:
                buf = self._buffers.get(id(p))
                if buf is None:
                    # A copy: the caller may change p.grad in place afterwards.
                    buf = d.copy()
                else:
                    buf = self.momentum * buf + (1 - self.dampening) * d
                self._buffers[id(p)] = buf
                d = d + self.momentum * buf if self.nesterov else buf
            p.data -= (self.lr * d).astype(p.data.dtype, copy=False)


def _number(argname: str, value: Any, *, low: float, high: float | None = None,
            low_open: bool = False, high_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{argname} must be a real number; got {value!r}") from None
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high or value != value:
        bound = f"> {low}" if low_open else f">= {low}"
        if high is not None:
            bound += f" and {'<' if high_open else '<='} {high}"
        raise ValueError(f"{argname} must be {bound}; got {value!r}")
    return value
