"""The GPU benchmark's plain-Python parts (cases, rates, targets, reports, the
check summary) and the check script's syntax, without a GPU."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gb = _load("gpu_bench")


def test_cases_cover_the_issue_grids():
    cases = gb.cases(quick=False)
    ids = {(c.grid, c.id) for c in cases}
    assert len([c for c in cases if c.grid == "planes"]) == 12
    assert ("bandwidth", "8192x8192 k3 same") in ids and ("bandwidth", "4096x4096 k3 same") in ids
    assert ("batched", "64x512x512 k5 same") in ids
    assert len([c for c in cases if c.grid == "conv2d"]) == 4
    assert 0 < len(gb.cases(quick=True)) < len(cases)


def test_columns_of_every_grid():
    """Listing the columns imports no GPU library (the factories do, when called)."""
    by_grid = {c.grid: list(gb.columns(c, torch=None)) for c in gb.cases(quick=False)}
    assert {"gpuconv.direct", "gpuconv.auto", "cupyx.signal.correlate2d",
            "cupyx.ndimage.correlate", "cupyx.signal.fftconvolve"} <= set(by_grid["planes"])
    assert "loop of cupyx.signal.correlate2d" in by_grid["batched"]
    assert set(by_grid["conv2d"]) == {"gpuconv.direct", "gpuconv.gemm", "gpuconv.auto"}
    assert "torch.cudnn" not in by_grid["planes"]  # no torch given


def test_bytes_and_flops():
    c = gb.plane_case(1024, 7)
    out = 1018 * 1018
    assert c.bytes == 4 * (1024 * 1024 + out + 49) and c.flops == 2 * 49 * out
    c = gb.conv_case(8, 256, 14, 14, 256, 3)
    assert c.flops == 2 * 8 * 256 * 12 * 12 * 256 * 9
    assert c.bytes == 4 * (8 * 256 * 196 + 256 * 256 * 9 + 8 * 256 * 144)
    gbps, gflops = gb.rates(c, 2.0)
    assert math.isclose(gbps, c.bytes / 2e-3 / 1e9) and math.isclose(gflops, c.flops / 2e-3 / 1e9)


def test_relative_error(rng):
    ref = rng.standard_normal((5, 6))
    assert gb.relative_error(ref, ref) == 0
    noisy = ref * (1 + 1e-6)
    assert math.isclose(gb.relative_error(noisy, ref), 1e-6, rel_tol=1e-6)
    bad = ref.copy()
    bad[2, 3] = np.nan
    assert gb.relative_error(bad, ref) == math.inf
    assert gb.relative_error(ref[:4], ref) == math.inf


def synthetic_report():
    r = gb.Report(device={"card": "test"}, ceilings={"copy_gbps": 1000.0})
    bw = gb.bandwidth_case(4096)
    fast = bw.bytes / (800e9) * 1e3  # 800 GB/s: 80% of copy
    r.cells.append(gb.Cell("bandwidth", bw.id, "gpuconv.direct", fast, gbps=800.0))
    r.cells += [gb.Cell("planes", "p", "gpuconv.direct", 1.0),
                gb.Cell("planes", "p", "gpuconv.auto", 1.2),
                gb.Cell("planes", "p", "cupyx.signal.correlate2d", 3.0),
                gb.Cell("conv2d", "c", "gpuconv.auto", 1.2),
                gb.Cell("conv2d", "c", "gpuconv.gemm", 1.2),
                gb.Cell("conv2d", "c", "torch.cudnn", 1.0),
                gb.Cell("batched", "b", "gpuconv.direct", 1.0),
                gb.Cell("batched", "b", "loop of cupyx.signal.correlate2d", 9.0),
                gb.Cell("planes", "q", "gpuconv.auto", None, note="RuntimeError: boom")]
    return r


def test_targets_are_judged_from_the_cells():
    targets = {(t["target"].split()[0], t["case"]): t
               for t in gb.evaluate_targets(synthetic_report())}
    assert targets[("3x3", "4096x4096 k3 same")]["met"]          # 80% >= 75%
    assert targets[(">=", "p")]["value"] == 2.5 and not targets[(">=", "p")]["met"]  # 3.0/1.2
    assert targets[("within", "c")]["met"]                       # 1.2 <= 1.25
    assert not targets[(">=", "b")]["met"]                       # 9x < 10x
    auto = [t for t in targets.values() if t["target"].startswith("auto")]
    assert {t["case"]: t["met"] for t in auto} == {"planes p": False, "conv2d c": True}


def test_reports_and_check_summary(tmp_path):
    report = synthetic_report()
    gb.write(report, tmp_path)
    data = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert data["device"]["card"] == "test" and len(data["cells"]) == len(report.cells)
    md = (tmp_path / "gpu_bench.md").read_text()
    assert "RuntimeError: boom" in md and "| target |" in md
    compile_part = "device 0: X\ncompiled a.cu: 5 kernels in 900 ms\nTraceback\nKeyError: b\n"
    tests_part = "....F\nFAILED x\n1 failed, 40 passed, 3 skipped in 9.1s\n"
    (tmp_path / "pytest.log").write_text(compile_part + tests_part)
    (tmp_path / "memcheck.log").write_text("ok\n========= ERROR SUMMARY: 0 errors\n")
    n = len(compile_part)
    summary = gb.summarize(tmp_path, [f"compile:1:2:pytest.log:0:{n}",
                                      f"tests:1:30:pytest.log:{n}:{n + len(tests_part)}",
                                      "memcheck:0:20:memcheck.log"])
    assert not summary["passed"]
    assert [r["result"] for r in summary["steps"]] == [
        "compiled a.cu: 5 kernels in 900 ms", "1 failed, 40 passed, 3 skipped in 9.1s",
        "ERROR SUMMARY: 0 errors"]
    assert "| tests | 1 | 30 |" in (tmp_path / "summary.md").read_text()


def test_scripts_import_without_cupy_and_check_script_parses():
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import gpu_bench, gpu_kernel_run; "
            "print(any(m.startswith('cupy') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)


# -- a dry run of the device part on the CPU -------------------------------------------

class _Event:
    def record(self):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


class _FakeCuda:
    Event = _Event

    @staticmethod
    def get_elapsed_time(start, end):
        return (end.t - start.t) * 1e3

    class Device:
        id = 0
        compute_capability = "00"

        def synchronize(self):
            pass

    class runtime:  # noqa: N801 - mirrors cupy.cuda.runtime
        getDeviceProperties = staticmethod(lambda i: {"name": b"host emulator",
                                                      "multiProcessorCount": 1})
        runtimeGetVersion = staticmethod(lambda: 0)
        driverGetVersion = staticmethod(lambda: 0)


class _FakeRandom:
    @staticmethod
    def standard_normal(size, dtype=np.float64):
        return np.random.default_rng(0).standard_normal(size).astype(dtype)


class _FakeCupy(types.ModuleType):
    """NumPy under CuPy's name with the calls gpu_bench makes (events time the host)."""

    cuda = _FakeCuda
    random = _FakeRandom
    __version__ = "fake"

    @staticmethod
    def asnumpy(a):
        return np.asarray(a)

    @staticmethod
    def get_default_memory_pool():
        return types.SimpleNamespace(free_all_blocks=lambda: None)

    def __getattr__(self, name):
        return getattr(np, name)


