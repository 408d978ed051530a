"""Which method computes a call when ``method="auto"``, and why.

A choice is made from shapes alone, in two steps:

1. *Cost.*  A decision measured for exactly this call signature
   (:func:`gpuconv.choose_method` with ``measure=True``, cached per op,
   shapes, dtype and device, like cuDNN's benchmark mode) if there is one;
   otherwise the cost model of :mod:`gpuconv._costmodel` (operation counts
   times constants fitted by ``gpuconv calibrate``, or built-in defaults).
2. *Precision policy.*  The default must not change the answer.  The exact
   methods (:data:`EXACT_METHODS`: the same products as the textbook sum, in
   another order) are always allowed.  An inexact method (the FFT family)
   is chosen only when the model predicts it at least :data:`MARGINS` times
   faster than the best exact method, never for integer inputs (whose sums
   are exact), and never when the scratch it cannot split exceeds
   :func:`gpuconv.scratch_limit`.  Winograd (3x3 layers) must be
   :data:`MARGINS` faster too, by a smaller margin: its error is a few times
   direct summation's, elementwise.  Either must also save at least
   :data:`MIN_SAVING_S`: small calls stay exact.  When the call runs,
   inexact methods also need finite inputs: one NaN or Inf spreads through a
   transform to every output (through Winograd's, to a tile), so a
   non-finite input (or fill value) falls back to the best exact method
   (:func:`apply_finite_policy`).

Nothing here runs an op: timing candidates and calibrating (which do) live in
:mod:`gpuconv._measure`, above the ops.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from . import _costmodel
from ._geometry import extent

__all__ = [
    "MethodChoice",
    "EXACT_METHODS",
    "FFT_METHODS",
    "MARGINS",
    "MIN_SAVING_S",
    "NEEDS_FINITE",
    "choose_planes_method",
    "choose_conv2d_method",
    "apply_finite_policy",
    "clear_measured",
]

#: Methods that form the textbook sums exactly as written, only in another order: their
#: error is that of direct summation, NaN and Inf stay where the textbook loops put
#: them, and an output whose products are all zero is exactly zero.
EXACT_METHODS = ("direct", "gemm")
FFT_METHODS = ("fft", "overlap-add")
#: How much faster (estimated) than the best exact method an inexact method must be
#: for ``auto`` to take it.  The FFT's error is normwise (see ``docs/theory.md``): small
#: outputs next to large ones lose relative accuracy, so it must pay clearly.
#: Winograd's is elementwise, a few times direct summation's (F(4x4,3x3) only from 16
#: channels, where it stays within 10x): a margin for the model's own error suffices.
MARGINS: dict[str, float] = {"fft": 2.0, "overlap-add": 2.0, "winograd": 1.15}
#: And it must save at least this much (estimated seconds): on small calls, where a
#: few microseconds are all there is to gain and the model's estimates are least sure,
#: the exact answer (exact zeros included) is worth more.
MIN_SAVING_S = 1e-4
#: Methods that spread one non-finite input value beyond the outputs whose window holds
#: it (a whole plane for the FFT methods, a tile of outputs for Winograd, where an Inf
#: also turns into NaN).
NEEDS_FINITE = frozenset(MARGINS)


@dataclass(frozen=True)
class MethodChoice:
    """A method, the reason it was chosen and the estimated (or measured) cost of each candidate.

    Returned by :func:`gpuconv.choose_method`.

    Attributes
    ----------
    method : str
        ``'direct'``, ``'gemm'``, ``'fft'`` or ``'overlap-add'``.
    reason : str
        A sentence: the estimates (or timings) that decided, and which rule of
        the precision policy applied.
    costs : dict of str to float
        Estimated seconds of each method considered (the cost model).
    measured : dict of str to float
        Measured seconds, when the choice came from timing the candidates.

    See Also
    --------
    gpuconv.choose_method : makes these.

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> choice = gpuconv.choose_method("correlate2d", np.ones((64, 64)), np.ones((3, 3)))
    >>> choice.method in ("direct", "gemm"), "cost model" in choice.reason
    (True, True)
    """

    method: str
    reason: str
    costs: dict[str, float] = field(default_factory=dict, compare=False)
    measured: dict[str, float] = field(default_factory=dict, compare=False)


# Decisions timed by choose_method(..., measure=True): key -> MethodChoice.
_MEASURED: dict[tuple[Any, ...], MethodChoice] = {}
# Model decisions, so that a small call pays a dict lookup, not the model:
# key + constants generation -> MethodChoice.
_MODELLED: dict[tuple[Any, ...], MethodChoice] = {}
_MODELLED_MAX = 4096


def _remember(key: tuple[Any, ...], choice: MethodChoice) -> MethodChoice:
    if len(_MODELLED) >= _MODELLED_MAX:
        _MODELLED.clear()
    _MODELLED[key] = choice
    return choice


def cached(key: tuple[Any, ...], model: Callable[[], MethodChoice]) -> MethodChoice:
    """A measured decision for ``key`` if there is one, else the (memoised) model's."""
    hit = _MEASURED.get(key)
    if hit is not None:
        return hit
    memo = key + _costmodel.generation()
    hit = _MODELLED.get(memo)
    if hit is not None:
        return hit
    return _remember(memo, model())


