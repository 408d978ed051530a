"""The GPU check's own steps: what the machine has (preflight), and the summary.

    python benchmarks/gpu_check.py preflight WORKDIR
    python benchmarks/gpu_check.py summarize OUTDIR WORKDIR

``benchmarks/gpu_check.sh`` runs both.  ``preflight`` imports what the check
needs, one library at a time, and asks CuPy for the device; it writes
``WORKDIR/preflight.json`` (everything found) and ``WORKDIR/preflight.env``
(the shell variables the script reads), prints one line per item and exits 1
when the check cannot run here (no CuPy, no device, no NumPy or SciPy).
``summarize`` reads ``WORKDIR/steps.tsv`` (one line per step: name, status,
exit code, seconds, limit, reason), the steps' logs in ``WORKDIR/logs`` and
``OUTDIR/gpu_bench.json``, and writes ``OUTDIR/summary.md`` and
``OUTDIR/summary.json``; exit status 0 when every step passed or was skipped
for a missing optional tool.

Only the standard library is imported at module level: this script must
report a missing library, never fail on one.
"""

from __future__ import annotations

import glob
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any, Iterable

# Every step of gpu_check.sh, in order, with what it needs.
STEPS = ("preflight", "compile", "tests", "calibrate", "bench",
         "memcheck", "racecheck", "synccheck", "initcheck")
SANITIZER_TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
# Without these no step after the preflight can run (gpuconv: from this checkout).
REQUIRED = ("numpy", "scipy", "cupy", "gpuconv")
# The tests step needs these (the test modules import hypothesis at module level).
TEST_MODULES = ("pytest", "hypothesis")
# Used when present: torch (the cuDNN anchor), pytest-xdist and pytest-timeout.
OPTIONAL = ("torch", "xdist", "pytest_timeout")
XDIST_WORKERS = 6
TEST_TIMEOUT_S = 60
STATUSES = ("passed", "failed", "timed out", "skipped", "not run")
# What compute-sanitizer prints when it cannot instrument this device or runtime
# (seen in sandboxed virtual machines): the tool did not run, it found nothing.
_SANITIZER_REFUSALS = ("Device not supported", "Unable to find injection library",
                       "is not supported on this")


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return " ".join(text.split())[:300]


def _run(cmd: list[str], timeout: float = 15) -> str:
    """A command's stdout (stderr if empty), or '' when it cannot run."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (done.stdout or done.stderr).strip()


# -- finding compute-sanitizer ----------------------------------------------------
def sanitizer_candidates(env: dict[str, str], repo: Path,
                         roots: Iterable[str] = ("/usr/local", "/opt/nvidia"),
                         site_dirs: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(where, path) pairs to look for compute-sanitizer at, in order of preference.

    An explicit ``$COMPUTE_SANITIZER``; a copy carried with the working tree
    (``.compute-sanitizer/compute-sanitizer`` in the checkout); ``PATH``;
    ``$CUDA_HOME``/``$CUDA_PATH`` and every ``cuda*`` folder under ``roots``,
    each in ``bin/`` and in ``compute-sanitizer/`` (where the CUDA toolkit
    installs it); the ``nvidia`` wheels in ``site_dirs``.
    """
    found: list[tuple[str, str]] = []
    if env.get("COMPUTE_SANITIZER"):
        found.append(("$COMPUTE_SANITIZER", env["COMPUTE_SANITIZER"]))
    found.append(("carried with the checkout",
                  str(repo / ".compute-sanitizer" / "compute-sanitizer")))
    on_path = shutil.which("compute-sanitizer", path=env.get("PATH", ""))
    if on_path:
        found.append(("PATH", on_path))
    homes = [(f"${var}", env[var]) for var in ("CUDA_HOME", "CUDA_PATH") if env.get(var)]
    for root in roots:
        homes += [(home, home) for home in sorted(glob.glob(os.path.join(root, "cuda*")),
                                                  reverse=True)]
        homes += [(home, home) for home in sorted(glob.glob(os.path.join(root, "*")))
                  if "nsight" in os.path.basename(home).lower()
                  or "sanitizer" in os.path.basename(home).lower()]
    for label, home in homes:
        for sub in ("bin", "compute-sanitizer"):
            found.append((f"{label}/{sub}", os.path.join(home, sub, "compute-sanitizer")))
    for site in site_dirs:
        for path in sorted(glob.glob(os.path.join(site, "nvidia", "*", "compute-sanitizer",
                                                  "compute-sanitizer"))
                           + glob.glob(os.path.join(site, "nvidia", "*", "bin",
                                                    "compute-sanitizer"))):
            found.append(("a pip wheel", path))
    return found


