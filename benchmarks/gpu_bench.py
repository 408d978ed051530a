"""GPU benchmarks of gpuconv's CuPy backend against what a CuPy user has today.

    python benchmarks/gpu_bench.py --out OUTDIR [--quick]

Grids (float32 unless stated):

* ``planes``: the single-channel grid of the CPU harness (256²/1024²/4096² x
  3/7/15/31, ``mode="valid"``);
* ``bandwidth``: 4096² and 8192² with 3x3, ``mode="same"`` (a memory-bound op);
* ``batched``: 64 planes of 512² with 5x5 in one call, against a Python loop of
  ``cupyx.scipy.signal.correlate2d``;
* ``conv2d``: the conv-layer grid of the CPU harness, float32.

Columns: gpuconv ``direct``/``gemm``/``fft``/``auto``; anchors
``cupyx.scipy.signal.correlate2d``, ``cupyx.scipy.ndimage.correlate``,
``cupyx.scipy.signal.fftconvolve`` and ``torch`` (cuDNN, TF32 off).

Every cell is the median of CUDA-event timings taken after warm-up calls
(kernel compilation happens there and is reported separately as each column's
first-call time).  Next to each time: GB/s (each input read once, the output
written once) and GFLOP/s (2 per multiply-add), and the card's measured
device-to-device copy bandwidth and float32 matrix-product rate.  Each
gpuconv result is compared with a float64 result of an independent
implementation (cupyx or torch) on the same random inputs.

Writes ``gpu_bench.json`` and ``gpu_bench.md`` to OUTDIR.  Everything above
the ``# -- device`` line is plain Python (tested without a GPU).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

PLANE_SIZES = (256, 1024, 4096)
PLANE_KERNELS = (3, 7, 15, 31)
BANDWIDTH_SIZES = (4096, 8192)
BATCHED = (64, 512, 5)
CONV_LAYERS = (
    (32, 3, 32, 32, 16, 5),
    (32, 64, 28, 28, 64, 3),
    (8, 256, 14, 14, 256, 3),
    (1, 1, 28, 28, 6, 5),
)
GPUCONV_PLANE_METHODS = ("direct", "gemm", "fft", "auto")
GPUCONV_CONV_METHODS = ("direct", "gemm", "auto")

# Targets of the CuPy backend issue.
TARGET_BANDWIDTH_FRACTION = 0.75
TARGET_VS_CUPYX = 3.0
TARGET_VS_CUDNN = 1.25
TARGET_BATCHED_VS_LOOP = 10.0
TARGET_AUTO_VS_BEST = 1.15


@dataclass
class Case:
    grid: str
    id: str
    params: dict[str, Any]
    bytes: int
    flops: int


@dataclass
class Cell:
    grid: str
    case: str
    column: str
    median_ms: float | None = None
    first_call_ms: float | None = None
    gbps: float | None = None
    gflops: float | None = None
    rel_err: float | None = None
    samples: int = 0
    note: str = ""


@dataclass
class Report:
    device: dict[str, Any] = field(default_factory=dict)
    ceilings: dict[str, float] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)


def plane_case(n: int, k: int) -> Case:
    out = (n - k + 1) ** 2
    return Case("planes", f"{n}x{n} k{k}", {"size": n, "kernel": k, "mode": "valid"},
                bytes=4 * (n * n + out + k * k), flops=2 * k * k * out)


def bandwidth_case(n: int) -> Case:
    return Case("bandwidth", f"{n}x{n} k3 same", {"size": n, "kernel": 3, "mode": "same"},
                bytes=4 * (2 * n * n + 9), flops=2 * 9 * n * n)


def batched_case(b: int, n: int, k: int) -> Case:
    return Case("batched", f"{b}x{n}x{n} k{k} same",
                {"batch": b, "size": n, "kernel": k, "mode": "same"},
                bytes=4 * (2 * b * n * n + k * k), flops=2 * k * k * b * n * n)


def conv_case(N: int, C: int, H: int, W: int, Co: int, k: int) -> Case:
    Ho, Wo = H - k + 1, W - k + 1
    return Case("conv2d", f"({N},{C},{H},{W})->{Co} {k}x{k}",
                {"N": N, "C": C, "H": H, "W": W, "C_out": Co, "kernel": k},
                bytes=4 * (N * C * H * W + Co * C * k * k + N * Co * Ho * Wo),
                flops=2 * N * Co * Ho * Wo * C * k * k)


def cases(quick: bool) -> list[Case]:
    """Every benchmark case (a few small ones when ``quick``)."""
    if quick:
        return [plane_case(256, 3), plane_case(1024, 7), bandwidth_case(1024),
                batched_case(8, 256, 5), conv_case(*CONV_LAYERS[1])]
    # The grids with a single target per case first: a run cut short by its
    # time limit still answers them (results are written after every case).
    return ([bandwidth_case(n) for n in BANDWIDTH_SIZES]
            + [batched_case(*BATCHED)]
            + [conv_case(*layer) for layer in CONV_LAYERS]
            + [plane_case(n, k) for k in PLANE_KERNELS for n in PLANE_SIZES])


def rates(case: Case, ms: float) -> tuple[float, float]:
    """(GB/s, GFLOP/s) of ``case`` done in ``ms`` milliseconds."""
    seconds = ms * 1e-3
    return case.bytes / seconds / 1e9, case.flops / seconds / 1e9


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """‖got − ref‖ / ‖ref‖ in float64; NaN anywhere gives inf."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape or not np.isfinite(got).all():
        return math.inf
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-300))


