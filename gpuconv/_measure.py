"""Timing the ops: ``choose_method`` (which may measure) and ``calibrate``.

Both run the public ops, so they sit above them; the cost model they feed
(:mod:`gpuconv._costmodel`) and the chooser (:mod:`gpuconv._choose`) are
functions of shapes below the ops.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

import numpy as np

from . import _choose, _costmodel
from ._choose import MARGINS, MethodChoice
from ._frontdoor import foreign_arrays
from .backend import get_backend_object, resolve_backend, set_backend
from .conv import _plan_conv2d, _plan_conv_transpose2d, conv2d, conv_transpose2d
from .correlate import _plan, convolve2d, correlate2d

__all__ = ["choose_method", "calibrate"]

_OPS = ("correlate2d", "convolve2d", "conv2d", "conv_transpose2d")


@foreign_arrays("in1", "in2")
def choose_method(op: str, in1: Any, in2: Any, *, mode: str = "full", boundary: str = "fill",
                  fillvalue: Any = 0, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                  groups: int = 1, padding_mode: str = "zeros", output_padding: Any = 0,
                  measure: bool = False) -> MethodChoice:
    """Which method ``method="auto"`` uses for a call, and why.

    The answer follows a written precision policy (see ``docs/theory.md``):

    * The exact methods, ``"direct"`` and ``"gemm"`` (the textbook sums in
      another order), are always candidates; the cheaper one by the cost
      model is the default.
    * An FFT method (``"fft"``, ``"overlap-add"``) is chosen only when the
      model predicts it at least twice as fast as the best exact method
      (``gpuconv._choose.MARGINS``), never for integer inputs (whose sums are
      exact), never when one transform would exceed
      :func:`gpuconv.scratch_limit`, and never when an input (or the fill
      value) holds NaN or Inf: through a transform one non-finite value
      reaches every output, while the exact methods keep SciPy's pattern.
    * ``"winograd"`` (conv2d and conv_transpose2d with 3x3 kernels, stride 1,
      dilation 1) follows the same rules with a margin of 1.15x: its error is
      elementwise, a few times direct summation's.

    The cost model multiplies operation counts (multiply-adds for the exact
    methods; ``n log2 n`` transform work and per-frequency channel products
    for the FFT methods) by per-machine constants, fitted by ``gpuconv
    calibrate`` and stored in the user cache directory
    (``$GPUCONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/gpuconv`` or
    ``~/.cache/gpuconv``), or built-in defaults fitted on the development
    machine.  Unlike :func:`scipy.signal.choose_conv_method`, which prefers
    the FFT for small kernels too, the direct methods win small kernels.

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
    fillvalue : scalar, keyword-only
        For ``correlate2d``/``convolve2d``: a NaN or Inf fill value keeps the
        call on an exact method.
    stride : int or (int, int), keyword-only
        For ``conv2d``/``conv_transpose2d``.
    padding : int, (int, int), 'valid' or 'same', keyword-only
        For ``conv2d``/``conv_transpose2d``.
    dilation : int or (int, int), keyword-only
        For ``conv2d``/``conv_transpose2d``.
    groups : int, keyword-only
        For ``conv2d``/``conv_transpose2d``.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}, keyword-only
        For ``conv2d``.
    output_padding : int or (int, int), keyword-only
        For ``conv_transpose2d``.
    measure : bool, keyword-only
        Time every candidate the policy allows and the model does not rule out
        (estimated within 20x of the best) on these inputs, once, and remember
        the fastest for this op, shapes, dtype and device: later
        ``method="auto"`` calls of the same signature use it (like cuDNN's
        benchmark mode).  An FFT method must be measured :data:`MARGINS`
        times faster than the best exact one to be remembered.

    Returns
    -------
    MethodChoice
        ``method`` (``'direct'``, ``'gemm'``, ``'fft'``, ``'overlap-add'`` or
        ``'winograd'``),
        ``reason`` (a sentence), ``costs`` (estimated seconds per candidate)
        and ``measured`` (seconds, when ``measure=True``).

    Raises
    ------
    ValueError, TypeError
        For an unknown ``op``, and for any argument the op itself would
        refuse, with the op's message.

    See Also
    --------
    correlate2d, conv2d : the ops whose ``method="auto"`` this explains.
    gpuconv.scratch_limit : the bound on scratch memory that rules out a whole-plane FFT.

    Examples
    --------
    >>> import numpy as np
    >>> import gpuconv
    >>> x = np.random.default_rng(0).standard_normal((512, 512))
    >>> gpuconv.choose_method("correlate2d", x, np.ones((3, 3)), mode="same").method in (
    ...     "direct", "gemm")
    True
    >>> choice = gpuconv.choose_method("correlate2d", x, np.ones((31, 31)), mode="same")
    >>> choice.method in ("fft", "overlap-add"), sorted(choice.costs)
    (True, ['direct', 'fft', 'gemm', 'overlap-add'])
    >>> gpuconv.choose_method("correlate2d", x.astype(int), np.ones((31, 31), int)).method in (
    ...     "direct", "gemm")
    True
    >>> x[7, 7] = np.nan  # a NaN stays where the exact methods put it
    >>> choice = gpuconv.choose_method("correlate2d", x, np.ones((31, 31)), mode="same")
    >>> choice.method in ("direct", "gemm"), "NaN or Inf" in choice.reason
    (True, True)
    """
    if op not in _OPS:
        raise ValueError(f"op must be one of {', '.join(map(repr, _OPS))}; got {op!r}")
    if not isinstance(measure, (bool, np.bool_)):
        raise TypeError(f"measure must be a bool; got {measure!r}")
    if op in ("correlate2d", "convolve2d"):
        call = _plan(in1, in2, mode, boundary, fillvalue, convolution=op == "convolve2d")
        kwargs: dict[str, Any] = dict(mode=mode, boundary=boundary, fillvalue=fillvalue)
        empty = not call.planes
    elif op == "conv2d":
        call = _plan_conv2d(in1, in2, None, stride, padding, dilation, groups, padding_mode)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                      padding_mode=padding_mode)
        empty = not call.batch
    else:
        call = _plan_conv_transpose2d(in1, in2, None, stride, padding, output_padding, groups,
                                      dilation)
        kwargs = dict(stride=stride, padding=padding, output_padding=output_padding,
                      groups=groups, dilation=dilation)
        empty = not call.batch
    if empty:
        return MethodChoice("direct", "direct: the batch is empty, there is nothing to compute")
    if not measure:
        return call.choose()
    key = call.key()
    known = _choose.measured(key)
    if known is not None:
        return _choose.apply_finite_policy(known, call.finite)
    exact_methods = _choose.EXACT_METHODS
    model = call.model_choice()
    costs = model.costs or {model.method: 0.0}
    best_est = min(costs.values())
    allowed = exact_methods if call.exact else exact_methods + tuple(MARGINS)
    candidates = [m for m in allowed if m in costs and costs[m] <= 20 * best_est]
    # The model's pick, and at least one exact method to hold the others against.
    best_exact = min((m for m in exact_methods if m in costs), key=costs.__getitem__,
                     default="direct")
    candidates += [m for m in (model.method, best_exact) if m not in candidates]
    fn = {"correlate2d": correlate2d, "convolve2d": convolve2d, "conv2d": conv2d,
          "conv_transpose2d": conv_transpose2d}[op]
    timed = {}
    for m in candidates:
        with warnings.catch_warnings():
            # Timing an FFT method on non-finite data is allowed; its warning is not news.
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                fn(in1, in2, method=m, **kwargs)  # plans, caches, first-touch
            except MemoryError:  # a whole-plane FFT over the scratch limit
                continue
            t0 = time.perf_counter()
            out = fn(in1, in2, method=m, **kwargs)
            _wait(call.backend, out)
            timed[m] = time.perf_counter() - t0
    exact_timed = {m: t for m, t in timed.items() if m in exact_methods}
    best = min(exact_timed, key=exact_timed.get)
    for m, t in timed.items():
        if m in MARGINS and t * MARGINS[m] <= exact_timed[best] and t < timed[best]:
            best = m
    others = ", ".join(f"{m} {t:.3g} s" for m, t in sorted(timed.items(), key=lambda i: i[1]))
    fastest = min(timed, key=timed.get)
    if fastest == best:
        reason = f"{best}: fastest when measured ({others})"
    else:
        reason = (f"{best}: the fastest exact method when measured ({others}); {fastest} was "
                  f"{timed[best] / timed[fastest]:.2g}x faster, under the "
                  f"{MARGINS[fastest]:g}x margin an inexact method must clear")
    choice = MethodChoice(best, reason, costs, timed)
    _choose.remember_measured(key, choice)
    return _choose.apply_finite_policy(choice, call.finite)


def _wait(backend: Any, out: Any) -> None:
    """Block until ``out`` is computed (a GPU returns before it is)."""
    sync = getattr(backend, "synchronize", None)
    if sync is not None:
        sync()
    else:
        backend.to_numpy(out.reshape(-1)[:1])


# -- calibration: fit the cost model by timing the ops -----------------------------
def _time(fn: Callable[[], Any], min_time: float = 0.01, repeat: int = 5) -> float:
    fn()
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    loops = max(1, int(min_time / max(once, 1e-6)))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - t0) / loops)
    # The minimum: on a shared machine other jobs only ever add time.
    return float(min(samples))


PLANE_CASES = (
    # (B, H, W, k)
    (1, 64, 64, 3), (1, 128, 128, 3), (1, 256, 256, 5), (1, 512, 512, 3), (4, 64, 64, 7),
    (1, 128, 128, 9), (1, 256, 256, 13), (1, 512, 512, 9), (1, 256, 256, 21),
    (1, 512, 512, 17), (8, 32, 32, 5), (1, 1024, 1024, 3), (1, 1024, 1024, 11),
    (1, 2048, 2048, 3), (1, 2048, 2048, 5), (1, 2048, 2048, 9), (1, 3072, 3072, 7),
)
QUICK_PLANE_CASES = ((1, 32, 32, 3), (1, 64, 64, 5), (2, 32, 32, 7), (1, 96, 96, 3),
                     (1, 48, 48, 9), (1, 1536, 1536, 3))
CONV_CASES = (
    # (N, C, H, W, Cout, k, stride)
    (8, 16, 32, 32, 16, 3, 1), (4, 3, 64, 64, 8, 7, 1), (2, 32, 16, 16, 32, 5, 1),
    (16, 64, 14, 14, 64, 3, 1), (1, 4, 96, 96, 4, 15, 1), (2, 8, 48, 48, 8, 9, 2),
    (4, 1, 32, 32, 6, 5, 1), (1, 128, 8, 8, 128, 3, 1),
    # Typical CNN layers: deep reductions, where direct and gemm are close.
    (4, 256, 14, 14, 256, 3, 1), (8, 64, 28, 28, 64, 3, 1), (16, 3, 32, 32, 16, 5, 1),
)
QUICK_CONV_CASES = ((2, 4, 16, 16, 4, 3, 1), (1, 2, 24, 24, 3, 5, 1), (2, 8, 12, 12, 8, 3, 1),
                    (1, 1, 20, 20, 2, 7, 1), (1, 3, 16, 16, 2, 5, 2))


def _fit(rows: list[dict[str, float]], times: list[float], names: tuple[str, ...]) -> list[float]:
    from scipy.optimize import nnls

    A = np.array([[r[n] for n in names] for r in rows], dtype=float)
    t = np.array(times, dtype=float)
    # Relative error: each case counts alike whatever its size.
    coef, _ = nnls(A / t[:, None], np.ones(len(t)))
    return [float(c) for c in coef]


def calibrate(backend: Any = None, *, quick: bool = False, save: bool = True,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time every method on small cases, fit the constants and store them.

    Returns ``{"device_key", "constants", "path", "timings", "fit_error",
    "write_error"}``, where ``fit_error`` is the median relative error of the
    fitted model on the timed cases, per family and method.  ``path`` is the
    cache file written, or None when ``save`` is false or the file could not
    be written; then ``write_error`` says where and why.
    """
    if backend is None:
        backend = resolve_backend()
    elif isinstance(backend, str):
        backend = get_backend_object(backend)
    key = f"{backend.name}:{backend.device_key()}"
    rng = np.random.default_rng(0)
    say = progress or (lambda msg: None)
    constants: dict[str, dict[str, list[float]]] = {"planes": {}, "conv2d": {}}
    timings: dict[str, list[Any]] = {"planes": [], "conv2d": []}
    fit_error: dict[str, dict[str, float]] = {"planes": {}, "conv2d": {}}

    rows: dict[str, list[dict[str, float]]] = {m: [] for m in _costmodel.FEATURES["planes"]}
    times: dict[str, list[float]] = {m: [] for m in _costmodel.FEATURES["planes"]}
    with set_backend(backend.name):
        for B, H, W, k in (QUICK_PLANE_CASES if quick else PLANE_CASES):
            x = backend.asarray(rng.standard_normal((B, H, W), dtype=np.float32))
            w = backend.asarray(rng.standard_normal((k, k), dtype=np.float32))
            feats = _costmodel.planes_features(backend, B, (H, W), (k, k),
                                               (H - k + 1, W - k + 1), False)
            for method in _costmodel.FEATURES["planes"]:
                if method not in feats:
                    continue

                def call(method=method):
                    out = correlate2d(x, w, "valid", method=method)
                    backend.to_numpy(out[..., :1, :1])
                t = _time(call)
                rows[method].append(feats[method])
                times[method].append(t)
                timings["planes"].append([[B, H, W, k], method, t])
            say(f"planes {B}x{H}x{W} k{k}")
        defaults, _ = _costmodel.load_constants(key, backend)
        for method, names in _costmodel.FEATURES["planes"].items():
            constants["planes"][method] = (_fit(rows[method], times[method], names)
                                           if rows[method] else defaults["planes"][method])

        rows = {m: [] for m in _costmodel.FEATURES["conv2d"]}
        times = {m: [] for m in _costmodel.FEATURES["conv2d"]}
        for N, C, H, W, Co, k, s in (QUICK_CONV_CASES if quick else CONV_CASES):
            x = backend.asarray(rng.standard_normal((N, C, H, W), dtype=np.float32))
            w = backend.asarray(rng.standard_normal((Co, C, k, k), dtype=np.float32))
            out_hw = ((H - k) // s + 1, (W - k) // s + 1)
            feats = _costmodel.conv2d_features(backend, (N, C, H, W), (Co, C, k, k), out_hw,
                                               (s, s), 1,
                                    False)
            for method in _costmodel.FEATURES["conv2d"]:
                if method not in feats:
                    continue

                def call(method=method):
                    out = conv2d(x, w, stride=s, method=method)
                    backend.to_numpy(out[..., :1, :1])
                t = _time(call)
                rows[method].append(feats[method])
                times[method].append(t)
                timings["conv2d"].append([[N, C, H, W, Co, k, s], method, t])
            say(f"conv2d ({N},{C},{H},{W})->{Co} k{k} s{s}")
        for method, names in _costmodel.FEATURES["conv2d"].items():
            constants["conv2d"][method] = (_fit(rows[method], times[method], names)
                                           if rows[method] else defaults["conv2d"][method])

    for family in ("planes", "conv2d"):
        for method, names in _costmodel.FEATURES[family].items():
            c = constants[family][method]
            rel = []
            for shape, m, t in timings[family]:
                if m == method:
                    f = _row_features(backend, family, shape)[method]
                    rel.append(abs(sum(ci * f[n] for ci, n in zip(c, names)) - t) / t)
            fit_error[family][method] = float(np.median(rel)) if rel else float("nan")
    meta = {"quick": quick, "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "numpy": np.__version__}
    path, write_error = None, None
    if save:
        try:
            path = _costmodel.save(key, constants, meta)
        except OSError as exc:
            # The work is done: report the constants and where they could not go.
            write_error = f"could not write {_costmodel.cache_file()}: {exc.strerror or exc}"
    return {"device_key": key, "constants": constants, "path": path, "timings": timings,
            "fit_error": fit_error, "write_error": write_error}


def _row_features(backend: Any, family: str, shape: list[int]) -> dict[str, dict[str, float]]:
    if family == "planes":
        B, H, W, k = shape
        return _costmodel.planes_features(backend, B, (H, W), (k, k), (H - k + 1, W - k + 1), False)
    N, C, H, W, Co, k, s = shape
    return _costmodel.conv2d_features(backend, (N, C, H, W), (Co, C, k, k),
                           ((H - k) // s + 1, (W - k) // s + 1), (s, s), 1, False)
