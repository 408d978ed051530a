"""The GPU benchmark on the CPU: one grid definition, columns per backend, references,
targets, and dry runs of ``benchmarks/gpu_bench.py`` and ``gpu_kernel_run.py`` with
stand-ins for CuPy, cupyx and torch (with CUDA and without)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
from _gpu_fakes import counting_device_backend, fake_cupy, fake_torch, install_cupyx

from gpuconv.bench import GRIDS, Unavailable
from gpuconv.bench import _cases as C
from gpuconv.bench._grids import _conv_reference, _fft_correlate
from gpuconv.bench._runner import _relative_error
from gpuconv.bench._targets import evaluate, targets_markdown

ROOT = Path(__file__).parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_grids_come_from_the_one_definition():
    assert set(C.GPU_GRIDS) <= set(GRIDS)
    bandwidth = GRIDS["bandwidth"].cases(False)
    assert [c.id for c in bandwidth] == ["4096x4096 k3 same", "8192x8192 k3 same"]
    assert all(c.calls == C.QUEUE_DEPTH > 1 for c in bandwidth)
    assert [c.id for c in GRIDS["batched"].cases(False)] == ["64x512x512 k5 same"]
    planes = GRIDS["planes"].cases(False)
    assert len(planes) == len(C.PLANE_SIZES) * len(C.PLANE_KERNELS) == 12
    assert {(c.params["size"], c.params["kernel"]) for c in planes} == {
        (n, k) for n in C.PLANE_SIZES for k in C.PLANE_KERNELS}
    assert len(GRIDS["conv2d"].cases(False)) == len(C.CONV_LAYERS) * len(C.CONV_DTYPES)
    # The GPU entry point defines no grid of its own: it names the shared grids.
    source = (ROOT / "benchmarks" / "gpu_bench.py").read_text()
    assert "GPU_GRIDS" in source
    for constant in ("4096", "8192", "CONV_LAYERS", "def cases", "class Timer"):
        assert constant not in source, constant


def test_columns_follow_the_backend():
    def names(backend, grid):
        return {n for n, c in GRIDS[grid].columns.items() if c.runs_on(backend)}

    cpu, gpu = names("numpy", "planes"), names("cupy", "planes")
    assert {"direct", "gemm", "auto", "fft", "overlap-add", "scipy.signal", "scipy.ndimage",
            "torch"} <= cpu
    assert not any(n.startswith("cupyx") for n in cpu)
    assert {"direct", "auto", "fft", "cupyx.signal", "cupyx.ndimage", "cupyx.fftconvolve",
            "torch"} <= gpu
    assert not {"scipy.signal", "scipy.ndimage"} & gpu
    assert "numpy.einsum" not in names("cupy", "conv2d")
    assert [g for g in GRIDS if not GRIDS[g].runs_on("numpy")] == ["bandwidth", "batched"]


def test_gemm_is_not_timed_on_large_plane_kernels_on_a_gpu():
    """On the GPU, gemm for one 15x15 or 31x31 kernel is ~10^5 launches a call."""
    device = counting_device_backend()
    from gpuconv.backend import get_backend_object

    host = get_backend_object("numpy")
    gemm = GRIDS["planes"].columns["gemm"].factory
    by_kernel = {c.params["kernel"]: c for c in GRIDS["planes"].cases(False)
                 if c.params["size"] == 256}
    inputs = {"x": None, "w": None}
    for k, case in by_kernel.items():
        if k > C.PLANE_GEMM_MAX_KERNEL["cupy"]:
            with pytest.raises(Unavailable, match="never auto's choice"):
                gemm(inputs, case, device)
        else:
            assert callable(gemm(inputs, case, device))
        assert callable(gemm(inputs, case, host))  # the CPU grid keeps every cell


def test_bytes_flops_and_calls_of_the_cases():
    case = {c.id: c for c in GRIDS["planes"].cases(False)}["1024x1024 k7"]
    out = 1018 * 1018
    assert case.bytes == 4 * (1024 * 1024 + 49 + out) and case.flops == 2 * 49 * out
    conv = {c.id: c for c in GRIDS["conv2d"].cases(False)}["(8,256,14,14)->256 3x3 float64"]
    assert conv.flops == 2 * 8 * 256 * 12 * 12 * 256 * 9
    assert conv.bytes == 8 * (8 * 256 * 196 + 256 * 256 * 9 + 8 * 256 * 144)
    (bw,) = [c for c in GRIDS["bandwidth"].cases(False) if c.params["size"] == 8192]
    assert bw.bytes == 4 * (2 * 8192 ** 2 + 9)


@pytest.mark.parametrize("mode", ["valid", "same", "full"])
def test_float64_references_match_scipy(rng, mode):
    from gpuconv.backend import get_backend_object

    be = get_backend_object("numpy")
    x = rng.standard_normal((3, 23, 30)).astype(np.float32)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    got = _fft_correlate(be, x, w, mode)
    want = np.stack([scipy.signal.correlate2d(p.astype(np.float64), w.astype(np.float64), mode)
                     for p in x])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    xs = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    ws = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    ref = _conv_reference({"x_np": xs, "w_np": ws}, None, be)
    want = np.einsum("nchwij,ocij->nohw", np.lib.stride_tricks.sliding_window_view(
        xs.astype(np.float64), (3, 2), axis=(2, 3)), ws.astype(np.float64))
    np.testing.assert_allclose(ref, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_relative_error(rng):
    ref = rng.standard_normal((5, 6))
    assert _relative_error(np, ref, ref) == 0
    assert math.isclose(_relative_error(np, ref * (1 + 1e-6), ref), 1e-6, rel_tol=1e-6)
    bad = ref.copy()
    bad[2, 3] = np.nan
    assert _relative_error(np, bad, ref) == math.inf
    assert _relative_error(np, ref[:4], ref) == math.inf
    assert _relative_error(np, ref.astype(np.float32), ref) < 1e-7


def _cell(seconds, status="ok", **extra):
    return {"status": status, "median_s": seconds, **extra}


def synthetic_report(backend="cupy"):
    case = lambda cid, results, **p: {"id": cid, "params": p, "results": results}  # noqa: E731
    return {
        "backend": backend, "ceilings": {"copy_gbps": 1000.0},
        "grids": [
            {"name": "bandwidth", "cases": [
                case("4096 same", {"direct": _cell(1e-4, gbps=800.0), "auto": _cell(1e-4),
                                   "fft": _cell(5e-4)})]},
            {"name": "planes", "cases": [
                case("p", {"direct": _cell(1.0), "auto": _cell(1.1, note="auto: direct"),
                           "gemm": _cell(1.5), "fft": _cell(0.6), "cupyx.signal": _cell(3.0)}),
                case("q", {"auto": {"status": "error", "note": "RuntimeError: boom"},
                           "cupyx.signal": _cell(3.0)}),
                case("r", {"direct": _cell(1.0), "auto": _cell(1.0), "fft": _cell(0.4),
                           "overlap-add": _cell(0.45), "cupyx.signal": _cell(4.0)})]},
            {"name": "conv2d", "cases": [
                case("c32", {"auto": _cell(1.2), "gemm": _cell(1.2), "direct": _cell(2.0),
                             "torch": _cell(1.0)}, dtype="float32"),
                case("c64", {"auto": _cell(1.0), "direct": _cell(1.0),
                             "torch": {"status": "unavailable", "note": "no CUDA"}},
                     dtype="float64"),
                case("c32b", {"auto": _cell(1.0), "direct": _cell(1.0),
                              "torch": {"status": "unavailable",
                                        "note": "torch has no CUDA here"}}, dtype="float32")]},
            {"name": "batched", "cases": [
                case("b", {"auto": _cell(1.0), "direct": _cell(1.0),
                           "cupyx.signal": _cell(9.0)})]},
        ]}


def test_targets_are_judged_from_the_cells():
    rows = evaluate(synthetic_report())
    by = {(r["target"], r["case"]): r for r in rows}
    assert by[("bandwidth", "4096 same")]["value"] == 0.8 and by[("bandwidth", "4096 same")]["met"]
    assert by[("vs_cupyx", "p")]["value"] == 2.727 and by[("vs_cupyx", "p")]["met"] is False
    assert by[("vs_cupyx", "r")]["value"] == 4.0 and by[("vs_cupyx", "r")]["met"]
    assert by[("vs_cupyx", "q")]["met"] is None and "boom" in by[("vs_cupyx", "q")]["detail"]
    assert by[("vs_cudnn", "c32")]["value"] == 1.2 and by[("vs_cudnn", "c32")]["met"]
    assert ("vs_cudnn", "c64") not in by  # the target is float32
    assert by[("vs_cudnn", "c32b")]["met"] is None
    assert "no CUDA" in by[("vs_cudnn", "c32b")]["detail"]
    assert by[("batched_vs_loop", "b")]["value"] == 9.0 and not by[("batched_vs_loop", "b")]["met"]
    # auto's regret against the fastest method its precision policy allows: an FFT
    # method only where it beat every exact method by the 2x margin.
    assert by[("auto_regret", "planes p")]["value"] == 1.1       # fft 1.67x: not allowed
    assert by[("auto_regret", "planes p")]["met"] is True
    assert by[("auto_regret", "planes p")]["detail"].startswith("auto: direct 1100 ms")
    assert by[("auto_regret", "planes r")]["value"] == 2.5       # fft 2.5x: allowed
    assert by[("auto_regret", "planes r")]["met"] is False
    assert by[("auto_regret", "conv2d c32")]["value"] == 1.0
    assert by[("auto_regret", "planes q")]["met"] is None
    md = targets_markdown(rows)
    assert "not measured" in md and "| vs_cupyx | p | 2.727 | >= 3 | **no** |" in md
    # On a CPU backend only the regret of auto is a target.
    assert {r["target"] for r in evaluate(synthetic_report("numpy"))} == {"auto_regret"}


# -- dry runs of the device code on the CPU --------------------------------------------

@pytest.fixture
def emulated_gpu(monkeypatch):
    """The CuPy backend's own code with emulated kernels, NumPy as CuPy, SciPy as cupyx,
    and the GPU grids shrunk to sizes the emulator runs in a moment."""
    kernel_emulator = pytest.importorskip("kernel_emulator")
    if kernel_emulator.compiler() is None:
        kernel_emulator.skip_or_fail("no host C++ compiler for the kernel emulator")
    from gpuconv import backend as registry

    backend = kernel_emulator.emulated_cupy_backend()
    backend.xp = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", backend.xp)
    monkeypatch.setitem(registry._instances, "cupy", backend)
    install_cupyx(monkeypatch)
    for name, value in {"QUICK_PLANE_SIZES": (40,), "QUICK_PLANE_KERNELS": (3, 5),
                        "QUICK_BANDWIDTH_SIZES": (48,), "QUEUE_DEPTH": 2,
                        "QUICK_BATCHED": (2, 24, 5),
                        "QUICK_CONV_LAYERS": ((2, 3, 10, 10, 4, 3),)}.items():
        monkeypatch.setattr(C, name, value)
    return backend


@pytest.mark.slow
@pytest.mark.parametrize("cuda_torch", [False, True], ids=["cpu-only torch", "CUDA torch"])
def test_dry_run_of_gpu_bench(emulated_gpu, monkeypatch, tmp_path, capsys, cuda_torch):
    """benchmarks/gpu_bench.py end to end: every column of every GPU grid runs, every
    gpuconv result agrees with the float64 reference, the report and targets are
    written; the torch (cuDNN) anchor runs where torch has CUDA and says why not where
    it has none."""
    torch = fake_torch(cuda=cuda_torch)
    monkeypatch.setitem(sys.modules, "torch", torch)
    gb = _load("gpu_bench")
    assert gb.main(["--out", str(tmp_path), "--quick"]) == 0
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert report["backend"] == "cupy" and report["clock"] == "CUDA events"
    assert report["partial"] is False
    assert report["device_info"]["card"] == "NVIDIA H200 (stand-in)"
    assert report["device_info"]["torch_cuda"] == ("13.0" if cuda_torch else
                                                   "torch has no CUDA here")
    assert {"copy_gbps", "sgemm_gflops"} <= set(report["ceilings"])
    assert [g["name"] for g in report["grids"]] == list(C.GPU_GRIDS)
    for grid in report["grids"]:
        columns = {c["name"]: c for c in grid["columns"]}
        assert grid["cases"], grid["name"]
        for case in grid["cases"]:
            for name, res in case["results"].items():
                if name == "torch":
                    continue
                # capped: building the emulator on a kernel's first call takes seconds
                assert res["status"] in ("ok", "capped"), (grid["name"], case["id"], name, res)
                assert res["median_s"] > 0 and res["first_s"] > 0
                if not columns[name]["anchor"]:
                    assert res["rel_err"] < 1e-5, (grid["name"], case["id"], name, res)
            torch_cell = case["results"]["torch"]
            if cuda_torch:
                assert torch_cell["status"] == "ok", torch_cell
            else:
                assert torch_cell == {"status": "unavailable",
                                      "note": "torch has no CUDA here (a CPU-only build, or "
                                              "no device)"}
    assert torch.synchronized > 0 if cuda_torch else torch.synchronized == 0
    if cuda_torch:  # TF32 off: gpuconv computes in full float32
        assert torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cuda.matmul.allow_tf32 is False
    cudnn = [t for t in report["targets"] if t["target"] == "vs_cudnn"]
    assert cudnn and all((t["met"] is not None) == cuda_torch for t in cudnn)
    assert all(t["value"] is not None for t in report["targets"]
               if t["target"] in ("bandwidth", "vs_cupyx", "batched_vs_loop"))
    md = (tmp_path / "gpu_bench.md").read_text()
    assert "## Targets" in md and "Measured ceilings" in md
    assert "targets met" in capsys.readouterr().out


def test_gpu_bench_says_why_without_a_device(tmp_path, capsys):
    import cupy_standin

    import gpuconv

    with cupy_standin.suspended():  # the real CuPy (or none), not the CI stand-in
        if gpuconv.available_backends()["cupy"].usable:
            pytest.skip("a CUDA device is usable here: the benchmark would run for real")
        gb = _load("gpu_bench")
        assert gb.main(["--out", str(tmp_path), "--quick"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot run here" in err
    assert not (tmp_path / "gpu_bench.json").exists()


def test_scripts_import_without_cupy():
    code = ("import sys; sys.path.insert(0, 'benchmarks'); "
            "import gpu_bench, gpu_kernel_run, gpu_check; "
            "print(any(m.split('.')[0] in ('cupy', 'torch') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_dry_run_of_the_sanitizer_script(monkeypatch, capsys):
    """gpu_kernel_run.py --quick (what each sanitizer tool runs) on the CPU: the CuPy
    backend's code with emulated kernels; every kernel file and dtype launched."""
    kernel_emulator = pytest.importorskip("kernel_emulator")
    if kernel_emulator.compiler() is None:
        kernel_emulator.skip_or_fail("no host C++ compiler for the kernel emulator")
    import gpuconv
    from gpuconv import backend as registry

    backend = kernel_emulator.emulated_cupy_backend()
    backend.xp = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", backend.xp)
    monkeypatch.setitem(registry._instances, "cupy", backend)
    run = _load("gpu_kernel_run")
    with gpuconv.set_backend("cupy"):
        assert run.main(quick=True) == 0
    out = capsys.readouterr().out
    assert "0 mismatches" in out
    calls = int(out.split(" checked calls")[0].split()[-1])
    launched = sum(k.launches for k in backend.emulated_kernels.values())
    assert calls == launched >= 4 * 3 * 3 - 3 + 2 * 4 * 3 + 3 * 5  # every call ran a kernel
    built = {(build[0], np.dtype(dtype).name) for build, _, dtype in backend.emulated_kernels}
    assert built == {(f, d) for f in ("correlate_planes.cu", "conv2d.cu")
                     for d in ("float32", "float64", "float16")}
