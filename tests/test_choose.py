"""method="auto", gpuconv.choose_method, the cost model and its calibration file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.signal

import gpuconv
from gpuconv import _choose, _costmodel, _measure
from gpuconv.backend import get_backend_object


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test reads and writes its own cache directory, and starts with no measurements."""
    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(tmp_path / "cache"))
    _choose.clear_measured()
    yield
    _choose.clear_measured()


def test_small_kernels_stay_direct_large_ones_go_fft(rng):
    x = rng.standard_normal((1024, 1024))
    small = gpuconv.choose_method("correlate2d", x, np.ones((3, 3)), mode="same")
    large = gpuconv.choose_method("correlate2d", x, np.ones((31, 31)), mode="same")
    # SciPy's own chooser says "fft" for both; the measured crossover is between 7 and 15.
    assert small.method in ("direct", "gemm"), small
    assert large.method in ("fft", "overlap-add"), large
    assert set(large.costs) == {"direct", "gemm", "fft", "overlap-add"}
    assert large.costs["direct"] > 5 * large.costs[large.method]
    assert large.method in large.reason and "cost model" in large.reason


def test_auto_result_equals_the_chosen_method(rng):
    x = rng.standard_normal((2, 300, 280))
    w = rng.standard_normal((21, 17))
    chosen = gpuconv.choose_method("convolve2d", x, w, mode="same", boundary="symm").method
    auto = gpuconv.convolve2d(x, w, "same", "symm")
    np.testing.assert_allclose(auto, gpuconv.convolve2d(x, w, "same", "symm", method=chosen),
                               atol=1e-12)
    expected = np.stack([scipy.signal.convolve2d(p, w, "same", "symm") for p in x])
    np.testing.assert_allclose(auto, expected, atol=1e-9)


def test_integer_inputs_never_go_to_fft(rng):
    x = rng.integers(-1000, 1000, (512, 512))
    w = rng.integers(-1000, 1000, (31, 31))
    choice = gpuconv.choose_method("correlate2d", x, w)
    assert choice.method in ("direct", "gemm") and "exact" in choice.reason
    # and the float version of the same shapes would use an FFT
    assert gpuconv.choose_method("correlate2d", x * 1.0, w * 1.0).method in ("fft", "overlap-add")
    out = gpuconv.correlate2d(x[:64, :64], w[:9, :9])
    np.testing.assert_array_equal(out, scipy.signal.correlate2d(x[:64, :64], w[:9, :9]))