def find_sanitizer(env: dict[str, str], repo: Path, roots: Iterable[str] = ("/usr/local",
                                                                              "/opt/nvidia"),
                   site_dirs: Iterable[str] = ()) -> dict[str, Any]:
    """``{"path", "where", "searched"}``: the first executable candidate, or path None."""
    candidates = sanitizer_candidates(env, repo, roots, site_dirs)
    for where, path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return {"path": path, "where": where, "searched": [p for _, p in candidates]}
    return {"path": None, "where": None, "searched": [p for _, p in candidates]}


# -- preflight ------------------------------------------------------------------------
def _import(name: str) -> tuple[Any, dict[str, Any]]:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # ImportError, or a library failing at import: report it
        return None, {"ok": False, "error": _one_line(exc)}
    return module, {"ok": True, "version": str(getattr(module, "__version__", "?"))}


def _cupy_device(cupy: Any) -> dict[str, Any]:
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, a driver too old, no device
        return {"ok": False, "error": f"CuPy sees no CUDA device: {_one_line(exc)}"}
    if count == 0:
        return {"ok": False, "error": "CuPy sees no CUDA device: 0 devices"}
    try:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        return {
            "ok": True, "count": count,
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "compute_capability": f"{props.get('major')}.{props.get('minor')}",
            "multiprocessors": props.get("multiProcessorCount"),
            "memory_gib": round(props.get("totalGlobalMem", 0) / 2**30, 1),
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "cuda_driver_api": cupy.cuda.runtime.driverGetVersion(),
        }
    except Exception as exc:
        return {"ok": False, "error": f"CuPy could not query device 0: {_one_line(exc)}"}


def _torch_cuda(torch: Any) -> dict[str, Any]:
    try:
        if not torch.cuda.is_available():
            return {"cuda": False}
        return {"cuda": True, "cuda_version": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version()}
    except Exception as exc:
        return {"cuda": False, "error": _one_line(exc)}


def _nvcc(env: dict[str, str]) -> str:
    candidates = [shutil.which("nvcc", path=env.get("PATH", ""))]
    candidates += [os.path.join(env[v], "bin", "nvcc") for v in ("CUDA_HOME", "CUDA_PATH")
                   if env.get(v)]
    candidates += sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True)
    for path in candidates:
        if path and os.path.isfile(path):
            release = [ln for ln in _run([path, "--version"]).splitlines() if "release" in ln]
            return f"{release[-1].strip() if release else '?'} ({path})"
    return ""


def _write_preflight(workdir: Path, found: dict[str, Any]) -> None:
    mods = found["modules"]
    pytest_extra: list[str] = []
    if mods.get("xdist", {}).get("ok"):
        pytest_extra += ["-n", str(XDIST_WORKERS)]
    if mods.get("pytest_timeout", {}).get("ok"):
        pytest_extra += [f"--timeout={TEST_TIMEOUT_S}"]
    assignments = {
        "READY": "1" if found["ready"] else "0",
        "TESTS_READY": "1" if found["tests_ready"] else "0",
        "MISSING": "; ".join(found["missing"]),
        "TESTS_MISSING": "; ".join(f"{n} is not importable" for n in TEST_MODULES
                                   if not mods[n]["ok"]),
        "SANITIZER": found["sanitizer"]["path"] or "",
        "PYTEST_EXTRA": " ".join(pytest_extra),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "preflight.json").write_text(json.dumps(found, indent=1, default=str))
    (workdir / "preflight.env").write_text(
        "".join(f"{k}={shlex.quote(v)}\n" for k, v in assignments.items()))