def _cell(report: Report, grid: str, case: str, column: str) -> Cell | None:
    for cell in report.cells:
        if (cell.grid, cell.case, cell.column) == (grid, case, column):
            return cell if cell.median_ms is not None else None
    return None


def evaluate_targets(report: Report) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met."""
    out = []

    def add(name, case, value, target, met, detail):
        out.append({"target": name, "case": case, "value": value, "goal": target,
                    "met": bool(met), "detail": detail})

    copy = report.ceilings.get("copy_gbps")
    cases_of = {}
    for cell in report.cells:
        cases_of.setdefault(cell.grid, []).append(cell.case)
    for case in dict.fromkeys(cases_of.get("bandwidth", [])):
        cell = _cell(report, "bandwidth", case, "gpuconv.direct")
        if cell and copy:
            frac = cell.gbps / copy
            add("3x3 at >= 75% of copy bandwidth", case, round(frac, 3),
                TARGET_BANDWIDTH_FRACTION, frac >= TARGET_BANDWIDTH_FRACTION,
                f"{cell.gbps:.0f} GB/s of {copy:.0f} GB/s")
    for case in dict.fromkeys(cases_of.get("planes", [])):
        ours = _cell(report, "planes", case, "gpuconv.auto")
        theirs = _cell(report, "planes", case, "cupyx.signal.correlate2d")
        if ours and theirs:
            speedup = theirs.median_ms / ours.median_ms
            add(">= 3x faster than cupyx correlate2d", case, round(speedup, 2),
                TARGET_VS_CUPYX, speedup >= TARGET_VS_CUPYX,
                f"{ours.median_ms:.3f} ms vs {theirs.median_ms:.3f} ms")
    for case in dict.fromkeys(cases_of.get("conv2d", [])):
        ours = _cell(report, "conv2d", case, "gpuconv.auto")
        cudnn = _cell(report, "conv2d", case, "torch.cudnn")
        if ours and cudnn:
            ratio = ours.median_ms / cudnn.median_ms
            add("within 1.25x of cuDNN (TF32 off)", case, round(ratio, 2), TARGET_VS_CUDNN,
                ratio <= TARGET_VS_CUDNN, f"{ours.median_ms:.3f} ms vs {cudnn.median_ms:.3f} ms")
    for case in dict.fromkeys(cases_of.get("batched", [])):
        ours = _cell(report, "batched", case, "gpuconv.direct")
        loop = _cell(report, "batched", case, "loop of cupyx.signal.correlate2d")
        if ours and loop:
            speedup = loop.median_ms / ours.median_ms
            add(">= 10x faster than a loop of cupyx calls", case, round(speedup, 1),
                TARGET_BATCHED_VS_LOOP, speedup >= TARGET_BATCHED_VS_LOOP,
                f"{ours.median_ms:.3f} ms vs {loop.median_ms:.3f} ms")
    for grid in ("planes", "conv2d"):
        for case in dict.fromkeys(cases_of.get(grid, [])):
            auto = _cell(report, grid, case, "gpuconv.auto")
            ours = [c for c in report.cells if c.grid == grid and c.case == case
                    and c.column.startswith("gpuconv.") and c.column != "gpuconv.auto"
                    and "[" not in c.column
                    and c.median_ms is not None]
            if auto and ours:
                best = min(ours, key=lambda c: c.median_ms)
                ratio = auto.median_ms / best.median_ms
                add("auto within 1.15x of the best method", f"{grid} {case}", round(ratio, 2),
                    TARGET_AUTO_VS_BEST, ratio <= TARGET_AUTO_VS_BEST,
                    f"best {best.column} {best.median_ms:.3f} ms")
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def markdown(report: Report) -> str:
    """The summary: device, ceilings, one table per grid, targets."""
    dev = report.device
    lines = ["# gpuconv GPU benchmarks", ""]
    lines += [f"- {k}: {v}" for k, v in dev.items()]
    lines += [f"- measured {k}: {_fmt(v)}" for k, v in report.ceilings.items()]
    lines += ["", "Times are medians of CUDA-event timings after warm-up (ms); first call "
              "(compilation, plans) separately. GB/s: inputs read once + output written "
              "once. rel err: vs a float64 result of another library.", ""]
    for grid in dict.fromkeys(c.grid for c in report.cells):
        lines += [f"## {grid}", "",
                  "| case | column | median ms | first call ms | GB/s | GFLOP/s | rel err | note |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for c in report.cells:
            if c.grid != grid:
                continue
            err = "n/a" if c.rel_err is None else f"{c.rel_err:.1e}"
            lines.append(f"| {c.case} | {c.column} | {_fmt(c.median_ms, 4)} | "
                         f"{_fmt(c.first_call_ms)} | {_fmt(c.gbps)} | {_fmt(c.gflops)} | "
                         f"{err} | {c.note} |")
        lines.append("")
    if report.targets:
        lines += ["## targets", "", "| target | case | value | goal | met | detail |",
                  "|---|---|---:|---:|---|---|"]
        for t in report.targets:
            lines.append(f"| {t['target']} | {t['case']} | {t['value']} | {t['goal']} | "
                         f"{'yes' if t['met'] else '**no**'} | {t['detail']} |")
        lines.append("")
    return "\n".join(lines)


def write(report: Report, outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    report.targets = evaluate_targets(report)
    data = {"device": report.device, "ceilings": report.ceilings,
            "cells": [asdict(c) for c in report.cells], "targets": report.targets}
    (outdir / "gpu_bench.json").write_text(json.dumps(data, indent=1, default=str))
    (outdir / "gpu_bench.md").write_text(markdown(report))


# -- device ---------------------------------------------------------------------------
# Nothing below runs without CuPy and a CUDA device.

class Timer:
    """CUDA-event timing of a callable on one library's current stream."""

    def __init__(self, lib: str):
        self.lib = lib
        if lib == "torch":
            import torch

            self._event = lambda: torch.cuda.Event(enable_timing=True)
            self._elapsed = lambda a, b: a.elapsed_time(b)
            self.sync = torch.cuda.synchronize
        else:
            import cupy

            self._event = cupy.cuda.Event
            self._elapsed = cupy.cuda.get_elapsed_time
            self.sync = lambda: cupy.cuda.Device().synchronize()

    def once(self, fn: Callable[[], Any], number: int = 1) -> float:
        start, end = self._event(), self._event()
        start.record()
        for _ in range(number):
            fn()
        end.record()
        end.synchronize()
        return self._elapsed(start, end) / number

    def measure(self, fn: Callable[[], Any], repeat: int, budget_ms: float) -> tuple[float, int]:
        """Median milliseconds per call (warm-up already done) and the sample count."""
        t = self.once(fn)
        number = max(1, min(200, int(2.0 / max(t, 1e-4))))  # a sample lasts >= ~2 ms
        repeat = max(3, min(repeat, int(budget_ms / max(t * number, 1e-3))))
        samples = [self.once(fn, number) for _ in range(repeat)]
        return statistics.median(samples), repeat