def test_conv2d_choice_ranks_every_method_and_integers_stay_exact(rng):
    x = rng.standard_normal((4, 3, 64, 64)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    small = gpuconv.choose_method("conv2d", x, w, padding=1)
    # The model ranks the exact methods and the FFT: the winner has the lowest estimate.
    assert {"direct", "gemm", "fft"} <= set(small.costs)
    assert small.method == min(small.costs, key=small.costs.get)
    assert small.method in ("direct", "gemm"), small
    xi = rng.integers(-9, 9, (2, 16, 28, 28))
    wi = rng.integers(-9, 9, (32, 16, 3, 3))
    exact = gpuconv.choose_method("conv2d", xi, wi)
    assert exact.method in ("direct", "gemm") and "exact" in exact.reason
    assert exact.method == min(("direct", "gemm"), key=exact.costs.get)
    big = gpuconv.choose_method("conv2d", rng.standard_normal((1, 1, 512, 512)),
                                rng.standard_normal((2, 1, 41, 41)))
    assert big.method in ("fft", "overlap-add"), big


def test_measure_times_candidates_and_auto_reuses_the_decision(rng, monkeypatch):
    x = rng.standard_normal((64, 64))
    w = rng.standard_normal((5, 5))
    choice = gpuconv.choose_method("correlate2d", x, w, mode="same", measure=True)
    assert choice.measured and "measured" in choice.reason
    # The precision policy over the timings: the fastest exact method, unless an FFT
    # method was at least the margin faster.
    times = choice.measured
    exact = min((m for m in times if m in _choose.EXACT_METHODS), key=times.get)
    fast_fft = [m for m in times if m in _choose.MARGINS
                and times[m] * _choose.MARGINS[m] <= times[exact]]
    assert choice.method == min(fast_fft + [exact], key=times.get)
    # Pretend the measurement had found a method the model would not pick:
    other = next(m for m in ("direct", "gemm", "fft", "overlap-add")
                 if m != gpuconv.choose_method("correlate2d", x, w, mode="same").method)
    key = next(iter(_choose._MEASURED))
    _choose._MEASURED[key] = _choose.MethodChoice(other, "planted")
    seen = []
    backend = get_backend_object("numpy")
    original = type(backend).correlate_planes

    def spy(self, *args):
        seen.append(args[6])
        return original(self, *args)
    monkeypatch.setattr(type(backend), "correlate_planes", spy)
    gpuconv.correlate2d(x, w, "same")
    assert seen == [other]
    gpuconv.correlate2d(x, w[:3], "same")  # another shape is not affected
    assert seen[-1] == gpuconv.choose_method("correlate2d", x, w[:3], mode="same").method


def test_choose_method_bad_op():
    with pytest.raises(ValueError, match="op must be one of"):
        gpuconv.choose_method("fftconvolve", np.ones((3, 3)), np.ones((2, 2)))


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(tmp_path / "a"))
    assert _costmodel.cache_file() == tmp_path / "a" / "costmodel.json"
    monkeypatch.delenv("GPUCONV_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _costmodel.cache_dir() == tmp_path / "xdg" / "gpuconv"


def test_calibration_is_stored_and_used(tmp_path):
    consts, source = _costmodel.load_constants("numpy:cpu")
    assert source == "built-in defaults"
    report = _measure.calibrate("numpy", quick=True)
    path = report["path"]
    assert path.exists() and str(path).startswith(str(tmp_path))
    data = json.loads(path.read_text())
    assert data["models"]["numpy:cpu"] == report["constants"]
    for family, methods in _costmodel.FEATURES.items():
        for method, names in methods.items():
            c = report["constants"][family][method]
            assert len(c) == len(names) and all(v >= 0 for v in c)
    consts, source = _costmodel.load_constants("numpy:cpu")
    assert source.startswith("calibrated") and consts == report["constants"]
    # A planted model that makes direct nearly free is what auto then follows (the file
    # is looked at every few seconds; invalidate() makes this process look at once).
    planted = {f: {m: [1e-15] * len(n) if m == "direct" else [1.0] * len(n)
                   for m, n in ms.items()} for f, ms in _costmodel.FEATURES.items()}
    data["models"]["numpy:cpu"] = planted
    path.write_text(json.dumps(data))
    _costmodel.invalidate()
    x = np.ones((256, 256))
    assert gpuconv.choose_method("correlate2d", x, np.ones((31, 31))).method == "direct"


def test_cli_calibrate_writes_the_cache(tmp_path, capsys):
    from gpuconv.cli import main

    assert main(["calibrate", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "costmodel.json" in out and (tmp_path / "cache" / "costmodel.json").exists()


def test_measure_for_conv_transpose2d_is_reused_by_auto(rng, monkeypatch):
    x = rng.standard_normal((2, 4, 9, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    choice = gpuconv.choose_method("conv_transpose2d", x, w, stride=2, padding=1, measure=True)
    assert choice.measured and choice.method in choice.measured
    backend = get_backend_object("numpy")
    seen = []
    original = type(backend).conv_transpose2d

    def spy(self, *args):
        seen.append(args[7])
        return original(self, *args)
    monkeypatch.setattr(type(backend), "conv_transpose2d", spy)
    out = gpuconv.conv_transpose2d(x, w, stride=2, padding=1)
    assert seen == [choice.method]
    np.testing.assert_allclose(out, gpuconv.conv_transpose2d(x, w, stride=2, padding=1,
                                                             method="direct"), atol=1e-12)


def test_backend_without_fft_never_gets_an_fft_method():
    from gpuconv.backends.numpy import NumpyBackend

    class NoFFT(NumpyBackend):
        name = "nofft"

        @property
        def fft(self):
            raise NotImplementedError("no FFT here")

    backend = NoFFT()
    assert not _costmodel.has_fft(backend) and _costmodel.has_fft(get_backend_object("numpy"))
    planes = _choose.choose_planes_method(backend, (1, 512, 512), (31, 31), (482, 482),
                                          np.dtype(np.float64), "fill", False)
    assert planes.method in ("direct", "gemm") and set(planes.costs) == {"direct", "gemm"}
    conv = _choose.choose_conv2d_method(backend, (1, 1, 512, 512), (2, 1, 41, 41), (472, 472),
                                        (1, 1), 1, np.dtype(np.float64), False)
    assert conv.method in ("direct", "gemm") and "no FFT" in conv.reason
