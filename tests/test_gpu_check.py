"""benchmarks/gpu_check.sh without a GPU: its time budget, a real run on this machine
(which must stop at the preflight and say why), and its summary and preflight driven
with stand-ins of the lent GPU machine (CUDA torch, compute-sanitizer found outside
PATH or nowhere)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _gpu_fakes import fake_cupy, fake_torch

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
WORST_CASE_S = 360
OUT_FILES = {"summary.md", "summary.json", "check.log", "gpu_bench.json", "gpu_bench.md",
             "costmodel-cupy.json"}


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gc = _load("gpu_check")


def _limits() -> tuple[dict[str, int], int, int]:
    text = SCRIPT.read_text()
    limits = {m.group(1): int(m.group(2))
              for m in re.finditer(r"^limit_(\w+)=(\d+)$", text, re.MULTILINE)}
    grace = int(re.search(r"^kill_grace=(\d+)$", text, re.MULTILINE).group(1))
    stated = int(re.search(r"^# Worst case: (\d+) s", text, re.MULTILINE).group(1))
    return limits, grace, stated


def test_worst_case_of_the_step_limits_fits_six_minutes():
    limits, grace, stated = _limits()
    assert set(limits) == {"preflight", "compile", "tests", "calibrate", "bench",
                           "sanitizers", "summary"}
    worst = sum(limits.values()) + grace * len(limits)
    assert worst == stated <= WORST_CASE_S
    text = SCRIPT.read_text()
    code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    # Every command runs under `timeout` with the kill grace and one of these limits ...
    assert len(re.findall(r"\btimeout\b", code)) == 2
    assert re.findall(r"\btimeout\b(?! --kill-after=\"\$kill_grace\")", code) == []
    used = set(re.findall(r'"\$limit_(\w+)"', text))
    assert used == set(limits)
    # ... and the benchmark stops starting cases well before its limit.
    budget = int(re.search(r"^bench_budget=(\d+)$", text, re.MULTILINE).group(1))
    assert budget <= limits["bench"] - 15


def test_check_script_parses_and_names_its_outputs():
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    header = SCRIPT.read_text().split("set -uo pipefail")[0]
    for name in OUT_FILES:
        assert name in header
    assert len(OUT_FILES) <= 8  # what a lent machine sends back


def _run_check(tmp_path, env_extra=None):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, **(env_extra or {}))
    t0 = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - t0, out


def _cuda_device_visible() -> bool:
    """Whether a fresh interpreter (as the script starts) finds a CUDA device through CuPy."""
    code = "import cupy; print(cupy.cuda.runtime.getDeviceCount())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    return done.returncode == 0 and done.stdout.strip() not in ("", "0")


def _assert_no_traceback(done, out):
    assert "Traceback" not in done.stdout + done.stderr
    for path in out.iterdir():
        assert "Traceback" not in path.read_text(errors="replace"), path.name


def test_on_a_machine_without_a_gpu_the_check_stops_and_says_why(tmp_path):
    """The CPU proof: exit non-zero within a minute, a summary naming what is missing,
    every later step listed as not run, no traceback anywhere."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    if _cuda_device_visible():
        pytest.skip("a CUDA device is visible here: the check would run for real")
    done, seconds, out = _run_check(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert seconds < 60
    assert {p.name for p in out.iterdir()} == {"summary.md", "summary.json", "check.log"}
    summary = json.loads((out / "summary.json").read_text())
    md = (out / "summary.md").read_text()
    assert summary["result"] == "failed" and summary["missing"]
    assert re.search(r"Missing here: .*(cupy|CUDA device)", md)
    statuses = {r["step"]: r["status"] for r in summary["steps"]}
    assert statuses.pop("preflight") == "failed"
    assert set(statuses) == set(gc.STEPS) - {"preflight"}
    assert set(statuses.values()) == {"not run"}
    assert summary["worst_case_s"] == sum(v for k, v in _limits()[0].items() if k != "summary")
    _assert_no_traceback(done, out)


def test_without_cupy_the_summary_names_it(tmp_path):
    """A cupy that cannot be imported (here: one that raises) is named, not a traceback."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    fake = tmp_path / "site" / "cupy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('libcudart.so.13: cannot open')\n")
    done, seconds, out = _run_check(tmp_path, {"PYTHONPATH": str(tmp_path / "site")})
    assert done.returncode == 1 and seconds < 60
    md = (out / "summary.md").read_text()
    assert "Missing here: cupy (ImportError: libcudart.so.13: cannot open)" in md
    _assert_no_traceback(done, out)


# -- where compute-sanitizer is ---------------------------------------------------------

def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho 'NVIDIA (R) Compute Sanitizer Version 2025.3.0'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_sanitizer_is_found_in_a_cuda_folder_off_path(tmp_path):
    """The lent machine: not on PATH, but where the toolkit installs it."""
    roots = tmp_path / "usr-local"
    tool = _executable(roots / "cuda-13.0" / "compute-sanitizer" / "compute-sanitizer")
    _executable(roots / "cuda-12.4" / "bin" / "compute-sanitizer")
    found = gc.find_sanitizer({"PATH": "/nonexistent"}, tmp_path / "repo", roots=[str(roots)])
    assert found["path"] == str(tool)  # the newest toolkit first
    home = tmp_path / "cuda-home"
    via_home = _executable(home / "compute-sanitizer" / "compute-sanitizer")
    found = gc.find_sanitizer({"PATH": "", "CUDA_HOME": str(home)}, tmp_path / "repo",
                              roots=[str(roots)])
    assert found == dict(found, path=str(via_home), where="$CUDA_HOME/compute-sanitizer")
    on_path = _executable(tmp_path / "bin" / "compute-sanitizer")
    found = gc.find_sanitizer({"PATH": str(on_path.parent), "CUDA_HOME": str(home)},
                              tmp_path / "repo", roots=[str(roots)])
    assert found["where"] == "PATH"
    carried = _executable(tmp_path / "repo" / ".compute-sanitizer" / "compute-sanitizer")
    found = gc.find_sanitizer({"PATH": str(on_path.parent)}, tmp_path / "repo",
                              roots=[str(roots)])
    assert found["path"] == str(carried)
    wheel = _executable(tmp_path / "site" / "nvidia" / "cuda_sanitizer_api" /
                        "compute-sanitizer" / "compute-sanitizer")
    found = gc.find_sanitizer({"PATH": ""}, tmp_path / "elsewhere", roots=[],
                              site_dirs=[str(tmp_path / "site")])
    assert found["path"] == str(wheel)


def test_no_sanitizer_anywhere(tmp_path):
    (tmp_path / "cuda-13.0" / "bin").mkdir(parents=True)
    not_executable = tmp_path / "cuda-13.0" / "bin" / "compute-sanitizer"
    not_executable.write_text("")
    found = gc.find_sanitizer({"PATH": ""}, tmp_path / "repo", roots=[str(tmp_path)])
    assert found["path"] is None and str(not_executable) in found["searched"]


# -- the preflight with a stand-in of the lent machine ---------------------------------

def test_preflight_on_a_stand_in_of_the_lent_machine(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(name=b"NVIDIA H200"))
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda=True))
    tool = _executable(tmp_path / "cuda" / "compute-sanitizer" / "compute-sanitizer")
    env = {"PATH": "/nonexistent", "CUDA_HOME": str(tmp_path / "cuda")}
    assert gc.preflight(tmp_path / "work", env=env, repo=tmp_path / "repo") == 0
    found = json.loads((tmp_path / "work" / "preflight.json").read_text())
    assert found["ready"] and found["tests_ready"] and found["missing"] == []
    assert found["device"]["name"] == "NVIDIA H200" and found["device"]["multiprocessors"] == 132
    assert found["modules"]["torch"]["cuda"] and found["modules"]["torch"]["cudnn"] == 91000
    assert found["sanitizer"]["path"] == str(tool)
    assert "Version 2025.3.0" in found["sanitizer"]["version"]
    shell = (tmp_path / "work" / "preflight.env").read_text()
    assert "READY=1\n" in shell and f"SANITIZER={tool}\n" in shell
    out = capsys.readouterr().out
    assert "ready: NVIDIA H200" in out and "torch 2.11.0 (stand-in), CUDA 13.0" in out


def test_preflight_names_what_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)      # import cupy raises ImportError
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    assert gc.preflight(tmp_path / "work", env={"PATH": ""}, repo=tmp_path) == 1
    shell = (tmp_path / "work" / "preflight.env").read_text()
    assert "READY=0\n" in shell and "TESTS_READY=0\n" in shell
    missing = json.loads((tmp_path / "work" / "preflight.json").read_text())["missing"]
    assert missing[0].startswith("cupy (") and "hypothesis" in missing[1]
    assert "missing: cupy" in capsys.readouterr().out


# -- the summary of a run on the lent machine (stand-in outputs) -----------------------

LOGS = {
    "preflight": "python 3.12.3\nready: NVIDIA H200\n",
    "compile": "device 0: NVIDIA H200, compute capability 90\n"
               "compiled correlate_planes.cu: 5 kernels in 2100 ms\n"
               "compiled conv2d.cu: 10 kernels in 3900 ms\n",
    "tests": "....\n======= 1023 passed, 58 skipped in 61.2s =======\n",
    "calibrate": "timed planes 1x64x64 k3\nconstants for cupy:NVIDIA H200 written to x\n"
                 "median relative fit error, planes: direct 8%, fft 12%\n"
                 "median relative fit error, conv2d: direct 9%, gemm 7%, fft 15%\n",
    "bench": "ceilings: copy_gbps 4300\n31/40 targets met, 9 missed, 0 not measured\n",
    "memcheck": "72 checked calls, 0 mismatches\n========= ERROR SUMMARY: 0 errors\n",
    "racecheck": "72 checked calls, 0 mismatches\n========= RACECHECK SUMMARY: 0 hazards "
                 "displayed (0 errors, 0 warnings)\n",
    "synccheck": "72 checked calls, 0 mismatches\n========= ERROR SUMMARY: 0 errors\n",
    "initcheck": "72 checked calls, 0 mismatches\n========= ERROR SUMMARY: 0 errors\n",
}


def _lent_machine(tmp_path, monkeypatch, sanitizer: str, steps: dict[str, tuple] | None = None):
    """A work folder as gpu_check.sh leaves it on the lent machine."""
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(name=b"NVIDIA H200"))
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda=True))
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    env = {"PATH": "/usr/bin"}
    if sanitizer == "cuda-folder":
        env["CUDA_HOME"] = str(tmp_path / "cuda")
        _executable(tmp_path / "cuda" / "compute-sanitizer" / "compute-sanitizer")
    gc.preflight(work, env=env, repo=tmp_path / "repo")
    (work / "logs").mkdir()
    limits = {"preflight": 25, "compile": 35, "tests": 100, "calibrate": 35, "bench": 75}
    rows = {name: ("passed", 0, 5, limit, "") for name, limit in limits.items()}
    for tool in gc.SANITIZER_TOOLS:
        rows[tool] = (("passed", 0, 30, 60, "") if sanitizer != "none" else
                      ("skipped", "", 0, 60, "compute-sanitizer not found"))
    rows.update(steps or {})
    lines = []
    for name, (status, rc, seconds, limit, reason) in rows.items():
        lines.append("\t".join(map(str, (name, status, rc, seconds, limit, reason))))
        if status != "skipped":
            (work / "logs" / f"{name}.log").write_text(LOGS[name])
    (work / "steps.tsv").write_text("\n".join(reversed(lines)) + "\n")  # any order
    targets = [
        {"target": "bandwidth", "case": "8192x8192 k3 same", "value": 0.81, "goal": 0.75,
         "op": ">=", "met": True, "detail": ""},
        {"target": "vs_cudnn", "case": "(8,256,14,14)->256 3x3 float32", "value": 1.4,
         "goal": 1.25, "op": "<=", "met": False, "detail": ""},
        {"target": "vs_cudnn", "case": "(1,1,28,28)->6 5x5 float32", "value": 0.9,
         "goal": 1.25, "op": "<=", "met": True, "detail": ""},
        {"target": "vs_cupyx", "case": "4096x4096 k31", "value": None, "goal": 3.0,
         "op": ">=", "met": None, "detail": "not run: budget"},
    ]
    (out / "gpu_bench.json").write_text(json.dumps(
        {"partial": False, "ceilings": {"copy_gbps": 4300.0, "sgemm_gflops": 51000.0},
         "targets": targets}))
    return out, work


@pytest.mark.parametrize("sanitizer", ["cuda-folder", "none"])
def test_summary_of_the_lent_machine(tmp_path, monkeypatch, sanitizer):
    out, work = _lent_machine(tmp_path, monkeypatch, sanitizer)
    summary = gc.summarize(out, work)
    assert summary["result"] == "passed"  # a missing sanitizer is skipped, not failed
    statuses = {r["step"]: r["status"] for r in summary["steps"]}
    assert [r["step"] for r in summary["steps"]] == list(gc.STEPS)
    expected = "passed" if sanitizer == "cuda-folder" else "skipped"
    assert {statuses[t] for t in gc.SANITIZER_TOOLS} == {expected}
    assert summary["worst_case_s"] == 25 + 35 + 100 + 35 + 75 + 60
    md = (out / "summary.md").read_text()
    assert "Result: **passed**" in md
    assert "torch 2.11.0 (stand-in), CUDA 13.0, cuDNN 91000" in md
    assert "NVIDIA H200, compute capability 9.0, 132 SMs" in md
    results = {r["step"]: r["result"] for r in summary["steps"]}
    assert results["tests"] == "1023 passed, 58 skipped in 61.2s"
    assert results["compile"].startswith("compiled correlate_planes.cu: 5 kernels")
    assert results["calibrate"].startswith("median relative fit error, planes")
    assert results["bench"].startswith("31/40 targets met")
    if sanitizer == "cuda-folder":
        assert "compute-sanitizer: " + str(tmp_path / "cuda") in md
        assert results["racecheck"].startswith("RACECHECK SUMMARY: 0 hazards")
        assert results["memcheck"] == "ERROR SUMMARY: 0 errors; 72 checked calls, 0 mismatches"
    else:
        assert "compute-sanitizer: not found" in md
        assert results["memcheck"] == "compute-sanitizer not found"
    digest = {d["target"]: d for d in summary["target_digest"]}
    assert digest["vs_cudnn"]["met"] == 1 and digest["vs_cudnn"]["missed"] == 1
    assert digest["vs_cudnn"]["worst"] == {"case": "(8,256,14,14)->256 3x3 float32",
                                           "value": 1.4}
    assert digest["vs_cupyx"]["not_measured"] == 1 and digest["vs_cupyx"]["worst"] is None
    assert "| bandwidth | >= 0.75 | 1 | 0 | 0 | 0.81 (8192x8192 k3 same) |" in md
    assert "Measured ceilings: copy 4300 GB/s" in md


def test_summary_statuses_of_failures(tmp_path, monkeypatch):
    LOGS_EXTRA = {"memcheck": "========= Invalid __global__ read of size 4\n"
                              "========= ERROR SUMMARY: 1 error\n",
                  "racecheck": "========= Error: Device not supported\n"}
    out, work = _lent_machine(tmp_path, monkeypatch, "cuda-folder", {
        "tests": ("timed out", 124, 102, 100, ""),
        "memcheck": ("failed", 3, 20, 60, ""),
        "racecheck": ("failed", 1, 2, 60, ""),
    })
    for name, text in LOGS_EXTRA.items():
        (work / "logs" / f"{name}.log").write_text(text)
    summary = gc.summarize(out, work)
    statuses = {r["step"]: r["status"] for r in summary["steps"]}
    assert summary["result"] == "failed"
    assert summary["failed_steps"] == ["tests", "memcheck"]
    assert statuses["tests"] == "timed out" and statuses["memcheck"] == "failed"
    # The tool refusing this device is not an error found in gpuconv's kernels.
    assert statuses["racecheck"] == "skipped"
    reason = {r["step"]: r["result"] for r in summary["steps"]}["racecheck"]
    assert "Device not supported" in reason
    assert "Result: **failed** (failed or timed out: tests, memcheck)" in \
        (out / "summary.md").read_text()


def test_preflight_writes_the_essentials_before_importing_torch(tmp_path, monkeypatch):
    """Killed while importing torch (its time limit), the preflight has already told the
    script that cupy and a device are there."""
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(name=b"NVIDIA H200"))
    real_import = gc._import

    def killed_at_torch(name):
        if name == "torch":
            raise KeyboardInterrupt  # stands for the SIGTERM of `timeout`
        return real_import(name)

    monkeypatch.setattr(gc, "_import", killed_at_torch)
    with pytest.raises(KeyboardInterrupt):
        gc.preflight(tmp_path / "work", env={"PATH": ""}, repo=tmp_path)
    shell = (tmp_path / "work" / "preflight.env").read_text()
    assert "READY=1\n" in shell and "TESTS_READY=1\n" in shell
