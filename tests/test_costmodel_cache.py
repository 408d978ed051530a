"""The cost-model cache file: hostile contents, concurrent writers, unwritable folders."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import threading
import warnings

import numpy as np
import pytest
import scipy.signal

import gpuconv
from gpuconv import _choose, _costmodel, _measure


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test reads and writes its own cache directory, and starts with no decisions."""
    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(tmp_path / "cache"))
    _choose.clear_measured()
    _costmodel.invalidate()
    yield
    _choose.clear_measured()
    _costmodel.invalidate()


def _constants(scale=1.0):
    """Valid constants for every family and method: the defaults times ``scale``."""
    return {f: {m: [v * scale for v in c] for m, c in ms.items()}
            for f, ms in _costmodel.DEFAULTS["numpy:cpu"].items()}


def _file(data):
    return {"version": _costmodel.CACHE_VERSION, "models": data}


def _with(family, method, values):
    model = _constants(2.0)
    model[family][method] = values
    return _file({"numpy:cpu": model})


def _write_text(text):
    def make(path):
        path.write_text(text)
    return make


def _write_json(data):
    return _write_text(json.dumps(data))


def _fifo(path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no os.mkfifo here")
    os.mkfifo(path)


def _dev_zero(path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    os.symlink("/dev/zero", path)


def _directory(path):
    path.mkdir()
    (path / "x").write_text("{}")


def _unreadable(path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop reading")
    path.write_text(json.dumps(_file({"numpy:cpu": _constants(2.0)})))
    path.chmod(0)


def _symlink_loop(path):
    os.symlink(path.name, path)


def _huge(path):
    # Valid JSON, but over the 4 MiB bound.
    path.write_text(json.dumps(_file({"numpy:cpu": _constants(2.0)})) + " " * (5 * 2**20))


HOSTILE = {
    "a JSON list": _write_text("[]"),
    "an empty object": _write_text("{}"),
    "another version": _write_json({"version": _costmodel.CACHE_VERSION - 1,
                                    "models": {"numpy:cpu": _constants(2.0)}}),
    "a newer version": _write_json({"version": _costmodel.CACHE_VERSION + 1,
                                    "models": {"numpy:cpu": _constants(2.0)}}),
    "version as a float": _write_json({"version": float(_costmodel.CACHE_VERSION),
                                       "models": {"numpy:cpu": _constants(2.0)}}),
    "models is a list": _write_json({"version": _costmodel.CACHE_VERSION, "models": []}),
    "model without planes": _write_json(_file({"numpy:cpu": {"conv2d": _constants()["conv2d"]}})),
    "model is a string": _write_json(_file({"numpy:cpu": "fast"})),
    "strings for numbers": _write_json(_with("planes", "fft", ["1e-10", "4e-5"])),
    "booleans for numbers": _write_json(_with("planes", "fft", [True, True])),
    "NaN": _write_text(json.dumps(_with("planes", "direct", [math.nan, 0, 1e-6, 1e-6]))),
    "Infinity": _write_text(json.dumps(_with("conv2d", "gemm", [1e-11, math.inf, 1e-5]))),
    "overflowing number": _write_text(
        json.dumps(_with("conv2d", "gemm", [1e-11, 1e-10, 1e-5])).replace("1e-05", "1e999")),
    "negative": _write_json(_with("conv2d", "fft", [2e-10, -1e-10, 3e-5])),
    "all zeros": _write_json(_with("planes", "gemm", [0, 0])),
    "too few numbers": _write_json(_with("planes", "direct", [1e-10, 0, 3e-6])),
    "too many numbers": _write_json(_with("conv2d", "direct", [1e-11] * 5)),
    "a method missing": _write_json(_file({"numpy:cpu": {
        "planes": {m: c for m, c in _constants()["planes"].items() if m != "fft"},
        "conv2d": _constants()["conv2d"]}})),
    "truncated JSON": _write_text(json.dumps(_file({"numpy:cpu": _constants(2.0)}))[:-7]),
    "deeply nested JSON": _write_text("[" * 200_000 + "]" * 200_000),
    "a 5000-digit integer": _write_text('{"version": ' + "9" * 5000 + "}"),
    "invalid UTF-8": lambda path: path.write_bytes(b'{"version": "\xff\xfe"}'),
    "a file over 4 MiB": _huge,
    "a FIFO": _fifo,
    "a symlink to /dev/zero": _dev_zero,
    "a directory": _directory,
    "a symlink loop": _symlink_loop,
    "an unreadable file": _unreadable,
}


def _in_thread(fn, timeout=60):
    """fn() in a daemon thread: a hang fails the test instead of hanging the suite."""
    result = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as exc:  # re-raised below
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"hung for {timeout} s"
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_cache_file_falls_back_to_defaults_with_one_warning(case, rng):
    path = _costmodel.cache_file()
    path.parent.mkdir(parents=True)
    HOSTILE[case](path)
    x = rng.standard_normal((96, 80))
    w = rng.standard_normal((5, 5))

    def use():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outs = [gpuconv.correlate2d(x, w, "same") for _ in range(3)]
            outs.append(gpuconv.conv2d(x[None, None], w[None, None], padding=2)[0, 0])
            constants, source = _costmodel.load_constants("numpy:cpu")
        return outs, constants, source, caught

    outs, constants, source, caught = _in_thread(use)
    expected = scipy.signal.correlate2d(x, w, "same")
    for out in outs:
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    assert source == "built-in defaults" and constants == _costmodel.DEFAULTS["numpy:cpu"]
    ours = [w for w in caught if issubclass(w.category, RuntimeWarning)
            and str(path) in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert "built-in constants" in str(ours[0].message)


@pytest.mark.parametrize("case", ["a FIFO", "a symlink to /dev/zero", "a directory",
                                  "truncated JSON", "another version", "NaN",
                                  "a file over 4 MiB", "a symlink loop"])
def test_saving_over_a_hostile_cache_file_replaces_it(case):
    path = _costmodel.cache_file()
    path.parent.mkdir(parents=True)
    HOSTILE[case](path)
    if case == "a directory":
        # os.replace cannot put a file over a directory: reported, nothing written.
        with pytest.raises(OSError):
            _in_thread(lambda: _costmodel.save("numpy:cpu", _constants(3.0), {}))
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        saved = _in_thread(lambda: _costmodel.save("numpy:cpu", _constants(3.0), {}))
    assert saved == path and path.is_file() and not path.is_symlink()
    data = json.loads(path.read_text())
    assert data["version"] == _costmodel.CACHE_VERSION
    assert data["models"] == {"numpy:cpu": _constants(3.0)}
    assert _costmodel.load_constants("numpy:cpu") == (_constants(3.0), f"calibrated ({path})")


def test_one_bad_model_is_dropped_the_others_are_used():
    path = _costmodel.cache_file()
    path.parent.mkdir(parents=True)
    bad = _constants(2.0)
    bad["conv2d"]["fft"] = [1.0, "x", 2.0]
    path.write_text(json.dumps(_file({"numpy:cpu": bad, "cupy:0": _constants(5.0)})))
    with pytest.warns(RuntimeWarning, match="the model for 'numpy:cpu' is ignored: "
                                            "conv2d.fft holds something other than numbers"):
        assert _costmodel.load_constants("numpy:cpu")[1] == "built-in defaults"
    assert _costmodel.load_constants("cupy:0") == (_constants(5.0), f"calibrated ({path})")
    # Saving another device keeps the good model and drops the bad one.
    _costmodel.save("cupy:1", _constants(7.0), {"quick": True})
    data = json.loads(path.read_text())
    assert data["models"] == {"cupy:0": _constants(5.0), "cupy:1": _constants(7.0)}


def test_unknown_families_and_methods_are_ignored():
    path = _costmodel.cache_file()
    path.parent.mkdir(parents=True)
    model = _constants(2.0)
    model["planes"]["winograd-9000"] = [1.0]
    model["pool2d"] = {"direct": [1.0]}
    path.write_text(json.dumps(_file({"numpy:cpu": model})))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _costmodel.load_constants("numpy:cpu")[0] == _constants(2.0)


def test_a_symlinked_cache_file_is_read_but_never_written_through(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(_file({"numpy:cpu": _constants(2.0)})))
    before = target.read_text()
    path = _costmodel.cache_file()
    path.parent.mkdir(parents=True)
    os.symlink(target, path)
    assert _costmodel.load_constants("numpy:cpu")[0] == _constants(2.0)
    _costmodel.save("numpy:cpu", _constants(3.0), {})
    assert target.read_text() == before
    assert not path.is_symlink() and json.loads(path.read_text())["models"]["numpy:cpu"] == \
        _constants(3.0)


def test_planted_temporary_files_are_never_written_through(tmp_path):
    folder = _costmodel.cache_file().parent
    folder.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    # The old fixed temporary name, and names like mkstemp's.
    for name in ("costmodel.tmp", "costmodel.json.tmp", ".costmodel.tmp"):
        os.symlink(victim, folder / name)
    _costmodel.save("numpy:cpu", _constants(3.0), {})
    assert victim.read_text() == "precious"
    assert all((folder / n).is_symlink() for n in ("costmodel.tmp", "costmodel.json.tmp"))
    # No temporary file is left behind.
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".costmodel.")) == \
        [".costmodel.tmp"]


def test_a_planted_lock_symlink_is_not_followed(tmp_path):
    folder = _costmodel.cache_file().parent
    folder.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.symlink(victim, folder / "costmodel.json.lock")
    if not hasattr(os, "O_NOFOLLOW"):
        pytest.skip("no O_NOFOLLOW here")
    with pytest.raises(OSError):
        _costmodel.save("numpy:cpu", _constants(3.0), {})
    assert victim.read_text() == "precious"


def _save_many(args):
    index, rounds = args
    for r in range(rounds):
        _costmodel.save(f"dev:{index}:{r}", _constants(1.0 + index), {"round": r})


# Python >= 3.12 warns when a process with threads forks; these children only save.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_concurrent_saves_from_processes_lose_nothing():
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    writers, rounds = 6, 5
    with ctx.Pool(writers) as pool:
        pool.map(_save_many, [(i, rounds) for i in range(writers)], chunksize=1)
    data = json.loads(_costmodel.cache_file().read_text())
    assert sorted(data["models"]) == sorted(f"dev:{i}:{r}" for i in range(writers)
                                            for r in range(rounds))
    assert data["meta"]["dev:3:4"] == {"round": 4}
    leftovers = [p.name for p in _costmodel.cache_file().parent.iterdir()
                 if p.name not in ("costmodel.json", "costmodel.json.lock")]
    assert leftovers == []


def test_concurrent_saves_from_threads_lose_nothing():
    threads = [threading.Thread(target=_save_many, args=((i, 4),)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    models = json.loads(_costmodel.cache_file().read_text())["models"]
    assert len(models) == 20
    assert _costmodel.load_constants("dev:2:3")[0] == _constants(3.0)


def test_refuses_to_store_constants_it_would_not_read_back():
    bad = _constants()
    bad["planes"]["gemm"] = [0.0, 0.0]
    with pytest.raises(ValueError, match="planes.gemm is all zeros"):
        _costmodel.save("numpy:cpu", bad, {})
    assert not _costmodel.cache_file().exists()


# -- when the file is looked at, and what a calibration changes ----------------------
def test_the_file_is_examined_at_most_every_few_seconds(monkeypatch):
    looks = []
    real = _costmodel._stat

    def counting(path):
        looks.append(path)
        return real(path)

    monkeypatch.setattr(_costmodel, "_stat", counting)
    x = np.ones((40, 40))
    for _ in range(50):
        gpuconv.correlate2d(x, np.ones((3, 3)))
        _costmodel.generation()
        _costmodel.load_constants("numpy:cpu")
    assert len(looks) == 1
    # Another process writes the file: seen once the interval has passed.
    path = _costmodel.cache_file()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_file({"numpy:cpu": _constants(4.0)})))
    assert _costmodel.load_constants("numpy:cpu")[1] == "built-in defaults"
    monkeypatch.setattr(_costmodel, "_CHECK_INTERVAL", 0.0)
    assert _costmodel.load_constants("numpy:cpu") == (_constants(4.0), f"calibrated ({path})")


def test_a_changed_file_changes_the_generation(monkeypatch):
    monkeypatch.setattr(_costmodel, "_CHECK_INTERVAL", 0.0)
    first = _costmodel.generation()
    assert _costmodel.generation() == first
    path = _costmodel.cache_file()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_file({"numpy:cpu": _constants(4.0)})))
    second = _costmodel.generation()
    assert second != first and second[0] == first[0] == str(path)
    # A generation is never reused, even after the file goes back to what it was.
    path.unlink()
    assert _costmodel.generation() not in (first, second)


