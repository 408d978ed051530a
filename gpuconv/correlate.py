"""SciPy-style 2-D cross-correlation and convolution of (batches of) planes.

``correlate2d`` and ``convolve2d`` are thin wrappers over one private function:
convolution is correlation with the kernel flipped instead of conjugated, and
a different centre for ``mode="same"`` with even kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from . import _choose
from ._config import get_scratch_limit
from ._dispatch import deferred_module
from ._frontdoor import (PlanCache, all_finite, as_backend_array, check_fits, foreign_arrays,
                         native_work_dtype, signature, to_work, warn_nonfinite)
from ._geometry import plane_geometry
from ._validation import check_fillvalue, compute_dtype, parse_boundary, parse_method, parse_mode
from ._winograd import check_winograd
from .backend import get_backend, registry_generation, resolve_backend

__all__ = ["correlate2d", "convolve2d", "corr2d"]

Mode = Literal["full", "same", "valid"]
Boundary = Literal["fill", "wrap", "symm", "pad", "circular", "symmetric"]
Method = Literal["auto", "direct", "gemm", "fft", "overlap-add", "winograd"]


@foreign_arrays("in1", "in2")
def correlate2d(in1: Any, in2: Any, mode: Mode = "full", boundary: Boundary = "fill",
                fillvalue: Any = 0, *, method: Method = "auto") -> Any:
    """Cross-correlate planes with a 2-D kernel, as :func:`scipy.signal.correlate2d`.

    .. math:: z[..., i, j] = \\sum_{u, v} x[..., i + u - t, j + v - l]\\,\\overline{k[u, v]}

    where ``(t, l)`` is the origin offset fixed by ``mode``.

    Parameters
    ----------
    in1 : array_like, shape (..., H, W)
        The input.  Leading axes are a batch: every plane is correlated with
        the same kernel in one call.
    in2 : array_like, shape (kh, kw)
        The kernel.  It is complex-conjugated, as in SciPy.
    mode : {'full', 'valid', 'same'}, optional
        ``'full'`` (default): every overlap, shape ``(H + kh - 1, W + kw - 1)``.
        ``'valid'``: only full overlaps, ``(H - kh + 1, W - kw + 1)``; as in
        SciPy, if the kernel is at least as large as the input in both axes the
        roles are swapped exactly as SciPy swaps them, and if
        neither contains the other a ``ValueError`` is raised.
        ``'same'``: the size of ``in1``, centred on the full output.
    boundary : {'fill', 'wrap', 'symm'}, optional
        How ``in1`` is extended beyond its edges: by ``fillvalue`` (``'fill'``,
        alias ``'pad'``), periodically (``'wrap'``, alias ``'circular'``) or
        mirrored with the edge repeated (``'symm'``, alias ``'symmetric'``).
    fillvalue : scalar, optional
        The value used with ``boundary='fill'`` (default 0).
    method : {'auto', 'direct', 'gemm', 'fft', 'overlap-add'}, keyword-only
        The algorithm.  ``'auto'`` asks :func:`gpuconv.choose_method`.

    Returns
    -------
    array, shape (..., Ho, Wo)
        An array of the backend's library.  Its dtype is the promoted dtype of
        the inputs: integer and bool inputs give float64 (SciPy keeps them
        integer and can overflow); float16 is accumulated in float32 and
        returned as float16 (the CuPy ``"direct"`` kernels read and write
        float16 as it is; other paths widen it to float32 first).

    Raises
    ------
    ValueError
        For an unknown ``mode``/``boundary``/``method``, empty or wrongly
        shaped inputs, or ``'valid'`` shapes where neither input contains
        the other.
    TypeError
        For non-numeric inputs, or inputs from two array libraries with the
        ``"auto"`` backend.

    See Also
    --------
    convolve2d : the same with the kernel flipped.
    corr2d : the chapter's name for ``correlate2d(X, K, mode="valid")``.

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> x = np.array([[0., 1., 2.], [3., 4., 5.], [6., 7., 8.]])
    >>> k = np.array([[0., 1.], [2., 3.]])
    >>> gpuconv.correlate2d(x, k, mode="valid")
    array([[19., 25.],
           [37., 43.]])
    >>> gpuconv.correlate2d(np.stack([x, -x]), k, mode="valid").shape
    (2, 2, 2)
    """
    return _correlate2d(in1, in2, mode, boundary, fillvalue, method, convolution=False)


@foreign_arrays("in1", "in2")
def convolve2d(in1: Any, in2: Any, mode: Mode = "full", boundary: Boundary = "fill",
               fillvalue: Any = 0, *, method: Method = "auto") -> Any:
    """Convolve planes with a 2-D kernel, as :func:`scipy.signal.convolve2d`.

    .. math:: z[..., i, j] = \\sum_{u, v} x[..., i - u + t, j - v + l]\\, k[u, v]

    Parameters and return value are those of :func:`correlate2d`; the kernel
    is flipped in both axes instead of conjugated, and ``mode='same'`` is
    centred as SciPy centres convolution (for even kernels this differs by
    one sample from correlation).

    Parameters
    ----------
    in1 : array_like, shape (..., H, W)
        The input; leading axes are a batch.
    in2 : array_like, shape (kh, kw)
        The kernel.
    mode : {'full', 'valid', 'same'}, optional
        Output size, as in :func:`correlate2d`.
    boundary : {'fill', 'wrap', 'symm'}, optional
        Edge extension, as in :func:`correlate2d`.
    fillvalue : scalar, optional
        The value used with ``boundary='fill'``.
    method : {'auto', 'direct', 'gemm', 'fft', 'overlap-add'}, keyword-only
        The algorithm.

    Returns
    -------
    array, shape (..., Ho, Wo)
        See :func:`correlate2d`.

    Raises
    ------
    ValueError, TypeError, MemoryError
        As :func:`correlate2d`.

    See Also
    --------
    correlate2d : the same without the flip (and with the conjugate).
    scipy.signal.convolve2d : the function this one matches.

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> x = np.arange(9.0).reshape(3, 3)
    >>> k = np.array([[0., 1.], [2., 3.]])
    >>> gpuconv.convolve2d(x, k, mode="valid")
    array([[ 5., 11.],
           [23., 29.]])
    >>> np.allclose(gpuconv.convolve2d(x, k), gpuconv.convolve2d(k, x))  # f * g = g * f
    True
    """
    return _correlate2d(in1, in2, mode, boundary, fillvalue, method, convolution=True)


@foreign_arrays("X", "K")
def corr2d(X: Any, K: Any) -> Any:
    """The 2-D cross-correlation of Dive into Deep Learning: ``correlate2d(X, K, mode="valid")``.

    The ``corr2d`` of its section "Convolutions for Images" (see
    ``docs/tutorial.md``).  The output has shape ``(nh - kh + 1, nw - kw + 1)``.

    Parameters
    ----------
    X : array_like, shape (..., nh, nw)
        The input.
    K : array_like, shape (kh, kw)
        The kernel, no larger than ``X`` in either axis.

    Returns
    -------
    array, shape (..., nh - kh + 1, nw - kw + 1)

    Raises
    ------
    ValueError
        When ``K`` is larger than ``X`` in either axis (unlike
        :func:`correlate2d`, the roles are never swapped), or for empty or
        wrongly shaped inputs.
    TypeError
        For non-numeric inputs.

    See Also
    --------
    correlate2d : every mode and boundary.
    gpuconv.reference.corr2d : the same, one output at a time.

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> X = np.ones((6, 8)); X[:, 2:6] = 0
    >>> gpuconv.corr2d(X, np.array([[1.0, -1.0]]))[0]
    array([ 0.,  1.,  0.,  0.,  0., -1.,  0.])
    """
    return _correlate2d(X, K, "valid", "fill", 0, "auto", convolution=False, swap=False,
                        names=("X", "K"))


# Validated calls by signature (arrays' types, shapes, dtypes and the options): a
# repeated call shape skips validation and the geometry.
_PLANS = PlanCache()

# The plane geometry lives with the other shape rules; this name stays for callers.
_plane_geometry = plane_geometry


@dataclass(frozen=True)
class _PlanesCall:
    """A validated correlation of planes: everything but the method."""

    backend: Any
    in1: Any            # backend arrays, input dtypes
    in2: Any
    batch: tuple[int, ...]
    out_shape: tuple[int, int]
    origin: tuple[int, int]
    swapped: bool
    boundary: str
    fillvalue: Any
    convolution: bool
    result_dtype: np.dtype
    work_dtype: np.dtype

    @property
    def planes(self) -> int:
        return int(math.prod(self.batch))

    @property
    def exact(self) -> bool:
        # Integer sums are exact in float64 by the direct methods; an FFT would round them.
        return self.in1.dtype.kind in "biu" and self.in2.dtype.kind in "biu"

    def x_shape(self) -> tuple[int, int, int]:
        return (self.planes,) + tuple(self.in1.shape[-2:])

    def key(self) -> tuple[Any, ...]:
        key = self.__dict__.get("_key")
        if key is None:  # once per plan: a cached plan carries it to the next call
            key = self.__dict__["_key"] = _choose.planes_key(
                self.backend, self.x_shape(), tuple(self.in2.shape), self.out_shape,
                self.work_dtype, self.boundary, self.exact)
        return key

    def model_choice(self) -> _choose.MethodChoice:
        return _choose.choose_planes_method(self.backend, self.x_shape(), tuple(self.in2.shape),
                                            self.out_shape, self.work_dtype, self.boundary,
                                            self.exact, key=self.key())

    def template(self) -> "_PlanesCall":
        """This call without its arrays: what the plan cache keeps."""
        plan = object.__new__(type(self))
        plan.__dict__.update(self.__dict__, in1=None, in2=None)
        return plan

    def rebind(self, in1: Any, in2: Any, names: tuple[str, str]) -> "_PlanesCall":
        """This (cached, validated) call with other arrays of the same signature."""
        call = object.__new__(type(self))
        call.__dict__.update(self.__dict__, in1=as_backend_array(self.backend, names[0], in1),
                             in2=as_backend_array(self.backend, names[1], in2))
        return call

    def finite(self) -> bool:
        scalars = (self.fillvalue,) if self.boundary == "fill" else ()
        return all_finite(self.backend, (self.in1, self.in2), scalars)

    def choose(self) -> _choose.MethodChoice:
        """The choice of ``method="auto"`` for this call, precision policy applied."""
        return _choose.apply_finite_policy(self.model_choice(), self.finite)

    def run(self, method: str) -> Any:
        backend, xp = self.backend, self.backend.xp
        work = native_work_dtype(backend, method, self.result_dtype, self.work_dtype)
        in_hw = tuple(self.in1.shape[-2:])
        if not self.planes:
            return xp.empty(self.batch + self.out_shape, dtype=self.result_dtype)
        x = to_work(backend, self.in1.reshape((-1,) + in_hw), work)
        w = to_work(backend, self.in2, work)
        if self.convolution:
            w = xp.ascontiguousarray(w[::-1, ::-1])
        elif self.swapped:
            # SciPy conjugates the (now) kernel in1 and flips the result; the same
            # numbers are the conjugated image against the plain kernel.
            x = xp.conj(x) if work.kind == "c" else x
        elif work.kind == "c":
            w = xp.conj(w)
        out = backend.correlate_planes(x, w, self.out_shape, self.origin, self.boundary,
                                       self.fillvalue, method, get_scratch_limit())
        out = out.reshape(self.batch + self.out_shape)
        return out.astype(self.result_dtype, copy=False)


def _check_memory(call: _PlanesCall) -> None:
    work = call.work_dtype
    (oh, ow), (kh, kw) = call.out_shape, call.in2.shape
    # The output, and the boundary-extended input every method reads.
    nbytes = call.planes * (oh * ow + (oh + kh - 1) * (ow + kw - 1)) * work.itemsize
    if call.result_dtype != work:
        nbytes += call.planes * oh * ow * call.result_dtype.itemsize
    check_fits(call.backend, nbytes,
               f"an output of shape {call.batch + call.out_shape} ({call.result_dtype}) and "
               "its extended input",
               "use mode='valid' or 'same', smaller inputs, or dask arrays (see docs/dask.md)")


def _plan(in1: Any, in2: Any, mode: Any, boundary: Any, fillvalue: Any, *, convolution: bool,
          swap: bool = True, names: tuple[str, str] = ("in1", "in2")) -> _PlanesCall:
    """Validate a call of correlate2d/convolve2d: the one front door of both."""
    backend = resolve_backend(**{names[0]: in1, names[1]: in2})
    mode = parse_mode(mode)
    boundary = parse_boundary(boundary)
    name1, name2 = names
    in1 = as_backend_array(backend, name1, in1)
    in2 = as_backend_array(backend, name2, in2)
    if in1.ndim < 2:
        raise ValueError(f"{name1} must have at least 2 dimensions (..., H, W); "
                         f"got shape {in1.shape}")
    if in2.ndim != 2:
        raise ValueError(f"{name2} must be a 2-D kernel (kh, kw); got shape {in2.shape}")
    if 0 in in1.shape[-2:]:
        raise ValueError(f"{name1} planes must be non-empty; got shape {in1.shape}")
    if 0 in in2.shape:
        raise ValueError(f"{name2} must be non-empty; got shape {in2.shape}")
    result_dtype, work_dtype = compute_dtype({name1: in1.dtype, name2: in2.dtype})
    fillvalue = check_fillvalue(fillvalue, work_dtype)
    out_shape, origin, swapped = plane_geometry(mode, convolution, tuple(in1.shape[-2:]),
                                                tuple(in2.shape), swap, names)
    if mode == "valid":
        # No extension is read in valid mode except SciPy's swapped case, where
        # the window must see zeros, whatever the boundary.
        boundary, fillvalue = "fill", 0
    call = _PlanesCall(backend, in1, in2, tuple(in1.shape[:-2]), tuple(out_shape),
                       tuple(origin), swapped, boundary, fillvalue, convolution, result_dtype,
                       work_dtype)
    _check_memory(call)  # before anything is allocated or even summed
    return call


def _correlate2d(in1, in2, mode, boundary, fillvalue, method, *, convolution, swap=True,
                 names=("in1", "in2"), finite_fallback=False):
    lazy = deferred_module(in1, in2)
    if lazy is not None:
        return lazy.correlate2d(in1, in2, mode, boundary, fillvalue, method,
                                convolution=convolution, swap=swap, names=names)
    key = signature((in1, in2), (mode, boundary, fillvalue, method, convolution, swap, names,
                                 get_backend(), registry_generation()))
    plan = _PLANS.get(key)
    if plan is not None:
        call = plan.rebind(in1, in2, names)
    else:
        method = parse_method(method)
        call = _plan(in1, in2, mode, boundary, fillvalue, convolution=convolution, swap=swap,
                     names=names)
        if method == "winograd":
            check_winograd(tuple(call.in2.shape), argname=names[1])
        _PLANS.put(key, call.template())
    return call.run(resolve_method(call, method, finite_fallback))


def resolve_method(call: Any, method: str, finite_fallback: bool = False) -> str:
    """The method a call runs: ``auto``'s choice, or the one asked for.

    An inexact method asked for explicitly keeps it, with a warning when the
    inputs are not finite; ``finite_fallback`` (chunks of a dask call whose
    ``auto`` was resolved once for the whole array) falls back to the exact
    method instead, as ``auto`` would.
    """
    if method == "auto":
        return call.choose().method if call.planes else "direct"
    if method in _choose.NEEDS_FINITE and call.planes and not call.finite():
        if finite_fallback:
            return "direct"
        warn_nonfinite(method)
    return method
