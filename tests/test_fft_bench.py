"""The FFT columns of the benchmark grids, the regret table and the crossover plot."""

from __future__ import annotations

import json

import pytest

from gpuconv import cli
from gpuconv.bench import GRIDS, Settings, run
from gpuconv.bench._fftcols import auto_regret, crossover_plot, regret_markdown


@pytest.fixture(scope="module")
def quick_report():
    return run(grids=["planes"], quick=True,
               settings=Settings(repeat=3, min_sample=0.001, cap=0.5, case_budget=0.5))


def test_fft_columns_are_registered_and_timed(quick_report):
    assert {"fft", "overlap-add"} <= set(GRIDS["planes"].columns)
    assert {"fft", "overlap-add"} <= set(GRIDS["conv2d"].columns)
    for case in quick_report["grids"][0]["cases"]:
        for m in ("fft", "overlap-add", "auto"):
            assert case["results"][m]["status"] == "ok" and case["results"][m]["median_s"] > 0


def test_regret_is_auto_over_the_fastest_method(quick_report):
    rows = auto_regret(quick_report)
    assert len(rows) == len(quick_report["grids"][0]["cases"])
    for row, case in zip(rows, quick_report["grids"][0]["cases"]):
        times = {m: case["results"][m]["median_s"] for m in ("direct", "gemm", "fft",
                                                              "overlap-add")}
        assert row["best_s"] == min(times.values())
        assert row["regret"] == pytest.approx(case["results"]["auto"]["median_s"] / row["best_s"])
    md = regret_markdown(quick_report)
    assert md.count("\n| planes |") == len(rows) and "worst regret" in md


def test_crossover_plot_is_a_png(quick_report, tmp_path):
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib (the 'plot' extra)")
    path = crossover_plot(quick_report, tmp_path / "sub" / "crossover.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(ValueError, match="planes"):
        crossover_plot({"grids": []}, tmp_path / "x.png")


def test_cli_bench_plot_option(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib (the 'plot' extra)")
    args = cli.build_parser().parse_args(["bench", "--quick", "--plot", str(tmp_path / "c.png")])
    assert args.plot == str(tmp_path / "c.png")


def test_auto_regret_script(quick_report, tmp_path):
    import runpy
    import sys

    src = tmp_path / "r.json"
    src.write_text(json.dumps(quick_report, default=str))
    argv = sys.argv
    sys.argv = ["auto_regret.py", str(src), "--out", str(tmp_path / "r.md")]
    try:
        with pytest.raises(SystemExit) as exc:
            runpy.run_path("benchmarks/auto_regret.py", run_name="__main__")
    finally:
        sys.argv = argv
    assert exc.value.code == 0
    assert "worst regret" in (tmp_path / "r.md").read_text()
