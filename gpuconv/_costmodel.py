"""Cost model behind ``method="auto"``: operation counts times per-machine constants.

Each method's time is modelled as a dot product of non-negative constants
with a few *features* of the call (multiply-adds, transform work
``n log2 n``, memory passes, per-call overheads).  The constants are fitted
by :func:`calibrate` (``gpuconv calibrate``), which times small cases of every
method and solves a non-negative least-squares problem on relative errors;
they are stored per backend and device in a JSON file in the user's cache
directory and read from then on.  Without a file the built-in defaults apply,
fitted on a 2-core x86-64 CPU with NumPy 2 / SciPy 1.17.

Cache directory: ``$GPUCONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/gpuconv``,
else ``~/.cache/gpuconv``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = [
    "FEATURES",
    "DEFAULTS",
    "cache_dir",
    "cache_file",
    "load_constants",
    "generation",
    "planes_features",
    "conv2d_features",
    "estimate",
    "calibrate",
    "has_fft",
]

CACHE_VERSION = 3
_CACHE_BYTES = 8 * 2**20  # planes larger than this stream from memory, not cache

# Feature names per (family, method); the constants are seconds per unit.
FEATURES: dict[str, dict[str, tuple[str, ...]]] = {
    "planes": {
        "direct": ("mac", "mac_big", "tap", "call"),
        "gemm": ("mac", "call"),
        "fft": ("nlogn", "call"),
        "overlap-add": ("nlogn", "block", "call"),
    },
    "conv2d": {
        "direct": ("mac", "move", "tap", "call"),
        "gemm": ("mac", "move", "call"),
        "fft": ("nlogn", "cmac", "call"),
        "overlap-add": ("nlogn", "cmac", "call"),
    },
}

# Fitted by ``gpuconv calibrate`` on the development machine (2-core AMD EPYC, no GPU,
# otherwise idle, 2026-11-27), then checked against the benchmark grid; see
# benchmarks/results.
# Keyed "<backend>:<device>"; other devices use the NumPy constants until calibrated.
DEFAULTS: dict[str, dict[str, dict[str, list[float]]]] = {
    "numpy:cpu": {
        "planes": {
            "direct": [1.37e-10, 0, 2.96e-06, 3.25e-06],
            "gemm": [2.4e-10, 1.38e-05],
            "fft": [1.21e-10, 4.76e-05],
            "overlap-add": [2.06e-10, 2.43e-06, 3.32e-05],
        },
        "conv2d": {
            "direct": [7.36e-12, 8.41e-11, 3.66e-06, 6.95e-05],
            "gemm": [1e-11, 1.88e-10, 3.89e-05],
            "fft": [2.31e-10, 1.19e-10, 2.71e-05],
            "overlap-add": [2.4e-10, 2.49e-10, 6.4e-05],
        },
    },
}


# -- where constants live ---------------------------------------------------------
def cache_dir() -> Path:
    """The user cache directory of gpuconv (not created)."""
    env = os.environ.get("GPUCONV_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "gpuconv"


def cache_file() -> Path:
    return cache_dir() / "costmodel.json"


_loaded: dict[str, Any] = {}


def _read_file(path: Path) -> dict[str, Any]:
    key = str(path)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return {}
    hit = _loaded.get(key)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    if data.get("version") != CACHE_VERSION:
        data = {}
    _loaded[key] = (mtime, data)
    return data


_GEN_PATHS: dict[tuple[str | None, str | None], str] = {}


def generation() -> tuple[str, int]:
    """Identifies the constants in force: the cache file and its modification time."""
    env = os.environ.get("GPUCONV_CACHE_DIR")
    xdg = os.environ.get("XDG_CACHE_HOME")
    path = _GEN_PATHS.get((env, xdg))
    if path is None:
        # Resolving the home directory is slow; a small call must not pay it every time.
        path = _GEN_PATHS[(env, xdg)] = str(cache_file())
    try:
        return path, os.stat(path).st_mtime_ns
    except OSError:
        return path, 0


def load_constants(device_key: str) -> tuple[dict[str, dict[str, list[float]]], str]:
    """(constants, source) for a ``"<backend>:<device>"`` key: the calibration file or defaults."""
    models = _read_file(cache_file()).get("models", {})
    if device_key in models:
        return models[device_key], f"calibrated ({cache_file()})"
    if device_key in DEFAULTS:
        return DEFAULTS[device_key], "built-in defaults"
    return DEFAULTS["numpy:cpu"], "built-in defaults (uncalibrated device)"


def _save(device_key: str, constants: dict[str, Any], meta: dict[str, Any]) -> Path:
    path = cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _read_file(path) or {"version": CACHE_VERSION, "models": {}}
    data = {"version": CACHE_VERSION, "models": dict(data.get("models", {})),
            "meta": dict(data.get("meta", {}))}
    data["models"][device_key] = constants
    data["meta"][device_key] = meta
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)
    return path


# -- features ---------------------------------------------------------------------
_HAS_FFT: dict[tuple[Any, ...], bool] = {}


def has_fft(backend: Any) -> bool:
    """Whether the backend provides a working FFT module.

    A registered backend may have none, and CuPy's may be missing its cuFFT library.
    """
    key = (type(backend), backend.name, backend.device_key())
    hit = _HAS_FFT.get(key)
    if hit is None:
        try:
            fft = backend.fft
            # One tiny transform, once: a library can import and still lack its FFT binary.
            hit = fft is not None and fft.rfftn(backend.xp.zeros((2, 2))).shape == (2, 2)
        except (NotImplementedError, ImportError, OSError):
            hit = False
        _HAS_FFT[key] = hit
    return hit


def _nlogn(n: int) -> float:
    return n * math.log2(max(n, 2))


def planes_features(backend: Any, B: int, in_hw: tuple[int, int], k_hw: tuple[int, int],
                    out_hw: tuple[int, int], complex_: bool) -> dict[str, dict[str, float]]:
    """Features of each method for ``B`` planes of ``in_hw`` correlated to ``out_hw``."""
    from . import _fft

    (H, W), (kh, kw), (oh, ow) = in_hw, k_hw, out_hw
    K = kh * kw
    P = B * oh * ow
    # Shift-and-add streams the whole plane once per tap: out of cache it is memory-bound.
    big = P * K if B * H * W * 4 > _CACHE_BYTES else 0
    direct = {
        "direct": {"mac": P * K, "mac_big": big, "tap": K, "call": 1},
        "gemm": {"mac": P * K, "call": 1},
    }
    if not has_fft(backend):
        return direct
    # The engine's alias-free size is about the input plus the part of the kernel
    # hanging outside it; mode "valid" needs only the input.
    top_h = max(oh + kh - 1 - H, 0)
    top_w = max(ow + kw - 1 - W, 0)
    n_full = _fft.fft_shape(backend.fft, (H + top_h, W + top_w), real=not complex_)
    n = n_full[0] * n_full[1]
    nb = _fft.oa_block_shape(backend, (H + top_h, W + top_w), (kh, kw), real=not complex_)
    bh, bw = nb[0] - kh + 1, nb[1] - kw + 1
    blocks = -(-(H + top_h) // bh) * -(-(W + top_w) // bw)
    m = nb[0] * nb[1]
    return {
        **direct,
        "fft": {"nlogn": (2 * B + 1) * _nlogn(n), "call": 1},
        "overlap-add": {"nlogn": (2 * B * blocks + 1) * _nlogn(m), "block": B * blocks,
                        "call": 1},
    }


def conv2d_features(backend: Any, x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                    out_hw: tuple[int, int], stride: tuple[int, int], groups: int,
                    complex_: bool) -> dict[str, dict[str, float]]:
    """Features of each method for a conv2d of these shapes (input already padded)."""
    from . import _fft

    N, C, H, W = x_shape
    Cout, Cg, kh, kw = w_shape
    Ho, Wo = out_hw
    G = groups
    K = kh * kw
    M = N * Ho * Wo
    macs = M * Cout * Cg * K
    # With stride 1 the per-tap products of "direct" run over the whole padded
    # plane (row-pitched operands, surplus rows and columns dropped at the end),
    # which costs (H*W)/(Ho*Wo) more: 2x for a 3x3 kernel on a 7x7 input.
    m_direct = N * H * W if tuple(stride) == (1, 1) else M
    direct = {
        "direct": {"mac": m_direct * Cout * Cg * K, "move": m_direct * (C + Cout) * K,
                   "tap": K, "call": 1},
        "gemm": {"mac": macs, "move": M * C * K, "call": 1},
    }
    if not has_fft(backend):
        return direct
    S = stride[0] * stride[1]
    # Polyphase: S phases become input channels of planes S times smaller.
    hq, wq = -(-H // stride[0]), -(-W // stride[1])
    kq = (-(-kh // stride[0]), -(-kw // stride[1]))
    cin = Cg * S
    s_full = _fft.fft_shape(backend.fft, (hq, wq), real=not complex_)
    n = s_full[0] * s_full[1]
    nf = s_full[0] * (s_full[1] // 2 + 1)
    nb = _fft.oa_block_shape(backend, (hq, wq), kq, real=not complex_)
    blocks = -(-hq // (nb[0] - kq[0] + 1)) * -(-wq // (nb[1] - kq[1] + 1))
    m = nb[0] * nb[1]
    mf = nb[0] * (nb[1] // 2 + 1)
    transforms = N * G * cin + N * Cout
    return {
        **direct,
        "fft": {"nlogn": transforms * _nlogn(n) + Cout * cin * _nlogn(n),
                "cmac": N * Cout * cin * nf, "call": 1},
        "overlap-add": {"nlogn": transforms * blocks * _nlogn(m) + Cout * cin * _nlogn(m),
                        "cmac": N * Cout * cin * mf * blocks, "call": 1},
    }


def estimate(constants: dict[str, dict[str, list[float]]], family: str,
             features: dict[str, dict[str, float]]) -> dict[str, float]:
    """Estimated seconds of each method."""
    out = {}
    for method, names in FEATURES[family].items():
        if method not in features:
            continue
        c = constants[family][method]
        f = features[method]
        out[method] = float(sum(ci * f[name] for ci, name in zip(c, names)))
    return out


# -- calibration --------------------------------------------------------------------
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
# im2col for one kernel is never a candidate for planes; it is timed on small cases only.
_GEMM_MAX_PIXELS = 1024 * 1024
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

    Returns ``{"device_key", "constants", "path", "timings", "fit_error"}``,
    where ``fit_error`` is the median relative error of the fitted model on
    the timed cases, per family and method.
    """
    import gpuconv
    from .backend import get_backend_object, resolve_backend

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

    rows: dict[str, list[dict[str, float]]] = {m: [] for m in FEATURES["planes"]}
    times: dict[str, list[float]] = {m: [] for m in FEATURES["planes"]}
    with gpuconv.set_backend(backend.name):
        for B, H, W, k in (QUICK_PLANE_CASES if quick else PLANE_CASES):
            x = backend.asarray(rng.standard_normal((B, H, W), dtype=np.float32))
            w = backend.asarray(rng.standard_normal((k, k), dtype=np.float32))
            feats = planes_features(backend, B, (H, W), (k, k), (H - k + 1, W - k + 1), False)
            for method in FEATURES["planes"]:
                if method not in feats or (method == "gemm" and B * H * W > _GEMM_MAX_PIXELS):
                    continue

                def call(method=method):
                    out = gpuconv.correlate2d(x, w, "valid", method=method)
                    backend.to_numpy(out[..., :1, :1])
                t = _time(call)
                rows[method].append(feats[method])
                times[method].append(t)
                timings["planes"].append([[B, H, W, k], method, t])
            say(f"planes {B}x{H}x{W} k{k}")
        defaults, _ = load_constants(key)
        for method, names in FEATURES["planes"].items():
            constants["planes"][method] = (_fit(rows[method], times[method], names)
                                           if rows[method] else defaults["planes"][method])

        rows = {m: [] for m in FEATURES["conv2d"]}
        times = {m: [] for m in FEATURES["conv2d"]}
        for N, C, H, W, Co, k, s in (QUICK_CONV_CASES if quick else CONV_CASES):
            x = backend.asarray(rng.standard_normal((N, C, H, W), dtype=np.float32))
            w = backend.asarray(rng.standard_normal((Co, C, k, k), dtype=np.float32))
            out_hw = ((H - k) // s + 1, (W - k) // s + 1)
            feats = conv2d_features(backend, (N, C, H, W), (Co, C, k, k), out_hw, (s, s), 1,
                                    False)
            for method in FEATURES["conv2d"]:
                if method not in feats:
                    continue

                def call(method=method):
                    out = gpuconv.conv2d(x, w, stride=s, method=method)
                    backend.to_numpy(out[..., :1, :1])
                t = _time(call)
                rows[method].append(feats[method])
                times[method].append(t)
                timings["conv2d"].append([[N, C, H, W, Co, k, s], method, t])
            say(f"conv2d ({N},{C},{H},{W})->{Co} k{k} s{s}")
        for method, names in FEATURES["conv2d"].items():
            constants["conv2d"][method] = (_fit(rows[method], times[method], names)
                                           if rows[method] else defaults["conv2d"][method])

    for family in ("planes", "conv2d"):
        for method, names in FEATURES[family].items():
            c = constants[family][method]
            rel = []
            for shape, m, t in timings[family]:
                if m == method:
                    f = _row_features(backend, family, shape)[method]
                    rel.append(abs(sum(ci * f[n] for ci, n in zip(c, names)) - t) / t)
            fit_error[family][method] = float(np.median(rel)) if rel else float("nan")
    meta = {"quick": quick, "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "numpy": np.__version__}
    path = _save(key, constants, meta) if save else None
    return {"device_key": key, "constants": constants, "path": path, "timings": timings,
            "fit_error": fit_error}


def _row_features(backend: Any, family: str, shape: list[int]) -> dict[str, dict[str, float]]:
    if family == "planes":
        B, H, W, k = shape
        return planes_features(backend, B, (H, W), (k, k), (H - k + 1, W - k + 1), False)
    N, C, H, W, Co, k, s = shape
    return conv2d_features(backend, (N, C, H, W), (Co, C, k, k),
                           ((H - k) // s + 1, (W - k) // s + 1), (s, s), 1, False)
