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
from typing import Any, Iterator


from ._geometry import extent

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
    "save",
    "has_fft",
]

# 4: Winograd and the bytes of direct planes joined the features.
CACHE_VERSION = 4
_CACHE_BYTES = 8 * 2**20  # planes larger than this stream from memory, not cache

# Feature names per (family, method); the constants are seconds per unit.
FEATURES: dict[str, dict[str, tuple[str, ...]]] = {
    "planes": {
        "direct": ("mac", "mac_big", "tap", "call", "bytes"),
        "gemm": ("mac", "call"),
        "fft": ("nlogn", "call"),
        "overlap-add": ("nlogn", "block", "call"),
    },
    "conv2d": {
        "direct": ("mac", "move", "tap", "call"),
        "gemm": ("mac", "move", "call"),
        "fft": ("nlogn", "cmac", "call"),
        "overlap-add": ("nlogn", "cmac", "call"),
        "winograd": ("mac", "transform", "copy", "call"),
    },
}

# Fitted by ``gpuconv calibrate`` on the development machine (2-core AMD EPYC, no GPU,
# otherwise idle, 2026-12-02: the mean of two runs, after the scratch pool and
# Winograd), then checked against the benchmark grid; see benchmarks/results.
# Keyed "<backend>:<device>"; other devices use the NumPy constants until calibrated.
DEFAULTS: dict[str, dict[str, dict[str, list[float]]]] = {
    "numpy:cpu": {
        "planes": {
            "direct": [1.09e-10, 2.09e-12, 2.62e-06, 5.98e-06, 2.69e-11],
            "gemm": [7.24e-11, 4.85e-05],
            "fft": [1.29e-10, 5.05e-05],
            "overlap-add": [2.31e-10, 2.09e-06, 3.32e-05],
        },
        "conv2d": {
            "direct": [9.77e-12, 1.23e-10, 1.65e-06, 0.000343],
            "gemm": [1.09e-11, 1.89e-10, 7.81e-05],
            "fft": [2.32e-10, 1e-10, 3.48e-05],
            "overlap-add": [2.44e-10, 1.51e-10, 8.01e-05],
            "winograd": [3.04e-11, 0, 9.65e-12, 2.5e-05],
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


def load_constants(device_key: str, backend: Any = None,
                   ) -> tuple[dict[str, dict[str, list[float]]], str]:
    """(constants, source) for a ``"<backend>:<device>"`` key.

    In order: the calibration file; the built-in defaults for that key; for
    a device that can describe itself (``backend.device_properties()``),
    constants derived from its memory bandwidth and arithmetic rate
    (:func:`derived_defaults`); else the CPU's defaults.
    """
    path = _cache_path()
    models = _current(path).models
    if device_key in models:
        return models[device_key], f"calibrated ({path})"
    if device_key in DEFAULTS:
        return DEFAULTS[device_key], "built-in defaults"
    props = _device_properties(backend)
    if props is not None:
        return derived_defaults(props), (
            f"derived from the device's properties ({props['bandwidth'] / 1e12:.2g} TB/s, "
            f"{props['fma_rate'] / 1e12:.3g} T multiply-adds/s; run `gpuconv calibrate` to fit)")
    return DEFAULTS["numpy:cpu"], "built-in defaults (uncalibrated device)"


def _device_properties(backend: Any) -> dict[str, float] | None:
    describe = getattr(backend, "device_properties", None)
    if describe is None:
        return None
    try:
        props = describe()
    except Exception:  # a driver that cannot say: fall back to the CPU's constants
        return None
    if not props or not all(props.get(k, 0) > 0 for k in ("bandwidth", "fma_rate")):
        return None
    return props


def derived_defaults(props: dict[str, float]) -> dict[str, dict[str, list[float]]]:
    """Cost-model constants of a GPU from what it is: bandwidth and multiply-add rate.

    ``props``: ``bandwidth`` (bytes/s), ``fma_rate`` (float32 multiply-adds/s)
    and optionally ``launch`` (seconds of host time per call: Python, argument
    conversion and the launch).  Each constant is the time of one unit of its
    feature at a fraction of the peak that the kernel can reach, as predicted
    in ``benchmarks/results/NOTES.md``; calibration replaces them.

    * shift-and-add planes (``direct``): a quarter of the multiply-add rate
      (one shared-memory load per product), 80% of the bandwidth for the
      bytes in and out;
    * implicit-GEMM ``direct`` conv2d: 30% of the rate; cuBLAS ``gemm``: 70%
      of it, plus its column buffer written and read at 70% of the bandwidth
      (so deep layers go to cuBLAS, small ones to the single launch of the
      direct kernel);
    * cuFFT: about two bytes of traffic per ``n log2 n`` unit (a few passes
      over complex data) at half the bandwidth; per-frequency channel
      products at 10% of the rate (many small matrices);
    * Winograd (generic array code over cuBLAS): its products at 60% of the
      rate, each transformed element several passes at half the bandwidth.
    """
    bw, fma = float(props["bandwidth"]), float(props["fma_rate"])
    call = float(props.get("launch", 40e-6))
    byte = 1.0 / bw
    return {
        "planes": {
            "direct": [1 / (0.25 * fma), 0.0, 0.0, call, byte / 0.8],
            # im2col for one kernel: every product's column element written and read.
            "gemm": [8 * byte / 0.7, 2 * call],
            "fft": [2 * byte / 0.5, 3 * call],
            "overlap-add": [2 * byte / 0.5, 1e-9, 4 * call],
        },
        "conv2d": {
            "direct": [1 / (0.3 * fma), 0.0, 0.0, call],
            "gemm": [1 / (0.7 * fma), 8 * byte / 0.7, 2 * call],
            "fft": [2 * byte / 0.5, 4 / (0.1 * fma), 6 * call],
            "overlap-add": [2 * byte / 0.5, 4 / (0.1 * fma), 8 * call],
            "winograd": [1 / (0.6 * fma), 24 * byte / 0.5, 8 * byte / 0.5, call / 2],
        },
    }


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


def save(device_key: str, constants: dict[str, Any], meta: dict[str, Any]) -> Path:
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
                    out_hw: tuple[int, int], complex_: bool,
                    itemsize: int = 4) -> dict[str, dict[str, float]]:
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
        # Bytes: the planes in and out once, what a memory-bound kernel (a GPU's) pays.
        "direct": {"mac": P * K, "mac_big": big, "tap": K, "call": 1,
                   "bytes": B * (H * W + oh * ow) * itemsize},
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
    if (kh, kw) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1):
        from . import _winograd

        wf = _winograd.cost_features(tuple(x_shape), tuple(w_shape), groups, tuple(out_hw))
        direct["winograd"] = {"mac": wf["macs"] + wf["weight_macs"],
                              "transform": wf["transform"], "copy": wf["copies"],
                              "call": wf["calls"]}
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