def remember_measured(key: tuple[Any, ...], choice: MethodChoice) -> None:
    """Keep a timed decision: later ``auto`` calls with this signature use it."""
    _MEASURED[key] = choice


def measured(key: tuple[Any, ...]) -> MethodChoice | None:
    return _MEASURED.get(key)


def clear_measured() -> None:
    """Forget every measured (and memoised model) decision."""
    _MEASURED.clear()
    _MODELLED.clear()


def device_key(backend: Any) -> str:
    return f"{backend.name}:{backend.device_key()}"


_EXACT = "integer inputs stay on exact methods: FFT rounding would break exact integer sums"


def _pick(costs: dict[str, float], source: str, *, exact: bool,
          unavailable: dict[str, str] | None = None, note: str = "") -> MethodChoice:
    """The precision policy over estimated costs (see the module docstring).

    ``unavailable`` maps a method (exact or not) to why it is no candidate here.
    """
    unavailable = unavailable or {}
    exact_ranked = sorted((m for m in EXACT_METHODS if m in costs and m not in unavailable),
                          key=costs.__getitem__)
    best_exact = exact_ranked[0]
    best = best_exact
    notes = [note] if note else []
    if exact:
        notes.append(_EXACT)
    for m in sorted(costs, key=costs.__getitem__):
        if m == best_exact or (exact and m not in EXACT_METHODS):
            continue
        speedup = costs[best_exact] / max(costs[m], 1e-12)
        if m in unavailable:
            if speedup > 1:
                notes.append(f"{m} not considered: {unavailable[m]}")
        elif m in MARGINS:
            saving = costs[best_exact] - costs[m]
            if speedup >= MARGINS[m] and saving >= MIN_SAVING_S:
                if costs[m] < costs[best]:
                    best = m
            elif speedup >= MARGINS[m]:
                notes.append(f"{m} estimated {speedup:.2g}x faster than {best_exact}, but "
                             f"{saving * 1e6:.0f} us is under the {MIN_SAVING_S * 1e6:.0f} us "
                             "an inexact method must save")
            elif speedup > 1:
                notes.append(f"{m} estimated {speedup:.2g}x faster than {best_exact}, under the "
                             f"{MARGINS[m]:g}x margin an inexact method must clear")
    others = [m for m in costs if m != best and m not in unavailable
              and (m in EXACT_METHODS or not exact)]
    if others:
        runner = min(others, key=costs.__getitem__)
        ratio = costs[runner] / max(costs[best], 1e-12)
        if ratio >= 1:
            reason = (f"{best}: estimated {costs[best]:.3g} s, {ratio:.2g}x faster than "
                      f"{runner} ({costs[runner]:.3g} s); cost model: {source}")
        else:  # a faster estimate lost to the policy (the notes say why)
            reason = (f"{best}: estimated {costs[best]:.3g} s, the fastest method the "
                      f"precision policy allows; cost model: {source}")
    else:
        reason = f"{best}: the only candidate; cost model: {source}"
    if notes:
        reason += "; " + "; ".join(notes)
    return MethodChoice(best, reason, dict(costs))


def apply_finite_policy(choice: MethodChoice, finite: Callable[[], bool]) -> MethodChoice:
    """``choice``, or the best exact method when it needs finite inputs and they are not.

    ``finite`` is called only when the choice is an inexact method, so the
    common (exact) case costs nothing.
    """
    if choice.method not in NEEDS_FINITE or finite():
        return choice
    exact = [m for m in EXACT_METHODS if m in choice.costs] or ["direct"]
    best = min(exact, key=lambda m: choice.costs.get(m, 0.0))
    return replace(choice, method=best, reason=(
        f"{best}: the inputs hold NaN or Inf (or values whose sum overflows), which "
        f"{choice.method} would spread to every output; the exact method keeps them where "
        f"they belong (otherwise: {choice.reason})"))


# -- planes (correlate2d / convolve2d) ------------------------------------------------
def planes_key(backend: Any, x_shape: tuple[int, ...], w_shape: tuple[int, int],
               out_shape: tuple[int, int], dtype: Any, boundary: str,
               exact: bool) -> tuple[Any, ...]:
    return ("planes", tuple(x_shape), tuple(w_shape), tuple(out_shape), np.dtype(dtype).str,
            boundary, bool(exact), device_key(backend))


