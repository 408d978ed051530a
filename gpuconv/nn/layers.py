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
from ..conv import _resolve_padding, conv2d, conv_transpose2d
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
    stride, dilation : int or (int, int), optional
        As in :func:`gpuconv.conv2d`.
    padding : int, (int, int), 'valid' or 'same', optional
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
        Backend the parameters live on; ``None`` follows :func:`gpuconv.set_backend`
        (NumPy under ``"auto"``).
    method : str, keyword-only
        ``method`` of the three convolutions (forward, weight and input gradient).
        With ``'winograd'`` (3x3 kernels, stride 1, dilation 1) all three are
        Winograd's algorithm, and the input gradient reuses the forward
        pass's weight transform.

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
    """``max(x, 0)``; the gradient passes where the input was positive."""

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
    """Flatten every axis after the first: (N, C, H, W) -> (N, C*H*W)."""

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
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        self.kernel_size = pair("kernel_size", kernel_size, minimum=1)
        self.stride = self.kernel_size if stride is None else pair("stride", stride, minimum=1)
        self.padding = pair("padding", padding, minimum=0)
        for axis in range(2):
            if 2 * self.padding[axis] > self.kernel_size[axis]:
                raise ValueError(f"padding should be at most half the kernel size; got "
                                 f"padding={self.padding}, kernel_size={self.kernel_size}")
        self._cache: Any = None

    def extra_repr(self) -> str:
        s = f"kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        return s

    def _out_hw(self, x: Any) -> tuple[int, int]:
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} needs 4-D (N, C, H, W) input; "
                             f"got shape {tuple(x.shape)}")
        H, W = x.shape[-2:]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
        if Ho < 1 or Wo < 1:
            raise ValueError(f"kernel_size {self.kernel_size} does not fit in the padded "
                             f"input {(H + 2 * ph, W + 2 * pw)}")
        return Ho, Wo


def _window(start: int, count: int, step: int) -> slice:
    return slice(start, start + step * (count - 1) + 1, step)


class MaxPool2D(_Pool2D):
    """Maximum over each window, as :class:`torch.nn.MaxPool2d` (padding counts as -inf).

    The gradient goes to the first maximal element of each window.

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

    def forward(self, x: Any) -> Any:
        be = resolve_backend(x=x)
        xp = be.xp
        x = be.asarray(x)
        Ho, Wo = self._out_hw(x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        xpad = x
        if ph or pw:
            xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="constant",
                          constant_values=-xp.inf)
        taps = [xpad[:, :, _window(u, Ho, sh), _window(v, Wo, sw)]
                for u in range(kh) for v in range(kw)]
        windows = xp.stack(taps, axis=-1)
        arg = xp.argmax(windows, axis=-1)
        out = xp.take_along_axis(windows, arg[..., None], axis=-1)[..., 0]
        self._cache = (arg, tuple(xpad.shape), tuple(x.shape)) if _needs_cache(self) else None
        return out

    def backward(self, grad_out: Any) -> Any:
        if self._cache is None:
            raise _no_cache(type(self).__name__)
        arg, padded_shape, shape = self._cache
        xp = resolve_backend(g=grad_out).xp
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        Ho, Wo = arg.shape[-2:]
        grad = xp.zeros(padded_shape, dtype=grad_out.dtype)
        for u in range(kh):
            for v in range(kw):
                # Overlapping windows can share a pixel; accumulate tap by tap.
                grad[:, :, _window(u, Ho, sh), _window(v, Wo, sw)] += \
                    grad_out * (arg == u * kw + v)
        return grad[:, :, ph:ph + shape[2], pw:pw + shape[3]]


class AvgPool2D(_Pool2D):
    """Mean over each window, as :class:`torch.nn.AvgPool2d` (padding counts as zeros).

    Computed as a depthwise :func:`gpuconv.conv2d` with a constant kernel, so
    its gradient is the matching :func:`gpuconv.conv_transpose2d`.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import nn
    >>> nn.AvgPool2D(2)(np.arange(16.0).reshape(1, 1, 4, 4))[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """

    def _kernel(self, be: Any, dtype: Any) -> Any:
        kh, kw = self.kernel_size
        return be.xp.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=dtype)

    def forward(self, x: Any) -> Any:
        be = resolve_backend(x=x)
        x = be.asarray(x)
        Ho, Wo = self._out_hw(x)
        N, C, H, W = x.shape
        planes = x.reshape(N * C, 1, H, W)
        out = conv2d(planes, self._kernel(be, x.dtype), stride=self.stride,
                     padding=self.padding)
        self._cache = tuple(x.shape) if _needs_cache(self) else None
        return out.reshape(N, C, Ho, Wo)

    def backward(self, grad_out: Any) -> Any:
        if self._cache is None:
            raise _no_cache(type(self).__name__)
        be = resolve_backend(g=grad_out)
        N, C, H, W = self._cache
        Ho, Wo = grad_out.shape[-2:]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        extra = (H + 2 * ph - ((Ho - 1) * sh + kh), W + 2 * pw - ((Wo - 1) * sw + kw))
        grad = conv_transpose2d(grad_out.reshape(N * C, 1, Ho, Wo),
                                self._kernel(be, grad_out.dtype), stride=self.stride,
                                padding=self.padding, output_padding=extra)
        return grad.reshape(N, C, H, W)
