"""The benchmark harness: the quick grid end to end, registration, caps and extrapolation."""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest

from gpuconv import cli
from gpuconv.bench import GRIDS, Case, Grid, Settings, Unavailable, register_column, \
    register_grid, run


def test_quick_cli_writes_json_and_markdown(tmp_path, capsys):
    t0 = time.perf_counter()
    assert cli.main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    assert time.perf_counter() - t0 < 30
    (json_path,) = tmp_path.glob("quick-cpu-*.json")
    (md_path,) = tmp_path.glob("quick-cpu-*.md")
    report = json.loads(json_path.read_text())
    assert report["quick"] is True and report["backend"] == "numpy"
    assert {"cpu", "cores", "usable_cores"} <= set(report["machine"])
    assert {"numpy", "scipy", "gpuconv"} <= set(report["versions"])
    # Every grid that runs on NumPy; the GPU-only grids (bandwidth, batched) are left out.
    assert [g["name"] for g in report["grids"]] == [g for g in GRIDS
                                                    if GRIDS[g].runs_on("numpy")]
    assert {"planes", "conv2d"} <= {g["name"] for g in report["grids"]}
    assert not {"bandwidth", "batched"} & {g["name"] for g in report["grids"]}
    planes = report["grids"][0]
    names = [c["name"] for c in planes["columns"]]
    assert {"direct", "gemm", "auto", "scipy.signal", "scipy.ndimage", "torch"} <= set(names)
    for case in planes["cases"]:
        ok = {n: r for n, r in case["results"].items() if r["status"] == "ok"}
        assert {"direct", "gemm", "scipy.signal"} <= set(ok)
        fastest = case["fastest"]
        assert case["results"][fastest]["ratio"] == 1.0
        for r in ok.values():
            assert r["median_s"] > 0 and r["ratio"] >= 1.0
            assert r["median_s"] == sorted(r["samples"])[len(r["samples"]) // 2]
    md = md_path.read_text()
    assert "| case | direct | gemm | auto |" in md
    assert report["machine"]["cpu"] in md
    for case in planes["cases"]:
        assert f"| {case['id']} |" in md
    assert "wrote" in capsys.readouterr().out


@pytest.fixture
def toy_grid():
    calls = {"slow": 0}

    def cases(quick):
        return [Case(f"n{n}", {"n": n}, family="toy", work=float(n)) for n in (1, 4)]

    def setup(case, backend, rng):
        return {"x": rng.standard_normal(case.params["n"])}

    grid = register_grid(Grid("toy", "A toy grid", cases, setup))

    def slow(inputs, case, backend):
        def call():
            calls["slow"] += 1
            time.sleep(0.01 * case.params["n"])
        return call

    def missing(inputs, case, backend):
        raise Unavailable("toylib is not installed")

    def broken(inputs, case, backend):
        return lambda: 1 / 0

    register_column("toy", "fast", lambda inputs, case, backend: lambda: np.sum(inputs["x"]))
    register_column("toy", "slow", slow)
    register_column("toy", "missing", missing, anchor=True)
    register_column("toy", "broken", broken)
    yield grid, calls
    del GRIDS["toy"]


def test_registered_grid_caps_extrapolates_and_reports_unavailable(toy_grid, tmp_path):
    grid, calls = toy_grid
    with pytest.raises(ValueError, match="already registered"):
        register_column("toy", "fast", lambda *a: None)
    with pytest.raises(ValueError, match="unknown benchmark grid"):
        register_column("no-such-grid", "x", lambda *a: None)
    settings = Settings(repeat=3, min_sample=0.0, cap=0.025, case_budget=1.0)
    report = run(grids=["toy"], settings=settings, out=tmp_path)
    (g,) = report["grids"]
    small, large = g["cases"]
    assert small["results"]["slow"]["status"] == "ok"
    assert small["fastest"] == "fast"
    # 0.01 s measured at work 1, so work 4 is predicted at 0.04 s > cap: not run.
    assert large["results"]["slow"]["status"] == "extrapolated"
    assert large["results"]["slow"]["median_s"] == pytest.approx(
        4 * small["results"]["slow"]["median_s"])
    # Two warm-up calls and the samples of the small case; none for the large one.
    assert calls["slow"] == 2 + len(small["results"]["slow"]["samples"])
    assert small["results"]["missing"] == {"status": "unavailable",
                                           "note": "toylib is not installed"}
    assert small["results"]["broken"]["status"] == "error"
    assert "ZeroDivisionError" in small["results"]["broken"]["note"]
    md = open(report["files"][1], encoding="utf-8").read()
    assert "†" in md and "n/a" in md and "error" in md


def test_unknown_grid_is_refused():
    with pytest.raises(ValueError, match="unknown benchmark grid"):
        run(grids=["nope"])


# -- every column blocks: one backend.synchronize() per call --------------------------

def _runnable_columns(backend):
    for grid in GRIDS.values():
        for name, column in grid.columns.items():
            if column.runs_on(backend.name):
                yield grid, name, column


@pytest.mark.parametrize("device", [False, True], ids=["numpy", "cupy-named stand-in"])
def test_every_column_synchronizes_once_per_call(device, monkeypatch):
    """Each column's call ends with exactly one backend.synchronize() (a queued column:
    one after its queue), so any clock around it times finished work."""
    import gpuconv
    from _gpu_fakes import SyncCounter, counting_device_backend, fake_torch, install_cupyx
    from gpuconv.backends.numpy import NumpyBackend

    from gpuconv import backend as registry

    counter = SyncCounter()
    if device:
        backend = counting_device_backend(counter)
        monkeypatch.setitem(registry._instances, "cupy", backend)  # for gpuconv.nn layers
        install_cupyx(monkeypatch)
        monkeypatch.setitem(__import__("sys").modules, "torch", fake_torch(cuda=True))
    else:
        class Counting(NumpyBackend):
            def synchronize(self):
                counter.count += 1
        backend = Counting()
    checked = []
    with gpuconv.set_backend("numpy"):
        for grid, name, column in _runnable_columns(backend):
            if device and grid.name.startswith("train-step") and column.anchor:
                continue  # the torch stand-in has no autograd
            case = grid.cases(True)[0]
            inputs = grid.setup(case, backend, np.random.default_rng(0))
            try:
                fn = column.factory(inputs, case, backend)
            except Unavailable:
                continue
            before = counter.count
            fn()
            assert counter.count - before == 1, (grid.name, name)
            checked.append((grid.name, name))
    names = {n for _, n in checked}
    assert {"direct", "auto", "fft"} <= names
    # On the NumPy backend the torch column runs only where torch is installed (it is
    # no test dependency); the device case brings its own stand-in.
    if device or importlib.util.find_spec("torch") is not None:
        assert "torch" in names
    if device:
        assert {("bandwidth", "direct"), ("batched", "cupyx.signal"), ("planes", "cupyx.ndimage"),
                ("conv2d", "torch"), ("planes", "cupyx.fftconvolve")} <= set(checked)
    else:
        assert {"scipy.signal", "numpy.einsum", "forward"} <= names


def test_runner_times_only_synchronized_calls():
    """Through the runner: the synchronize count equals the number of calls it made."""
    from _gpu_fakes import counting_device_backend

    from gpuconv.bench._runner import run_grids

    backend = counting_device_backend()
    settings = Settings(repeat=3, min_sample=0.001, cap=5.0, case_budget=1.0)
    grids = run_grids(["bandwidth", "conv2d"], backend, settings, quick=True,
                      columns=["direct", "auto", "gemm"])
    calls = 0
    for grid in grids:
        for case in grid["cases"]:
            for name, res in case["results"].items():
                assert res["status"] == "ok", (grid["name"], case["id"], name, res)
                # first call, the sizing call, then `number` calls per sample
                calls += 2 + res["number"] * len(res["samples"])
                assert res["rel_err"] < 1e-5
    assert grids[0]["clock"] == "CUDA events"
    assert backend.counter.count == calls > 0


def test_asv_classes_choose_the_backend_in_setup(monkeypatch):
    """benchmarks/benchmarks.py: the backend is a parameter chosen in setup; the timed
    method only calls the column; combinations that cannot run are skipped the asv way."""
    import importlib.util
    from pathlib import Path

    import gpuconv

    path = Path(__file__).parent.parent / "benchmarks" / "benchmarks.py"
    spec = importlib.util.spec_from_file_location("gpuconv_asv", path)
    asv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(asv)
    assert asv.Planes.param_names == ["backend", "case", "column"]
    backends, cases, columns = asv.Planes.params
    assert backends == ["numpy", "cupy"] and "cupyx.signal" in columns
    bench = asv.Planes()
    bench.setup("numpy", cases[0], "direct")
    assert gpuconv.get_backend() == "numpy"

    def no_switch(name):
        raise AssertionError("set_backend inside the timed call")

    with monkeypatch.context() as m:
        m.setattr(gpuconv, "set_backend", no_switch)
        bench.time_call("numpy", cases[0], "direct")
    bench.teardown("numpy", cases[0], "direct")
    assert gpuconv.get_backend() == "auto"
    with pytest.raises(NotImplementedError, match="does not run on 'numpy'"):
        bench.setup("numpy", cases[0], "cupyx.signal")
    if not gpuconv.available_backends()["cupy"].usable:
        with pytest.raises(NotImplementedError, match="backend 'cupy' cannot run here"):
            asv.Bandwidth().setup("cupy", asv.Bandwidth.params[1][0], "direct")
    assert gpuconv.get_backend() == "auto"


def test_cap_is_judged_on_a_warm_call(tmp_path):
    """A slow first call (compilation, plans, autotuning) does not cap a column; a slow
    warm call does, and that warm call is the cell; a first call over 10x the cap is
    not repeated."""
    calls = {"compiles": 0, "slow": 0, "very-slow": 0}

    def cases(quick):
        return [Case("only", {}, family="toy")]

    grid = register_grid(Grid("toy-cap", "cap", cases, lambda case, be, rng: {}))
    try:
        def compiles_once(inputs, case, backend):
            def call():
                calls["compiles"] += 1
                time.sleep(0.08 if calls["compiles"] == 1 else 0.0)
            return call

        def always_slow(inputs, case, backend):
            def call():
                calls["slow"] += 1
                time.sleep(0.03 if calls["slow"] == 1 else 0.06)
            return call

        def very_slow(inputs, case, backend):
            def call():
                calls["very-slow"] += 1
                time.sleep(0.55)  # over 10x the cap: no start-up explains it
            return call

        register_column(grid.name, "compiles-once", compiles_once)
        register_column(grid.name, "always-slow", always_slow)
        register_column(grid.name, "very-slow", very_slow)
        report = run(grids=[grid.name], settings=Settings(repeat=3, min_sample=0.0, cap=0.05))
        res = report["grids"][0]["cases"][0]["results"]
        assert res["compiles-once"]["status"] == "ok"
        assert res["compiles-once"]["first_s"] >= 0.08 > res["compiles-once"]["median_s"]
        assert res["always-slow"]["status"] == "capped" and calls["slow"] == 2
        assert res["always-slow"]["median_s"] >= 0.06 > res["always-slow"]["first_s"]
        assert res["very-slow"]["status"] == "capped" and calls["very-slow"] == 1
    finally:
        del GRIDS[grid.name]
