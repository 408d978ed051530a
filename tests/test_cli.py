"""The ``gpuconv`` command line: exit statuses, one-line messages, ``--version``, ``info``.

Every subcommand x bad argument: exit status 2, argparse's usage and one
error line naming the argument, nothing on stdout, no traceback.  A runtime
failure (a backend that cannot run here, an error inside a command): exit
status 1 and one line.  Ctrl-C: 130.  ``--backend auto`` runs every command.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import gpuconv
from gpuconv import backend as registry
from gpuconv.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _unregister(name):
    for table in (registry._factories, registry._instances, registry._failures):
        table.pop(name, None)


@pytest.fixture
def broken_backend():
    """A registered backend that can never run, whatever the machine."""

    def factory():
        raise gpuconv.BackendUnavailableError("it needs a device this test does not have")

    gpuconv.register_backend("broken", factory)
    yield "broken"
    _unregister("broken")


def _usage_error(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    return code, out, err, lines


# (argv, the text the error line must contain). `{tmp}` is a fresh folder.
BAD_USAGE = [
    ([], "required: COMMAND"),
    (["nosuch"], "invalid choice: 'nosuch'"),
    (["--bogus", "info"], "unrecognized arguments: --bogus"),
    (["demo", "--backend", "nope"], "argument --backend: unknown backend 'nope'"),
    (["demo", "--plot", "{tmp}/missing/figure.png"], "argument --plot: cannot write"),
    (["demo", "--plot", "{tmp}"], "argument --plot: '{tmp}' is a folder"),
    (["demo", "--plot", "{tmp}/figure.xyz"], "argument --plot: cannot write"),
    (["demo", "extra"], "unrecognized arguments: extra"),
    (["train-digits", "--epochs", "-1"], "argument --epochs: must be an integer >= 1; got '-1'"),
    (["train-digits", "--epochs", "0"], "argument --epochs: must be an integer >= 1; got '0'"),
    (["train-digits", "--epochs", "1.5"], "argument --epochs: must be an integer >= 1"),
    (["train-digits", "--seed", "-2"], "argument --seed: must be an integer >= 0; got '-2'"),
    (["train-digits", "--backend", ""], "argument --backend: unknown backend ''"),
    (["train-digits", "--plot", "{tmp}/missing/d.png"], "argument --plot: cannot write"),
    (["check", "--backend", "nope"], "argument --backend: unknown backend 'nope'"),
    (["check", "--quick"], "unrecognized arguments: --quick"),
    (["bench", "--repeat", "0"], "argument --repeat: must be an integer >= 1; got '0'"),
    (["bench", "--threads", "0"], "argument --threads: must be an integer >= 1; got '0'"),
    (["bench", "--threads", "two"], "argument --threads: must be an integer >= 1; got 'two'"),
    (["bench", "--cap", "-1"], "argument --cap: must be a finite number >= 0; got '-1'"),
    (["bench", "--cap", "inf"], "argument --cap: must be a finite number >= 0; got 'inf'"),
    (["bench", "--column", "nonsense"], "argument --column: invalid choice: 'nonsense'"),
    (["bench", "--grid", "nonsense"], "argument --grid: invalid choice: 'nonsense'"),
    (["bench", "--out", "{tmp}/file.txt"], "argument --out: '{tmp}/file.txt' is not a folder"),
    (["bench", "--out", "{tmp}/file.txt/sub"], "argument --out: cannot create folder"),
    (["bench", "--plot", "{tmp}/missing/c.png"], "argument --plot: cannot write"),
    (["bench", "--backend", "nope"], "argument --backend: unknown backend 'nope'"),
    (["bench", "--grid", "conv2d", "--column", "scipy.signal"],
     "column 'scipy.signal' is not in grid conv2d"),
    (["bench", "--grid", "conv2d", "--plot", "{tmp}/c.png"], "--plot draws the planes grid"),
    (["bench", "--size", "512"], "--size applies only with --dask"),
    (["bench", "--dask", "--grid", "planes", "--repeat", "2"],
     "--grid, --repeat apply to the benchmark grid, not to --dask"),
    (["bench", "--dask", "--size", "0"], "argument --size: must be an integer >= 1; got '0'"),
    (["bench", "--dask", "--memory-limit", "lots"], "argument --memory-limit: must be a positive"),
    (["bench", "--dask", "--memory-limit", "0GiB"], "argument --memory-limit: must be a positive"),
    (["bench", "--dask", "--method", "best"], "argument --method: invalid choice: 'best'"),
    (["bench", "--dask", "--workdir", "{tmp}/missing"], "argument --workdir: '{tmp}/missing' does"),
    (["bench", "--dask", "--quick", "--chunk", "4096"], "--chunk (4096) and --ksize (15) must"),
    (["calibrate", "--backend", "nope"], "argument --backend: unknown backend 'nope'"),
    (["calibrate", "--quick", "3"], "unrecognized arguments: 3"),
    (["info", "--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("argv,message", BAD_USAGE,
                         ids=[" ".join(a) or "(nothing)" for a, _ in BAD_USAGE])
def test_bad_usage_exits_2_with_one_line_naming_the_argument(argv, message, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("not a folder")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    message = message.replace("{tmp}", str(tmp_path))
    code, out, err, lines = _usage_error(capsys, argv)
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    # argparse's convention: the usage (its first line starts with "usage:", the
    # rest are indented continuations), then exactly one error line.
    command = next((a for a in argv if not a.startswith("-")), "nosuch")
    prog = "gpuconv" if command == "nosuch" else f"gpuconv {command}"
    assert lines[0].startswith(f"usage: {prog} ")
    assert all(line.startswith(" ") for line in lines[1:-1]), err
    assert lines[-1].startswith(f"{prog}: error: "), err
    assert message in lines[-1], err
    assert sum("error:" in line for line in lines) == 1


def test_bad_usage_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    # A bad value late on the command line: the benchmark never starts.
    import gpuconv.bench

    monkeypatch.setattr(gpuconv.bench, "run", lambda **kw: pytest.fail("the benchmark ran"))
    assert main(["bench", "--quick", "--out", str(tmp_path), "--repeat", "0"]) == 2
    assert main(["bench", "--quick", "--out", str(tmp_path), "--plot",
                 str(tmp_path / "no" / "c.png")]) == 2
    assert list(tmp_path.iterdir()) == []


def test_plot_without_matplotlib_is_a_usage_error(monkeypatch, tmp_path, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    code = main(["train-digits", "--plot", str(tmp_path / "d.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines()[-1] == ("gpuconv train-digits: error: argument --plot: drawing a "
                                    "figure needs matplotlib: pip install 'gpuconv[plot]'")


@pytest.mark.parametrize("argv", [["demo"], ["train-digits", "--no-progress"], ["check"],
                                  ["bench", "--quick"], ["calibrate", "--quick"]],
                         ids=lambda a: a[0])
def test_unusable_backend_exits_1_before_any_work(argv, broken_backend, tmp_path, monkeypatch,
                                                  capsys):
    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    code = main([*argv, "--backend", broken_backend])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err == ("gpuconv: error: backend 'broken' is not usable: it needs a device this "
                   "test does not have\n")
    assert list(tmp_path.iterdir()) == []


def test_error_inside_a_command_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    from gpuconv import theory

    def broken(backend=None):
        raise ZeroDivisionError("planted\nover two lines")

    monkeypatch.setattr(theory, "check", broken)
    assert main(["check"]) == 1
    out, err = capsys.readouterr()
    assert err == ("gpuconv: error: ZeroDivisionError: planted over two lines (rerun with "
                   "--debug for the traceback)\n")
    # A ValueError's message is the whole story: no type, no hint.
    monkeypatch.setattr(theory, "check", lambda backend=None: np.zeros(3).reshape(2))
    assert main(["check"]) == 1
    assert capsys.readouterr().err.startswith("gpuconv: error: cannot reshape array")
    for argv in (["--debug", "check"], ["check", "--debug"]):
        with pytest.raises(ValueError, match="cannot reshape"):
            main(argv)


def test_keyboard_interrupt_exits_130_without_a_traceback(monkeypatch, capsys):
    from gpuconv import theory

    def interrupted(backend=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(theory, "check", interrupted)
    assert main(["check"]) == 130
    assert capsys.readouterr().err == "gpuconv: interrupted\n"
    with pytest.raises(KeyboardInterrupt):
        main(["check", "--debug"])


def test_debug_after_the_command_does_not_reset_debug_before_it():
    from gpuconv.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--debug", "info"]).debug is True
    assert parser.parse_args(["info", "--debug"]).debug is True
    assert parser.parse_args(["info"]).debug is False


# -- as a process -------------------------------------------------------------------

def _run(*argv):
    return subprocess.run([sys.executable, "-m", "gpuconv", *argv], capture_output=True,
                          text=True, timeout=120)


def test_version_as_a_process():
    done = _run("--version")
    assert done.returncode == 0 and done.stdout == f"gpuconv {gpuconv.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", gpuconv.__version__)


def test_usage_error_as_a_process_has_no_traceback():
    done = _run("bench", "--repeat", "0")
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == ("gpuconv bench: error: argument --repeat: must be "
                                            "an integer >= 1; got '0'")


def test_benchmarks_run_script_has_the_same_conventions(capsys):
    from gpuconv.bench import main as bench_main

    assert bench_main(["--threads", "0"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "benchmarks/run.py: error: argument --threads: must be an integer >= 1; got '0'")


def test_bench_options_are_declared_once():
    from gpuconv.bench._dask import build_parser as dask_parser
    from gpuconv.bench import build_parser as bench_parser
    from gpuconv.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["bench"]
    for parser in (sub, bench_parser()):
        options = [o for a in parser._actions for o in a.option_strings]
        assert len(options) == len(set(options))
        # The dask benchmark's options are there, documented.
        assert {"--dask", "--size", "--chunk", "--memory-limit", "--workdir"} <= set(options)
    dask_options = {o for a in dask_parser()._actions for o in a.option_strings}
    assert {"--size", "--quick", "--out", "--note"} <= dask_options
    # The standalone script's --quick is the small run (its defaults are not the full size).
    args = dask_parser().parse_args(["--quick"])
    assert args.quick and args.size is None and args.chunk is None


# -- --backend auto -----------------------------------------------------------------

@pytest.mark.parametrize("argv,expect", [
    (["check"], r"claims hold on backend 'numpy'"),
    (["demo"], r"gpuconv demo on the 'numpy' backend"),
    (["train-digits", "--epochs", "1", "--no-progress"], r"on the 'numpy' backend"),
    pytest.param(["calibrate", "--quick"], r"constants for numpy:cpu written to",
                 marks=pytest.mark.slow),
    (["bench", "--quick", "--grid", "planes", "--column", "direct", "--out", "{tmp}"],
     r"wrote .*quick-cpu-"),
], ids=lambda v: v[0] if isinstance(v, list) else "")
def test_backend_auto_runs_every_command_on_numpy(argv, expect, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(tmp_path))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*argv, "--backend", "auto"]) == 0
    out, err = capsys.readouterr()
    assert re.search(expect, out), out
    if argv[0] == "bench":
        (report,) = tmp_path.glob("quick-cpu-*.json")
        assert json.loads(report.read_text())["backend"] == "numpy"


# -- info, --version, show_config ---------------------------------------------------

def test_info_prints_what_a_bug_report_needs(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"gpuconv {gpuconv.__version__} ")
    import numpy
    import scipy

    assert re.search(rf"^  numpy +{re.escape(numpy.__version__)}$", out, re.M)
    assert re.search(rf"^  scipy +{re.escape(scipy.__version__)}$", out, re.M)
    statuses = gpuconv.available_backends()
    for name, status in statuses.items():
        state = "usable" if status.usable else f"not usable: {status.reason}"
        assert f"  {name:<14} {state}" in out
    assert f"scratch limit: 256 MiB ({gpuconv.get_scratch_limit()} bytes)" in out or \
        f"({gpuconv.get_scratch_limit()} bytes)" in out
    assert "cost-model cache: " in out and "NumPy backend threads: " in out


def test_info_json_matches_show_config(capsys):
    assert main(["info", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    direct = json.loads(json.dumps(gpuconv.show_config(mode="dicts"), default=str))
    assert printed["gpuconv"] == direct["gpuconv"]
    assert printed["backends"] == direct["backends"]
    assert printed["dependencies"] == direct["dependencies"]


def test_show_config_reports_settings_and_the_cache(monkeypatch, tmp_path):
    from importlib import metadata

    from gpuconv import _costmodel
    from gpuconv.backends.numpy import num_threads

    monkeypatch.setenv("GPUCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GPUCONV_NUM_THREADS", "3")
    info = gpuconv.show_config(mode="dicts")
    assert info["gpuconv"]["version"] == gpuconv.__version__
    assert info["dependencies"]["numpy"] == metadata.version("numpy")
    assert info["numpy_backend_threads"]["threads"] == num_threads() == 3
    assert info["environment"]["GPUCONV_NUM_THREADS"] == "3"
    assert info["scratch_limit_bytes"] == gpuconv.get_scratch_limit()
    with gpuconv.scratch_limit(2**20):
        assert gpuconv.show_config(mode="dicts")["scratch_limit_bytes"] == 2**20
    cache = info["cost_model_cache"]
    assert cache == {"path": str(_costmodel.cache_file()), "exists": False, "device_keys": []}
    _costmodel.cache_file().write_text(json.dumps(
        {"version": _costmodel.CACHE_VERSION, "models": {"numpy:cpu": {}, "cupy:0:X": {}}}))
    cache = gpuconv.show_config(mode="dicts")["cost_model_cache"]
    assert cache["exists"] and cache["device_keys"] == ["cupy:0:X", "numpy:cpu"]
    _costmodel.cache_file().write_text("{not json")
    assert "unreadable" in gpuconv.show_config(mode="dicts")["cost_model_cache"]["note"]
    monkeypatch.setenv("GPUCONV_NUM_THREADS", "many")
    threads = gpuconv.show_config(mode="dicts")["numpy_backend_threads"]
    assert threads["threads"] is None and "GPUCONV_NUM_THREADS" in threads["error"]


def test_show_config_versions_for_missing_packages(monkeypatch):
    from gpuconv import _info

    got = _info._versions(("numpy", "surely-not-installed-gpuconv-test"))
    assert got["surely-not-installed-gpuconv-test"] is None and got["numpy"] == np.__version__


def test_show_config_bad_mode():
    with pytest.raises(ValueError, match=r"mode must be one of 'stdout', 'dicts'; got 'json'"):
        gpuconv.show_config(mode="json")


def test_show_config_without_probing_imports_no_optional_library():
    code = ("import json, sys, gpuconv; info = gpuconv.show_config(mode='dicts', probe=False); "
            "gpuconv.show_config(probe=False); "
            "print(json.dumps(sorted(m for m in ('cupy', 'dask', 'distributed', 'torch', "
            "'matplotlib', 'tqdm', 'threadpoolctl') if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert "backends:\n  not probed" in done.stdout


def test_cupy_describe_lists_devices():
    from gpuconv.backends.cupy import CupyBackend

    class FakeRuntime:
        getDeviceCount = staticmethod(lambda: 2)
        getDeviceProperties = staticmethod(lambda i: {
            "name": f"GPU {i}".encode(), "major": 9, "minor": 0,
            "totalGlobalMem": (i + 1) * 2**30, "multiProcessorCount": 132})
        runtimeGetVersion = staticmethod(lambda: 12080)
        driverGetVersion = staticmethod(lambda: 12090)

    class FakeCupy:
        class cuda:  # noqa: N801 - mirrors cupy.cuda
            runtime = FakeRuntime

            class Device:
                id = 1

    facts = CupyBackend(FakeCupy()).describe()
    assert facts["cuda_runtime"] == 12080 and facts["cuda_driver"] == 12090
    assert facts["current_device"] == 1
    assert facts["devices"] == [
        {"id": i, "name": f"GPU {i}", "compute_capability": "9.0",
         "memory_bytes": (i + 1) * 2**30, "multiprocessors": 132} for i in range(2)]


def test_info_lists_devices_of_a_usable_backend(monkeypatch, capsys):
    from gpuconv.backends.numpy import NumpyBackend

    class WithDevices(NumpyBackend):
        name = "devices"

        def describe(self):
            return {"runtime": 7, "devices": [{"id": 0, "name": "Planted", "compute_capability":
                                               "8.0", "memory_bytes": 40 * 2**30,
                                               "multiprocessors": 108}]}

    gpuconv.register_backend("devices", WithDevices)
    try:
        assert main(["info"]) == 0
    finally:
        _unregister("devices")
    out = capsys.readouterr().out
    assert "  devices        usable\n    runtime: 7\n    device 0: Planted, compute capability " \
           "8.0, 40 GiB, 108 SMs\n" in out


# -- lazy submodules ----------------------------------------------------------------

def test_submodules_load_on_first_use_and_import_no_optional_library():
    code = """
