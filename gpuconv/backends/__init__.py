"""The backend protocol and the generic backend every array library can start from.

An op never asks which library it runs on.  It asks the backend for

* ``xp``: the array namespace (``numpy``, ``cupy``, ...);
* ``fft``: a ``scipy.fft``-compatible module;
* its kernels: the methods below, which receive validated, contiguous arrays
  of the working dtype and return the backend's arrays.

:class:`ArrayBackend` implements every kernel with the generic ``xp`` code of
:mod:`gpuconv.backends._generic`; a backend overrides what it can do faster.
Register a new backend with :func:`gpuconv.register_backend`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from . import _generic

__all__ = ["Backend", "ArrayBackend"]


@runtime_checkable
class Backend(Protocol):
    """What gpuconv's ops need from an array library."""

    name: str
    xp: Any

    @property
    def fft(self) -> Any: ...

    def asarray(self, x: Any) -> Any: ...

    def to_numpy(self, x: Any) -> Any: ...

    def device_key(self) -> str: ...

    def correlate_planes(self, x: Any, w: Any, out_shape: tuple[int, int],
                         origin: tuple[int, int], boundary: str, fillvalue: Any,
                         method: str, scratch_bytes: int) -> Any: ...

    def conv2d(self, x: Any, w: Any, stride: tuple[int, int],
               pads: tuple[int, int, int, int], dilation: tuple[int, int], groups: int,
               padding_mode: str, method: str, scratch_bytes: int) -> Any: ...

    def conv_transpose2d(self, x: Any, w: Any, stride: tuple[int, int],
                         padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                         out_hw: tuple[int, int], method: str, scratch_bytes: int) -> Any: ...


class ArrayBackend:
    """A backend built from an array namespace and an FFT module.

    Subclasses set ``name`` and ``xp`` and override kernels they implement
    natively.  Methods not implemented by a backend raise
    ``NotImplementedError`` with a sentence naming the alternative.
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
               scratch_bytes):
        xpad = _generic.pad_nchw(self.xp, x, pads, padding_mode)
        Ho = (xpad.shape[2] - dilation[0] * (w.shape[2] - 1) - 1) // stride[0] + 1
        Wo = (xpad.shape[3] - dilation[1] * (w.shape[3] - 1) - 1) // stride[1] + 1
        if method == "direct":
            return _generic.conv2d_direct(self.xp, xpad, w, stride, dilation, groups, (Ho, Wo))
        if method == "gemm":
            return _generic.conv2d_gemm(self.xp, xpad, w, stride, dilation, groups, (Ho, Wo),
                                        scratch_bytes)
        if method in ("fft", "overlap-add"):
            from .. import _fft

            return _fft.conv2d(self, xpad, w, stride, dilation, groups, (Ho, Wo), method,
                               scratch_bytes)
        if method == "winograd":
            from .. import _winograd

            return _winograd.conv2d(self.xp, self.xp.ascontiguousarray(xpad), w, groups,
                                    (Ho, Wo), scratch_bytes, **self.winograd_options())
        raise _unimplemented(self, method)

    def conv_transpose2d(self, x, w, stride, padding, dilation, groups, out_hw, method,
                         scratch_bytes):
        if method == "direct":
            return _generic.conv_transpose2d_direct(self.xp, x, w, stride, padding, dilation,
                                                    groups, out_hw)
        if method == "gemm":
            return _generic.conv_transpose2d_gemm(self.xp, x, w, stride, padding, dilation,
                                                  groups, out_hw, scratch_bytes)
        if method in ("fft", "overlap-add"):
            from .. import _fft

            return _fft.conv_transpose2d(self, x, w, stride, padding, dilation, groups, out_hw,
                                         method, scratch_bytes)
        if method == "winograd":
            from .. import _winograd

            return _winograd.conv_transpose2d(self.xp, x, w, padding, groups, out_hw,
                                              scratch_bytes, **self.winograd_options())
        raise _unimplemented(self, method)


def _unimplemented(backend: Any, method: str) -> NotImplementedError:
    if method in ("fft", "overlap-add"):
        return NotImplementedError(
            f"method={method!r} is not implemented yet on backend {backend.name!r}; "
            "use method='direct' or method='gemm' instead"
        )
    return NotImplementedError(f"method={method!r} is not implemented on backend {backend.name!r}")
