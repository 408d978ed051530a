"""Which method computes a call when ``method="auto"``, and why.

Three sources, in order: a decision measured for exactly this call
(:func:`gpuconv.choose_method` with ``measure=True``, cached per op, shapes,
dtype and device like cuDNN's benchmark mode); otherwise the cost model of
:mod:`gpuconv._costmodel` (operation counts times constants fitted by
``gpuconv calibrate``, or built-in defaults).  Integer inputs never go to an
FFT method: their results are exact sums that FFT rounding would perturb.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _costmodel

__all__ = ["MethodChoice", "choose_planes_method", "choose_conv2d_method", "choose_method",
           "clear_measured"]

FFT_METHODS = ("fft", "overlap-add")


@dataclass(frozen=True)
class MethodChoice:
    """A method, the reason it was chosen and the estimated (or measured) cost of each candidate.

    ``costs`` maps each method considered to its estimated time in seconds
    (from the cost model); ``measured`` holds measured seconds when the
    choice came from timing the candidates.
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


def _cached(key: tuple[Any, ...], model: Any) -> MethodChoice:
    """A measured decision for ``key`` if there is one, else the (memoised) model's."""
    hit = _MEASURED.get(key)
    if hit is not None:
        return hit
    memo = key + _costmodel.generation()
    hit = _MODELLED.get(memo)
    if hit is not None:
        return hit
    return _remember(memo, model())


def clear_measured() -> None:
    """Forget every measured (and memoised model) decision."""
    _MEASURED.clear()
    _MODELLED.clear()


def _device_key(backend: Any) -> str:
    return f"{backend.name}:{backend.device_key()}"


def _pick(costs: dict[str, float], allowed: tuple[str, ...], source: str,
          why_not_fft: str = "") -> MethodChoice:
    ranked = sorted((m for m in allowed), key=lambda m: costs[m])
    best = ranked[0]
    if len(ranked) > 1:
        runner = ranked[1]
        ratio = costs[runner] / max(costs[best], 1e-12)
        reason = (f"{best}: estimated {costs[best]:.3g} s, {ratio:.2g}x faster than {runner} "
                  f"({costs[runner]:.3g} s); cost model: {source}")
    else:
        reason = f"{best}: the only candidate; cost model: {source}"
    if why_not_fft:
        reason += f"; {why_not_fft}"
    return MethodChoice(best, reason, dict(costs))


_OA_MIN_PIXELS = 256 * 256  # conv2d planes smaller than this are transformed whole
_EXACT = "integer inputs stay on exact methods: FFT rounding would break exact integer sums"


def _planes_key(backend, x_shape, w_shape, out_shape, dtype, boundary, exact):
    return ("planes", tuple(x_shape), tuple(w_shape), tuple(out_shape), np.dtype(dtype).str,
            boundary, bool(exact), _device_key(backend))


def choose_planes_method(backend: Any, x_shape: tuple[int, ...], w_shape: tuple[int, int],
                         out_shape: tuple[int, int], dtype: Any, boundary: str,
                         exact: bool) -> MethodChoice:
    """Method for a single-channel (batched) correlation."""
    key = _planes_key(backend, x_shape, w_shape, out_shape, dtype, boundary, exact)
    return _cached(key, lambda: _model_planes(backend, x_shape, w_shape, out_shape, dtype,
                                              exact))


def _model_planes(backend, x_shape, w_shape, out_shape, dtype, exact):
    constants, source = _costmodel.load_constants(_device_key(backend))
    B = int(np.prod(x_shape[:-2]))
    feats = _costmodel.planes_features(backend, B, tuple(x_shape[-2:]), tuple(w_shape),
                                       tuple(out_shape), np.dtype(dtype).kind == "c")
    costs = _costmodel.estimate(constants, "planes", feats)
    # One kernel makes im2col a matrix-vector product that moves kh*kw times the data
    # shift-and-add does: its estimate is reported, but it is not a candidate.
    if exact:
        return _pick(costs, ("direct",), source, _EXACT)
    return _pick(costs, tuple(m for m in ("direct",) + FFT_METHODS if m in costs), source)


def _conv2d_key(backend, x_shape, w_shape, out_hw, stride, groups, dtype, exact):
    return ("conv2d", tuple(x_shape), tuple(w_shape), tuple(out_hw), tuple(stride), groups,
            np.dtype(dtype).str, bool(exact), _device_key(backend))