def test_dry_run_of_the_device_code(tmp_path, monkeypatch):
    """gpu_bench.run end to end with NumPy as CuPy, SciPy as cupyx, and the CuPy backend's
    own code with emulated kernels: every column runs, results agree with the float64
    reference, and the report is written.  Catches harness bugs before a GPU lease."""
    import scipy.fft
    import scipy.ndimage
    import scipy.signal

    kernel_emulator = pytest.importorskip("kernel_emulator")
    if kernel_emulator.compiler() is None:
        kernel_emulator.skip_or_fail("no host C++ compiler for the kernel emulator")
    import gpuconv
    from gpuconv import backend as registry

    monkeypatch.setitem(sys.modules, "cupy", _FakeCupy("cupy"))
    for name in [m for m in sys.modules if m.split(".")[0] == "cupyx"]:
        monkeypatch.delitem(sys.modules, name)
    fakes = {"cupyx": types.ModuleType("cupyx"), "cupyx.scipy": types.ModuleType("cupyx.scipy"),
             "cupyx.scipy.signal": scipy.signal, "cupyx.scipy.ndimage": scipy.ndimage,
             "cupyx.scipy.fft": scipy.fft}
    fakes["cupyx"].scipy = fakes["cupyx.scipy"]
    for sub in ("signal", "ndimage", "fft"):
        setattr(fakes["cupyx.scipy"], sub, fakes[f"cupyx.scipy.{sub}"])
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(registry._instances, "cupy", kernel_emulator.emulated_cupy_backend())
    tiny = [gb.Case("bandwidth", "48x40 k3 same", {"size": 40, "kernel": 3, "mode": "same"},
                    bytes=4 * 2 * 1600, flops=18 * 1600),
            gb.batched_case(2, 24, 5), gb.plane_case(40, 4), gb.conv_case(2, 3, 10, 10, 4, 3)]
    with gpuconv.set_backend("cupy"):
        report = gb.run(False, tmp_path, repeat=3, budget_ms=5, case_list=tiny,
                        ceiling_sizes=(1 << 12, 16))
    data = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert data["device"]["card"] == "host emulator"
    assert set(data["ceilings"]) == {"copy_gbps", "sgemm_gflops"}
    cells = {(c["grid"], c["column"]): c for c in data["cells"]}
    for key in [("bandwidth", "gpuconv.direct"), ("bandwidth", "gpuconv.direct[GC_UNSTAGED_LOADS]"),
                ("batched", "gpuconv.direct"), ("planes", "gpuconv.gemm"),
                ("planes", "gpuconv.fft"), ("planes", "gpuconv.auto")]:
        assert cells[key]["median_ms"] > 0, cells[key]
        assert cells[key]["rel_err"] < 1e-5, cells[key]
    for key in [("planes", "cupyx.signal.correlate2d"), ("planes", "cupyx.ndimage.correlate"),
                ("planes", "cupyx.signal.fftconvolve"),
                ("batched", "loop of cupyx.signal.correlate2d"),
                ("conv2d", "gpuconv.direct"), ("conv2d", "gpuconv.gemm"),
                ("conv2d", "gpuconv.auto")]:
        assert cells[key]["median_ms"] > 0, cells[key]
    assert "torch" in cells[("conv2d", "gpuconv.direct")]["note"]  # no CUDA torch: no reference
    assert report.targets and (tmp_path / "gpu_bench.md").exists()


def test_dry_run_of_the_sanitizer_script(monkeypatch, capsys):
    """gpu_kernel_run.main on the CPU: the CuPy backend's code with emulated kernels."""
    kernel_emulator = pytest.importorskip("kernel_emulator")
    if kernel_emulator.compiler() is None:
        kernel_emulator.skip_or_fail("no host C++ compiler for the kernel emulator")
    import gpuconv
    from gpuconv import backend as registry

    fake = _FakeCupy("cupy")
    fake.cuda = types.SimpleNamespace(set_allocator=lambda a: None,
                                      set_pinned_memory_allocator=lambda a: None,
                                      Device=_FakeCuda.Device)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    backend = kernel_emulator.emulated_cupy_backend()
    monkeypatch.setitem(registry._instances, "cupy", backend)
    run = _load("gpu_kernel_run")
    with gpuconv.set_backend("cupy"):
        assert run.main(quick=False) == 0
    out = capsys.readouterr().out
    assert "0 mismatches" in out
    calls = int(out.split(" checked calls")[0].split()[-1])
    launched = sum(k.launches for k in backend.emulated_kernels.values())
    assert calls == launched >= 5 * (4 * 3 * 3 - 3 + 5)  # every call ran a native kernel
