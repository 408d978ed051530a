"""Layers: ``Conv2D``, ``Linear``, ``ReLU``, ``MaxPool2D``, ``AvgPool2D``, ``Flatten``.

Each layer's ``forward`` caches what its ``backward`` needs; ``backward``
returns the gradient with respect to the input and adds parameter gradients
into ``Parameter.grad``.  Parameters are arrays of the backend chosen when the
layer is built (``backend=`` or the current :func:`gpuconv.set_backend`), and
are initialised as PyTorch initialises its layers, from a seeded generator.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _winograd
from .._validation import pair, parse_method, parse_padding_mode
from ..backend import resolve_backend
from ..backends._pool import window_view
from ..conv import _resolve_padding, conv2d
from ..pool import (avg_divisor, avg_pool2d, check_divisor_override, check_flag, pool_geometry,
                    pool_input)
from . import functional as F
from ._module import Module, Parameter, current_backend

__all__ = ["Conv2D", "Linear", "ReLU", "MaxPool2D", "AvgPool2D", "Flatten"]


def _positive_int(argname: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argname} must be an int; got {value!r}")
    if value < 1:
        raise ValueError(f"{argname} must be >= 1; got {value!r}")
    return int(value)


def _float_dtype(dtype: Any) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a NumPy floating dtype; got {dtype!r}") from None
    if dtype.kind != "f":
        raise TypeError(f"dtype must be float16, float32 or float64; got {dtype}")
    return dtype


def _uniform(rng: np.random.Generator, bound: float, shape: tuple[int, ...], dtype: np.dtype,
             backend: Any) -> Any:
    return backend.asarray(rng.uniform(-bound, bound, size=shape).astype(dtype))


def _needs_cache(module: Module) -> bool:
    return module.training


def _no_cache(name: str) -> RuntimeError:
    return RuntimeError(
        f"{name}.backward called without a forward pass in training mode; call the layer "
        "(after .train()) before backward"
    )


class Conv2D(Module):
    """A 2-D convolution layer (cross-correlation, NCHW), as :class:`torch.nn.Conv2d`.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and output.
    kernel_size : int or (int, int)
        ``(kh, kw)``.
    stride : int or (int, int), optional
        As in :func:`gpuconv.conv2d`.
    padding : int, (int, int), 'valid' or 'same', optional
        As in :func:`gpuconv.conv2d`.
    dilation : int or (int, int), optional
        As in :func:`gpuconv.conv2d`.
    groups : int, optional
        Both channel counts must be divisible by it.
    bias : bool, optional
        Learn an additive bias per output channel (default ``True``).
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}, optional
        How the padding is filled; the gradient flows back through it.
    seed : int or numpy.random.Generator, keyword-only
        Seeds the initialisation.  ``None`` draws fresh entropy.
    dtype : floating dtype, keyword-only
        Of the parameters (default ``float32``).
    backend : str, keyword-only
        Backend the parameters live on; ``None`` follows :func:`gpuconv.set_backend`,
        and ``"auto"`` (there are no inputs yet to follow) means NumPy.
    method : str, keyword-only
        ``method`` of the three convolutions (forward, weight and input gradient).
        With ``'winograd'`` (3x3 kernels, stride 1, dilation 1) all three are
        Winograd's algorithm, and the input gradient reuses the forward
        pass's weight transform.

    Raises
    ------
    TypeError
        If a channel count or ``groups`` is not an int, or ``dtype`` is not a
        floating dtype.
    ValueError
        If a size is below its minimum, the channels are not divisible by
        ``groups``, ``padding`` or ``padding_mode`` is unknown, or ``backend``
        is not registered.

    See Also
    --------
    gpuconv.conv2d : the forward computation.
    gpuconv.nn.functional.conv2d_weight_grad, gpuconv.nn.functional.conv2d_input_grad :
        the backward computation.

    Notes
    -----
    Weights and bias are drawn from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with
    ``fan_in = in_channels / groups * kh * kw``: PyTorch's default
    (``kaiming_uniform_`` with ``a = sqrt(5)``).

    ``backward`` computes the weight gradient with
    :func:`gpuconv.nn.functional.conv2d_weight_grad` (a correlation of the
    input with the output gradient) and the input gradient with
    :func:`gpuconv.nn.functional.conv2d_input_grad` (a transposed convolution).

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import nn
    >>> conv = nn.Conv2D(3, 8, 3, padding=1, seed=0)
    >>> conv
    Conv2D(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=1)
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 10, 10)).astype(np.float32)
    >>> y = conv(x)
    >>> y.shape, y.dtype
    ((2, 8, 10, 10), dtype('float32'))
    >>> conv.backward(np.ones_like(y)).shape
    (2, 3, 10, 10)
    >>> conv.weight.grad.shape
    (8, 3, 3, 3)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", *, seed: Any = None, dtype: Any = np.float32,
                 backend: str | None = None, method: str = "auto") -> None:
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.groups = _positive_int("groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must both be divisible by groups={groups}")
        self.kernel_size = pair("kernel_size", kernel_size, minimum=1)
        self.stride = pair("stride", stride, minimum=1)
        self.dilation = pair("dilation", dilation, minimum=1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be an int, a pair of ints, 'valid' or 'same'; "
                                 f"got {padding!r}")
            self.padding: Any = padding
        else:
            self.padding = pair("padding", padding, minimum=0)
        self.padding_mode = parse_padding_mode(padding_mode)
        self.method = parse_method(method)
        if self.method == "winograd":
            _winograd.check_winograd(self.kernel_size, self.stride, self.dilation,
                                     argname="kernel_size")
        dtype = _float_dtype(dtype)
        be = current_backend(backend)
        rng = np.random.default_rng(seed)
        kh, kw = self.kernel_size
        fan_in = in_channels // groups * kh * kw
        bound = 1 / math.sqrt(fan_in)
        self.weight = Parameter(
            _uniform(rng, bound, (out_channels, in_channels // groups, kh, kw), dtype, be),
            "weight")
        self.bias = Parameter(_uniform(rng, bound, (out_channels,), dtype, be), "bias") \
            if bias else None
        self._cache: tuple[Any, tuple[int, int, int, int]] | None = None
        # Weight transforms of the last forward pass, reused by its backward pass.
        self._transforms: dict = {}

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            pad = self.padding
            s += f", padding={pad[0] if isinstance(pad, tuple) and pad[0] == pad[1] else pad!r}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s

    def _pads(self, hw: tuple[int, int]) -> tuple[int, int, int, int]:
        return _resolve_padding(self.padding, hw, self.kernel_size, self.stride, self.dilation)

    def forward(self, x: Any) -> Any:
        bias = None if self.bias is None else self.bias.data
        # The weight may have changed in place since the last step.
        self._transforms.clear()
        with _winograd.reuse_weight_transforms(self._transforms):
            y = conv2d(x, self.weight.data, bias, stride=self.stride, padding=self.padding,
                       dilation=self.dilation, groups=self.groups,
                       padding_mode=self.padding_mode, method=self.method)
        if _needs_cache(self):
            x = resolve_backend(x=x, w=self.weight.data).asarray(x)
            self._cache = (x, self._pads(tuple(x.shape[-2:])))
        return y

    def backward(self, grad_out: Any) -> Any:
        if self._cache is None:
            raise _no_cache(type(self).__name__)
        x, pads = self._cache
        unbatched = x.ndim == 3
        if unbatched:
            x, grad_out = x[None], grad_out[None]
        common = dict(stride=self.stride, pads=pads, dilation=self.dilation, groups=self.groups,
                      padding_mode=self.padding_mode)
        self.weight.accumulate(F.conv2d_weight_grad(x, grad_out, self.kernel_size, **common,
                                                    method=self.method))
        if self.bias is not None:
            self.bias.accumulate(grad_out.sum(axis=(0, 2, 3)))
        with _winograd.reuse_weight_transforms(self._transforms):
            grad_in = F.conv2d_input_grad(grad_out, self.weight.data, tuple(x.shape[-2:]),
                                          **common, method=self.method)
        return grad_in[0] if unbatched else grad_in


class Linear(Module):
    """``y = x @ weight.T + bias``, as :class:`torch.nn.Linear`.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the last axis of the input and output.
    bias : bool, optional
        Learn an additive bias (default ``True``).
    seed, dtype, backend : keyword-only
        As in :class:`Conv2D`; initialisation is ``U(-1/sqrt(in_features), 1/sqrt(in_features))``.

    Raises
    ------
    TypeError
        If a size is not an int or ``dtype`` is not a floating dtype.
    ValueError
        If a size is below 1, or ``backend`` is not registered; when called, if
        the input's last axis is not ``in_features`` long.

    See Also
    --------
    Flatten : turns images into the rows a Linear layer takes.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import nn
    >>> lin = nn.Linear(4, 3, seed=0)
    >>> lin(np.ones((2, 4), dtype=np.float32)).shape
    (2, 3)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 seed: Any = None, dtype: Any = np.float32, backend: str | None = None) -> None:
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        dtype = _float_dtype(dtype)
        be = current_backend(backend)
        rng = np.random.default_rng(seed)
        bound = 1 / math.sqrt(in_features)
        self.weight = Parameter(_uniform(rng, bound, (out_features, in_features), dtype, be),
                                "weight")
        self.bias = Parameter(_uniform(rng, bound, (out_features,), dtype, be), "bias") \
            if bias else None
        self._x: Any = None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")

    def forward(self, x: Any) -> Any:
        be = resolve_backend(x=x, w=self.weight.data)
        x = be.asarray(x)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input's last axis must have size in_features={self.in_features}; "
                             f"got shape {tuple(x.shape)}")
        y = be.xp.matmul(x, self.weight.data.T)
        if self.bias is not None:
            y = y + self.bias.data
        self._x = x if _needs_cache(self) else None
        return y

    def backward(self, grad_out: Any) -> Any:
        if self._x is None:
            raise _no_cache(type(self).__name__)
        x = self._x
        xp = resolve_backend(x=x, g=grad_out).xp
        g2 = grad_out.reshape(-1, self.out_features)
        self.weight.accumulate(xp.matmul(g2.T, x.reshape(-1, self.in_features)))
        if self.bias is not None:
            self.bias.accumulate(g2.sum(axis=0))
        return xp.matmul(grad_out, self.weight.data)


class ReLU(Module):
    """``max(x, 0)``; the gradient passes where the input was positive.

    See Also
    --------
    Linear, Conv2D : the layers it usually follows.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import nn
    >>> relu = nn.ReLU()
    >>> relu(np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 2.])
    >>> relu.backward(np.array([5.0, 5.0, 5.0]))
    array([0., 0., 5.])
    """

    def __init__(self) -> None:
        self._mask: Any = None

    def forward(self, x: Any) -> Any:
        be = resolve_backend(x=x)
        x = be.asarray(x)
        mask = x > 0
        self._mask = mask if _needs_cache(self) else None
        return x * mask

    def backward(self, grad_out: Any) -> Any:
        if self._mask is None:
            raise _no_cache(type(self).__name__)
        return grad_out * self._mask


class Flatten(Module):
    """Flatten every axis after the first: (N, C, H, W) -> (N, C*H*W).

    See Also
    --------
    Linear : the dense layer that usually follows.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import nn
    >>> flat = nn.Flatten()
    >>> flat(np.zeros((2, 3, 4, 5))).shape
    (2, 60)
    >>> flat.backward(np.zeros((2, 60))).shape
    (2, 3, 4, 5)
    """

    def __init__(self) -> None:
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: Any) -> Any:
        x = resolve_backend(x=x).asarray(x)
        self._shape = tuple(x.shape)
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out: Any) -> Any:
        if self._shape is None:
            raise _no_cache(type(self).__name__)
        return grad_out.reshape(self._shape)


class _Pool2D(Module):
    """What both pooling layers share: the validated geometry and the input handling."""

    def __init__(self, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                 ceil_mode: bool) -> None:
        self._geometry = pool_geometry(kernel_size, stride, padding, dilation, ceil_mode)
        self.kernel_size = self._geometry.kernel
        self.stride = self._geometry.stride
        self.padding = self._geometry.padding
        self.ceil_mode = self._geometry.ceil_mode
        self._cache: Any = None

    def extra_repr(self) -> str:
        s = f"kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self._geometry.dilation != (1, 1):
            s += f", dilation={self._geometry.dilation}"
        if self.ceil_mode:
            s += ", ceil_mode=True"
        return s

    def _input(self, x: Any) -> tuple[Any, Any, bool]:
        be = resolve_backend(x=x)
        x, unbatched = pool_input(be, x)
        return be, x, unbatched

    def _scatter(self, xp: Any, grad_out: Any, weights: Any) -> Any:
        """The adjoint of reading the windows: each tap's share of the output gradient,
        added back where the tap read it (windows may overlap)."""
        shape, out_hw, pads = self._cache[:3]
        N, C, H, W = shape
        top, bottom, left, right = pads
        grad = xp.zeros((N, C, H + top + bottom, W + left + right), dtype=grad_out.dtype)
        kh, kw = self.kernel_size
        for u in range(kh):
            for v in range(kw):
                window_view(grad, u, v, out_hw, self.stride, self._geometry.dilation)[...] += \
                    weights(u * kw + v)
        return grad[:, :, top:top + H, left:left + W]

    def backward(self, grad_out: Any) -> Any:
        if self._cache is None:
            raise _no_cache(type(self).__name__)
        unbatched = self._cache[-1]
        xp = resolve_backend(g=grad_out).xp
        grad_out = grad_out[None] if unbatched else grad_out
        grad = self._grad(xp, grad_out)
        return grad[0] if unbatched else grad


class MaxPool2D(_Pool2D):
    """Maximum over each window, as :class:`torch.nn.MaxPool2d`.

    Computes :func:`gpuconv.max_pool2d`; the gradient of each output goes to
    the element that was its maximum (the first of equal maxima, as in
    PyTorch).

    Parameters
    ----------
    kernel_size : int or (int, int)
        Window size ``(kh, kw)``.
    stride : int or (int, int), optional
        Step between windows; ``None`` means ``kernel_size``.
    padding : int or (int, int), optional
        Implicit ``-inf`` border, at most half the kernel.
    dilation : int or (int, int), optional
        Spacing between the samples of a window.
    ceil_mode : bool, optional
        Round the output size up (see :func:`gpuconv.max_pool2d`).

    Raises
    ------
    TypeError, ValueError
        For invalid arguments, as :func:`gpuconv.max_pool2d` (when built, or
        for the input when called).

    See Also
    --------
    gpuconv.max_pool2d : the function the layer computes.
    AvgPool2D : the mean over each window.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import nn
    >>> pool = nn.MaxPool2D(2)
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> pool(x)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    >>> pool.backward(np.ones((1, 1, 2, 2)))[0, 0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]])
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 dilation: Any = 1, ceil_mode: bool = False) -> None:
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)

    def forward(self, x: Any) -> Any:
        be, x, unbatched = self._input(x)
        g = self._geometry
        out_hw, pads = g.output(tuple(x.shape[-2:]))
        x = be.xp.ascontiguousarray(x)
        out, taps = be.max_pool2d(x, g.kernel, g.stride, pads, g.dilation, out_hw,
                                  _needs_cache(self))
        self._cache = ((tuple(x.shape), out_hw, pads, taps, unbatched) if _needs_cache(self)
                       else None)
        return out[0] if unbatched else out

    def _grad(self, xp: Any, grad_out: Any) -> Any:
        taps = self._cache[3]
        return self._scatter(xp, grad_out, lambda tap: grad_out * (taps == tap))