def choose_conv2d_method(backend: Any, x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                         out_hw: tuple[int, int], stride: tuple[int, int], groups: int,
                         dtype: Any, exact: bool) -> MethodChoice:
    """Method for a multi-channel conv2d (or its transpose).

    The cost model ranks direct, gemm and the FFT methods (only the exact
    methods for integer inputs, or on a backend without FFT).
    """
    key = _conv2d_key(backend, x_shape, w_shape, out_hw, stride, groups, dtype, exact)
    return _cached(key, lambda: _model_conv2d(backend, x_shape, w_shape, out_hw, stride,
                                              groups, dtype, exact))


def _model_conv2d(backend, x_shape, w_shape, out_hw, stride, groups, dtype, exact):
    constants, source = _costmodel.load_constants(_device_key(backend))
    kh, kw = w_shape[2:]
    # The front door passes the unpadded input; the padded extent is what is read.
    padded = (x_shape[0], x_shape[1], (out_hw[0] - 1) * stride[0] + kh,
              (out_hw[1] - 1) * stride[1] + kw)
    feats = _costmodel.conv2d_features(backend, padded, tuple(w_shape), tuple(out_hw),
                                       tuple(stride), groups, np.dtype(dtype).kind == "c")
    costs = _costmodel.estimate(constants, "conv2d", feats)
    exact_methods = ("direct", "gemm")
    if exact:
        return _pick(costs, exact_methods, source, _EXACT)
    if "fft" not in costs:
        return _pick(costs, exact_methods, source, "the backend has no FFT module")
    spectral = FFT_METHODS
    if out_hw[0] * out_hw[1] * stride[0] * stride[1] < _OA_MIN_PIXELS:
        # Blocking small planes only adds per-block work to a transform that is small anyway.
        spectral = ("fft",)
        costs.pop("overlap-add", None)
    return _pick(costs, exact_methods + spectral, source)


_OPS = ("correlate2d", "convolve2d", "conv2d", "conv_transpose2d")


