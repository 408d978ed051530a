"""The backend protocol and the generic backend every array library can start from.

An op never asks which library it runs on.  It asks the backend for

* ``xp``: the array namespace (``numpy``, ``cupy``, ...);
* ``fft``: a ``scipy.fft``-compatible module;
* its kernels: the methods below, which receive validated, contiguous arrays
  of the working dtype and return the backend's arrays.

``conv2d`` and ``conv_transpose2d`` take an optional ``bias`` (C_out,) in the
working dtype and return the output with it added, so that a kernel that
writes the output can add it in the same pass.  ``conv2d_weight_grad``
returns :data:`NotImplemented` for the cases it has no native algorithm for;
the caller then falls back to a ``conv2d`` of the swapped arrays.

:class:`ArrayBackend` implements every kernel with the generic ``xp`` code of
:mod:`gpuconv.backends._generic`; a backend overrides what it can do faster.
Register a new backend with :func:`gpuconv.register_backend`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import _generic, _pool

__all__ = ["Backend", "ArrayBackend"]


@runtime_checkable
class Backend(Protocol):
    """What gpuconv's ops need from an array library.

    An op asks its backend for ``xp`` (the array namespace), ``fft`` (a
    ``scipy.fft``-like module) and its kernels, which receive validated,
    C-contiguous arrays of the working dtype and return the backend's arrays.
    Subclass :class:`ArrayBackend` rather than implementing every method.

    Attributes
    ----------
    name : str
        The name the backend is registered under.
    xp : module
        The array namespace (``numpy``, ``cupy``, ...).

    See Also
    --------
    ArrayBackend : implements every kernel with generic ``xp`` code.
    gpuconv.register_backend : make a backend available by name.

    Examples
    --------
    >>> from gpuconv.backends import Backend
    >>> from gpuconv.backend import get_backend_object
    >>> isinstance(get_backend_object("numpy"), Backend)
    True
    """

    name: str
    xp: Any

    @property
    def fft(self) -> Any:
        """A ``scipy.fft``-compatible module (``rfftn``, ``irfftn``, ``next_fast_len``)."""

    def asarray(self, x: Any) -> Any:
        """``x`` as this backend's array (moving it from another library if needed)."""

    def to_numpy(self, x: Any) -> Any:
        """``x`` as a NumPy array (a device-to-host copy where needed)."""

    def device_key(self) -> str:
        """A string naming the device, for caches keyed by where a call runs."""

    def synchronize(self) -> None:
        """Block until every operation queued on this backend's current stream is done.

        Ops return as soon as their work is queued; a caller that times a call,
        or hands its result to another library, waits here first.  A backend
        that computes eagerly (NumPy) returns at once.
        """

    def correlate_planes(self, x: Any, w: Any, out_shape: tuple[int, int],
                         origin: tuple[int, int], boundary: str, fillvalue: Any,
                         method: str, scratch_bytes: int) -> Any:
        """Correlate every plane of ``x`` (B, H, W) with ``w`` into ``out_shape`` outputs.

        ``out[b, i, j] = sum_{u,v} ext[b, i - origin[0] + u, j - origin[1] + v] w[u, v]``
        where ``ext`` extends the plane by ``boundary`` (``fillvalue`` for ``'fill'``).
        """

    def conv2d(self, x: Any, w: Any, stride: tuple[int, int],
               pads: tuple[int, int, int, int], dilation: tuple[int, int], groups: int,
               padding_mode: str, method: str, scratch_bytes: int,
               bias: Any = None) -> Any:
        """:func:`gpuconv.conv2d` of a 4-D input, with padding ``(top, bottom, left, right)``.

        ``bias`` (C_out,), when given, is added to the output (fused into the
        output pass where a kernel writes it).
        """

    def conv_transpose2d(self, x: Any, w: Any, stride: tuple[int, int],
                         padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                         out_hw: tuple[int, int], method: str, scratch_bytes: int,
                         bias: Any = None) -> Any:
        """:func:`gpuconv.conv_transpose2d` of a 4-D input into ``out_hw`` outputs (+ ``bias``)."""

    def conv2d_weight_grad(self, x: Any, grad_out: Any, kernel_hw: tuple[int, int],
                           stride: tuple[int, int], pads: tuple[int, int, int, int],
                           dilation: tuple[int, int], groups: int, padding_mode: str,
                           method: str, scratch_bytes: int) -> Any:
        """The weight gradient of a conv2d, or ``NotImplemented`` to let gpuconv.nn compute it."""

    def max_pool2d(self, x: Any, kernel: tuple[int, int], stride: tuple[int, int],
                   pads: tuple[int, int, int, int], dilation: tuple[int, int],
                   out_hw: tuple[int, int], taps: bool) -> tuple[Any, Any]:
        """Window maxima (PyTorch's rules) and, if ``taps``, the tap ``u * kw + v`` of each."""

    def avg_pool2d(self, x: Any, kernel: tuple[int, int], stride: tuple[int, int],
                   pads: tuple[int, int, int, int], out_hw: tuple[int, int],
                   divisor: Any) -> Any:
        """Window sums (zero padding) divided by ``divisor``, a number or an (Ho, Wo) array."""


