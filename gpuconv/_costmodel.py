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

import contextlib
import itertools
import json
import math
import os
import stat
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

__all__ = [
    "FEATURES",
    "DEFAULTS",
    "cache_dir",
    "cache_file",
    "load_constants",
    "generation",
    "invalidate",
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
# The cache file is read only when it is a regular file of at most this size ...
_CACHE_FILE_MAX_BYTES = 4 * 2**20
# ... and looked at (one os.stat) at most this often, in seconds: a file written by
# another process is picked up this late; this process's own calibrate() at once.
_CHECK_INTERVAL = 2.0


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


_PATHS: dict[tuple[str | None, ...], str] = {}


def _cache_path() -> str:
    """``str(cache_file())``, memoised on the variables it depends on.

    Resolving the home directory is slow; a small call must not pay it every time.
    """
    env = os.environ.get("GPUCONV_CACHE_DIR")
    key = (env,) if env else (None, os.environ.get("XDG_CACHE_HOME"), os.environ.get("HOME"))
    path = _PATHS.get(key)
    if path is None:
        if len(_PATHS) > 64:
            _PATHS.clear()
        path = _PATHS[key] = str(cache_file())
    return path


class _Loaded:
    """What was read from one cache path: its valid models, when, and from which file."""

    __slots__ = ("stamp", "models", "generation", "checked")

    def __init__(self, stamp: Any, models: dict[str, Any], generation: int, checked: float):
        self.stamp = stamp
        self.models = models
        self.generation = generation
        self.checked = checked


_STATES: dict[str, _Loaded] = {}
_STATES_LOCK = threading.Lock()
# Generations are unique in the process, so that a decision memoised under one set of
# constants is never reused under another, even after invalidate().
_GENERATIONS = itertools.count(1)


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _stat(path: str) -> tuple[Any, os.stat_result | None, str | None]:
    """(stamp, stat, problem) of the cache path; stamp None when there is no file."""
    try:
        st = os.stat(path)  # follows a symlink: one to a regular file is fine
    except FileNotFoundError:
        return None, None, None
    except OSError as exc:
        return ("error", exc.errno), None, f"cannot be examined ({exc.strerror or exc})"
    return _stamp(st), st, None


def _not_readable(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_size > _CACHE_FILE_MAX_BYTES:
        return f"it is larger than {_CACHE_FILE_MAX_BYTES // 2**20} MiB"
    return None


def _read_json(path: str, st: os.stat_result | None) -> tuple[Any, str | None]:
    """(decoded JSON, problem): reads only a regular file of bounded size, never blocks."""
    if st is None:
        return None, None
    problem = _not_readable(st)
    if problem:
        return None, problem
    try:
        # O_NONBLOCK: a FIFO put in the file's place after the stat must not block the open.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        return None, f"it cannot be opened ({exc.strerror or exc})"
    try:
        problem = _not_readable(os.fstat(fd))
        if problem:
            return None, problem
        chunks = []
        left = _CACHE_FILE_MAX_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 2**20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            return None, f"it is larger than {_CACHE_FILE_MAX_BYTES // 2**20} MiB"
    except OSError as exc:
        return None, f"it cannot be read ({exc.strerror or exc})"
    finally:
        os.close(fd)
    try:
        return json.loads(b"".join(chunks)), None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return None, f"it is not valid JSON ({type(exc).__name__})"


def _valid_constants(model: Any) -> tuple[dict[str, dict[str, list[float]]] | None, str]:
    """The model's constants for every family and method of FEATURES, or (None, why not).

    Each is a list of ``len(FEATURES[family][method])`` finite numbers >= 0,
    not all zero (an estimate of no time at all for every call is no
    measurement).  Families and methods this version does not know are dropped.
    """
    if not isinstance(model, dict):
        return None, f"a model is {type(model).__name__}, not an object"
    out: dict[str, dict[str, list[float]]] = {}
    for family, methods in FEATURES.items():
        given = model.get(family)
        if not isinstance(given, dict):
            return None, f"it has no {family!r} object"
        out[family] = {}
        for method, names in methods.items():
            values = given.get(method)
            where = f"{family}.{method}"
            if not isinstance(values, list) or len(values) != len(names):
                return None, f"{where} is not a list of {len(names)} numbers"
            if not all(type(v) in (int, float) for v in values):
                return None, f"{where} holds something other than numbers"
            floats = [float(v) for v in values]
            if not all(math.isfinite(v) and v >= 0 for v in floats):
                return None, f"{where} holds a negative or non-finite number"
            if not any(floats):
                return None, f"{where} is all zeros"
            out[family][method] = floats
    return out, ""


def _valid_models(data: Any) -> tuple[dict[str, Any], list[str]]:
    """(valid models by device key, problems) of a decoded cache file."""
    if not isinstance(data, dict):
        return {}, [f"it holds a JSON {type(data).__name__}, not an object"]
    version = data.get("version")
    if type(version) is not int or version != CACHE_VERSION:
        return {}, [f"it has cache version {version!r}; this gpuconv reads version "
                    f"{CACHE_VERSION}"]
    models = data.get("models")
    if not isinstance(models, dict):
        return {}, ["it has no 'models' object"]
    valid, problems = {}, []
    for key, model in models.items():
        constants, why = _valid_constants(model)
        if constants is None:
            problems.append(f"the model for {key!r} is ignored: {why}")
        else:
            valid[key] = constants
    return valid, problems


def _load(path: str, stamp: Any, st: os.stat_result | None, problem: str | None,
          now: float) -> _Loaded:
    models: dict[str, Any] = {}
    problems = [problem] if problem else []
    if st is not None and not problems:
        data, problem = _read_json(path, st)
        if problem:
            problems.append(problem)
        elif data is not None:
            models, problems = _valid_models(data)
    if problems:
        # Once per state of the file: it is read again only when it changes.
        warnings.warn(f"gpuconv: cost-model cache {path}: {'; '.join(problems)}. "
                      f"method='auto' uses the built-in constants instead; "
                      f"rerun `gpuconv calibrate` or delete the file.",
                      RuntimeWarning, stacklevel=2)
    return _Loaded(stamp, models, next(_GENERATIONS), now)


def _current(path: str) -> _Loaded:
    """The constants read from ``path``, looking at the file at most every _CHECK_INTERVAL."""
    now = time.monotonic()
    state = _STATES.get(path)
    if state is not None and now - state.checked < _CHECK_INTERVAL:
        return state
    with _STATES_LOCK:
        state = _STATES.get(path)
        if state is not None and now - state.checked < _CHECK_INTERVAL:
            return state
        stamp, st, problem = _stat(path)
        if state is not None and stamp == state.stamp:
            state.checked = now
            return state
        if len(_STATES) > 64:
            _STATES.clear()
        state = _STATES[path] = _load(path, stamp, st, problem, now)
        return state


def invalidate() -> None:
    """Forget the constants read: the next call reads the cache file again.

    A file another process writes is otherwise picked up within
    ``_CHECK_INTERVAL`` seconds; this process's :func:`calibrate` is seen at once.
    """
    with _STATES_LOCK:
        _STATES.clear()


def generation() -> tuple[str, int]:
    """Identifies the constants in force: the cache file and a number that changes with them."""
    path = _cache_path()
    return path, _current(path).generation


def load_constants(device_key: str) -> tuple[dict[str, dict[str, list[float]]], str]:
    """(constants, source) for a ``"<backend>:<device>"`` key: the calibration file or defaults."""
    path = _cache_path()
    models = _current(path).models
    if device_key in models:
        return models[device_key], f"calibrated ({path})"
    if device_key in DEFAULTS:
        return DEFAULTS[device_key], "built-in defaults"
    return DEFAULTS["numpy:cpu"], "built-in defaults (uncalibrated device)"


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/costmodel.json.lock`` (between processes)."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(folder / "costmodel.json.lock", flags, 0o644)
    try:
        try:
            import fcntl
        except ImportError:  # Windows
            import msvcrt

            # Retries for about 10 s, then raises OSError: reported like an unwritable folder.
            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _save(device_key: str, constants: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Store one device's constants, keeping every other device's: atomically, under a lock.

    The file is re-read under the lock, so that a concurrent calibration of
    another device (another process) is merged, not lost; the new contents go
    to a fresh temporary file in the same folder (``mkstemp``: a planted
    file or symlink of that name is never written through), which then
    replaces the cache file.  Raises OSError when the folder is not writable.
    """
    path = cache_file()
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    checked, why = _valid_constants(constants)
    if checked is None:
        raise ValueError(f"refusing to store constants that would not be read back: {why}")
    with _folder_lock(folder):
        stamp, st, problem = _stat(str(path))
        data, _ = _read_json(str(path), st) if problem is None else (None, problem)
        models, _ = _valid_models(data) if data is not None else ({}, [])
        old_meta = data.get("meta") if isinstance(data, dict) else None
        meta_all = {k: v for k, v in old_meta.items() if k in models} \
            if isinstance(old_meta, dict) else {}
        models[device_key] = checked
        meta_all[device_key] = meta
        text = json.dumps({"version": CACHE_VERSION, "models": models, "meta": meta_all},
                          indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".costmodel.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # This process uses the new constants at once, whatever the check interval.
        written = _stamp(os.stat(path))
    key = _cache_path()
    with _STATES_LOCK:
        _STATES[key] = _Loaded(written, models, next(_GENERATIONS), time.monotonic())
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

    Returns ``{"device_key", "constants", "path", "timings", "fit_error",
    "write_error"}``, where ``fit_error`` is the median relative error of the
    fitted model on the timed cases, per family and method.  ``path`` is the
    cache file written, or None when ``save`` is false or the file could not
    be written; then ``write_error`` says where and why.
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
    path, write_error = None, None
    if save:
        try:
            path = _save(key, constants, meta)
        except OSError as exc:
            # The work is done: report the constants and where they could not go.
            write_error = f"could not write {cache_file()}: {exc.strerror or exc}"
    return {"device_key": key, "constants": constants, "path": path, "timings": timings,
            "fit_error": fit_error, "write_error": write_error}


def _row_features(backend: Any, family: str, shape: list[int]) -> dict[str, dict[str, float]]:
    if family == "planes":
        B, H, W, k = shape
        return planes_features(backend, B, (H, W), (k, k), (H - k + 1, W - k + 1), False)
    N, C, H, W, Co, k, s = shape
    return conv2d_features(backend, (N, C, H, W), (Co, C, k, k),
                           ((H - k) // s + 1, (W - k) // s + 1), (s, s), 1, False)