def preflight(workdir: Path, env: dict[str, str] | None = None,
              repo: Path | None = None) -> int:
    """Find what the check needs; write ``preflight.json`` and ``preflight.env``.

    The files are written as soon as the essentials are known (libraries,
    device, compute-sanitizer), then again with the optional libraries (torch
    takes seconds to import): a preflight stopped by its time limit still
    lets the check go on.
    """
    env = dict(os.environ if env is None else env)
    repo = Path(__file__).resolve().parent.parent if repo is None else repo
    found: dict[str, Any] = {"python": {"ok": True, "version": sys.version.split()[0],
                                        "executable": sys.executable},
                             "modules": {}}
    missing: list[str] = []
    modules: dict[str, Any] = {}
    for name in REQUIRED + TEST_MODULES:
        modules[name], found["modules"][name] = _import(name)
        if not found["modules"][name]["ok"]:
            what = f"{name} ({found['modules'][name]['error']})"
            missing.append(what if name in REQUIRED else f"{what}, needed by the tests")
    device: dict[str, Any] = {"ok": False, "error": "not asked: cupy is not importable"}
    if modules["cupy"] is not None:
        device = _cupy_device(modules["cupy"])
        if not device["ok"]:
            missing.append(device["error"])
    found["device"] = device
    ready = all(found["modules"][n]["ok"] for n in REQUIRED) and device["ok"]
    site_dirs = {sysconfig.get_paths().get("purelib", ""), sysconfig.get_paths().get("platlib", "")}
    sanitizer = find_sanitizer(env, repo, site_dirs=[d for d in site_dirs if d])
    found.update(ready=ready, missing=missing, sanitizer=sanitizer,
                 tests_ready=all(found["modules"][n]["ok"] for n in TEST_MODULES))
    _write_preflight(workdir, found)
    if ready:
        # Only worth the time where the check goes on.
        for name in OPTIONAL:
            modules[name], found["modules"][name] = _import(name)
        if modules["torch"] is not None:
            found["modules"]["torch"].update(_torch_cuda(modules["torch"]))
    found["nvidia_smi"] = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                "--format=csv,noheader"]) if shutil.which("nvidia-smi") else ""
    found["nvcc"] = _nvcc(env)
    if sanitizer["path"]:
        version = [ln for ln in _run([sanitizer["path"], "--version"]).splitlines()
                   if "Version" in ln or "version" in ln]
        sanitizer["version"] = version[-1].strip() if version else "?"
    _write_preflight(workdir, found)
    for line in _environment_lines(found):
        print(line)
    if ready:
        print(f"ready: {device['name']}")
    else:
        print("missing: " + "; ".join(missing))
    return 0 if ready else 1


def _environment_lines(found: dict[str, Any]) -> list[str]:
    lines = [f"python {found['python']['version']} ({found['python']['executable']})"]
    for name, info in found["modules"].items():
        if info["ok"]:
            extra = ""
            if name == "torch":
                extra = (f", CUDA {info.get('cuda_version')}, cuDNN {info.get('cudnn')}"
                         if info.get("cuda") else ", no CUDA")
            lines.append(f"{name} {info['version']}{extra}")
        elif name in OPTIONAL:
            lines.append(f"{name}: not installed (optional; {info['error']})")
        else:
            lines.append(f"{name}: not importable ({info['error']})")
    dev = found.get("device", {})
    if dev.get("ok"):
        lines.append(f"device: {dev['name']}, compute capability {dev['compute_capability']}, "
                     f"{dev['multiprocessors']} SMs, {dev['memory_gib']} GiB; CUDA runtime "
                     f"{dev['cuda_runtime']}, driver API {dev['cuda_driver_api']}")
    else:
        lines.append(f"device: none ({dev.get('error')})")
    lines.append(f"nvidia-smi: {found.get('nvidia_smi') or 'not available'}")
    lines.append(f"nvcc: {found.get('nvcc') or 'not found'}")
    san = found.get("sanitizer", {})
    if san.get("path"):
        lines.append(f"compute-sanitizer: {san['path']} (found in {san['where']}; "
                     f"{san.get('version', '?')})")
    else:
        lines.append("compute-sanitizer: not found (searched PATH, $CUDA_HOME, /usr/local/cuda*/"
                     "{bin,compute-sanitizer}, /opt/nvidia, the nvidia wheels)")
    return lines