def choose_method(op: str, in1: Any, in2: Any, *, mode: str = "full", boundary: str = "fill",
                  stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                  output_padding: Any = 0, measure: bool = False) -> MethodChoice:
    """Which method ``method="auto"`` uses for a call, and why.

    The default answer comes from a cost model: operation counts (multiply-adds
    for ``direct``/``gemm``; ``n log2 n`` transform work and per-frequency
    channel products for ``fft``/``overlap-add``) times per-machine constants,
    fitted by ``gpuconv calibrate`` and stored in the user cache directory
    (``$GPUCONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/gpuconv`` or
    ``~/.cache/gpuconv``), or built-in defaults fitted on the development
    machine.  Unlike :func:`scipy.signal.choose_conv_method`, which prefers
    the FFT for small kernels too, the direct methods win small kernels.

    Integer (and bool) inputs never go to an FFT method: they are promoted to
    float64 and summed exactly by the direct methods, while an FFT result
    carries a rounding error of about ``4 * eps * log2(N) * ||x||_2 * ||w||_1``
    (``eps = 2**-53``, ``N`` the transform size), which breaks exactness.

    Parameters
    ----------
    op : {'correlate2d', 'convolve2d', 'conv2d', 'conv_transpose2d'}
        The operation.
    in1 : array_like
        Its first argument (the input).
    in2 : array_like
        Its second argument (kernel or weight).
    mode : {'full', 'same', 'valid'}, keyword-only
        For ``correlate2d``/``convolve2d``.
    boundary : {'fill', 'wrap', 'symm'}, keyword-only
        For ``correlate2d``/``convolve2d``.
    stride : int or (int, int), keyword-only
        For ``conv2d``/``conv_transpose2d``.
    padding : int, (int, int), 'valid' or 'same', keyword-only
        For ``conv2d``/``conv_transpose2d``.
    dilation : int or (int, int), keyword-only
        For ``conv2d``/``conv_transpose2d``.
    groups : int, keyword-only
        For ``conv2d``/``conv_transpose2d``.
    output_padding : int or (int, int), keyword-only
        For ``conv_transpose2d``.
    measure : bool, keyword-only
        Time every candidate the model does not rule out (estimated within
        20x of the best) on these inputs, once, and remember the fastest for
        this op, shapes, dtype and device: later ``method="auto"`` calls of the
        same signature use it (like cuDNN's benchmark mode).

    Returns
    -------
    MethodChoice
        ``method`` (``'direct'``, ``'gemm'``, ``'fft'`` or ``'overlap-add'``),
        ``reason`` (a sentence), ``costs`` (estimated seconds per candidate)
        and ``measured`` (seconds, when ``measure=True``).

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> x = np.random.default_rng(0).standard_normal((512, 512))
    >>> gpuconv.choose_method("correlate2d", x, np.ones((3, 3)), mode="same").method
    'direct'
    >>> choice = gpuconv.choose_method("correlate2d", x, np.ones((31, 31)), mode="same")
    >>> choice.method in ("fft", "overlap-add"), sorted(choice.costs)
    (True, ['direct', 'fft', 'gemm', 'overlap-add'])
    >>> gpuconv.choose_method("correlate2d", x.astype(int), np.ones((31, 31), int)).method
    'direct'
    """
    from . import conv, correlate
    from ._frontdoor import as_backend_array
    from ._validation import compute_dtype, pair, parse_boundary, parse_mode
    from .backend import resolve_backend

    if op not in _OPS:
        raise ValueError(f"op must be one of {', '.join(map(repr, _OPS))}; got {op!r}")
    backend = resolve_backend(in1=in1, in2=in2)
    a = as_backend_array(backend, "in1", in1)
    b = as_backend_array(backend, "in2", in2)
    _, work = compute_dtype({"in1": a.dtype, "in2": b.dtype})
    exact = a.dtype.kind in "biu" and b.dtype.kind in "biu"
    if op in ("correlate2d", "convolve2d"):
        mode = parse_mode(mode)
        boundary = parse_boundary(boundary)
        if a.ndim < 2 or b.ndim != 2:
            raise ValueError(f"{op} needs in1 of shape (..., H, W) and a 2-D in2; got shapes "
                             f"{a.shape} and {b.shape}")
        out_shape, _, _ = correlate._plane_geometry(mode, op == "convolve2d", a.shape[-2:],
                                                    b.shape)
        x_shape = (int(np.prod(a.shape[:-2])),) + tuple(a.shape[-2:])
        if mode == "valid":
            boundary = "fill"
        key = _planes_key(backend, x_shape, b.shape, out_shape, work, boundary, exact)
        model = choose_planes_method(backend, x_shape, b.shape, out_shape, work, boundary, exact)

        def run(method: str) -> Any:
            return getattr(correlate, op)(in1, in2, mode, boundary, method=method)
    else:
        if a.ndim not in (3, 4) or b.ndim != 4:
            raise ValueError(f"{op} needs a (N, C, H, W) input and a 4-D weight; got shapes "
                             f"{a.shape} and {b.shape}")
        x_shape = a.shape if a.ndim == 4 else (1,) + tuple(a.shape)
        s = pair("stride", stride, minimum=1)
        d = pair("dilation", dilation, minimum=1)
        kh, kw = b.shape[2:]
        if op == "conv2d":
            pads = conv._resolve_padding(padding, x_shape[2:], (kh, kw), s, d)
            out_hw = ((x_shape[2] + pads[0] + pads[1] - d[0] * (kh - 1) - 1) // s[0] + 1,
                      (x_shape[3] + pads[2] + pads[3] - d[1] * (kw - 1) - 1) // s[1] + 1)
            w_shape, stride_key = tuple(b.shape), s
        else:
            # Mirror the front door: the forward conv this transposes.
            w_shape = (b.shape[1] * groups, x_shape[1] // groups, kh, kw)
            out_hw, stride_key = tuple(x_shape[2:]), (1, 1)
        key = _conv2d_key(backend, x_shape, w_shape, out_hw, stride_key, groups, work, exact)
        model = choose_conv2d_method(backend, x_shape, w_shape, out_hw, stride_key, groups,
                                     work, exact)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        if op == "conv_transpose2d":
            kwargs["output_padding"] = output_padding

        def run(method: str) -> Any:
            return getattr(conv, op)(in1, in2, method=method, **kwargs)
    if not measure:
        return model
    if key in _MEASURED:
        return _MEASURED[key]
    costs = model.costs or {model.method: 0.0}
    best_est = min(costs.values())
    exact_methods = ("direct", "gemm") if op in ("conv2d", "conv_transpose2d") else ("direct",)
    allowed = exact_methods if exact else exact_methods + FFT_METHODS
    candidates = [m for m in allowed if m in costs and costs[m] <= 20 * best_est] or [model.method]
    measured = {}
    for m in candidates:
        run(m)  # plans, caches, first-touch
        t0 = time.perf_counter()
        out = run(m)
        backend.to_numpy(out.reshape(-1)[:1])  # waits for a GPU to finish
        measured[m] = time.perf_counter() - t0
    best = min(measured, key=measured.get)
    others = ", ".join(f"{m} {t:.3g} s" for m, t in sorted(measured.items(), key=lambda i: i[1]))
    choice = MethodChoice(best, f"{best}: fastest when measured ({others})", costs, measured)
    _MEASURED[key] = choice
    return choice
