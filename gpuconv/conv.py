"""Deep-learning convolution: ``conv2d`` (NCHW, PyTorch semantics), its adjoint
``conv_transpose2d``, and the chapter's output-size formula."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from . import _choose
from ._config import get_scratch_limit
from ._dispatch import has_dask
from ._frontdoor import as_backend_array, native_work_dtype, to_work
from ._validation import compute_dtype, pair, parse_method, parse_padding_mode
from ._winograd import check_winograd
from .backend import resolve_backend

__all__ = ["conv2d", "conv_transpose2d", "output_shape"]

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
Method = Literal["auto", "direct", "gemm", "fft", "overlap-add", "winograd"]


def _same_padding(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    # TensorFlow's rule: output ceil(size / s); the odd pixel of padding goes
    # after (bottom/right).  With s == 1 this is PyTorch's padding="same".
    out = -(-size // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def _resolve_padding(padding: Any, hw: tuple[int, int], k: tuple[int, int],
                     stride: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for an int, a pair, 'valid' or 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            top, bottom = _same_padding(hw[0], k[0], stride[0], dilation[0])
            left, right = _same_padding(hw[1], k[1], stride[1], dilation[1])
            return top, bottom, left, right
        raise ValueError(
            f"padding must be an int, a pair of ints, 'valid' or 'same'; got {padding!r}"
        )
    ph, pw = pair("padding", padding, minimum=0)
    return ph, ph, pw, pw


def output_shape(input_size: Any, kernel_size: Any, *, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1) -> tuple[int, int]:
    """Spatial output size of a convolution: the chapter's formula, generalised.

    .. math:: n_o = \\left\\lfloor \\frac{n + p_{\\text{total}} - d (k - 1) - 1}{s} \\right\\rfloor + 1

    With no padding, stride 1 and no dilation this is the chapter's
    ``(nh - kh + 1) x (nw - kw + 1)``.

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
    top, bottom, left, right = _resolve_padding(padding, hw, k, s, d)
    ho = (hw[0] + top + bottom - d[0] * (k[0] - 1) - 1) // s[0] + 1
    wo = (hw[1] + left + right - d[1] * (k[1] - 1) - 1) // s[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(
            f"kernel_size {k} with dilation {d} does not fit in input_size {hw} padded by "
            f"{(top, bottom, left, right)}: the output would be {(ho, wo)}"
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


