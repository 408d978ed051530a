"""Machine description and the JSON / markdown files of a benchmark run."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine_info", "device_info", "library_versions", "to_markdown", "write_results"]

_LIBRARIES = ("gpuconv", "numpy", "scipy", "torch", "cupy", "cupy-cuda12x", "cupy-cuda13x")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Locations on the measuring machine say nothing about the measurement.
_PATH_VARIABLES = ("GPUCONV_CACHE_DIR",)


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, load, and the thread-related environment."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "env": {k: v for k, v in sorted(os.environ.items())
                if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "GPUCONV_"))
                and k not in _PATH_VARIABLES},
    }
    # Which cost-model constants "auto" used, rather than where they were stored.
    from .. import _costmodel
    from ..backend import resolve_backend

    backend = resolve_backend()
    source = _costmodel.load_constants(f"{backend.name}:{backend.device_key()}", backend)[1]
    info["cost_model"] = "calibrated" if source.startswith("calibrated") else source
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = list(os.getloadavg())
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [{k: p.get(k) for k in ("internal_api", "version",
                                                       "num_threads", "architecture")}
                               for p in threadpool_info()]
    except ImportError:
        pass
    return info


def device_info(backend: Any) -> dict[str, Any]:
    """The accelerator behind ``backend`` (empty for a CPU backend).

    For CuPy: the card, its multiprocessors, compute capability and memory,
    the CUDA runtime and driver versions, and torch's CUDA and cuDNN versions
    when torch with CUDA is installed (the conv anchors run on it).
    """
    if backend.name != "cupy":
        return {}
    cuda = backend.xp.cuda
    dev = cuda.Device()
    props = cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"]
    info: dict[str, Any] = {
        "card": name.decode() if isinstance(name, bytes) else str(name),
        "multiprocessors": props.get("multiProcessorCount"),
        "compute_capability": str(dev.compute_capability),
        "memory_gib": round(props.get("totalGlobalMem", 0) / 2**30, 1),
        "cuda_runtime": cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cuda.runtime.driverGetVersion(),
    }
    try:
        import torch
    except ImportError:
        info["torch_cuda"] = "torch is not installed"
    else:
        if torch.cuda.is_available():
            info["torch_cuda"] = torch.version.cuda
            info["cudnn"] = torch.backends.cudnn.version()
        else:
            info["torch_cuda"] = "torch has no CUDA here"
    return info


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _cell(res: dict[str, Any], fastest: bool) -> str:
    status = res["status"]
    if "median_s" not in res:
        return {"unavailable": "n/a", "skipped": "not run"}.get(status, "error")
    t = res["median_s"]
    text = f"{t * 1e3:.3g} ms" if t < 1 else f"{t:.3g} s"
    ratio = res.get("ratio")
    if ratio is not None:
        text += f" ({ratio:.2f}x)"
    if status == "extrapolated":
        text = "~" + text + " †"
    elif status == "capped":
        text += " ‡"
    return f"**{text}**" if fastest else text


def to_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# gpuconv benchmarks: backend {report['backend']!r}"
        + (" (quick grid)" if report["quick"] else ""),
        "",
        f"- Date: {report['date']}",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['platform']}, Python {m['python']}",
        "- Libraries: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        "- Threads: " + ", ".join(f"{k}={v}" for k, v in report["threads"].items()),
    ]
    if "loadavg_start" in m:
        end = m.get("loadavg_end")
        lines.append("- Load average (1/5/15 min): start "
                     + "/".join(f"{v:.2f}" for v in m["loadavg_start"])
                     + ("" if end is None else ", end " + "/".join(f"{v:.2f}" for v in end)))
    if m.get("env"):
        lines.append("- Environment: " + ", ".join(f"{k}={v}" for k, v in m["env"].items()))
    s = report["settings"]
    lines += [
        f"- Timing: median of up to {s['repeat']} samples per cell, columns interleaved "
        "in a new seeded order each round; each sample loops a fast call to at least "
        f"{s['min_sample_s'] * 1e3:g} ms.",
        "- Each cell: median time (ratio to the fastest measured column of the row); the "
        "fastest is bold.  † extrapolated, not run: predicted above the "
        f"{s['cap_s']:g} s cap from a smaller case of the same kernel/layer, scaled by the "
        f"work ratio.  ‡ a single warm call, above the cap.  n/a: the column cannot run here.",
    ]
    for note in report.get("notes", []):
        lines.append(f"- Note: {note}")
    if report.get("device_info"):
        lines.append("- Device: " + ", ".join(f"{k} {v}" for k, v in report["device_info"].items()))
    if report.get("ceilings"):
        c = report["ceilings"]
        lines.append(f"- Measured ceilings: copy {c['copy_gbps']:.0f} GB/s (read + write), "
                     f"float32 matrix product {c['sgemm_gflops']:.0f} GFLOP/s")
    if report.get("clock"):
        lines.append(f"- Clock: {report['clock']}")
    for grid in report["grids"]:
        names = [c["name"] for c in grid["columns"]]
        lines += ["", f"## {grid['title']}", ""]
        if grid.get("notes"):
            lines += [grid["notes"], ""]
        lines.append("| case | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for case in grid["cases"]:
            cells = [_cell(case["results"][n], n == case["fastest"]) if n in case["results"]
                     else "" for n in names]
            lines.append(f"| {case['id']} | " + " | ".join(cells) + " |")
        lines += ["", "Columns: " + "; ".join(f"`{c['name']}` = {c['doc']}"
                                              for c in grid["columns"])]
        worst = _worst_error(grid)
        if worst is not None:
            err, column, case = worst
            lines += ["", f"Largest relative error of a gpuconv column against the float64 "
                          f"reference: {err:.2g} (`{column}`, {case})."]
    if report.get("targets"):
        from ._targets import targets_markdown

        lines += ["", "## Targets", "", targets_markdown(report["targets"]).rstrip()]
    return "\n".join(lines) + "\n"


def _worst_error(grid: dict[str, Any]) -> tuple[float, str, str] | None:
    errors = [(r["rel_err"], name, case["id"]) for case in grid["cases"]
              for name, r in case["results"].items() if r.get("rel_err") is not None]
    return max(errors) if errors else None


def write_results(report: dict[str, Any], out_dir: str | os.PathLike[str],
                  stem: str) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{stem}.json"
    md_path = out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(report), encoding="utf-8")
    return json_path, md_path


def today() -> str:
    return datetime.date.today().isoformat()


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
