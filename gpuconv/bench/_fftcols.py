"""FFT columns of the benchmark grids, the regret of ``auto``, and the crossover plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ._cases import FFT_METHODS
from ._columns import blocking, queued
from ._registry import GRIDS, register_column

__all__ = ["FFT_METHODS", "auto_regret", "regret_markdown", "crossover_plot"]

GPUCONV_METHODS = ("direct", "gemm", "fft", "overlap-add")


def _planes(method: str):
    def factory(inputs, case, backend):
        import gpuconv

        x, w, mode = inputs["x"], inputs["w"], case.params["mode"]
        return queued(backend, lambda: gpuconv.correlate2d(x, w, mode, method=method),
                      case.calls)
    return factory


def _conv(method: str):
    def factory(inputs, case, backend):
        import gpuconv

        x, w = inputs["x"], inputs["w"]
        return blocking(backend, lambda: gpuconv.conv2d(x, w, method=method))
    return factory


def register() -> None:
    """Add the ``fft`` and ``overlap-add`` columns to the built-in grids (idempotent)."""
    for method in FFT_METHODS:
        for grid in ("planes", "bandwidth", "batched"):
            if grid in GRIDS and method not in GRIDS[grid].columns:
                register_column(grid, method, _planes(method),
                                doc=f"gpuconv.correlate2d(x, k, mode, method={method!r})")
        if "conv2d" in GRIDS and method not in GRIDS["conv2d"].columns:
            register_column("conv2d", method, _conv(method),
                            doc=f"gpuconv.conv2d(x, w, method={method!r})")


def auto_regret(report: dict[str, Any],
                candidates: dict[str, tuple[str, ...]] | None = None) -> list[dict[str, Any]]:
    """Per cell: ``auto``'s median time over the fastest gpuconv method's.

    Only measured cells count (an extrapolated or capped column is compared
    as reported, marked in ``status``).

    Parameters
    ----------
    report : dict
        A benchmark report (as returned by :func:`gpuconv.bench.run`).
    candidates : dict, optional
        Per grid name, the methods to compare with (default: every gpuconv
        method; the targets pass the methods ``auto`` may pick).

    Returns
    -------
    list of dict
        ``{"grid", "case", "auto_s", "best", "best_s", "regret", "statuses"}``.
    """
    rows = []
    for grid in report["grids"]:
        for case in grid["cases"]:
            res = case["results"]
            if "median_s" not in res.get("auto", {}):
                continue
            methods = GPUCONV_METHODS if candidates is None else candidates.get(grid["name"], ())
            timed = {m: res[m]["median_s"] for m in methods
                     if m in res and "median_s" in res[m]}
            if not timed:
                continue
            best = min(timed, key=timed.get)
            rows.append({"grid": grid["name"], "case": case["id"],
                         "auto_s": res["auto"]["median_s"], "best": best,
                         "best_s": timed[best],
                         "regret": res["auto"]["median_s"] / timed[best],
                         "statuses": {m: res[m].get("status") for m in timed}})
    return rows


def regret_markdown(report: dict[str, Any], target: float = 1.15) -> str:
    """A markdown table of :func:`auto_regret`, with the cells above ``target`` counted."""
    rows = auto_regret(report)
    lines = ["| grid | case | auto | fastest method | its time | regret |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        flag = " **over**" if r["regret"] > target else ""
        lines.append(f"| {r['grid']} | {r['case']} | {r['auto_s'] * 1e3:.3g} ms | {r['best']} | "
                     f"{r['best_s'] * 1e3:.3g} ms | {r['regret']:.2f}{flag} |")
    over = sum(r["regret"] > target for r in rows)
    worst = max((r["regret"] for r in rows), default=math.nan)
    lines.append("")
    lines.append(f"{len(rows)} cells; worst regret {worst:.2f}; {over} above {target}.")
    return "\n".join(lines)


def crossover_plot(report: dict[str, Any], path: str | Path) -> Path:
    """Direct vs FFT time against kernel size, one panel per image size, as a PNG.

    Reads the ``planes`` grid of a report; needs matplotlib (the ``plot`` extra).

    Parameters
    ----------
    report : dict
        A benchmark report containing the ``planes`` grid.
    path : str or Path
        Where the PNG goes.

    Returns
    -------
    Path
    """
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the crossover plot needs matplotlib: pip install matplotlib") \
            from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = next((g for g in report["grids"] if g["name"] == "planes"), None)
    if grid is None:
        raise ValueError("the report has no 'planes' grid; run it (--grid planes) to plot")
    sizes = sorted({c["params"]["size"] for c in grid["cases"]})
    methods = [m for m in ("direct", "gemm", "fft", "overlap-add", "auto", "scipy.signal")
               if any(m in c["results"] for c in grid["cases"])]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.6), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        cases = sorted((c for c in grid["cases"] if c["params"]["size"] == size),
                       key=lambda c: c["params"]["kernel"])
        for m in methods:
            ks, ts, est = [], [], []
            for c in cases:
                r = c["results"].get(m, {})
                if "median_s" in r:
                    ks.append(c["params"]["kernel"])
                    ts.append(r["median_s"])
                    est.append(r.get("status") == "extrapolated")
            if ks:
                line, = ax.plot(ks, ts, marker="o", label=m,
                                linestyle="--" if m in ("auto", "scipy.signal") else "-")
                for k, t, e in zip(ks, ts, est):
                    if e:
                        ax.plot([k], [t], marker="o", mfc="white", color=line.get_color())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([c["params"]["kernel"] for c in cases])
        ax.set_xticklabels([str(c["params"]["kernel"]) for c in cases])
        ax.set_title(f"{size}x{size}, valid correlation")
        ax.set_xlabel("kernel size k (k x k)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("median time [s]")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"direct vs FFT on {report.get('device', '?')} ({report.get('backend', '?')}); "
                 "open markers: extrapolated", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