def _fft_favouring_fit(rows, times, names):
    # Transforms nearly free, everything else slow: calibration then prefers the FFT.
    return [1e-15 if "nlogn" in names else 1.0 for _ in names]


def test_a_decision_made_before_calibrate_is_not_reused_after_it(monkeypatch):
    x = np.random.default_rng(0).standard_normal((64, 64))
    w = np.ones((3, 3))
    before = gpuconv.choose_method("correlate2d", x, w)
    assert before.method in ("direct", "gemm")
    # Timing and fitting replaced: calibrate() then takes no time and favours the FFT.
    monkeypatch.setattr(_measure, "_time", lambda fn, **kwargs: 1e-3)
    monkeypatch.setattr(_measure, "_fit", _fft_favouring_fit)
    report = _measure.calibrate("numpy", quick=True)
    assert report["path"] == _costmodel.cache_file() and report["write_error"] is None
    after = gpuconv.choose_method("correlate2d", x, w)
    assert after.method in ("fft", "overlap-add"), after
    assert "calibrated" in after.reason
    np.testing.assert_allclose(gpuconv.correlate2d(x, w), scipy.signal.correlate2d(x, w),
                               atol=1e-10)


def _quick_fake_calibration(monkeypatch):
    monkeypatch.setattr(_measure, "_time", lambda fn, **kwargs: 1e-3)
    monkeypatch.setattr(_measure, "_fit", _fft_favouring_fit)


