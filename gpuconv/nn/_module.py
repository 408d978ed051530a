"""``Parameter``, ``Module`` and ``Sequential``: the containers every layer builds on.

A module computes ``forward`` and, given the gradient of a scalar loss with
respect to its output, ``backward`` returns the gradient with respect to its
input and adds the gradients of its parameters into ``Parameter.grad``.  Each
layer caches what its backward pass needs during ``forward``; there is no
general autograd graph.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from ..backend import backend_for

__all__ = ["Parameter", "Module", "Sequential", "current_backend", "namespace_of"]


def namespace_of(arr: Any) -> Any:
    """The array namespace (``numpy``, ``cupy``, ...) of the backend that owns ``arr``."""
    return backend_for("auto", array=arr).xp


def current_backend(name: str | None = None) -> Any:
    """The backend object new parameters live on.

    ``name`` picks a registered backend; ``None`` follows the current choice
    (:func:`gpuconv.set_backend`), and ``"auto"`` (no arrays to follow) means NumPy.
    """
    return backend_for(name)


class Parameter:
    """A trainable array and the gradient accumulated for it.

    Parameters
    ----------
    data : array
        The value, an array of the backend the module lives on (kept as it is,
        not copied).
    name : str, optional
        ``"weight"``, ``"bias"``, ...; for messages and ``repr``.

    Attributes
    ----------
    data : array
        The value; the optimizer updates it in place.
    grad : array or None
        The gradient of the loss, summed over every ``backward`` since the last
        :meth:`Module.zero_grad`; ``None`` before the first one and after
        ``zero_grad``.
    name : str
        As given.

    Raises
    ------
    TypeError
        If ``name`` is not a str.

    See Also
    --------
    Module.parameters : every parameter of a model.
    SGD : updates ``data`` from ``grad``.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import nn
    >>> p = nn.Parameter(np.zeros(3), "bias")
    >>> p
    Parameter(bias, shape=(3,), dtype=float64)
    >>> p.accumulate(np.ones(3)); p.accumulate(np.ones(3))
    >>> p.grad
    array([2., 2., 2.])
    """

    __slots__ = ("data", "grad", "name")

    def __init__(self, data: Any, name: str = "") -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str; got {name!r}")
        self.data = data
        self.grad: Any = None
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def accumulate(self, grad: Any) -> None:
        """Add ``grad`` into ``self.grad`` (a layer used twice gets both contributions)."""
        if self.grad is None:
            self.grad = grad
        else:
            self.grad = self.grad + grad

    def __repr__(self) -> str:
        return f"Parameter({self.name}, shape={self.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of layers and containers.

    Subclasses implement ``forward(x)`` and ``backward(grad_out)`` and keep
    their :class:`Parameter` objects and child modules as attributes (or, for
    containers, override :meth:`children`).  ``module(x)`` calls ``forward``.

    See Also
    --------
    Sequential : a container of modules.
    Parameter : what ``parameters()`` returns.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import nn
    >>> net = nn.Sequential(nn.Linear(3, 2, seed=0), nn.ReLU())
    >>> net
    Sequential(
      (0): Linear(in_features=3, out_features=2, bias=True)
      (1): ReLU()
    )
    >>> [p.shape for p in net.parameters()]
    [(2, 3), (2,)]
    >>> y = net(np.ones((4, 3), dtype=np.float32))
    >>> net.backward(np.ones_like(y)).shape
    (4, 3)
    >>> net.zero_grad()
    >>> net.parameters()[0].grad is None
    True
    """

    training: bool = True

    # -- what subclasses provide -------------------------------------------
    def forward(self, x: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_out: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def extra_repr(self) -> str:
        return ""

    # -- shared machinery ---------------------------------------------------
    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def children(self) -> list[Module]:
        return [v for v in vars(self).values() if isinstance(v, Module)]

    def _own_parameters(self) -> list[Parameter]:
        return [v for v in vars(self).values() if isinstance(v, Parameter)]

    def parameters(self) -> list[Parameter]:
        """Every parameter of this module and its children, each once, in order."""
        seen: set[int] = set()
        out: list[Parameter] = []
        for p in self._iter_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    def _iter_parameters(self) -> Iterator[Parameter]:
        yield from self._own_parameters()
        for child in self.children():
            yield from child._iter_parameters()

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (set it to ``None``), as PyTorch does.

        The next ``backward`` stores its gradient instead of adding it to an
        array of zeros; :meth:`gpuconv.nn.SGD.zero_grad` does the same.
        """
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        """Put this module and its children in training (or evaluation) mode."""
        self.training = bool(mode)
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode: forward passes need not cache anything for backward."""
        return self.train(False)

    def to(self, backend: str | None = None, dtype: Any = None) -> Module:
        """Move every parameter to ``backend`` and/or cast it to ``dtype``, in place.

        Parameters
        ----------
        backend : str, optional
            A registered backend name; ``None`` or ``"auto"`` keeps each
            parameter's library.
        dtype : dtype, optional
            A floating dtype; ``None`` keeps each parameter's dtype.

        Returns
        -------
        Module
            ``self``, for chaining.
        """
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype.kind not in "fc":
                raise TypeError(f"dtype must be a floating or complex dtype; got {dtype}")
        for p in self.parameters():
            data = p.data
            if backend is not None:
                data = backend_for(backend, parameter=data).asarray(data)
            if dtype is not None:
                data = data.astype(dtype)
            p.data = data
            p.grad = None
        return self

    def __repr__(self) -> str:
        children = self._named_children()
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not children:
            return head + ")"
        lines = [head]
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"

    def _named_children(self) -> list[tuple[str, Module]]:
        return [(k, v) for k, v in vars(self).items() if isinstance(v, Module)]


class Sequential(Module):
    """Modules applied in order; ``backward`` runs them in reverse.

    Parameters
    ----------
    *layers : Module
        The layers, first to last.

    Raises
    ------
    TypeError
        If an argument is not a :class:`Module`.

    See Also
    --------
    Module : the base class.

    Examples
    --------
    >>> from gpuconv import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, seed=0))
    >>> len(net), type(net[1]).__name__
    (2, 'Linear')
    """

    def __init__(self, *layers: Module) -> None:
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential takes Module instances; argument {i} is {type(layer).__name__}"
                )
        self.layers = list(layers)

    def children(self) -> list[Module]:
        return list(self.layers)

    def _named_children(self) -> list[tuple[str, Module]]:
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, grad_out: Any) -> Any:
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        return grad_out