import json, sys
import gpuconv
before = sorted(m for m in sys.modules if m.startswith("gpuconv."))
loaded = [m for m in ("gpuconv.nn", "gpuconv.theory", "gpuconv.reference", "gpuconv.examples",
                      "gpuconv.bench", "gpuconv.demo", "gpuconv.data", "gpuconv.cli")
          if m in sys.modules]
names = {n: type(getattr(gpuconv, n)).__name__ for n in ("nn", "theory", "reference",
         "examples", "backends", "kernels", "bench", "demo", "data", "cli")}
ok = gpuconv.nn.Conv2D is sys.modules["gpuconv.nn"].Conv2D
try:
    gpuconv.no_such_thing
except AttributeError as exc:
    missing = str(exc)
optional = sorted(m for m in ("cupy", "cupyx", "dask", "distributed", "matplotlib", "torch",
                              "tqdm", "sklearn") if m in sys.modules)
print(json.dumps({"loaded": loaded, "names": names, "ok": ok, "missing": missing,
                  "optional": optional, "dir": [n for n in ("nn", "theory") if n in dir(gpuconv)]}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["loaded"] == []                       # nothing before first use
    assert set(got["names"].values()) == {"module"}  # every one reachable as an attribute
    assert got["ok"] and got["dir"] == ["nn", "theory"]
    assert got["missing"] == "module 'gpuconv' has no attribute 'no_such_thing'"
    assert got["optional"] == []                     # and still no optional library


def test_default_out_folder_is_checked_only_when_results_are_written(tmp_path, monkeypatch,
                                                                     capsys):
    import gpuconv.bench._dask

    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmarks").write_text("a file where the default folder would go")
    assert main(["bench", "--quick"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "gpuconv bench: error: the default --out folder: cannot create folder "
        f"'benchmarks/results': '{tmp_path / 'benchmarks'}' is not a folder; pass --out DIR")
    assert main(["bench", "--dask"]) == 2
    capsys.readouterr()

    # A quick dask run writes nothing, so the default folder does not matter.
    def planted(**kwargs):
        assert kwargs["out"] is None and kwargs["size"] == 2048
        raise RuntimeError("planted: the benchmark started")

    monkeypatch.setattr(gpuconv.bench._dask, "run", planted)
    assert main(["bench", "--dask", "--quick"]) == 1
    assert "planted: the benchmark started" in capsys.readouterr().err


def test_paths_are_checked_and_passed_on_with_home_expanded(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: --plot is refused")
    from gpuconv.cli import build_parser

    monkeypatch.setenv("HOME", str(tmp_path))
    args = build_parser().parse_args(["bench", "--out", "~/results", "--plot", "~/c.png"])
    assert args.out == str(tmp_path / "results") and args.plot == str(tmp_path / "c.png")