def test_calibrate_reports_a_cache_folder_under_a_regular_file(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(blocker / "gpuconv"))
    _quick_fake_calibration(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the unreadable cache path
        report = _measure.calibrate("numpy", quick=True)
    assert report["path"] is None
    assert str(blocker / "gpuconv" / "costmodel.json") in report["write_error"]
    assert report["constants"]["planes"]["fft"] == [1e-15, 1e-15]
    assert blocker.read_text() == ""


def test_calibrate_reports_a_read_only_cache_folder(tmp_path, monkeypatch):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("running as root: folder permissions do not stop writing")
    folder = tmp_path / "cache"
    folder.mkdir()
    folder.chmod(0o500)
    _quick_fake_calibration(monkeypatch)
    try:
        report = _measure.calibrate("numpy", quick=True)
    finally:
        folder.chmod(0o700)
    assert report["path"] is None and str(folder) in report["write_error"]
    assert "ermission" in report["write_error"]
    assert list(folder.iterdir()) == []


def test_calibrate_without_saving_writes_nothing(monkeypatch):
    _quick_fake_calibration(monkeypatch)
    report = _measure.calibrate("numpy", quick=True, save=False)
    assert report["path"] is None and report["write_error"] is None
    assert not _costmodel.cache_file().parent.exists()


def test_cli_calibrate_into_an_unwritable_folder_prints_the_constants(tmp_path, monkeypatch,
                                                                      capsys):
    from gpuconv.cli import main

    _quick_fake_calibration(monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(blocker / "cache"))
    assert main(["calibrate", "--quick"]) == 1
    out, err = capsys.readouterr()
    printed = json.loads(out[out.index("{"):])
    assert set(printed) == {"numpy:cpu"} and set(printed["numpy:cpu"]) == {"planes", "conv2d"}
    assert err.count("\n") == 1 and str(blocker / "cache") in err and "Traceback" not in err