# -- summary --------------------------------------------------------------------------
def read_steps(workdir: Path) -> list[dict[str, Any]]:
    """The steps recorded by gpu_check.sh, in the order of ``STEPS``."""
    rows: dict[str, dict[str, Any]] = {}
    path = workdir / "steps.tsv"
    text = path.read_text(errors="replace") if path.exists() else ""
    for line in text.splitlines():
        parts = (line.split("\t") + [""] * 6)[:6]
        name, status, rc, seconds, limit, reason = parts
        if not name:
            continue
        rows[name] = {"step": name, "status": status,
                      "exit": int(rc) if rc.lstrip("-").isdigit() else None,
                      "seconds": int(seconds) if seconds.isdigit() else 0,
                      "limit": int(limit) if limit.isdigit() else None, "reason": reason}
    ordered = [rows.pop(n) for n in STEPS if n in rows]
    return ordered + list(rows.values())


def _log(workdir: Path, step: str) -> str:
    path = workdir / "logs" / f"{step}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def key_line(step: str, log: str) -> str:
    """The line (or lines) of a step's log that say how it went."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    if step == "preflight":
        picked = [ln for ln in lines if ln.startswith(("ready:", "missing:"))]
    elif step == "compile":
        picked = ["; ".join(ln for ln in lines if ln.startswith("compiled "))]
    elif step == "tests":
        picked = [m.group(1) for ln in lines
                  for m in [re.search(r"(\d+ (?:passed|failed|errors?|skipped|deselected)"
                                      r"[^=]*?)\s*=*$", ln)] if m]
    elif step == "calibrate":
        picked = ["; ".join(ln for ln in lines if ln.startswith("median relative fit error"))]
    elif step == "bench":
        picked = [ln for ln in lines if re.search(r"^\d+/\d+ targets met", ln)]
    elif step in SANITIZER_TOOLS:
        summary = [ln.lstrip("= ") for ln in lines if "SUMMARY:" in ln]
        checked = [ln for ln in lines if "checked calls" in ln]
        picked = ["; ".join(summary[-1:] + checked[-1:])]
    else:
        picked = []
    picked = [p for p in picked if p]
    if picked:
        return picked[-1][:400]
    return (lines[-1] if lines else "(no output)")[:400]


def refine(row: dict[str, Any], log: str) -> dict[str, Any]:
    """A step's status from its exit code and log (a sanitizer refusing the device: skipped)."""
    if row["step"] in SANITIZER_TOOLS and row["status"] == "failed" and row["exit"] != 3:
        refusal = next((ln.strip() for ln in log.splitlines()
                        if any(r in ln for r in _SANITIZER_REFUSALS)), None)
        if refusal:
            row = dict(row, status="skipped",
                       reason=f"compute-sanitizer cannot instrument this device/runtime: "
                              f"{refusal.lstrip('= ')}")
    if row["step"] == "tests" and row["exit"] == 5:
        row = dict(row, reason="no tests were selected (pytest exit 5)")
    return row