def choose_planes_method(backend: Any, x_shape: tuple[int, ...], w_shape: tuple[int, int],
                         out_shape: tuple[int, int], dtype: Any, boundary: str,
                         exact: bool, key: tuple[Any, ...] | None = None) -> MethodChoice:
    """Method for a single-channel (batched) correlation of planes ``x_shape = (B, H, W)``.

    ``key``, when the caller has it already, is :func:`planes_key` of the arguments.
    """
    if key is None:
        key = planes_key(backend, x_shape, w_shape, out_shape, dtype, boundary, exact)
    return cached(key, lambda: _model_planes(backend, x_shape, w_shape, out_shape, dtype,
                                             exact))


def _model_planes(backend, x_shape, w_shape, out_shape, dtype, exact):
    constants, source = _costmodel.load_constants(device_key(backend), backend)
    B = int(np.prod(x_shape[:-2]))
    feats = _costmodel.planes_features(backend, B, tuple(x_shape[-2:]), tuple(w_shape),
                                       tuple(out_shape), np.dtype(dtype).kind == "c",
                                       np.dtype(dtype).itemsize)
    costs = _costmodel.estimate(constants, "planes", feats)
    # One kernel makes im2col a matrix-vector product over kh*kw times the data
    # shift-and-add reads; in cache-sized chunks (and, on the NumPy backend, buffers
    # that stay mapped from call to call) it still beats a pass per tap on many planes.
    return _pick(costs, source, exact=exact, unavailable=_fft_unavailable(backend, feats, dtype))


def _fft_unavailable(backend: Any, feats: dict[str, dict[str, float]],
                     dtype: Any) -> dict[str, str]:
    """FFT-family methods whose unsplittable scratch exceeds the scratch limit."""
    from ._config import get_scratch_limit

    limit = get_scratch_limit()
    out = {}
    for m in FFT_METHODS:
        need = feats.get(m, {}).get("scratch_min")
        if need is not None and need * np.dtype(dtype).itemsize > limit:
            out[m] = (f"one transform needs {need * np.dtype(dtype).itemsize / 2**20:.0f} MiB "
                      f"of scratch, over the scratch limit of {limit / 2**20:.0f} MiB")
    return out


# -- conv2d and conv_transpose2d ------------------------------------------------------
def conv2d_key(backend: Any, x_shape: tuple[int, ...], w_shape: tuple[int, ...],
               out_hw: tuple[int, int], stride: tuple[int, int], groups: int, dtype: Any,
               exact: bool, dilation: tuple[int, int] = (1, 1),
               op: str = "conv2d") -> tuple[Any, ...]:
    return (op, tuple(x_shape), tuple(w_shape), tuple(out_hw), tuple(stride), tuple(dilation),
            groups, np.dtype(dtype).str, bool(exact), device_key(backend))


def choose_conv2d_method(backend: Any, x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                         out_hw: tuple[int, int], stride: tuple[int, int], groups: int,
                         dtype: Any, exact: bool, dilation: tuple[int, int] = (1, 1),
                         op: str = "conv2d", key: tuple[Any, ...] | None = None,
                         ) -> MethodChoice:
    """Method for a multi-channel conv2d, or a conv_transpose2d given as its forward conv.

    A transposed convolution costs what the convolution it is the adjoint of
    costs: ``x_shape`` is then that convolution's input (the transposed
    output's shape), ``w_shape`` the weight as given, ``out_hw`` the
    transposed input's size, with the same stride and dilation.  ``key``, when the
    caller has it already, is :func:`conv2d_key` of the arguments.
    """
    if key is None:
        key = conv2d_key(backend, x_shape, w_shape, out_hw, stride, groups, dtype, exact,
                         dilation, op)
    return cached(key, lambda: _model_conv2d(backend, x_shape, w_shape, out_hw, stride,
                                             dilation, groups, dtype, exact))


def _model_conv2d(backend, x_shape, w_shape, out_hw, stride, dilation, groups, dtype, exact):
    constants, source = _costmodel.load_constants(device_key(backend), backend)
    kh, kw = w_shape[2:]
    # The extent of the padded input the outputs read.
    padded = (x_shape[0], x_shape[1],
              (out_hw[0] - 1) * stride[0] + extent(kh, dilation[0]),
              (out_hw[1] - 1) * stride[1] + extent(kw, dilation[1]))
    feats = _costmodel.conv2d_features(backend, padded, tuple(w_shape), tuple(out_hw),
                                       tuple(stride), groups, np.dtype(dtype).kind == "c",
                                       dilation=tuple(dilation))
    costs = _costmodel.estimate(constants, "conv2d", feats)
    note = "" if "fft" in costs or exact else "the backend has no FFT module"
    unavailable = _fft_unavailable(backend, feats, dtype)
    if out_hw[0] * out_hw[1] * stride[0] * stride[1] < _OA_MIN_PIXELS:
        # Blocking small planes only adds per-block work to a transform that is small anyway.
        unavailable.setdefault("overlap-add", "planes too small to cut into blocks")
    return _pick(costs, source, exact=exact, unavailable=unavailable, note=note)


_OA_MIN_PIXELS = 256 * 256  # conv2d planes smaller than this are transformed whole