def protocol_members() -> tuple[str, ...]:
    """The members every backend has: the attributes and methods of :class:`Backend`.

    :func:`gpuconv.register_backend` checks a factory's result against them.
    :class:`ArrayBackend` has every one, with generic kernels and defaults for
    the optional capabilities (``synchronize``, ``conv2d_weight_grad``, the
    pooling kernels); ``available_memory``, ``describe``, ``winograd_options``
    and ``native_float16`` are looked up where used and may be missing.
    """
    names = set(getattr(Backend, "__annotations__", {}))
    names.update(n for n in vars(Backend) if not n.startswith("_"))
    return tuple(sorted(names))


class ArrayBackend:
    """A backend built from an array namespace and an FFT module.

    Subclasses set ``name`` and ``xp`` and override kernels they implement
    natively.  Methods not implemented by a backend raise
    ``NotImplementedError`` with a sentence naming the alternative.

    See Also
    --------
    Backend : the protocol it implements.
    gpuconv.register_backend : register a subclass by name.

    Examples
    --------
    A backend for any NumPy-compatible namespace is a few lines; this one
    has no FFT module, so the FFT methods say what to use instead:

    >>> import numpy as np
    >>> import gpuconv
    >>> from gpuconv.backends import ArrayBackend
    >>> class PlainNumpy(ArrayBackend):
    ...     name = "plain-numpy"
    ...     xp = np
    >>> gpuconv.register_backend("plain-numpy", PlainNumpy, replace=True)
    >>> with gpuconv.set_backend("plain-numpy"):
    ...     gpuconv.correlate2d(np.eye(3), np.ones((2, 2)), "valid", method="direct")
    array([[2., 1.],
           [1., 2.]])
    >>> with gpuconv.set_backend("plain-numpy"):  # doctest: +ELLIPSIS
    ...     gpuconv.correlate2d(np.eye(3), np.ones((2, 2)), method="fft")
    Traceback (most recent call last):
        ...
    NotImplementedError: backend 'plain-numpy' provides no FFT module, ...
    """

    name = "generic"
    xp: Any = None
    #: Methods whose kernels take float16 arrays as they are (accumulating in
    #: float32).  For the others the front door widens float16 to float32.
    native_float16: frozenset[str] = frozenset()

    @property
    def fft(self) -> Any:
        raise NotImplementedError(
            f"backend {self.name!r} provides no FFT module, so method='fft' and "
            "method='overlap-add' cannot run on it; use method='direct' or method='gemm' instead"
        )

    def asarray(self, x: Any) -> Any:
        return self.xp.asarray(x)

    def to_numpy(self, x: Any) -> Any:
        import numpy

        return numpy.asarray(x)

    def device_key(self) -> str:
        return self.name

    def available_memory(self) -> int | None:
        """Bytes a call may still allocate here, or ``None`` when the backend cannot tell.

        The front doors compare a call's needs with it before allocating.
        """
        return None

    def describe(self) -> dict[str, Any]:
        """Facts about where this backend computes, for :func:`gpuconv.show_config`."""
        return {}

    def synchronize(self) -> None:
        """Block until queued work is done; a no-op here, where every call is eager.

        A backend whose kernels run asynchronously (a GPU stream) overrides it.
        """

    def __repr__(self) -> str:
        return f"<gpuconv backend {self.name!r}>"

    def winograd_options(self) -> dict[str, Any]:
        """Keyword options of :mod:`gpuconv._winograd`'s entry points on this backend
        (working-set target, concurrent chunks); none by default."""
        return {}

    # -- kernels -----------------------------------------------------------
    def correlate_planes(self, x, w, out_shape, origin, boundary, fillvalue, method,
                         scratch_bytes):
        if method == "direct":
            return _generic.correlate_planes_direct(self.xp, x, w, out_shape, origin,
                                                    boundary, fillvalue)
        if method == "gemm":
            return _generic.correlate_planes_gemm(self.xp, x, w, out_shape, origin,
                                                  boundary, fillvalue, scratch_bytes)
        if method in ("fft", "overlap-add"):
            from .. import _fft

            return _fft.correlate_planes(self, x, w, out_shape, origin, boundary, fillvalue,
                                         method, scratch_bytes)
        if method == "winograd":
            from .. import _winograd

            ext = _generic._extended_for(self.xp, x, w.shape, out_shape, origin, boundary,
                                         fillvalue)
            return _winograd.correlate_planes(self.xp, ext, w, out_shape, scratch_bytes,
                                              **self.winograd_options())
        raise _unimplemented(self, method)

    def conv2d(self, x, w, stride, pads, dilation, groups, padding_mode, method,
               scratch_bytes, bias=None):
        xpad = _generic.pad_nchw(self.xp, x, pads, padding_mode)
        Ho = (xpad.shape[2] - dilation[0] * (w.shape[2] - 1) - 1) // stride[0] + 1
        Wo = (xpad.shape[3] - dilation[1] * (w.shape[3] - 1) - 1) // stride[1] + 1
        if method == "direct":
            out = _generic.conv2d_direct(self.xp, xpad, w, stride, dilation, groups, (Ho, Wo))
        elif method == "gemm":
            out = _generic.conv2d_gemm(self.xp, xpad, w, stride, dilation, groups, (Ho, Wo),
                                       scratch_bytes)
        elif method in ("fft", "overlap-add"):
            from .. import _fft

            out = _fft.conv2d(self, xpad, w, stride, dilation, groups, (Ho, Wo), method,
                              scratch_bytes)
        elif method == "winograd":
            from .. import _winograd

            out = _winograd.conv2d(self.xp, self.xp.ascontiguousarray(xpad), w, groups,
                                   (Ho, Wo), scratch_bytes, **self.winograd_options())
        else:
            raise _unimplemented(self, method)
        return _generic.add_bias(out, bias)

    def conv_transpose2d(self, x, w, stride, padding, dilation, groups, out_hw, method,
                         scratch_bytes, bias=None):
        if method == "direct":
            out = _generic.conv_transpose2d_direct(self.xp, x, w, stride, padding, dilation,
                                                   groups, out_hw)
        elif method == "gemm":
            out = _generic.conv_transpose2d_gemm(self.xp, x, w, stride, padding, dilation,
                                                 groups, out_hw, scratch_bytes)
        elif method in ("fft", "overlap-add"):
            from .. import _fft

            out = _fft.conv_transpose2d(self, x, w, stride, padding, dilation, groups, out_hw,
                                        method, scratch_bytes)
        elif method == "winograd":
            from .. import _winograd

            out = _winograd.conv_transpose2d(self.xp, x, w, padding, groups, out_hw,
                                             scratch_bytes, **self.winograd_options())
        else:
            raise _unimplemented(self, method)
        return _generic.add_bias(out, bias)

    def conv2d_weight_grad(self, x, grad_out, kernel_hw, stride, pads, dilation, groups,
                           padding_mode, method, scratch_bytes):
        """Gradient of ``conv2d`` with respect to its weight, or ``NotImplemented``.

        With ``method='auto'`` or ``'gemm'``, small strides and float32/float64: ``kh * kw``
        matrix products over the row-pitched input
        (:func:`._generic.conv2d_weight_grad_rowpitched`; it costs the same at
        any stride, so past ``stride[0] * stride[1] == 4`` the caller's
        ``conv2d`` of the swapped arrays, whose work falls with the stride's
        square, wins).
        """
        if (method not in ("auto", "gemm") or stride[0] * stride[1] > 4
                or np.dtype(x.dtype) not in (np.dtype(np.float32), np.dtype(np.float64))):
            return NotImplemented
        _, _, Ho, Wo = grad_out.shape
        kh, kw = kernel_hw
        need_h = dilation[0] * (kh - 1) + stride[0] * (Ho - 1) + 1
        need_w = dilation[1] * (kw - 1) + stride[1] * (Wo - 1) + 1
        # Rows past need_h are never read (they are the remainder of the stride).
        xpad = _generic.pad_nchw(self.xp, x, pads, padding_mode)[:, :, :need_h, :need_w]
        return _generic.conv2d_weight_grad_rowpitched(self.xp, xpad, grad_out, kernel_hw,
                                                      stride, dilation, groups, scratch_bytes)

    def max_pool2d(self, x, kernel, stride, pads, dilation, out_hw, taps):
        return _pool.max_pool2d(self.xp, x, kernel, stride, pads, dilation, out_hw, taps)

    def avg_pool2d(self, x, kernel, stride, pads, out_hw, divisor):
        return _pool.avg_pool2d(self.xp, x, kernel, stride, pads, out_hw, divisor)


def _unimplemented(backend: Any, method: str) -> NotImplementedError:
    if method in ("fft", "overlap-add"):
        return NotImplementedError(
            f"method={method!r} is not implemented yet on backend {backend.name!r}; "
            "use method='direct' or method='gemm' instead"
        )
    return NotImplementedError(f"method={method!r} is not implemented on backend {backend.name!r}")