class AvgPool2D(_Pool2D):
    """Mean over each window, as :class:`torch.nn.AvgPool2d`.

    Computes :func:`gpuconv.avg_pool2d`; each output's gradient is shared
    equally (divided by the same divisor) among the samples of its window.

    Parameters
    ----------
    kernel_size : int or (int, int)
        Window size ``(kh, kw)``.
    stride : int or (int, int), optional
        Step between windows; ``None`` means ``kernel_size``.
    padding : int or (int, int), optional
        Implicit zero border, at most half the kernel.
    ceil_mode : bool, optional
        Round the output size up (see :func:`gpuconv.avg_pool2d`).
    count_include_pad : bool, optional
        Count the padding in each window's size (default ``True``).
    divisor_override : int, optional
        Divide every window's sum by this instead.

    Raises
    ------
    TypeError, ValueError
        For invalid arguments, as :func:`gpuconv.avg_pool2d` (when built, or
        for the input when called).

    See Also
    --------
    gpuconv.avg_pool2d : the function the layer computes.
    MaxPool2D : the maximum over each window.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import nn
    >>> pool = nn.AvgPool2D(2)
    >>> pool(np.arange(16.0).reshape(1, 1, 4, 4))[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    >>> pool.backward(np.ones((1, 1, 2, 2)))[0, 0]
    array([[0.25, 0.25, 0.25, 0.25],
           [0.25, 0.25, 0.25, 0.25],
           [0.25, 0.25, 0.25, 0.25],
           [0.25, 0.25, 0.25, 0.25]])
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> None:
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = check_flag("count_include_pad", count_include_pad)
        self.divisor_override = check_divisor_override(divisor_override)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if not self.count_include_pad:
            s += ", count_include_pad=False"
        if self.divisor_override is not None:
            s += f", divisor_override={self.divisor_override}"
        return s

    def forward(self, x: Any) -> Any:
        be, xb, unbatched = self._input(x)
        out = avg_pool2d(xb, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                         self.count_include_pad, self.divisor_override)
        if _needs_cache(self):
            hw = tuple(xb.shape[-2:])
            out_hw, pads = self._geometry.output(hw)
            # Window sizes are small integers: float64 holds them exactly for any grad dtype.
            divisor = avg_divisor(be.xp, self._geometry, hw, out_hw, self.count_include_pad,
                                  self.divisor_override, np.float64)
            self._cache = (tuple(xb.shape), out_hw, pads, divisor, unbatched)
        else:
            self._cache = None
        return out[0] if unbatched else out

    def _grad(self, xp: Any, grad_out: Any) -> Any:
        divisor = self._cache[3]
        if not isinstance(divisor, int):
            divisor = divisor.astype(np.finfo(np.dtype(grad_out.dtype)).dtype)
        share = grad_out / divisor
        return self._scatter(xp, share, lambda tap: share)
