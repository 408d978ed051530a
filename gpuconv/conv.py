"""Deep-learning convolution: ``conv2d`` (NCHW, PyTorch semantics), its adjoint
``conv_transpose2d``, and the output-size formula of Dive into Deep Learning's
section "Padding and Stride" (see ``docs/tutorial.md``)."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from . import _choose
from ._config import get_scratch_limit
from ._dispatch import deferred_module
from ._frontdoor import (PlanCache, all_finite, as_backend_array, check_fits, foreign_arrays,
                         native_work_dtype, signature, to_work, warn_nonfinite)
from ._geometry import conv_output_hw, extent, resolve_padding, transpose_output_hw
from ._validation import compute_dtype, pair, parse_method, parse_padding_mode
from ._winograd import check_winograd
from .backend import get_backend, registry_generation, resolve_backend

__all__ = ["conv2d", "conv_transpose2d", "output_shape"]

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
Method = Literal["auto", "direct", "gemm", "fft", "overlap-add", "winograd"]


# Validated calls by signature (arrays' types, shapes, dtypes and the options): a
# repeated call shape skips validation and the geometry.
_PLANS = PlanCache()

# The padding rules live with the other shape rules; this name stays for callers.
_resolve_padding = resolve_padding


def output_shape(input_size: Any, kernel_size: Any, *, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1) -> tuple[int, int]:
    """Spatial output size of a convolution: the textbook formula, generalised.

    .. math:: n_o = \\left\\lfloor \\frac{n + p_{\\text{total}} - d (k - 1) - 1}{s} \\right\\rfloor + 1

    With no padding, stride 1 and no dilation this is the
    ``(nh - kh + 1) x (nw - kw + 1)`` of Dive into Deep Learning's
    "Convolutions for Images"; its "Padding and Stride" adds the rest.

    Parameters
    ----------
    input_size : int or (int, int)
        ``(nh, nw)``.
    kernel_size : int or (int, int)
        ``(kh, kw)``.
    stride : int or (int, int), keyword-only
        At least 1.
    padding : int, (int, int), 'valid' or 'same', keyword-only
        Padding on each side (as in PyTorch), or a rule.  ``'same'`` gives
        ``ceil(n / s)``.
    dilation : int or (int, int), keyword-only
        At least 1.

    Returns
    -------
    (int, int)

    Raises
    ------
    ValueError
        For sizes, strides or dilations below 1, negative padding, an unknown
        padding rule, or a kernel that does not fit in the padded input.
    TypeError
        For values that are not ints (or pairs of ints).

    See Also
    --------
    conv2d : whose output has this spatial size.
    conv_transpose2d : the size it maps back from.

    Examples
    --------
    >>> import gpuconv
    >>> gpuconv.output_shape((6, 8), (1, 2))
    (6, 7)
    >>> gpuconv.output_shape(224, 7, stride=2, padding=3)
    (112, 112)
    >>> gpuconv.output_shape(7, 3, stride=2, padding="same")
    (4, 4)
    """
    hw = pair("input_size", input_size, minimum=1)
    k = pair("kernel_size", kernel_size, minimum=1)
    s = pair("stride", stride, minimum=1)
    d = pair("dilation", dilation, minimum=1)
    pads = resolve_padding(padding, hw, k, s, d)
    ho, wo = conv_output_hw(hw, pads, k, s, d)
    if ho < 1 or wo < 1:
        raise ValueError(
            f"kernel_size {k} with dilation {d} does not fit in input_size {hw} padded by "
            f"{pads}: the output would be {(ho, wo)}"
        )
    return ho, wo


def _check_int(argname: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argname} must be an int; got {value!r}")
    if value < minimum:
        raise ValueError(f"{argname} must be >= {minimum}; got {value!r}")
    return int(value)


def _prepare(backend: Any, input: Any, weight: Any, bias: Any) -> tuple[Any, Any, Any, bool]:
    input = as_backend_array(backend, "input", input)
    weight = as_backend_array(backend, "weight", weight)
    if input.ndim not in (3, 4):
        raise ValueError(
            f"input must be 4-D (N, C, H, W) or 3-D (C, H, W); got shape {input.shape}"
        )
    unbatched = input.ndim == 3
    if unbatched:
        input = input[None]
    if weight.ndim != 4:
        raise ValueError(
            f"weight must be 4-D (C_out, C_in / groups, kh, kw) for conv2d or "
            f"(C_in, C_out / groups, kh, kw) for conv_transpose2d; got shape {weight.shape}"
        )
    if 0 in input.shape[1:]:
        raise ValueError(f"input must have non-empty C, H and W; got shape {input.shape}")
    if 0 in weight.shape:
        raise ValueError(f"weight must be non-empty; got shape {weight.shape}")
    if bias is not None:
        bias = as_backend_array(backend, "bias", bias)
    return input, weight, bias, unbatched


@foreign_arrays("input", "weight", "bias")
def conv2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1, *, padding_mode: PaddingMode = "zeros",
           method: Method = "auto") -> Any:
    """2-D convolution layer arithmetic, as :func:`torch.nn.functional.conv2d`.

    Like every deep-learning "convolution" this is a cross-correlation: the
    kernel is not flipped.

    Parameters
    ----------
    input : array_like, shape (N, C_in, H, W) or (C_in, H, W)
        The input batch (NCHW), or one unbatched image.
    weight : array_like, shape (C_out, C_in / groups, kh, kw)
        The filters.
    bias : array_like, shape (C_out,), optional
        Added to every output pixel of each channel.
    stride : int or (int, int), optional
        Step between output samples, at least 1.
    padding : int, (int, int), 'valid' or 'same', optional
        Padding on each side.  ``'same'`` keeps ``ceil(H / stride)`` outputs;
        unlike PyTorch it is allowed with ``stride > 1``, splitting the
        padding as TensorFlow does (the odd pixel at the bottom/right).
    dilation : int or (int, int), optional
        Spacing between kernel taps, at least 1.
    groups : int, optional
        Split channels into this many independent groups; ``C_in`` and
        ``C_out`` must both be divisible by it.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}, keyword-only
        How the padding is filled, as in :class:`torch.nn.Conv2d`.
        ``'reflect'`` needs padding smaller than the input, ``'circular'``
        no larger.
    method : {'auto', 'direct', 'gemm', 'fft', 'overlap-add', 'winograd'}, keyword-only
        ``'direct'`` accumulates one matrix product per kernel tap (on the
        GPU: gpuconv's CUDA kernel); ``'gemm'`` builds im2col columns in
        chunks bounded by :func:`gpuconv.scratch_limit` and does one matrix
        product per chunk; ``'fft'`` and ``'overlap-add'`` multiply spectra
        (whole planes, or blocks), summing channels per frequency, with a
        normwise rounding error and NaN/Inf spread over the plane;
        ``'winograd'`` (3x3 kernels, stride 1, dilation 1) uses Winograd's
        minimal filtering: 2.25-4x fewer multiplications, a few times
        direct's rounding error, NaN/Inf spread over a tile (see
        ``docs/theory.md``).  ``'auto'`` (default) takes the cheapest exact
        method, or an inexact one where it is estimated clearly faster and
        the inputs are finite (see :func:`gpuconv.choose_method`).

    Returns
    -------
    array, shape (N, C_out, Ho, Wo) or (C_out, Ho, Wo)
        ``Ho = floor((H + pad_h - dilation*(kh-1) - 1) / stride) + 1``, see
        :func:`output_shape`.  Dtype rules are those of :func:`correlate2d`.

    Raises
    ------
    ValueError
        For inputs of the wrong rank or empty, channel counts that do not
        match ``weight`` and ``groups``, a ``bias`` of the wrong shape,
        strides or dilations below 1, negative or unknown padding, padding
        too wide for ``'reflect'``/``'circular'``, a kernel that does not fit,
        or an unknown ``padding_mode`` or ``method``.
    TypeError
        For non-numeric arrays, non-integer sizes, or inputs from two array
        libraries with the ``"auto"`` backend.
    MemoryError
        When the output and the padded input cannot fit in the memory the
        backend reports free (checked before anything is allocated), or when
        ``method='fft'`` needs more than :func:`gpuconv.scratch_limit` for one
        image.

    See Also
    --------
    conv_transpose2d : its adjoint (the input gradient).
    output_shape : the output size without computing.
    choose_method : which method ``'auto'`` takes, and why.
    correlate2d : one plane against one kernel, SciPy's way.

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    >>> w = np.random.default_rng(1).standard_normal((4, 3, 3, 3))
    >>> gpuconv.conv2d(x, w, padding=1).shape
    (2, 4, 8, 8)
    >>> gpuconv.conv2d(x, w, stride=2, padding="same").shape
    (2, 4, 4, 4)

    Channel 0 of the output is the sum over input channels of the planes'
    valid correlations:

    >>> y = gpuconv.conv2d(x, w)
    >>> z = sum(gpuconv.correlate2d(x[:, c], w[0, c], mode="valid") for c in range(3))
    >>> np.allclose(y[:, 0], z)
    True
    """
    lazy = deferred_module(input, weight, bias)
    if lazy is not None:
        return lazy.conv2d(input, weight, bias, stride, padding, dilation, groups,
                           padding_mode=padding_mode, method=method)
    key = signature((input, weight, bias), ("conv2d", stride, padding, dilation, groups,
                                            padding_mode, method, get_backend(),
                                            registry_generation()))
    plan = _PLANS.get(key)
    if plan is not None:
        call = plan.rebind(input, weight, bias)
    else:
        method = parse_method(method)
        call = _plan_conv2d(input, weight, bias, stride, padding, dilation, groups,
                            padding_mode)
        if method == "winograd":
            check_winograd(tuple(call.weight.shape[2:]), call.stride, call.dilation)
        _PLANS.put(key, call.template())
    return call.run(resolve_method(call, method))


@foreign_arrays("input", "weight", "bias")
def conv_transpose2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1,
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                     dilation: Any = 1, *, method: Method = "auto") -> Any:
    """Transposed convolution: the adjoint of :func:`conv2d`, as
    :func:`torch.nn.functional.conv_transpose2d`.

    For any ``x`` and ``y`` of matching shapes,
    ``<conv2d(x, w, stride=s, padding=p), y> == <x, conv_transpose2d(y, w, stride=s,
    padding=p)>``: this is the input gradient of a convolution layer.

    Parameters
    ----------
    input : array_like, shape (N, C_in, H, W) or (C_in, H, W)
        The input (in the adjoint picture: the output gradient).
    weight : array_like, shape (C_in, C_out / groups, kh, kw)
        The same array a :func:`conv2d` from ``C_out`` to ``C_in`` channels uses.
    bias : array_like, shape (C_out,), optional
        Added to every output pixel of each channel.
    stride : int or (int, int), optional
        At least 1.
    padding : int or (int, int), optional
        The ``padding`` of the :func:`conv2d` this undoes: removed from each
        side of the output.
    output_padding : int or (int, int), optional
        Extra rows/columns added at the bottom/right, to choose among the
        input sizes a strided :func:`conv2d` maps to the same output size.
        Must be smaller than ``stride`` or ``dilation``.
    groups : int, optional
        As in :func:`conv2d`.
    dilation : int or (int, int), optional
        At least 1.
    method : {'auto', 'direct', 'gemm', 'fft', 'overlap-add', 'winograd'}, keyword-only
        ``'direct'`` scatter-adds one matrix product per kernel tap; ``'gemm'``
        computes all taps' columns in one product per chunk of images;
        ``'fft'``/``'overlap-add'`` one full convolution per output phase of
        the stride, by spectra.  ``'auto'`` as in :func:`conv2d`, costed as
        the convolution this is the adjoint of.
        ``'winograd'`` (3x3 kernels, stride 1, dilation 1) as in :func:`conv2d`.

    Returns
    -------
    array, shape (N, C_out, Ho, Wo) or (C_out, Ho, Wo)
        ``Ho = (H - 1)*stride - 2*padding + dilation*(kh - 1) + output_padding + 1``.

    Raises
    ------
    ValueError
        For inputs of the wrong rank or empty, ``weight.shape[0]`` different
        from the input channels, channels not divisible by ``groups``, a
        ``bias`` of the wrong shape, strides or dilations below 1, negative
        padding, ``output_padding`` not smaller than stride or dilation,
        padding that removes the whole output, or an unknown ``method``.
    TypeError
        For non-numeric arrays, non-integer sizes, ``padding`` given as a
        string, or inputs from two array libraries with the ``"auto"`` backend.
    MemoryError
        When the output cannot fit in the memory the backend reports free.

    See Also
    --------
    conv2d : the convolution this is the adjoint of.
    gpuconv.nn.Conv2D : whose input gradient this computes.

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((4, 3, 3, 3))
    >>> x = rng.standard_normal((2, 3, 9, 9))
    >>> y = rng.standard_normal((2, 4, 4, 4))
    >>> forward = gpuconv.conv2d(x, w, stride=2, padding=1)
    >>> adjoint = gpuconv.conv_transpose2d(y, w, stride=2, padding=1)
    >>> adjoint.shape
    (2, 3, 7, 7)
    >>> gpuconv.conv_transpose2d(y, w, stride=2, padding=1, output_padding=1).shape
    (2, 3, 8, 8)
    """
    lazy = deferred_module(input, weight, bias)
    if lazy is not None:
        return lazy.conv_transpose2d(input, weight, bias, stride, padding, output_padding,
                                     groups, dilation, method=method)
    key = signature((input, weight, bias), ("conv_transpose2d", stride, padding,
                                            output_padding, groups, dilation, method,
                                            get_backend(), registry_generation()))
    plan = _PLANS.get(key)
    if plan is not None:
        call = plan.rebind(input, weight, bias)
    else:
        method = parse_method(method)
        call = _plan_conv_transpose2d(input, weight, bias, stride, padding, output_padding,
                                      groups, dilation)
        if method == "winograd":
            check_winograd(tuple(call.weight.shape[2:]), call.stride, call.dilation)
        _PLANS.put(key, call.template())
    return call.run(resolve_method(call, method))


def resolve_method(call: Any, method: str, finite_fallback: bool = False) -> str:
    """The method a call runs: ``auto``'s choice, or the one asked for.

    An inexact method asked for explicitly keeps it, with a warning when the
    inputs are not finite; ``finite_fallback`` (chunks of a dask call whose
    ``auto`` was resolved once for the whole array) falls back to the best
    exact method instead, as ``auto`` would.
    """
    if method == "auto":
        return call.choose().method if call.batch else "direct"
    if method in _choose.NEEDS_FINITE and call.batch and not call.finite():
        if finite_fallback:
            return call.best_exact()
        warn_nonfinite(method)
    return method


@dataclass(frozen=True)
class _NCHWCall:
    """What conv2d and conv_transpose2d share once validated: everything but the method."""

    backend: Any
    input: Any          # (N, C, H, W) backend array, input dtype
    weight: Any
    bias: Any
    unbatched: bool
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    out_hw: tuple[int, int]
    cout: int
    result_dtype: np.dtype
    work_dtype: np.dtype

    @property
    def batch(self) -> int:
        return int(self.input.shape[0])

    @property
    def exact(self) -> bool:
        # Integer sums are exact in float64 by the direct methods; an FFT would round them.
        return self.input.dtype.kind in "biu" and self.weight.dtype.kind in "biu"

    def finite(self) -> bool:
        return all_finite(self.backend, (self.input, self.weight))

    def choose(self) -> _choose.MethodChoice:
        """The choice of ``method="auto"`` for this call, precision policy applied."""
        return _choose.apply_finite_policy(self.model_choice(), self.finite)

    def template(self) -> "_NCHWCall":
        """This call without its arrays: what the plan cache keeps."""
        plan = object.__new__(type(self))
        plan.__dict__.update(self.__dict__, input=None, weight=None, bias=None)
        return plan

    def rebind(self, input: Any, weight: Any, bias: Any) -> "_NCHWCall":
        """This (cached, validated) call with another set of arrays of the same signature."""
        backend = self.backend
        x = as_backend_array(backend, "input", input)
        call = object.__new__(type(self))
        call.__dict__.update(
            self.__dict__, input=x[None] if self.unbatched else x,
            weight=as_backend_array(backend, "weight", weight),
            bias=None if bias is None else as_backend_array(backend, "bias", bias))
        return call

    def best_exact(self) -> str:
        costs = self.model_choice().costs
        return min((m for m in _choose.EXACT_METHODS if m in costs), key=costs.__getitem__,
                   default="direct")

    def _finish(self, out: Any, work: np.dtype) -> Any:
        if self.unbatched:
            out = out[0]
        return out.astype(self.result_dtype, copy=False)

    def run(self, method: str) -> Any:
        work = native_work_dtype(self.backend, method, self.result_dtype, self.work_dtype)
        N, C = self.input.shape[:2]
        if N == 0:
            out = self.backend.xp.zeros((0, self.cout) + self.out_hw, dtype=work)
            return self._finish(out, work)
        bias = None if self.bias is None else to_work(self.backend, self.bias, work)
        out = self._compute(to_work(self.backend, self.input, work),
                            to_work(self.backend, self.weight, work), method, bias)
        return self._finish(out, work)

    def check_memory(self) -> None:
        """Refuse (``MemoryError``) a call that cannot fit, before anything is allocated."""
        N, C = self.input.shape[:2]
        (h, w), what, fix = self._read_extent()
        out = N * self.cout * self.out_hw[0] * self.out_hw[1]
        # The output and the input as the kernels read it (padded, or the transposed
        # canvas), each in the working layout and once more as the kernels rearrange them.
        nbytes = 2 * (out + N * C * h * w) * self.work_dtype.itemsize
        if self.result_dtype != self.work_dtype:
            nbytes += out * self.result_dtype.itemsize
        check_fits(self.backend, nbytes, f"an output of shape {(N, self.cout) + self.out_hw} "
                   f"({self.result_dtype}) and {what}", fix)

    def _read_extent(self) -> tuple[tuple[int, int], str, str]:
        """(h, w) of what the kernels read, its description, and what to change if too big."""
        raise NotImplementedError

    def _compute(self, x: Any, w: Any, method: str, bias: Any) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class _Conv2dCall(_NCHWCall):
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    padding_mode: str = "zeros"

    def key(self) -> tuple[Any, ...]:
        key = self.__dict__.get("_key")
        if key is None:  # once per plan: a cached plan carries it to the next call
            key = self.__dict__["_key"] = _choose.conv2d_key(
                self.backend, tuple(self.input.shape), tuple(self.weight.shape), self.out_hw,
                self.stride, self.groups, self.work_dtype, self.exact, self.dilation)
        return key

    def model_choice(self) -> _choose.MethodChoice:
        return _choose.choose_conv2d_method(
            self.backend, tuple(self.input.shape), tuple(self.weight.shape), self.out_hw,
            self.stride, self.groups, self.work_dtype, self.exact, self.dilation,
            key=self.key())

    def _read_extent(self) -> tuple[tuple[int, int], str, str]:
        H, W = self.input.shape[2:]
        padded = (H + self.pads[0] + self.pads[1], W + self.pads[2] + self.pads[3])
        return (padded, f"the input padded to {padded}",
                "reduce padding, the input size or the batch (or use dask arrays: docs/dask.md)")

    def _compute(self, x: Any, w: Any, method: str, bias: Any) -> Any:
        return _with_bias(self.backend, "conv2d", bias, x, w, self.stride, self.pads,
                          self.dilation, self.groups, self.padding_mode, method,
                          get_scratch_limit())


@dataclass(frozen=True)
class _ConvTransposeCall(_NCHWCall):
    padding: tuple[int, int] = (0, 0)

    def _as_conv(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, int]]:
        return transpose_as_conv(tuple(self.input.shape), tuple(self.weight.shape),
                                 self.stride, self.dilation, self.groups, self.out_hw)

    def key(self) -> tuple[Any, ...]:
        key = self.__dict__.get("_key")
        if key is None:  # once per plan: a cached plan carries it to the next call
            x_shape, w_shape, out_hw = self._as_conv()
            key = self.__dict__["_key"] = _choose.conv2d_key(
                self.backend, x_shape, w_shape, out_hw, self.stride, self.groups,
                self.work_dtype, self.exact, self.dilation, "conv_transpose2d")
        return key

    def model_choice(self) -> _choose.MethodChoice:
        x_shape, w_shape, out_hw = self._as_conv()
        return _choose.choose_conv2d_method(
            self.backend, x_shape, w_shape, out_hw, self.stride, self.groups,
            self.work_dtype, self.exact, self.dilation, op="conv_transpose2d", key=self.key())

    def _read_extent(self) -> tuple[tuple[int, int], str, str]:
        kh, kw = self.weight.shape[2:]
        canvas = tuple((n - 1) * s + extent(k, d) for n, s, k, d in
                       zip(self.input.shape[2:], self.stride, (kh, kw), self.dilation))
        return (canvas, f"its uncropped canvas {canvas}",  # type: ignore[return-value]
                "reduce stride, dilation, the input size or the batch")

    def _compute(self, x: Any, w: Any, method: str, bias: Any) -> Any:
        return _with_bias(self.backend, "conv_transpose2d", bias, x, w, self.stride,
                          self.padding, self.dilation, self.groups, self.out_hw, method,
                          get_scratch_limit())


def transpose_as_conv(x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                      stride: tuple[int, int], dilation: tuple[int, int], groups: int,
                      out_hw: tuple[int, int],
                      ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, int]]:
    """(input, weight, output size) of the convolution that costs what a
    conv_transpose2d does, for ``method="auto"``.

    With stride 1 a transposed convolution is computed as the full correlation
    of its input with the flipped, channel-swapped kernel: that convolution.
    With a stride it is the adjoint of the strided convolution from its output
    back to its input, which moves the same data.
    """
    N, C, H, W = x_shape
    Cin_w, Coutg, kh, kw = w_shape
    cout = Coutg * groups
    if tuple(stride) == (1, 1):
        ext = tuple(o + extent(k, d) - 1 for o, k, d in zip(out_hw, (kh, kw), dilation))
        return (N, C) + ext, (cout, C // groups, kh, kw), tuple(out_hw)
    return (N, cout) + tuple(out_hw), (Cin_w, Coutg, kh, kw), (H, W)


@functools.lru_cache(maxsize=64)
def _takes_bias(cls: type, name: str) -> bool:
    try:
        params = inspect.signature(getattr(cls, name)).parameters
    except (TypeError, ValueError):
        return False
    return "bias" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _with_bias(backend: Any, name: str, bias: Any, *args: Any) -> Any:
    """``backend.<name>(*args)`` plus ``bias``: fused by the backend where it takes one.

    A backend written before the ``bias`` keyword (or that leaves it out) still
    works: the bias is then added here, in a separate pass.
    """
    kernel = getattr(backend, name)
    if bias is None:
        return kernel(*args)
    if _takes_bias(type(backend), name):
        return kernel(*args, bias=bias)
    out = kernel(*args)
    out += bias[None, :, None, None]
    return out


def _plan_conv2d(input: Any, weight: Any, bias: Any, stride: Any, padding: Any,
                 dilation: Any, groups: Any, padding_mode: Any) -> _Conv2dCall:
    """Validate a conv2d call (its one front door, also behind ``choose_method``)."""
    backend = resolve_backend(input=input, weight=weight, bias=bias)
    padding_mode = parse_padding_mode(padding_mode)
    groups = _check_int("groups", groups, 1)
    stride = pair("stride", stride, minimum=1)
    dilation = pair("dilation", dilation, minimum=1)
    input, weight, bias, unbatched = _prepare(backend, input, weight, bias)
    N, C, H, W = input.shape
    Cout, Cg, kh, kw = weight.shape
    _check_groups(C, Cout, Cg, groups)
    _check_bias(bias, Cout)
    pads = resolve_padding(padding, (H, W), (kh, kw), stride, dilation)
    _check_padding_mode(padding_mode, pads, (H, W))
    Ho, Wo = conv_output_hw((H, W), pads, (kh, kw), stride, dilation)
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"weight of spatial size {(kh, kw)} with dilation {dilation} spans "
            f"{(extent(kh, dilation[0]), extent(kw, dilation[1]))} pixels; it must fit "
            f"in the padded input {(H + pads[0] + pads[1], W + pads[2] + pads[3])}: pad more "
            "or use a smaller kernel or dilation"
        )
    result_dtype, work_dtype = compute_dtype(_dtypes(input, weight, bias))
    call = _Conv2dCall(backend, input, weight, bias, unbatched, stride, dilation, groups,
                       (Ho, Wo), Cout, result_dtype, work_dtype, pads, padding_mode)
    call.check_memory()
    return call


def _plan_conv_transpose2d(input: Any, weight: Any, bias: Any, stride: Any, padding: Any,
                           output_padding: Any, groups: Any,
                           dilation: Any) -> _ConvTransposeCall:
    """Validate a conv_transpose2d call (its one front door, also behind ``choose_method``)."""
    backend = resolve_backend(input=input, weight=weight, bias=bias)
    groups = _check_int("groups", groups, 1)
    stride = pair("stride", stride, minimum=1)
    dilation = pair("dilation", dilation, minimum=1)
    if isinstance(padding, str):
        raise ValueError(f"padding must be an int or a pair of ints for conv_transpose2d; "
                         f"got {padding!r}")
    padding = pair("padding", padding, minimum=0)
    output_padding = pair("output_padding", output_padding, minimum=0)
    for axis in range(2):
        if output_padding[axis] >= max(stride[axis], dilation[axis]):
            raise ValueError(
                f"output_padding must be smaller than stride or dilation in each axis; got "
                f"output_padding={output_padding}, stride={stride}, dilation={dilation}"
            )
    input, weight, bias, unbatched = _prepare(backend, input, weight, bias)
    N, C, H, W = input.shape
    Cin_w, Coutg, kh, kw = weight.shape
    if Cin_w != C:
        raise ValueError(
            f"weight.shape[0] must equal the input channels {C} (weight is (C_in, C_out/groups, "
            f"kh, kw) for conv_transpose2d); got weight of shape {weight.shape}"
        )
    if C % groups:
        raise ValueError(f"input channels {C} must be divisible by groups={groups}")
    Cout = Coutg * groups
    _check_bias(bias, Cout)
    Ho, Wo = transpose_output_hw((H, W), (kh, kw), stride, padding, output_padding, dilation)
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"padding {padding} removes the whole output: it would have size {(Ho, Wo)}"
        )
    result_dtype, work_dtype = compute_dtype(_dtypes(input, weight, bias))
    call = _ConvTransposeCall(backend, input, weight, bias, unbatched, stride, dilation,
                              groups, (Ho, Wo), Cout, result_dtype, work_dtype, padding)
    call.check_memory()
    return call


def _dtypes(input: Any, weight: Any, bias: Any) -> dict[str, Any]:
    dtypes = {"input": input.dtype, "weight": weight.dtype}
    if bias is not None:
        dtypes["bias"] = bias.dtype
    return dtypes


def _check_groups(C: int, Cout: int, Cg: int, groups: int) -> None:
    if C % groups:
        raise ValueError(f"input channels {C} must be divisible by groups={groups}")
    if Cout % groups:
        raise ValueError(f"output channels (weight.shape[0]={Cout}) must be divisible by "
                         f"groups={groups}")
    if Cg * groups != C:
        raise ValueError(
            f"weight.shape[1] must be input channels / groups = {C} / {groups} = "
            f"{C // groups}; got {Cg}"
        )


def _check_bias(bias: Any, Cout: int) -> None:
    if bias is not None and tuple(bias.shape) != (Cout,):
        raise ValueError(f"bias must have shape ({Cout},) (one per output channel); "
                         f"got shape {tuple(bias.shape)}")


def _check_padding_mode(padding_mode: str, pads: tuple[int, int, int, int],
                        hw: tuple[int, int]) -> None:
    H, W = hw
    limits = {"reflect": (H - 1, W - 1), "circular": (H, W)}
    if padding_mode not in limits:
        return
    lim_h, lim_w = limits[padding_mode]
    if max(pads[:2]) > lim_h or max(pads[2:]) > lim_w:
        rule = "smaller than" if padding_mode == "reflect" else "no larger than"
        raise ValueError(
            f"padding_mode={padding_mode!r} needs padding {rule} the input size {(H, W)}; "
            f"got padding (top, bottom, left, right) = {pads}"
        )
