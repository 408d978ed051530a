"""``gpuconv demo``: a short tour of the library on one backend.

1. the chapter's edge detection, printed;
2. the edge kernel learned back from the image with a :class:`gpuconv.nn.Conv2D`
   (its loss going down, step by step);
3. cross-correlation versus convolution;
4. the chapter's claims checked (:func:`gpuconv.theory.check`);
5. timings, including direct versus FFT on a large kernel;

and with ``--plot PATH`` a figure of the input, its edges, the learned kernel
and the loss curve.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from . import backend as _backend
from .conv import conv2d
from .correlate import convolve2d, corr2d, correlate2d
from .examples import EDGE_KERNEL, EdgeKernelResult, edge_image, learn_edge_kernel

__all__ = ["run_demo", "edge_image", "save_figure"]

# Steps of the loss curve printed in the tour.
_SHOWN_STEPS = (0, 1, 2, 3, 5, 10, 20, 30, 40)


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


def _theory_summary(backend: str) -> None:
    try:
        from .theory import check
    except ImportError:
        print("(gpuconv.theory is not available in this version)")
        return
    results = check(backend)
    held = [r for r in results if r.passed]
    for r in results:
        print(f"  {r}")
    print(f"{len(held)}/{len(results)} claims hold (tolerances are floating-point error "
          "bounds; run `gpuconv check` for the table)")


def _direct_vs_fft(xp: Any, rng: np.random.Generator, sync: Callable[[], None]) -> str:
    n, k = 512, 15
    image = xp.asarray(rng.standard_normal((n, n)).astype(np.float32))
    kernel = xp.asarray(rng.standard_normal((k, k)).astype(np.float32))
    label = f"correlate2d {n}x{n}, {k}x{k}, float32"
    try:
        direct = _median_ms(lambda: correlate2d(image, kernel, mode="valid", method="direct"),
                            sync, repeats=3)
        fft = _median_ms(lambda: correlate2d(image, kernel, mode="valid", method="fft"),
                         sync, repeats=3)
    except (NotImplementedError, ValueError) as exc:
        return f"{label}: direct vs FFT not available here ({exc})"
    faster = "FFT" if fft < direct else "direct"
    ratio = max(direct, fft) / max(min(direct, fft), 1e-9)
    return (f"{label}: direct {direct:.2f} ms, FFT {fft:.2f} ms "
            f"({faster} {ratio:.1f}x faster)")


def save_figure(path: str, X: np.ndarray, Y: np.ndarray, learned: EdgeKernelResult) -> None:
    """Input, its edges, the learned kernel and the loss curve, as one PNG (needs matplotlib).

    Parameters
    ----------
    path : str or path-like
        Where the PNG goes.
    X : numpy.ndarray
        The input image.
    Y : numpy.ndarray
        Its edges, ``corr2d(X, K)``.
    learned : EdgeKernelResult
        What :func:`gpuconv.examples.learn_edge_kernel` returned.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), constrained_layout=True)
    axes[0].imshow(X, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("input X (6x8)")
    im = axes[1].imshow(Y, cmap="coolwarm", vmin=-1, vmax=1)
    axes[1].set_title("corr2d(X, [[1, -1]])")
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    k = learned.kernel.reshape(1, 2)
    axes[2].imshow(k, cmap="coolwarm", vmin=-1.2, vmax=1.2)
    for j in range(2):
        axes[2].text(j, 0, f"{k[0, j]:+.4f}", ha="center", va="center")
    axes[2].set_title("learned kernel")
    for ax in axes[:3]:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[3].semilogy(np.arange(len(learned.losses)), learned.losses, marker=".")
    axes[3].set_xlabel("gradient step")
    axes[3].set_ylabel("summed squared loss")
    axes[3].set_title("learning the kernel")
    axes[3].grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_demo(backend: str = "numpy", plot: str | None = None) -> int:
    """Print the tour (``gpuconv demo``).

    Parameters
    ----------
    backend : str, optional
        The backend to run on (default ``"numpy"``).
    plot : str, optional
        Also save :func:`save_figure` there.

    Returns
    -------
    int
        The process exit code: 0; 1 when the backend cannot run here, or when
        ``plot`` needs matplotlib and it is missing.
    """
    try:
        chosen = _backend.set_backend(backend)
    except _backend.BackendUnavailableError as exc:
        print(f"gpuconv demo: {exc}")
        return 1
    with chosen:
        be = _backend.get_backend_object(backend)
        xp = be.xp
        to_np = be.to_numpy
        sync = getattr(be, "synchronize", lambda: None)
        print(f"gpuconv demo on the {backend!r} backend")

        _section("1. Edge detection (the chapter's example)")
        X = edge_image()
        K = EDGE_KERNEL
        Y = to_np(corr2d(xp.asarray(X), xp.asarray(K)))
        print("X (6x8, columns 2..5 dark):")
        print(_fmt(X))
        print("K = [[1, -1]]; Y = corr2d(X, K): 1 where white turns black, -1 back")
        print(_fmt(Y))
        print("corr2d(X.T, K) finds no vertical edge in the transposed image:")
        print(_fmt(to_np(corr2d(xp.asarray(X.T), xp.asarray(K)))))

        _section("2. Learning the kernel back from X and Y")
        learned = learn_edge_kernel(steps=40, lr=3e-2, seed=0, backend=backend)
        print("a 1x2 Conv2D without bias, random start, summed squared loss, gradient "
              "descent with lr 0.03;")
        print("its gradients are gpuconv convolutions (weight: correlate the input with the "
              "output gradient)")
        print(f"start: K = {_fmt(learned.initial_kernel)}")
        for step in _SHOWN_STEPS:
            if step < len(learned.losses):
                print(f"  step {step:2d}: loss {learned.losses[step]:.3e}")
        print(f"learned: K = {_fmt(learned.kernel)}, max |K - [1, -1]| = {learned.error:.1e}")

        _section("3. Cross-correlation vs convolution")
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

        _section("4. The chapter's claims, checked")
        _theory_summary(backend)

        _section("5. Timings (median of 5, milliseconds)")
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
        print(_direct_vs_fft(xp, rng, sync))
    print()
    print("Next: `gpuconv train-digits` trains a small CNN on handwritten digits.")
    if plot:
        try:
            save_figure(plot, X, Y, learned)
        except ImportError:
            print(f"--plot needs matplotlib (pip install matplotlib); nothing written to "
                  f"{plot}")
            return 1
        print(f"figure written to {plot}")
    return 0
