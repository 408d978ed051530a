"""Regret of method="auto" over the benchmark grid, measured with many interleaved samples.

Every gpuconv method and ``auto`` is timed on each cell of the ``planes`` and ``conv2d``
grids, in a freshly shuffled order each round (BLAS threads still spinning after one
call must not always slow down the same next column; no other library runs in the
process, so no OpenMP pool spins between samples), and the regret is auto's median over
the median of the fastest method auto's precision policy allows (the exact methods, and
an inexact one only where it measured its margin faster, as
``gpuconv.bench._targets.best_allowed`` judges the benchmark grid).  Methods slower than 20x the fastest first call, or
above 4 s, are timed once.  Also times gpuconv's FFT paths against
scipy.signal.fftconvolve/oaconvolve on the same outputs.

    python benchmarks/auto_regret_interleaved.py --out results.json [--samples 15]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.signal

import gpuconv
from gpuconv.bench._cases import CONV_LAYERS, PLANE_KERNELS, PLANE_SIZES
from gpuconv.bench._targets import best_allowed

METHODS = ["direct", "gemm", "fft", "overlap-add", "auto"]
# Winograd applies to 3x3 stride-1 conv2d layers (auto's conv2d candidates).
CONV_METHODS = {3: METHODS + ["winograd"]}


def _interleaved(calls: dict, samples: int, seed: int = 1) -> dict[str, dict[str, float]]:
    first = {}
    for name, call in calls.items():
        t0 = time.perf_counter()
        call()
        first[name] = time.perf_counter() - t0
    fastest = min(first.values())
    live = [n for n in calls if first[n] < max(20 * fastest, 0.05) and first[n] < 4]
    times: dict[str, list[float]] = {n: [] for n in live}
    order = list(live)
    shuffler = np.random.default_rng(seed)
    for _ in range(samples):
        shuffler.shuffle(order)
        for n in order:
            t0 = time.perf_counter()
            calls[n]()
            times[n].append(time.perf_counter() - t0)
    out = {}
    for n in calls:
        if n in times:
            out[n] = {"median_s": float(np.median(times[n])), "min_s": float(min(times[n])),
                      "samples": len(times[n])}
        else:
            out[n] = {"median_s": first[n], "min_s": first[n], "samples": 1}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--samples", type=int, default=15, help="rounds per cell (15)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []

    def record(grid: str, case: str, chosen: str, res: dict) -> None:
        judged = {"results": {m: dict(r, status="ok") for m, r in res.items()}}
        best, _, _ = best_allowed(grid, judged)
        fastest = min((m for m in res if m != "auto"), key=lambda m: res[m]["median_s"])
        row = {"case": case, "auto_method": chosen, "results": res, "best_allowed": best,
               "fastest_any": fastest,
               "regret_median": res["auto"]["median_s"] / res[best]["median_s"],
               "regret_min": res["auto"]["min_s"] / res[best]["min_s"],
               "choice_regret_median": res[chosen]["median_s"] / res[best]["median_s"]}
        rows.append(row)
        print(f"{case}: auto={chosen} best allowed={best} (fastest {fastest}) regret median "
              f"{row['regret_median']:.2f} min {row['regret_min']:.2f} "
              f"choice {row['choice_regret_median']:.2f}", flush=True)

    for k in PLANE_KERNELS:
        for n in PLANE_SIZES:
            x = rng.standard_normal((n, n), dtype=np.float32)
            w = rng.standard_normal((k, k), dtype=np.float32)
            chosen = gpuconv.choose_method("correlate2d", x, w, mode="valid").method
            calls = {m: (lambda m=m: gpuconv.correlate2d(x, w, "valid", method=m))
                     for m in METHODS}
            record("planes", f"planes {n}x{n} k{k}", chosen,
                   _interleaved(calls, args.samples if n <= 1024 else max(args.samples // 3, 3)))
    for dtype in ("float32", "float64"):
        for N, C, H, W, Co, k in CONV_LAYERS:
            x = rng.standard_normal((N, C, H, W)).astype(dtype)
            w = rng.standard_normal((Co, C, k, k)).astype(dtype)
            chosen = gpuconv.choose_method("conv2d", x, w).method
            calls = {m: (lambda m=m: gpuconv.conv2d(x, w, method=m))
                     for m in CONV_METHODS.get(k, METHODS)}
            record("conv2d", f"conv2d ({N},{C},{H},{W})->{Co} {k}x{k} {dtype}", chosen,
                   _interleaved(calls, args.samples))

    versus = []
    for n, k, mode in [(4096, 31, "full"), (4096, 31, "same"), (4096, 31, "valid"),
                       (2048, 15, "same")]:
        x = rng.standard_normal((n, n), dtype=np.float32)
        w = rng.standard_normal((k, k), dtype=np.float32)
        calls = {
            "scipy.signal.fftconvolve": lambda: scipy.signal.fftconvolve(x, w, mode),
            "scipy.signal.oaconvolve": lambda: scipy.signal.oaconvolve(x, w, mode),
            "gpuconv fft": lambda: gpuconv.convolve2d(x, w, mode, method="fft"),
            "gpuconv overlap-add": lambda: gpuconv.convolve2d(x, w, mode, method="overlap-add"),
            "gpuconv auto": lambda: gpuconv.convolve2d(x, w, mode),
        }
        res = _interleaved(calls, 7)
        versus.append({"case": f"{n}x{n} k{k} {mode} float32", "results": res})
        print(versus[-1]["case"], {c: round(r["median_s"], 4) for c, r in res.items()},
              flush=True)
    with open(args.out, "w") as f:
        json.dump({"regret": rows, "versus_scipy": versus}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