def device_info() -> dict[str, Any]:
    import cupy

    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    info = {
        "card": props["name"].decode(),
        "multiprocessors": props["multiProcessorCount"],
        "compute capability": dev.compute_capability,
        "driver": _driver_version(),
        "CUDA runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "CUDA driver API": cupy.cuda.runtime.driverGetVersion(),
        "cupy": cupy.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cudnn"] = torch.backends.cudnn.version()
    except ImportError:
        info["torch"] = "not installed"
    return info


def _driver_version() -> str:
    import subprocess

    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as exc:  # nvidia-smi missing: say so in the report
        return f"unknown ({exc})"


def ceilings(timer: Timer, n: int = 1 << 28, m: int = 8192) -> dict[str, float]:
    """Measured copy bandwidth (``n`` float32, 1 GiB) and float32 ``m``³ matmul rate."""
    import cupy

    a = cupy.random.standard_normal(n, dtype=cupy.float32)
    b = cupy.empty_like(a)
    copy = lambda: cupy.copyto(b, a)  # noqa: E731
    copy()
    ms, _ = timer.measure(copy, 10, 500)
    del a, b
    x = cupy.random.standard_normal((m, m), dtype=cupy.float32)
    y = cupy.random.standard_normal((m, m), dtype=cupy.float32)
    mm = lambda: cupy.matmul(x, y)  # noqa: E731
    mm()
    mm_ms, _ = timer.measure(mm, 5, 1000)
    return {"copy_gbps": 2 * 4 * n / (ms * 1e-3) / 1e9,
            "sgemm_gflops": 2 * m ** 3 / (mm_ms * 1e-3) / 1e9}


def _torch_cudnn():
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    return torch


def _cupyx(module: str) -> Any:
    import importlib

    return importlib.import_module(f"cupyx.scipy.{module}")


def columns(case: Case, torch) -> dict[str, tuple[str, Callable[[Any], Callable[[], Any]]]]:
    """column -> (timer library, factory(inputs) -> call).

    Libraries are imported by the factories, so a missing one only marks its
    cells (and listing the columns needs no GPU).
    """
    import gpuconv
    from gpuconv import kernels

    p = case.params
    cols: dict[str, tuple[str, Callable[[Any], Callable[[], Any]]]] = {}
    if case.grid == "conv2d":
        for m in GPUCONV_CONV_METHODS:
            cols[f"gpuconv.{m}"] = ("cupy", lambda d, m=m: (lambda: gpuconv.conv2d(
                d["x"], d["w"], method=m)))
        if torch is not None:
            cols["torch.cudnn"] = ("torch", lambda d: (lambda: torch.nn.functional.conv2d(
                d["xt"], d["wt"])))
        return cols
    mode = p["mode"]
    for m in GPUCONV_PLANE_METHODS:
        if case.grid == "batched" and m not in ("direct", "auto"):
            continue
        cols[f"gpuconv.{m}"] = ("cupy", lambda d, m=m: (lambda: gpuconv.correlate2d(
            d["x"], d["w"], mode, method=m)))
    for variant in kernels.VARIANTS["correlate_planes.cu"]:
        # The same kernel built with a compile-time variant, for tuning.
        cols[f"gpuconv.direct[{variant}]"] = ("cupy", lambda d, v=variant: _with_variant(
            lambda: gpuconv.correlate2d(d["x"], d["w"], mode, method="direct"),
            {"correlate_planes.cu": (v,)}))

    def signal_correlate(d):
        correlate2d = _cupyx("signal").correlate2d
        return lambda: correlate2d(d["x"], d["w"], mode)

    if case.grid == "batched":
        def loop(d):
            correlate2d = _cupyx("signal").correlate2d
            return lambda: [correlate2d(plane, d["w"], mode) for plane in d["x"]]

        def ndimage_3d(d):
            correlate = _cupyx("ndimage").correlate
            return lambda: correlate(d["x"], d["w"][None], mode="constant")

        cols["loop of cupyx.signal.correlate2d"] = ("cupy", loop)
        cols["cupyx.ndimage.correlate (3-D)"] = ("cupy", ndimage_3d)
        return cols

    def ndimage(d):
        correlate = _cupyx("ndimage").correlate
        return lambda: correlate(d["x"], d["w"], mode="constant")

    def fftconvolve(d):
        fftconv = _cupyx("signal").fftconvolve
        return lambda: fftconv(d["x"], d["w"][::-1, ::-1], mode)

    cols["cupyx.signal.correlate2d"] = ("cupy", signal_correlate)
    cols["cupyx.ndimage.correlate"] = ("cupy", ndimage)
    cols["cupyx.signal.fftconvolve"] = ("cupy", fftconvolve)
    if torch is not None and mode == "valid":
        cols["torch.cudnn"] = ("torch", lambda d: (lambda: torch.nn.functional.conv2d(
            d["xt"][None, None], d["wt"][None, None])))
    return cols


def _with_variant(call: Callable[[], Any], variants: dict[str, tuple[str, ...]]):
    from gpuconv.backend import get_backend_object

    backend = get_backend_object("cupy")

    def run():
        backend.kernel_variants = variants
        try:
            return call()
        finally:
            backend.kernel_variants = {}
    return run


def setup(case: Case, rng: np.random.Generator, torch) -> dict[str, Any]:
    import cupy

    p = case.params
    if case.grid == "conv2d":
        x = rng.standard_normal((p["N"], p["C"], p["H"], p["W"]), dtype=np.float32)
        w = rng.standard_normal((p["C_out"], p["C"], p["kernel"], p["kernel"]), dtype=np.float32)
    elif case.grid == "batched":
        x = rng.standard_normal((p["batch"], p["size"], p["size"]), dtype=np.float32)
        w = rng.standard_normal((p["kernel"], p["kernel"]), dtype=np.float32)
    else:
        x = rng.standard_normal((p["size"], p["size"]), dtype=np.float32)
        w = rng.standard_normal((p["kernel"], p["kernel"]), dtype=np.float32)
    d = {"x_np": x, "w_np": w, "x": cupy.asarray(x), "w": cupy.asarray(w)}
    if torch is not None:
        d["xt"] = torch.as_tensor(x, device="cuda")
        d["wt"] = torch.as_tensor(w, device="cuda")
    return d


def reference(case: Case, d: dict[str, Any], torch) -> tuple[Any, str]:
    """A float64 result from another library, or ``None`` and why there is none."""
    import cupy

    if case.grid == "conv2d":
        if torch is None or "xt" not in d:
            return None, "no float64 reference: torch with CUDA is not available"
        ref = torch.nn.functional.conv2d(d["xt"].double(), d["wt"].double())
        return ref.cpu().numpy(), ""
    if case.flops > 2e10:
        return None, "no float64 reference: cupyx's direct float64 would take seconds"
    try:
        correlate2d = _cupyx("signal").correlate2d
    except ImportError as exc:
        return None, f"no float64 reference: {exc}"
    x64, w64 = d["x"].astype(cupy.float64), d["w"].astype(cupy.float64)
    mode = case.params["mode"]
    if case.grid == "batched":
        return cupy.asnumpy(cupy.stack([correlate2d(p, w64, mode) for p in x64])), ""
    return cupy.asnumpy(correlate2d(x64, w64, mode)), ""


def run(quick: bool, outdir: Path, repeat: int, budget_ms: float,
        case_list: list[Case] | None = None, ceiling_sizes: tuple[int, int] | None = None,
        ) -> Report:
    """Measure every case (or ``case_list``), writing the report after each one."""
    import cupy

    report = Report()
    report.device = device_info()
    timers = {"cupy": Timer("cupy")}
    torch = _torch_cudnn()
    if torch is not None:
        timers["torch"] = Timer("torch")
        report.device["torch TF32"] = "off (cudnn.allow_tf32 = matmul.allow_tf32 = False)"
    report.ceilings = ceilings(timers["cupy"], *(ceiling_sizes or ()))
    print(f"ceilings: {report.ceilings}", flush=True)
    rng = np.random.default_rng(0)
    for case in case_list if case_list is not None else cases(quick):
        d = setup(case, rng, torch)
        ref, why_no_ref = reference(case, d, torch)
        for name, (lib, factory) in columns(case, torch).items():
            cell = Cell(case.grid, case.id, name)
            timer = timers[lib]
            try:
                call = factory(d)
                timer.sync()
                t0 = time.perf_counter()
                result = call()
                timer.sync()
                cell.first_call_ms = (time.perf_counter() - t0) * 1e3
                call()  # second warm-up: plans and caches settled
                cell.median_ms, cell.samples = timer.measure(call, repeat, budget_ms)
                cell.gbps, cell.gflops = rates(case, cell.median_ms)
                if name.startswith("gpuconv."):
                    if ref is None:
                        cell.note = why_no_ref
                    else:
                        got = result.get() if hasattr(result, "get") else np.asarray(result)
                        cell.rel_err = relative_error(got, ref)
            except Exception as exc:  # record and go on: one failure must not hide the rest
                cell.note = f"{type(exc).__name__}: {exc}"[:200]
            report.cells.append(cell)
            print(f"{case.grid:9s} {case.id:28s} {name:36s} "
                  f"{_fmt(cell.median_ms, 4):>8s} ms {_fmt(cell.gbps):>6s} GB/s "
                  f"{cell.note}", flush=True)
        del d
        cupy.get_default_memory_pool().free_all_blocks()
        write(report, outdir)  # after every case: a run stopped early keeps what it measured
    write(report, outdir)
    return report


def key_line(step: str, log: str) -> str:
    """The line of a step's log that says how it went."""
    patterns = {
        "tests": r"^=*\s*(\d+ (passed|failed|error).*?)\s*=*$",
        "memcheck": r"ERROR SUMMARY: .*",
        "racecheck": r"RACECHECK SUMMARY: .*|ERROR SUMMARY: .*",
        "bench": r"\d+/\d+ targets met",
    }
    import re

    if step == "compile":
        compiled = [ln.strip() for ln in log.splitlines() if ln.startswith("compiled ")]
        if compiled:
            return "; ".join(compiled)[:300]
    found = ""
    for line in log.splitlines():
        m = re.search(patterns.get(step, r"$^"), line.strip())
        if m:
            found = m.group(1) if m.groups() else m.group(0)
    if not found:
        lines = [ln for ln in log.splitlines() if ln.strip()]
        found = lines[-1].strip() if lines else "(no output)"
    return found[:300]


def summarize(outdir: Path, steps: list[str]) -> dict[str, Any]:
    """summary.md / summary.json of a gpu_check.sh run.

    ``steps`` are ``NAME:EXIT:SECONDS:LOG[:FIRST_BYTE:END_BYTE]``; the byte range
    is the step's part of a log that several steps append to.
    """
    rows = []
    for spec in steps:
        name, rc, seconds, log, *span = spec.split(":")
        path = outdir / log
        data = path.read_bytes() if path.exists() else b""
        if span:
            data = data[int(span[0]):int(span[1])]
        text = data.decode(errors="replace")
        rows.append({"step": name, "exit": int(rc), "seconds": int(seconds),
                     "result": key_line(name, text), "log": log})
    bench = {}
    if (outdir / "gpu_bench.json").exists():
        bench = json.loads((outdir / "gpu_bench.json").read_text())
    summary = {"steps": rows, "passed": all(r["exit"] == 0 for r in rows),
               "device": bench.get("device", {}), "ceilings": bench.get("ceilings", {}),
               "targets": bench.get("targets", [])}
    lines = ["# gpuconv GPU check", ""]
    lines += [f"- {k}: {v}" for k, v in summary["device"].items()]
    lines += [f"- measured {k}: {_fmt(v)}" for k, v in summary["ceilings"].items()]
    lines += ["", "| step | exit | seconds | result | log |", "|---|---:|---:|---|---|"]
    lines += [f"| {r['step']} | {r['exit']} | {r['seconds']} | {r['result']} | {r['log']} |"
              for r in rows]
    if summary["targets"]:
        met = sum(t["met"] for t in summary["targets"])
        lines += ["", f"Targets met: {met}/{len(summary['targets'])} (details in gpu_bench.md)",
                  "", "| target | case | value | goal | met |", "|---|---|---:|---:|---|"]
        lines += [f"| {t['target']} | {t['case']} | {t['value']} | {t['goal']} | "
                  f"{'yes' if t['met'] else '**no**'} |" for t in summary["targets"]]
    text = "\n".join(lines) + "\n"
    (outdir / "summary.md").write_text(text)
    (outdir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(text)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--budget-ms", type=float, default=200.0,
                        help="timed milliseconds per cell at most (after warm-up)")
    parser.add_argument("--summarize", type=Path, metavar="OUTDIR",
                        help="write summary.md/json of a gpu_check.sh run and exit")
    parser.add_argument("--step", action="append", default=[],
                        help="NAME:EXIT:SECONDS:LOG[:FIRST_BYTE:END_BYTE]")
    args = parser.parse_args(argv)
    if args.summarize:
        return 0 if summarize(args.summarize, args.step)["passed"] else 1
    if args.out is None:
        parser.error("--out is required")
    report = run(args.quick, args.out, args.repeat, args.budget_ms)
    missed = [t for t in report.targets if not t["met"]]
    print(markdown(report).split("## targets")[-1] if report.targets else "no targets evaluated")
    print(f"{len(report.targets) - len(missed)}/{len(report.targets)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