def _finish(backend: Any, out: Any, bias: Any, result_dtype: Any, work_dtype: Any,
            unbatched: bool) -> Any:
    if bias is not None:
        out += to_work(backend, bias, work_dtype)[None, :, None, None]
    if unbatched:
        out = out[0]
    return out.astype(result_dtype, copy=False)


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
        ``'direct'`` accumulates one matrix product per kernel tap;
        ``'gemm'`` builds im2col columns in chunks bounded by
        :func:`gpuconv.scratch_limit` and does one matrix product per chunk.
        ``'winograd'`` (3x3 kernels, stride 1, dilation 1) uses Winograd's
        minimal filtering: 2.25-4x fewer multiplications, a few times
        direct's rounding error (see ``docs/theory.md``).

    Returns
    -------
    array, shape (N, C_out, Ho, Wo) or (C_out, Ho, Wo)
        ``Ho = floor((H + pad_h - dilation*(kh-1) - 1) / stride) + 1``, see
        :func:`output_shape`.  Dtype rules are those of :func:`correlate2d`.

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
    if has_dask(input, weight, bias):
        from . import _dask

        return _dask.conv2d(input, weight, bias, stride, padding, dilation, groups,
                            padding_mode=padding_mode, method=method)
    backend = resolve_backend(input=input, weight=weight, bias=bias)
    padding_mode = parse_padding_mode(padding_mode)
    method = parse_method(method)
    groups = _check_int("groups", groups, 1)
    stride = pair("stride", stride, minimum=1)
    dilation = pair("dilation", dilation, minimum=1)
    input, weight, bias, unbatched = _prepare(backend, input, weight, bias)
    N, C, H, W = input.shape
    Cout, Cg, kh, kw = weight.shape
    if method == "winograd":
        check_winograd((kh, kw), stride, dilation)
    _check_groups(C, Cout, Cg, groups)
    _check_bias(bias, Cout)
    pads = _resolve_padding(padding, (H, W), (kh, kw), stride, dilation)
    _check_padding_mode(padding_mode, pads, (H, W))
    Ho = (H + pads[0] + pads[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + pads[2] + pads[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"weight of spatial size {(kh, kw)} with dilation {dilation} spans "
            f"{(dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)} pixels; it must fit "
            f"in the padded input {(H + pads[0] + pads[1], W + pads[2] + pads[3])}: pad more "
            "or use a smaller kernel or dilation"
        )
    dtypes = {"input": input.dtype, "weight": weight.dtype}
    if bias is not None:
        dtypes["bias"] = bias.dtype
    result_dtype, work_dtype = compute_dtype(dtypes)
    if N and method == "auto":
        method = _choose.choose_conv2d_method(
            backend, tuple(input.shape), tuple(weight.shape), (Ho, Wo), stride, groups,
            work_dtype, exact=input.dtype.kind in "biu" and weight.dtype.kind in "biu").method
    work_dtype = native_work_dtype(backend, method, result_dtype, work_dtype)
    x = to_work(backend, input, work_dtype)
    w = to_work(backend, weight, work_dtype)
    if N == 0:
        out = backend.xp.zeros((0, Cout, Ho, Wo), dtype=work_dtype)
        return _finish(backend, out, None, result_dtype, work_dtype, unbatched)
    out = backend.conv2d(x, w, stride, pads, dilation, groups, padding_mode, method,
                         get_scratch_limit())
    return _finish(backend, out, bias, result_dtype, work_dtype, unbatched)


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
        ``'winograd'`` (3x3 kernels, stride 1, dilation 1) as in :func:`conv2d`.

    Returns
    -------
    array, shape (N, C_out, Ho, Wo) or (C_out, Ho, Wo)
        ``Ho = (H - 1)*stride - 2*padding + dilation*(kh - 1) + output_padding + 1``.

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
    if has_dask(input, weight, bias):
        from . import _dask

        return _dask.conv_transpose2d(input, weight, bias, stride, padding, output_padding,
                                      groups, dilation, method=method)
    backend = resolve_backend(input=input, weight=weight, bias=bias)
    method = parse_method(method)
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
    if method == "winograd":
        check_winograd((kh, kw), stride, dilation)
    if Cin_w != C:
        raise ValueError(
            f"weight.shape[0] must equal the input channels {C} (weight is (C_in, C_out/groups, "
            f"kh, kw) for conv_transpose2d); got weight of shape {weight.shape}"
        )
    if C % groups:
        raise ValueError(f"input channels {C} must be divisible by groups={groups}")
    Cout = Coutg * groups
    _check_bias(bias, Cout)
    Ho = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    Wo = (W - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"padding {padding} removes the whole output: it would have size {(Ho, Wo)}"
        )
    dtypes = {"input": input.dtype, "weight": weight.dtype}
    if bias is not None:
        dtypes["bias"] = bias.dtype
    result_dtype, work_dtype = compute_dtype(dtypes)
    if N and method == "auto":
        method = _choose.choose_conv2d_method(
            backend, tuple(input.shape), (Cout, C // groups, kh, kw), (H, W), (1, 1), groups,
            work_dtype, exact=input.dtype.kind in "biu" and weight.dtype.kind in "biu").method
    work_dtype = native_work_dtype(backend, method, result_dtype, work_dtype)
    x = to_work(backend, input, work_dtype)
    w = to_work(backend, weight, work_dtype)
    if N == 0:
        out = backend.xp.zeros((0, Cout, Ho, Wo), dtype=work_dtype)
        return _finish(backend, out, None, result_dtype, work_dtype, unbatched)
    out = backend.conv_transpose2d(x, w, stride, padding, dilation, groups, (Ho, Wo), method,
                                   get_scratch_limit())
    return _finish(backend, out, bias, result_dtype, work_dtype, unbatched)


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
