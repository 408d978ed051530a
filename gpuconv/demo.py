"""``gpuconv demo``: a short tour of the library on one backend."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from . import backend as _backend
from .conv import conv2d
from .correlate import convolve2d, corr2d, correlate2d

__all__ = ["run_demo", "edge_image"]


def edge_image(height: int = 6, width: int = 8) -> np.ndarray:
    """The chapter's image: ones, with columns 2..5 set to zero (two vertical edges)."""
    X = np.ones((height, width))
    X[:, 2:6] = 0
    return X


def _fmt(a: Any) -> str:
    return np.array2string(np.asarray(a), precision=3, suppress_small=True)


def _median_ms(fn: Callable[[], Any], sync: Callable[[], None], repeats: int = 5) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def _section(title: str) -> None:
    print()
    print(title)
    print("-" * len(title))


def run_demo(backend: str = "numpy", plot: str | None = None) -> int:
    """Print the tour; return the process exit code."""
    with _backend.set_backend(backend):
        be = _backend.get_backend_object(backend)
        xp = be.xp
        to_np = be.to_numpy
        print(f"gpuconv demo on the {backend!r} backend")

        _section("1. Edge detection (the chapter's example)")
        X = edge_image()
        K = np.array([[1.0, -1.0]])
        Y = corr2d(xp.asarray(X), xp.asarray(K))
        print("X (6x8, columns 2..5 dark):")
        print(_fmt(X))
        print("K = [[1, -1]]; Y = corr2d(X, K): 1 where white turns black, -1 back")
        print(_fmt(to_np(Y)))
        print("corr2d(X.T, K) finds no vertical edge in the transposed image:")
        print(_fmt(to_np(corr2d(xp.asarray(X.T), xp.asarray(K)))))

        _section("2. Cross-correlation vs convolution")
        rng = np.random.default_rng(0)
        img = xp.asarray(rng.standard_normal((5, 5)))
        ker = xp.asarray(np.array([[1.0, 2.0], [3.0, 4.0]]))
        c = to_np(correlate2d(img, ker, mode="valid"))
        v = to_np(convolve2d(img, ker, mode="valid"))
        flipped = to_np(correlate2d(img, ker[::-1, ::-1], mode="valid"))
        print("correlate2d(x, k) and convolve2d(x, k) differ:",
              f"max |difference| = {np.abs(c - v).max():.3f}")
        print("convolve2d(x, k) equals correlate2d(x, flip(k)):",
              f"max |difference| = {np.abs(v - flipped).max():.1e}")
        f = to_np(convolve2d(img, ker))
        g = to_np(convolve2d(ker, img))
        print(f"convolution commutes, f * g = g * f: max |difference| = {np.abs(f - g).max():.1e}")

        _section("3. Timings (median of 5, milliseconds)")
        sync = getattr(be, "synchronize", lambda: None)
        rows = []
        for n, k in [(512, 3), (1024, 3), (1024, 7)]:
            image = xp.asarray(rng.standard_normal((n, n)).astype(np.float32))
            kernel = xp.asarray(rng.standard_normal((k, k)).astype(np.float32))
            ms = _median_ms(lambda: correlate2d(image, kernel, mode="valid"), sync)
            rows.append((f"correlate2d {n}x{n}, {k}x{k}, float32", ms))
        x = xp.asarray(rng.standard_normal((32, 64, 28, 28)).astype(np.float32))
        w = xp.asarray(rng.standard_normal((64, 64, 3, 3)).astype(np.float32))
        rows.append(("conv2d (32,64,28,28) -> 64, 3x3, float32",
                     _median_ms(lambda: conv2d(x, w), sync)))
        width = max(len(name) for name, _ in rows)
        for name, ms in rows:
            print(f"{name:<{width}}  {ms:8.2f}")
    if plot:
        print(f"(--plot is not available yet; nothing written to {plot})")
    return 0