def _target_digest(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target: how many met, missed, unmeasured, and the worst value against the goal."""
    digest = []
    for name in dict.fromkeys(t["target"] for t in targets):
        rows = [t for t in targets if t["target"] == name]
        measured = [t for t in rows if t["value"] is not None]
        worst = None
        if measured:
            pick = min if rows[0]["op"] == ">=" else max
            worst = pick(measured, key=lambda t: t["value"])
        digest.append({
            "target": name, "goal": f"{rows[0]['op']} {rows[0]['goal']:g}",
            "met": sum(t["met"] is True for t in rows),
            "missed": sum(t["met"] is False for t in rows),
            "not_measured": sum(t["met"] is None for t in rows),
            "worst": None if worst is None else {"case": worst["case"], "value": worst["value"]},
        })
    return digest


def summarize(outdir: Path, workdir: Path) -> dict[str, Any]:
    """Write ``summary.md`` and ``summary.json``; return the summary."""
    pre_path = workdir / "preflight.json"
    pre = json.loads(pre_path.read_text()) if pre_path.exists() else {}
    rows = []
    for row in read_steps(workdir):
        log = _log(workdir, row["step"])
        row = refine(row, log)
        row["result"] = row["reason"] or (key_line(row["step"], log) if log else "")
        rows.append(row)
    bench: dict[str, Any] = {}
    bench_path = outdir / "gpu_bench.json"
    if bench_path.exists():
        try:
            bench = json.loads(bench_path.read_text())
        except ValueError:
            bench = {}
    targets = bench.get("targets", [])
    failed = [r["step"] for r in rows if r["status"] in ("failed", "timed out")]
    not_run = [r["step"] for r in rows if r["status"] == "not run"]
    passed = bool(rows) and all(r["status"] in ("passed", "skipped") for r in rows)
    summary = {
        "result": "passed" if passed else "failed",
        "failed_steps": failed,
        "not_run_steps": not_run,
        "missing": pre.get("missing", ["the preflight did not finish"]),
        "steps": rows,
        # The sanitizer tools run at once: their limits overlap.
        "worst_case_s": sum(r["limit"] or 0 for r in rows if r["step"] not in SANITIZER_TOOLS)
        + max([r["limit"] or 0 for r in rows if r["step"] in SANITIZER_TOOLS], default=0),
        "preflight": pre,
        "ceilings": bench.get("ceilings", {}),
        "bench_partial": bench.get("partial"),
        "targets": targets,
        "target_digest": _target_digest(targets),
    }
    text = _summary_markdown(summary, outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "summary.md").write_text(text)
    (outdir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(text)
    return summary


def _summary_markdown(s: dict[str, Any], outdir: Path) -> str:
    lines = ["# gpuconv GPU check", ""]
    if s["result"] == "passed":
        lines.append("Result: **passed** (every step passed, or was skipped for a missing "
                     "optional tool).")
    else:
        why = [f"failed or timed out: {', '.join(s['failed_steps'])}"] if s["failed_steps"] \
            else []
        why += [f"not run: {', '.join(s['not_run_steps'])}"] if s["not_run_steps"] else []
        lines.append(f"Result: **failed** ({'; '.join(why) or 'no step ran'}).")
    if s["missing"]:
        lines += ["", "Missing here: " + "; ".join(s["missing"]) + "."]
    lines += ["", "## Environment", ""]
    lines += [f"- {ln}" for ln in (_environment_lines(s["preflight"])
                                   if s["preflight"].get("modules") else
                                   ["the preflight did not finish (see check.log)"])]
    lines += ["", "## Steps", "",
              "| step | status | seconds | limit | result |", "|---|---|---:|---:|---|"]
    for r in s["steps"]:
        result = r["result"].replace("|", "\\|")
        lines.append(f"| {r['step']} | {r['status']} | {r['seconds']} | {r['limit'] or ''} | "
                     f"{result} |")
    lines.append("")
    lines.append(f"Worst case of the step limits: {s['worst_case_s']} s (the sanitizer tools "
                 "run at once; the summary's own limit comes on top). Logs of every step: "
                 "check.log.")
    if (outdir / "costmodel-cupy.json").exists():
        lines.append("Calibrated cost-model constants: costmodel-cupy.json (the benchmark's "
                     "`auto` used them).")
    if s["ceilings"]:
        c = s["ceilings"]
        lines += ["", f"Measured ceilings: copy {c.get('copy_gbps', 0):.0f} GB/s (read + "
                      f"write), float32 matrix product {c.get('sgemm_gflops', 0):.0f} GFLOP/s."]
    if s["target_digest"]:
        note = " (the benchmark stopped early: partial)" if s["bench_partial"] else ""
        lines += ["", f"## Targets{note}", "",
                  "| target | goal | met | missed | not measured | worst (case) |",
                  "|---|---|---:|---:|---:|---|"]
        for d in s["target_digest"]:
            worst = "n/a" if d["worst"] is None else f"{d['worst']['value']:g} " \
                                                     f"({d['worst']['case']})"
            lines.append(f"| {d['target']} | {d['goal']} | {d['met']} | {d['missed']} | "
                         f"{d['not_measured']} | {worst} |")
        lines += ["", "Every cell, with the times: gpu_bench.md / gpu_bench.json."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "preflight":
        return preflight(Path(args[1]))
    if len(args) == 3 and args[0] == "summarize":
        return 0 if summarize(Path(args[1]), Path(args[2]))["result"] == "passed" else 1
    print("usage: gpu_check.py preflight WORKDIR | summarize OUTDIR WORKDIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
