"""Render the documentation's figures into ``docs/_static/``.

Run it from the repository root after changing what a figure shows::

    python docs/make_figures.py

It needs matplotlib (``pip install ".[plot]"``) and draws with the library's own
plotting code: :func:`gpuconv.demo.save_figure` (the edge image, the learned kernel and
its loss curve), :func:`gpuconv.examples.save_digits_figure` (the digits CNN's loss
curves and first-layer kernels) and the benchmark module's crossover plot, from the
benchmark record committed in ``benchmarks/results/fft-auto/``.  The PNGs are committed,
so building the site runs no training and no benchmark.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
STATIC = DOCS / "_static"
CROSSOVER_RECORD = ROOT / "benchmarks" / "results" / "fft-auto" / "grid-cpu-2026-11-27.json"


def edges_figure(path: Path) -> None:
    """The edge image, its edges, and what the transposed image and kernel give."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    import gpuconv
    from gpuconv.examples import EDGE_KERNEL, edge_image

    X, K = edge_image(), EDGE_KERNEL
    panels = [
        (X, "X: ones, columns 2..5 zero", "gray", (0, 1)),
        (gpuconv.corr2d(X, K), "corr2d(X, [[1, -1]])", "coolwarm", (-1, 1)),
        (gpuconv.corr2d(X.T, K), "corr2d(X.T, [[1, -1]])", "coolwarm", (-1, 1)),
        (gpuconv.corr2d(X.T, K.T), "corr2d(X.T, [[1], [-1]])", "coolwarm", (-1, 1)),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2), constrained_layout=True)
    for ax, (image, title, cmap, (lo, hi)) in zip(axes, panels):
        ax.imshow(np.asarray(image), cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    sys.path.insert(0, str(ROOT))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("make_figures needs matplotlib: pip install \".[plot]\"", file=sys.stderr)
        return 1
    from gpuconv import corr2d
    from gpuconv.bench._fftcols import crossover_plot
    from gpuconv.demo import save_figure
    from gpuconv.examples import (EDGE_KERNEL, edge_image, learn_edge_kernel, save_digits_figure,
                                  train_digits)

    STATIC.mkdir(exist_ok=True)
    edges_figure(STATIC / "edges.png")
    X = edge_image()
    save_figure(STATIC / "learned-kernel.png", X, corr2d(X, EDGE_KERNEL),
                learn_edge_kernel(steps=40, seed=0))
    save_digits_figure(STATIC / "digits.png", train_digits(epochs=20, seed=0, progress=False))
    crossover_plot(json.loads(CROSSOVER_RECORD.read_text()), STATIC / "crossover-cpu.png")
    for name in ("edges.png", "learned-kernel.png", "digits.png", "crossover-cpu.png"):
        print(STATIC / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
