"""Cost model behind ``method="auto"``: operation counts times per-machine constants.

Each method's time is modelled as a dot product of non-negative constants
with a few *features* of the call (multiply-adds, transform work
``n log2 n``, memory passes, per-call overheads).  The constants are fitted
by ``gpuconv calibrate`` (:mod:`gpuconv._measure`), which times small cases of
every method and solves a non-negative least-squares problem on relative errors;
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

from ._geometry import extent

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
    "save",
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


def save(device_key: str, constants: dict[str, Any], meta: dict[str, Any]) -> Path:
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
    """Features of each method for ``B`` planes of ``in_hw`` correlated to ``out_hw``.

    Besides the model's features, the FFT entries carry ``scratch_min``: the
    scratch (in elements of the working dtype) that the method needs for its
    smallest unit of work, which the chooser compares with the scratch limit.
    """
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
        "fft": {"nlogn": (2 * B + 1) * _nlogn(n), "call": 1,
                "scratch_min": _fft.transform_scratch(n_full, 1, 1, complex_)},
        "overlap-add": {"nlogn": (2 * B * blocks + 1) * _nlogn(m), "block": B * blocks,
                        "call": 1},
    }


def conv2d_features(backend: Any, x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                    out_hw: tuple[int, int], stride: tuple[int, int], groups: int,
                    complex_: bool, dilation: tuple[int, int] = (1, 1),
                    ) -> dict[str, dict[str, float]]:
    """Features of each method for a conv2d of these shapes (input already padded).

    The FFT entries carry ``scratch_min`` as in :func:`planes_features`.
    """
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
    # What the FFT engine transforms: the dilated kernel, and with a stride larger than
    # the kernel's extent only the samples the windows read (see _fft.drop_unread).
    ext = (extent(kh, dilation[0]), extent(kw, dilation[1]))
    s = tuple(min(stride[a], ext[a]) for a in range(2))
    hw = (H if s[0] == stride[0] else Ho * ext[0], W if s[1] == stride[1] else Wo * ext[1])
    S = s[0] * s[1]
    # Polyphase: S phases become input channels of planes S times smaller.
    hq, wq = -(-hw[0] // s[0]), -(-hw[1] // s[1])
    kq = (-(-ext[0] // s[0]), -(-ext[1] // s[1]))
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
                "cmac": N * Cout * cin * nf, "call": 1,
                "scratch_min": _fft.transform_scratch(s_full, G * cin, Cout, complex_)},
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
